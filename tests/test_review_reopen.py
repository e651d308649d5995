"""Review of ``reopen = yes`` on tcp profiles: transcripts on the socket bench (exact UART bytes,
task.Clock).

The first tests FAIL on purpose: each shows a case where the promise of README "Persistent TCP
links" is broken (a link reset instead of reopened, a remote close taken for a dead link, a
daemon stop that leaves a link hanging). The tests after ``-- checked, found right --`` pass:
they cover what the existing tests do not (two reopens in a row, a close or a give-up while the
reopen's AT+QIOPEN is out, pushed receive mode) and stay as regression tests.
"""

import dataclasses

from twisted.internet.testing import StringTransport

from bridge.proxy.admission import Admission
from tests.modem_harness import OK
from tests.socket_bench import (PROFILE, PROMPT, QIRD_0, QISACK_0, REACTIVATE, SEND_OK,
                                open_command, qird, sack)
from tests.test_modem_contexts import TWO_CONTEXTS, TwoContexts
from tests.test_persistent_link import REOPEN, UPLOAD, ReopenBench

STATE_HEAD = OK + b"\r\nSTATE: IP PROCESSING\r\n"
PDP_DEACT = b"\r\n+PDP DEACT\r\n"


def socket_lines(state0: bytes) -> bytes:
    """The six +QISTATE lines (socket 0 in ``state0``, the others free) and the final OK."""
    return (b'+QISTATE: 0,"TCP","10.1.2.3",80,"%s"\r\n' % state0
            + b"".join(b'+QISTATE: %d,"","",,"INITIAL"\r\n' % n for n in range(1, 6)) + OK)


def sent_in_chunks(s: ReopenBench, data: bytes) -> None:
    for start in range(0, len(data), 1460):
        s.sent(0, data[start:start + 1460])


# -- findings (these fail) ------------------------------------------------------------------------

def test_two_contexts_a_pdp_deact_during_a_send_reopens_the_link_instead_of_resetting_it(
        tmp_path):
    """With both PDP contexts in use, ``+PDP DEACT`` does not take the sockets down at once: the
    modem first asks each context which one is gone. The AT+QISEND on the wire meanwhile answers
    ERROR (the socket closed under its payload, simulator choice 22), the socket fails with cause
    ``send_error``, which is no reopen cause: the local connection is reset although README says
    a +PDP DEACT of the profile's context reopens. (End to end, an upload through the simulator
    with ``context = 0`` and apn1 set is reset so in 6 runs out of 7.)"""
    h = TwoContexts(tmp_path / "state").up(TWO_CONTEXTS)
    admission = Admission(dataclasses.replace(PROFILE, reopen=True, reopen_timeout=20.0), h.modem)
    side = admission.buildProtocol(None)
    local = StringTransport()
    side.makeConnection(local)
    h.play([(b"AT+QIFGCNT=0", OK), (b"AT+QIDNSIP=0", OK),
            (open_command()[:-1], OK + b"\r\n0, CONNECT OK\r\n")])
    side.dataReceived(b"a" * 100)
    h.play([(b"AT+QISEND=0,100", PROMPT)])
    assert h.take() == b"a" * 100
    h.recv(SEND_OK)
    side.dataReceived(b"b" * 50)
    h.play([(b"AT+QISEND=0,50", PROMPT)])
    assert h.take() == b"b" * 50
    h.recv(PDP_DEACT)  # the network drops context 0 while the payload is typed
    h.recv(b"\r\nERROR\r\n")
    assert h.modem.counters.get("link_dead", cause="send_error") == 0
    assert not local.disconnected, "the local connection was reset instead of kept for a reopen"


def test_a_remote_close_inside_the_idle_check_answer_gives_eof_and_reopens_nothing(tmp_path):
    """URCs arrive anywhere, also inside a command's answer (docs/at-dialect.md §8.1). The remote
    closes an idle link while the keepalive's AT+QISTATE is out: ``0, CLOSED`` comes inside its
    answer, whose socket line then reads CLOSED. The socket already knows of the remote close
    (it drains), yet the answer's "not CONNECTED" fails it as a dead link
    (``idle_not_connected``): the remote's last bytes are dropped, and the link reopens to a
    server that closed it, where README promises EOF and no reopen."""
    s = ReopenBench(tmp_path, keepalive_idle=30.0)
    s.local_data(b"hello")
    s.sent(0, b"hello")
    assert s.harness.take() == QISACK_0
    s.module(sack(5, 5))
    assert s.harness.take() == b"AT+QISTATE\r"  # idle 30 s: is the socket still connected?
    s.module(STATE_HEAD + b"\r\n+QIRDI: 0,1,0\r\n\r\n0, CLOSED\r\n")  # "bye", then FIN
    s.module(socket_lines(b"CLOSED"))
    assert s.socket.stats()["state"] == "draining", "a remote close was taken for a dead link"
    assert s.wire() == QIRD_0
    s.module(qird(b"bye"))
    assert s.wire() == QIRD_0
    s.module(b"\r\nERROR\r\n")  # drained (simulator choice 27)
    assert s.wire() == b"AT+QICLOSE=0\r"
    s.module(b"\r\n0, CLOSE OK\r\n")
    assert s.local.value() == b"bye" and s.local.disconnecting and not s.local.disconnected
    s.clock.advance(60)
    assert s.wire() == b"" and s.modem.counters.get("link_reopened",
                                                    cause="idle_not_connected") == 0


def test_a_module_gone_mute_while_it_reads_reopens_the_link_like_any_mute_spell(tmp_path):
    """README: "a mute module's recovery" reopens. It does when an AT+QISACK or nothing is on the
    wire as the module goes mute, but not when an AT+QIRD is: its timeout fails the socket with
    ``read_error`` (no reopen cause) at 5 s, before the resyncs find the module mute, so the
    local connection is reset. The uplink stream is intact (a read writes no payload); only
    downlink may be lost, which a reopen allows. (The same happens to an AT+QISEND whose payload
    was written and whose SEND OK never comes: ``stream_corrupt``.)"""
    s = ReopenBench(tmp_path)
    s.upload(b"reading 1\n")
    s.module(b"+QIRDI: 0,1,0\r\n")
    assert s.wire() == QIRD_0
    while s.modem.ready:  # the module says nothing any more
        assert s.harness.take() == b"\x1bAT\r"
    assert s.modem.counters.get("module_mute") == 1
    assert s.modem.counters.get("link_dead", cause="read_error") == 0
    assert not s.local.disconnected, "the local connection was reset instead of kept"
    assert s.socket.stats()["state"] == "reopening"


def test_stopping_the_modem_while_a_link_waits_to_reopen_ends_the_link(tmp_path):
    """README: the daemon stopping reopens nothing. A link whose reopen attempt already waits for
    the modem (``when_ready``) is not told: the stop neither ends it nor cancels its wait (the
    modem never fails its ``when_ready`` waiters); only the reopen deadline ends it, 20 s later,
    counted and logged as a reopen timeout of a daemon that has stopped."""
    s = ReopenBench(tmp_path)
    s.upload(b"abc")
    s.module(PDP_DEACT)
    s.clock.advance(1.0)  # the first attempt waits for the modem
    s.modem.stopService()
    assert s.local.disconnected, "the local connection outlives the daemon's stop"
    s.clock.advance(30)
    assert s.modem.counters.get("link_reopen_timeout") == 0


# -- checked, found right (these pass; not covered by the existing tests) -------------------------

def test_checked_two_reopens_in_a_row_resend_from_the_last_acknowledged_stream_offset(tmp_path):
    """The kept bytes' offsets across two reopens: the second connection starts at the first
    byte the second socket never showed acked (stream offset 600 + 1000), then what followed."""
    s = ReopenBench(tmp_path)
    s.upload(UPLOAD)  # stream [0, 2048)
    s.keepalive_until_dead(len(UPLOAD), 600)
    s.local_data(b"X" * 100)  # read before the pause took
    s.reopened()
    second = UPLOAD[600:] + b"X" * 100
    sent_in_chunks(s, second)
    s.clock.advance(1.0)
    assert s.wire() == QISACK_0
    s.module(sack(len(second), 1000))
    s.local_data(b"Y" * 10)
    s.sent(0, b"Y" * 10)
    s.module(PDP_DEACT)
    s.clock.advance(1.0)
    s.play(REACTIVATE)
    s.connect_ok()
    sent_in_chunks(s, (UPLOAD + b"X" * 100 + b"Y" * 10)[1600:])
    assert s.wire() == b"" and s.socket.reopens == 2
    assert s.local.producerState == "producing" and not s.local.disconnecting


def idle_link_lost(s: ReopenBench) -> None:
    """Everything sent is acked, then +PDP DEACT: a reopen starts with nothing kept."""
    s.local_data(b"request")
    s.sent(0, b"request")
    s.clock.advance(1.0)
    assert s.wire() == QISACK_0
    s.module(sack(7, 7))
    s.module(PDP_DEACT)


def test_checked_a_local_close_while_the_reopen_opens_closes_the_late_socket(tmp_path):
    s = ReopenBench(tmp_path)
    idle_link_lost(s)
    link = s.socket
    s.clock.advance(1.0)
    s.play(REACTIVATE)
    assert s.wire() == b"AT+QIDNSIP=0\r"
    s.module(OK)
    assert s.wire() == open_command()
    s.side.connectionLost(None)  # the app goes away, nothing left to carry
    assert link.ended and link.stats()["state"] == "reopening"
    s.module(OK + b"\r\n0, CONNECT OK\r\n")
    assert s.wire() == b"AT+QICLOSE=0\r"  # the socket it opened anyway, closed at once
    s.module(b"\r\n0, CLOSE OK\r\n")
    assert link.socket is None and s.modem.slots_in_use == frozenset()
    s.clock.advance(60)
    assert s.harness.take() in (b"", b"AT+CSQ\r")


def test_checked_a_give_up_while_the_reopen_opens_resets_and_closes_the_late_socket(tmp_path):
    s = ReopenBench(tmp_path, profile=dataclasses.replace(REOPEN, reopen_timeout=3.5))
    s.upload(b"abc")
    s.module(PDP_DEACT)
    link = s.socket
    s.play(REACTIVATE)
    assert s.harness.take() == b"AT+QIDNSIP=0\r"  # 1 s after the loss
    s.module(OK)
    assert s.wire() == open_command()
    s.module(OK)  # CONNECT OK still to come
    s.clock.advance(3.0)
    assert s.local.disconnected and s.modem.counters.get("link_reopen_timeout") == 1
    s.module(b"\r\n0, CONNECT OK\r\n")
    assert s.wire() == b"AT+QICLOSE=0\r"
    s.module(b"\r\n0, CLOSE OK\r\n")
    assert link.socket is None and s.modem.slots_in_use == frozenset()


def test_checked_pushed_receive_mode_reopens_and_the_downlink_goes_on(tmp_path):
    s = ReopenBench(tmp_path, receive="push")
    s.upload(b"abc")
    s.module(b"\r\n+RECEIVE: 0, 5\r\nhello")
    s.module(PDP_DEACT)
    s.clock.advance(1.0)
    s.play(REACTIVATE)
    s.connect_ok()
    s.sent(0, b"abc")
    s.module(b"\r\n+RECEIVE: 0, 5\r\nworld")
    assert s.local.value() == b"helloworld" and s.local.producerState == "producing"
    assert s.modem.counters.get("link_reopened", cause="modem_down") == 1
