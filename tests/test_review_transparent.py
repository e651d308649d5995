"""Review findings on transparent mode, each a failing test (transcripts: the real Modem or the
AT engine on a StringTransport and task.Clock, exact UART bytes)."""

from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol

from bridge.modem.session import TransparentSession
from bridge.modem.socket import ModuleAddress, SocketLost

from tests.modem_harness import OK, SYNC, transparent
from tests.socket_bench import PACKETISATION, ModemBench, SessionBench
from tests.test_transparent_session import (CLOSE_OK, GUARD, PROBE_WAIT, QICLOSE, QISACK,
                                            RESYNC, to_a_check)


def test_a_local_close_during_a_check_whose_escape_goes_unanswered_still_frees_the_session(
        tmp_path):
    """The local side closes while a keepalive check's ``+++`` waits for its OK, and that OK
    never comes. The session is CLOSING, so ``_check_escape_failed`` skips ``abandon()``;
    ``_leave_module`` had returned early because a check was in flight; nothing else is left to
    act. The session stays CLOSING for ever: the pool's one place is never released (every
    later connection of every profile waits until its queue_timeout), the engine believes it is
    still in data mode (no command is ever written again, the recovery never starts) and
    ``healthy()`` keeps saying yes. Expected: as when the check's escape fails on an open
    session (test_a_check_whose_escape_goes_unanswered_is_socket_lost_and_resyncs): abandon,
    the resync's escape and ESC AT, then AT+QICLOSE, and the place is free."""
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
    """The module answers ``+++`` only after its own guard of silence after the last '+' (app
    note §4: >= 0.5 s); until then it is in data mode and whatever the peer sends is payload.
    The engine takes any ``\\r\\nOK\\r\\n`` tail after its '+++' as the answer: a peer whose
    stream carries an OK line (a text protocol, an AT-speaking device behind the remote end)
    makes the bridge write AT+QISACK at once, inside the module's trailing guard. That byte
    breaks the escape (a character less than 0.5 s after the last '+'), the module stays in
    data mode and passes ``AT+QISACK\\r`` (then ATO, or AT+QICLOSE) to the peer as payload,
    the very thing transparent mode must never do; the peer's OK is lost from its stream too.
    Expected: an OK sooner than the module's guard (0.5 s) after the '+++' left is the peer's
    data: delivered, and nothing is written."""
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
    """With ``rtscts`` a paused local reader stops the reading of the port (the module is held
    back by RTS). ``_read_port`` resumes reading for the session's own escapes (``_away``), but
    a probe escape is the engine's: the session only learns of it if it happens to write
    meanwhile. So a held ``CLOSED`` tail probed while the local reader is paused: the module,
    still in data mode, answers OK, but the port is not read; the probe times out and the
    engine concludes the module said CLOSED. The peer's bytes (``\\r\\nCLOSED\\r\\n``) are
    dropped, the local side gets EOF on a live link, and the resync/AT+QICLOSE that follow
    also wait behind a paused port. Expected: reading resumes while any escape (probe
    included) waits for its answer."""
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
    """Same hole as the probe's, on the session's own close: ``_leave_module`` escapes without
    setting ``_away``, so with ``rtscts`` and a local reader that paused the session (a slow
    reader, then abortConnection or loseConnection) the port stays unread while the closing
    ``+++`` waits for its OK. The OK is never read: the escape 'fails', the session abandons
    data mode, the resync's ESC AT is not heard either, every resync attempt fails and the
    modem is taken down for recovery, all because a local client closed. The same happens to a
    transparent server's client whose local service refuses the connection: ``_reach_local``
    pauses the session (nothing read until the local service answers), and the abort that
    follows escapes, or waits for a CONNECT, with the port unread. Expected: reading resumes
    for every escape (and for a CONNECT awaited)."""
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
    """A probe escape found a ``CLOSED`` tail to be payload (OK) and asks ATO; meanwhile, in
    command mode, the remote closes: the module says ``CLOSED`` as a URC and answers ATO with
    ERROR (simulator choice 34: what the remote sent after the escape stays in the module,
    readable only with AT+QIRD). For a keepalive check the session calls this SocketLost
    (``remote_closed_away``: what came meanwhile cannot be read), but ``socket_event`` looks
    only at ``_away``, which a probe does not set unless the session wrote during it; and
    ``_resume_failed`` ends data mode as 'closed', so the local side gets a clean EOF
    (ConnectionDone) although the remote's last bytes may be lost. Expected: SocketLost, as
    after a check."""
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
    """A transparent server's client is announced by ``REMOTE IP`` and its session made at
    once, waiting for the unprompted CONNECT (``_awaiting_connect``). If the client goes before
    the module switches to data mode, the module says ``CLOSED`` in command mode and no CONNECT
    comes (an inference: the app note does not say what a module prints then).
    ``socket_event`` ignores a Closed unless ``_away``, and ``_leave_module`` returns early
    while ``_awaiting_connect``: even a local abort leaves the session waiting for ever.
    The pool's one place stays taken, so the server refuses every later client (its index is
    'taken') and the modem never serves again. Expected: the CLOSED URC ends the waiting session
    (the module has no link: an AT+QICLOSE answered ERROR or nothing at all) and frees the
    place."""
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
