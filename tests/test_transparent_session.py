"""Transparent session transcripts (bridge/modem/session.py, app note §4, §6.3): the real Modem
brought up in transparent mode on a StringTransport and task.Clock, a session opened through its
endpoint, and the exact UART bytes both ways."""

import pytest
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.interfaces import IConsumer, IPushProducer, ITransport
from twisted.internet.protocol import Protocol

from bridge.at.datamode import DTR_SETTLE, HOLD_DELAY
from bridge.at.plusguard import PLUS_HOLD
from bridge.modem.modem import ANSWER_STALE
from bridge.modem.session import TransparentSession
from bridge.modem.socket import ModuleAddress, SocketLost
from tests.modem_harness import OK, SYNC, transparent
from tests.socket_bench import (CONNECT, PACKETISATION, QIOPEN_TRANSPARENT, ModemBench,
                                SessionBench)

ERROR = b"\r\nERROR\r\n"
QISACK = b"AT+QISACK\r"
ATO = b"ATO\r"
QICLOSE = b"AT+QICLOSE\r"
CLOSE_OK = b"\r\nCLOSE OK\r\n"
#: The engine's resync after a probe escape found the module in command mode.
RESYNC = b"\x1bAT\r"
#: The engine's guard time around '+++' (ATProtocol's default, app note §4: >= 0.5 s).
GUARD = 1.0
#: A probe escape's wait for OK: the guard after '+++', then the escape timeout.
PROBE_WAIT = GUARD + 2.0


def sack(sent, acked) -> bytes:
    return b"\r\n+QISACK: %d, %d, %d\r\n" % (sent, acked, sent - acked) + OK


def advance_to(bench, when: float) -> None:
    bench.clock.advance(when - bench.clock.seconds())


def module_closes(s: SessionBench, waiter: bool = False) -> None:
    """After our '+++': the module's OK a guard later, then AT+QICLOSE and CLOSE OK; the
    session's place is free (or, with a ``waiter``, given to it)."""
    s.clock.advance(GUARD)
    s.module(OK)
    assert s.wire() == QICLOSE
    s.module(CLOSE_OK)
    assert s.modem.slots_in_use == frozenset({0} if waiter else ())
    assert s.modem.sockets.waiting() == 0


def short_keepalive(tmp_path) -> SessionBench:
    """Checks 1 s after the first uplink byte, then every 3 s, two retries."""
    return SessionBench(tmp_path, keepalive_first=1.0, keepalive_interval=3.0,
                        keepalive_retries=2)


def test_open_puts_the_uart_in_data_mode_and_connects_the_protocol(tmp_path):
    s = SessionBench(tmp_path)
    protocol, result = s.open()
    assert s.wire() == b"AT+QIDNSIP=0\r"
    s.module(OK)
    assert s.wire() == QIOPEN_TRANSPARENT
    s.module(OK)
    assert result == []  # not before CONNECT
    s.module(CONNECT)
    assert result == [protocol]
    session = protocol.transport
    assert isinstance(session, TransparentSession)
    assert all(i.providedBy(session) for i in (ITransport, IPushProducer, IConsumer))
    assert s.modem.protocol.data_mode.active
    assert s.modem.slots_in_use == frozenset({0})


def test_bytes_flow_raw_both_ways(tmp_path):
    s = SessionBench(tmp_path)
    protocol = s.connected()
    protocol.transport.write(b"GET / HTTP/1.0\r\n\r\n\x00\xff")
    assert s.wire() == b"GET / HTTP/1.0\r\n\r\n\x00\xff"  # no AT+QISEND: the UART is the socket
    s.module(b"HTTP/1.0 200 OK\r\n\r\nOK\r\n\x00")
    assert protocol.received == b"HTTP/1.0 200 OK\r\n\r\nOK\r\n\x00"
    assert protocol.transport.stats()["sent"] == 20
    assert protocol.transport.stats()["received"] == 24


def test_the_remote_first_bytes_in_the_connect_read_reach_the_protocol(tmp_path):
    s = SessionBench(tmp_path)
    protocol, result = s.open()
    s.connect(then=b"220 welcome\r\n", settle=False)
    assert result == [protocol]
    assert protocol.received == b"220 welcome"  # a CR LF tail may start CLOSED: held briefly
    s.clock.advance(HOLD_DELAY)
    assert protocol.received == b"220 welcome\r\n"


# -- keepalive checks (bridge/keepalive.py AckProgressWatch, app note §6) -------------------------


def test_a_keepalive_check_escapes_asks_qisack_and_resumes_with_ato(tmp_path):
    s = SessionBench(tmp_path)
    protocol = s.connected()
    session = protocol.transport
    session.write(b"0123456789")
    assert s.wire() == b"0123456789"
    s.clock.advance(4.99)
    assert s.wire() == b""
    s.clock.advance(0.02)  # keepalive_first (5 s) after the write, long past the guard
    assert s.wire() == b"+++"
    session.write(b"late")  # while data mode is left: waits in the session
    s.clock.advance(GUARD)
    assert s.wire() == b""
    s.module(OK)
    assert s.wire() == QISACK
    s.module(sack(10, 10))
    assert s.wire() == ATO
    s.module(CONNECT)
    assert s.wire() == b"late"  # back in data mode: what waited goes out
    assert session.checks == 1 and protocol.reason is None
    written_late = s.clock.seconds() - GUARD  # 'late' was written during the check
    advance_to(s, written_late + 4.99)
    assert s.wire() == b""
    s.clock.advance(0.02)
    assert s.wire() == b"+++"  # bytes written during a check start a schedule of their own
    s.clock.advance(GUARD)
    s.module(OK)
    assert s.wire() == QISACK
    s.module(sack(14, 14))
    assert s.wire() == ATO
    s.module(CONNECT + b"pong")
    assert protocol.received == b"pong"
    assert session.checks == 2


def test_downlink_bytes_before_the_first_check_end_the_schedule(tmp_path):
    s = SessionBench(tmp_path)
    protocol = s.connected()
    protocol.transport.write(b"ping")
    assert s.wire() == b"ping"
    s.clock.advance(1)
    s.module(b"pong")  # the remote answered: the link is proven
    s.clock.advance(60)
    assert s.wire() == b""  # no '+++' at +5 s, nor later
    assert protocol.transport.checks == 0
    assert protocol.received == b"pong"


def test_no_ack_progress_by_the_last_retry_is_socket_lost_and_the_last_check_closes(tmp_path):
    s = short_keepalive(tmp_path)
    protocol = s.connected()
    protocol.transport.write(b"0123456789")
    assert s.wire() == b"0123456789"
    t0 = s.clock.seconds()
    for check in range(3):  # at +1 s, +4 s, +7 s
        advance_to(s, t0 + 1 + 3 * check - 0.01)
        assert s.wire() == b""
        s.clock.advance(0.02)
        assert s.wire() == b"+++", check
        s.clock.advance(GUARD)
        s.module(OK)
        assert s.wire() == QISACK
        s.module(sack(10, 0))
        if check < 2:
            assert s.wire() == ATO
            s.clock.advance(0.1)
            s.module(CONNECT)
            assert protocol.reason is None
    assert protocol.reason.check(SocketLost)
    assert protocol.reason.value.cause == "no_ack_progress"
    assert s.wire() == QICLOSE  # straight from command mode: no ATO
    s.module(CLOSE_OK)
    assert s.modem.slots_in_use == frozenset()
    assert not s.modem.protocol.data_mode.active


class Producer:
    """A local push producer; records pause/resume."""

    def __init__(self):
        self.calls = []

    def pauseProducing(self):
        self.calls.append("pause")

    def resumeProducing(self):
        self.calls.append("resume")

    def stopProducing(self):
        self.calls.append("stop")


def to_a_check(s: SessionBench, protocol) -> None:
    """Write 10 bytes and run the clock to the first check's '+++' (keepalive_first: 5 s)."""
    protocol.transport.write(b"0123456789")
    assert s.wire() == b"0123456789"
    s.clock.advance(5)
    assert s.wire() == b"+++"


def into_a_check(s: SessionBench, protocol) -> None:
    """The first check's escape answered OK: AT+QISACK is on the wire."""
    to_a_check(s, protocol)
    s.clock.advance(GUARD)
    s.module(OK)
    assert s.wire() == QISACK


def test_writes_while_away_pause_the_producer_above_high_water_until_back(tmp_path):
    s = SessionBench(tmp_path)
    protocol = s.connected()
    session = protocol.transport
    producer = Producer()
    session.registerProducer(producer, True)
    into_a_check(s, protocol)
    session.write(b"a" * (session.settings.high_water - 1))
    assert producer.calls == []
    session.write(b"b")
    assert producer.calls == ["pause"]
    s.module(sack(10, 10))
    assert s.wire() == ATO
    s.module(CONNECT)
    assert s.wire() == b"a" * (session.settings.high_water - 1) + b"b"
    assert producer.calls == ["pause", "resume"]


def test_lose_connection_while_away_sends_what_waits_once_back_then_closes(tmp_path):
    s = SessionBench(tmp_path)
    protocol = s.connected()
    into_a_check(s, protocol)
    protocol.transport.write(b"last")
    protocol.transport.loseConnection()
    assert protocol.reason is None  # what waits is not sent yet
    s.module(sack(10, 10))
    assert s.wire() == ATO
    s.module(CONNECT)
    assert s.wire() == b"last"
    assert protocol.reason.check(ConnectionDone)
    s.clock.advance(GUARD - 0.01)
    assert s.wire() == b""
    s.clock.advance(0.02)
    assert s.wire() == b"+++"
    module_closes(s)


def test_a_check_whose_escape_goes_unanswered_is_socket_lost_and_resyncs(tmp_path):
    s = SessionBench(tmp_path)
    protocol = s.connected()
    to_a_check(s, protocol)
    s.clock.advance(PROBE_WAIT - 0.01)
    assert protocol.reason is None
    s.clock.advance(0.02)  # no OK: the module is not where we think
    assert protocol.reason.check(SocketLost)
    assert protocol.reason.value.cause == "escape_unanswered"
    # The resync escapes first, so that it cannot reach the peer (the line is quiet for long
    # already), and asks plainly, a guard later, whether the module still answers.
    assert s.wire() == b"+++"
    s.clock.advance(GUARD - 0.01)
    assert s.wire() == b""
    s.clock.advance(0.02)
    assert s.wire() == RESYNC
    s.module(OK)
    assert s.wire() == QICLOSE  # it does: its link may still be up
    s.module(CLOSE_OK)
    assert s.modem.slots_in_use == frozenset()


def test_an_ato_refused_after_a_check_is_socket_lost_and_closes_the_link(tmp_path):
    s = SessionBench(tmp_path)
    protocol = s.connected()
    into_a_check(s, protocol)
    s.module(sack(10, 10))
    assert s.wire() == ATO
    s.module(ERROR)
    assert protocol.reason.check(SocketLost)
    assert protocol.reason.value.cause == "resume_failed"
    assert s.wire() == QICLOSE  # still in command mode: straight to the close
    s.module(CLOSE_OK)
    assert s.modem.slots_in_use == frozenset()


# -- closing -------------------------------------------------------------------------------------


def test_lose_connection_escapes_after_the_guard_then_closes_on_the_module(tmp_path):
    s = SessionBench(tmp_path)
    protocol = s.connected()
    protocol.transport.write(b"bye")
    assert s.wire() == b"bye"
    protocol.transport.loseConnection()
    assert protocol.reason.check(ConnectionDone)
    s.clock.advance(GUARD - 0.01)
    assert s.wire() == b""  # the guard after our last byte
    s.clock.advance(0.02)
    assert s.wire() == b"+++"
    assert s.modem.slots_in_use == frozenset({0})  # the module's link is still up
    module_closes(s)
    assert not s.modem.protocol.data_mode.active
    protocol.transport.write(b"after")  # a closed transport drops writes
    assert s.wire() == b""


def test_lose_write_connection_lingers_for_the_reply_then_closes(tmp_path):
    s = SessionBench(tmp_path)
    protocol = s.connected()
    session = protocol.transport
    session.write(b"request")
    assert s.wire() == b"request"
    session.loseWriteConnection()
    linger = session.settings.linger
    s.clock.advance(linger - 0.5)
    s.module(b"reply")  # traffic restarts the linger
    assert protocol.received == b"reply" and protocol.reason is None
    s.clock.advance(linger - 0.01)
    assert s.wire() == b""
    s.clock.advance(0.02)  # linger seconds without traffic: close
    assert protocol.reason.check(ConnectionDone)
    assert s.wire() == b"+++"  # the guard is long past
    module_closes(s)


def test_a_remote_close_delivers_every_byte_then_connection_done(tmp_path):
    s = SessionBench(tmp_path)
    protocol = s.connected()
    s.module(b"last words\r\nCLOSED")
    s.module(b"\r\n")
    assert protocol.received == b"last words"  # the tail may be the module's: held
    s.clock.advance(GUARD)
    assert s.wire() == b"+++"  # the probe: is the module still in data mode?
    s.clock.advance(PROBE_WAIT)  # no OK: it was the module, in command mode since CLOSED
    assert protocol.received == b"last words"
    assert protocol.reason.check(ConnectionDone)
    assert s.wire() == RESYNC  # our '+++' cleared off its command line first
    s.module(OK)
    assert s.wire() == QICLOSE
    s.module(ERROR)  # the link is already gone
    assert s.modem.slots_in_use == frozenset()
    assert s.modem.ready


def test_a_remote_close_during_the_closing_escape_still_closes_the_link(tmp_path):
    s = SessionBench(tmp_path)
    protocol = s.connected()
    protocol.transport.loseConnection()
    assert protocol.reason.check(ConnectionDone)
    s.module(b"tail\r\nCLOSED\r\n")  # while our escape waits for its guard
    s.clock.advance(GUARD)
    assert s.wire() == b"+++"  # one escape decides both
    s.clock.advance(PROBE_WAIT)
    assert s.wire() == RESYNC
    s.module(OK)
    assert s.wire() == QICLOSE
    s.module(ERROR)
    assert s.modem.slots_in_use == frozenset()


def test_a_closed_lookalike_answered_by_ok_is_payload_and_the_session_goes_on(tmp_path):
    s = SessionBench(tmp_path)
    protocol = s.connected()
    s.module(b"data\r\nCLOSED\r\n")
    s.clock.advance(GUARD)
    assert s.wire() == b"+++"
    protocol.transport.write(b"waits")  # while the probe decides
    s.clock.advance(GUARD)
    s.module(OK)
    assert protocol.received == b"data\r\nCLOSED\r\n"
    assert s.wire() == ATO
    s.module(CONNECT)
    assert s.wire() == b"waits"
    assert protocol.reason is None


@pytest.mark.parametrize("tail, down", [
    (b"\r\n+PDP DEACT\r\n", "PDP context deactivated by the network (+PDP DEACT)"),
    (b"\r\nCall Ready\r\n", "the module restarted (boot in data mode)"),
    (b"\r\nSMS Ready\r\n", "the module restarted (boot in data mode)"),
])
def test_a_lost_context_or_a_restart_ending_the_stream_is_socket_lost_modem_down(tmp_path, tail,
                                                                                down):
    s = SessionBench(tmp_path)
    protocol = s.connected()
    waiting, result = s.open()
    s.module(b"abc" + tail)
    s.clock.advance(GUARD)
    assert s.wire() == b"+++"
    s.clock.advance(PROBE_WAIT)
    assert protocol.received == b"abc"
    assert protocol.reason.check(SocketLost)
    assert protocol.reason.value.cause == "modem_down"
    assert s.wire() == RESYNC
    assert s.harness.states[-1] == ("down", down)
    assert s.modem.slots_in_use == frozenset()
    s.module(OK)
    s.clock.advance(10)
    assert s.wire() == b""  # the waiting connection is not served into the dying modem
    assert result == [] and s.modem.sockets.waiting() == 1


def test_abort_connection_tells_the_protocol_at_once_then_closes_on_the_module(tmp_path):
    s = SessionBench(tmp_path)
    protocol = s.connected()
    protocol.transport.write(b"x")
    s.wire()
    protocol.transport.abortConnection()
    assert protocol.reason.check(ConnectionAborted)
    s.clock.advance(GUARD + 0.01)  # the guard after the line time of "x"
    assert s.wire() == b"+++"
    module_closes(s)


def test_a_closed_urc_while_away_for_a_check_is_socket_lost(tmp_path):
    s = SessionBench(tmp_path)
    protocol = s.connected()
    into_a_check(s, protocol)
    s.module(b"\r\nCLOSED\r\n")  # in command mode: a URC, the remote closed meanwhile
    assert protocol.reason.check(SocketLost)
    assert protocol.reason.value.cause == "remote_closed_away"
    s.module(sack(10, 10))
    assert s.wire() == QICLOSE  # no ATO: there is no link to go back to
    s.module(ERROR)
    assert s.modem.slots_in_use == frozenset()


# -- the pool of one, health --------------------------------------------------------------------


def test_a_second_open_waits_until_the_first_session_is_released(tmp_path):
    s = SessionBench(tmp_path)
    first = s.connected()
    second, result = s.open()
    assert s.modem.sockets.waiting() == 1
    s.clock.advance(10)
    assert s.wire() == b"" and result == []  # nothing written: the UART is the first's
    first.transport.loseConnection()
    s.clock.advance(GUARD)
    assert s.wire() == b"+++"
    module_closes(s, waiter=True)
    s.connect(then=b"hello")
    assert result == [second]
    assert second.received == b"hello"  # the new session's, not the closed one's
    assert first.received == b""
    second.transport.write(b"two")
    assert s.wire() == b"two"


def test_a_lingering_session_closes_early_for_a_waiting_connection(tmp_path):
    s = SessionBench(tmp_path)
    first = s.connected()
    first.transport.write(b"done")
    assert s.wire() == b"done"
    first.transport.loseWriteConnection()
    second, result = s.open()
    s.clock.advance(GUARD - 0.01)
    assert s.wire() == b""
    s.clock.advance(0.02)  # idle RECLAIM_IDLE, then the guard after 'done': long before linger
    assert s.wire() == b"+++"
    assert first.reason.check(ConnectionDone)
    module_closes(s, waiter=True)
    s.connect()
    assert result == [second]


def test_healthy_in_data_mode_even_with_the_last_answer_long_ago(tmp_path):
    s = SessionBench(tmp_path)
    protocol = s.connected()
    protocol.transport.write(b"x")
    s.module(b"y")
    assert s.wire() == b"x"
    s.clock.advance(ANSWER_STALE + 60)
    assert s.clock.seconds() - s.modem.last_answer > ANSWER_STALE
    assert s.modem.healthy()
    protocol.transport.loseConnection()
    s.clock.advance(0)
    assert s.wire() == b"+++"
    s.clock.advance(GUARD)
    s.module(OK)
    s.wire()
    s.module(CLOSE_OK)
    s.clock.advance(ANSWER_STALE + 1)
    assert not s.modem.healthy()  # in command mode, a module silent that long is not


# -- wired pins: DTR escapes (dtr_escape), DCD decides a CLOSED tail (dcd) -----------------------


def test_with_dtr_escape_a_close_drops_dtr_instead_of_writing_plus(tmp_path):
    s = SessionBench(tmp_path, data_mode=(b"AT+QITCFG=3,2,1460,0", b"AT&D1"), dtr_escape=True)
    pins = s.harness.port.dtr
    protocol = s.connected()
    s.clock.advance(1)
    protocol.transport.write(b"+++")  # payload: +++ is off in AT+QITCFG, and split anyway
    assert s.wire() == b"+"
    protocol.transport.loseConnection()
    s.clock.advance(PLUS_HOLD)
    assert s.wire() == b"++"
    s.clock.advance(DTR_SETTLE - 0.01)
    assert pins == []
    s.clock.advance(0.02)
    assert pins == [False]  # settled after our last byte: DTR ON -> OFF
    assert s.wire() == b""
    s.module(OK)
    assert pins == [False, True]
    assert s.wire() == QICLOSE
    s.module(CLOSE_OK)
    assert s.modem.slots_in_use == frozenset()


def test_with_dcd_a_closed_tail_and_no_carrier_closes_without_a_probe(tmp_path):
    s = SessionBench(tmp_path, data_mode=(PACKETISATION, b"AT&C1"), dcd=True)
    protocol = s.connected()
    s.harness.port.dcd = True
    s.module(b"payload\r\nCLOSED\r\n")
    s.clock.advance(GUARD)
    assert protocol.received == b"payload\r\nCLOSED\r\n"  # carrier on: the peer's bytes
    assert s.wire() == b""
    s.module(b"more\r\nCLOSED\r\n")
    s.harness.port.dcd = False  # the link went down
    s.clock.advance(GUARD)
    assert protocol.received == b"payload\r\nCLOSED\r\nmore"
    assert protocol.reason.check(ConnectionDone)
    assert s.wire() == QICLOSE  # no '+++', no resync: nothing sat on its command line
    s.module(ERROR)
    assert s.modem.slots_in_use == frozenset()



# -- from the review: escapes and their answers, session ends -------------------------------

def test_a_local_close_during_a_check_whose_escape_goes_unanswered_still_frees_the_session(
        tmp_path):
    """A local close while a check's ``+++`` waits for an OK that never comes: the session is
    abandoned like an open one (the resync's escape, ESC AT, then AT+QICLOSE), and the pool's one
    place is freed; else the engine would believe it is in data mode for ever."""
    s = SessionBench(tmp_path)
    protocol = s.connected()
    to_a_check(s, protocol)  # the check's '+++' is on the wire
    s.clock.advance(0.1)
    protocol.transport.loseConnection()
    assert protocol.reason.check(ConnectionDone)
    s.clock.advance(PROBE_WAIT)  # no OK to the check's escape
    s.clock.advance(GUARD + 0.01)  # the resync's own escape and its guard
    assert s.wire() == b"+++" + RESYNC
    s.module(OK)
    assert s.wire() == QICLOSE
    s.module(CLOSE_OK)
    assert s.modem.slots_in_use == frozenset()


def test_an_ok_from_the_peer_before_the_module_can_have_answered_is_not_the_escape_ok(tmp_path):
    """The module answers ``+++`` only after its own guard (app note §4: >= 0.5 s): an OK line
    sooner than that is the peer's data, delivered, and nothing is written (a command now would
    reach a module still in data mode, and the peer)."""
    s = SessionBench(tmp_path)
    protocol = s.connected()
    to_a_check(s, protocol)  # '+++' just left
    s.clock.advance(0.1)
    s.module(b"\r\nOK\r\n")  # the peer's bytes, 0.1 s after the '+++'
    assert s.wire() == b""  # nothing may be written inside the module's guard
    s.clock.advance(GUARD)
    s.module(OK)  # the module's own answer
    assert s.wire() == QISACK
    assert protocol.received.endswith(b"\r\nOK\r\n")


class RtsctsBench(SessionBench):
    """A SessionBench whose modem has ``rtscts = yes`` (AT+IFC=2,2 after the sync)."""

    def __init__(self, tmp_path):
        script = SYNC + [(b"AT+IFC=2,2", OK)] + transparent(PACKETISATION)[len(SYNC):]
        ModemBench.__init__(self, tmp_path, receive="push", script=script, mode="transparent",
                            rtscts=True)


def test_a_probe_escape_hears_its_ok_while_the_local_reader_holds_the_port_paused(tmp_path):
    """With ``rtscts`` a paused local reader stops the reading of the port; the engine's probe
    escape reads again for its answer (else an OK unheard makes payload a CLOSED)."""
    s = RtsctsBench(tmp_path)
    protocol = s.connected()
    port = s.harness.transport
    s.module(b"data\r\nCLOSED\r\n")  # the peer's bytes; the tail is held
    protocol.transport.pauseProducing()  # the local reader is full
    assert port.producerState == "paused"
    s.clock.advance(GUARD)
    assert s.wire() == b"+++"  # the probe
    assert port.producerState == "producing"  # its OK must be heard


def test_a_closing_escape_hears_its_ok_while_the_local_reader_holds_the_port_paused(tmp_path):
    """The closing escape of a session whose local reader paused it reads the port for its OK
    (else the close fails and the modem is taken for mute)."""
    s = RtsctsBench(tmp_path)
    protocol = s.connected()
    port = s.harness.transport
    protocol.transport.pauseProducing()  # the local reader is full
    assert port.producerState == "paused"
    protocol.transport.abortConnection()
    s.clock.advance(GUARD + 0.01)
    assert s.wire() == b"+++"  # the closing escape
    assert port.producerState == "producing"  # its OK must be heard


def test_a_remote_close_while_a_probe_left_data_mode_is_not_a_clean_end(tmp_path):
    """A probe found a CLOSED tail to be payload, but ATO is refused (the remote closed in
    command mode): what it sent after the escape stays in the module (simulator choice 34), so
    the local side hears SocketLost, not a clean EOF."""
    s = SessionBench(tmp_path)
    protocol = s.connected()
    s.module(b"data\r\nCLOSED\r\n")
    s.clock.advance(GUARD)
    assert s.wire() == b"+++"  # the probe
    s.clock.advance(GUARD)
    s.module(OK)  # still in data mode: the tail was payload
    assert s.wire() == b"ATO\r"
    s.module(b"\r\nCLOSED\r\n")  # in command mode: the remote closed meanwhile
    s.module(b"\r\nERROR\r\n")  # ATO: no link to go back to
    assert protocol.received == b"data\r\nCLOSED\r\n"
    assert protocol.reason.check(SocketLost)


def test_a_server_client_that_closes_before_its_connect_frees_the_session(tmp_path):
    """A server's client announced by ``REMOTE IP`` that goes before its CONNECT (the module
    says ``CLOSED`` in command mode, an inference): the waiting session ends and the pool's one
    place is free for the next client."""
    s = SessionBench(tmp_path)
    s.modem.protocol.transparent_server_listening = True
    assert s.modem.sockets.claim(0, "server")
    session = TransparentSession(s.modem, 0, ModuleAddress("TCP", "10.9.9.9", 0),
                                 s.modem.socket_settings(), 0, True)
    session.makeConnection(Protocol())  # as the server's forwarding does on REMOTE IP
    s.module(b"\r\nCLOSED\r\n")  # the client went; the module stays in command mode
    s.clock.advance(60)
    s.module(b"\r\nERROR\r\n")  # whatever AT+QICLOSE may have gone out: there is no link
    s.clock.advance(60)
    assert s.modem.slots_in_use == frozenset()
