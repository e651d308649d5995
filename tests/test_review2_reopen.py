"""Second review of reopen = yes (the fixes of the first review): failing transcripts of the
bugs found, in the style of tests/test_persistent_link.py."""

from twisted.internet.testing import StringTransport

from bridge.proxy.admission import Admission
from tests.modem_harness import OK
from tests.socket_bench import (PROMPT, QIRD_0, QISACK_0, SEND_OK, open_command, sack)
from tests.test_modem_contexts import TWO_CONTEXTS, TwoContexts, qistate
from tests.test_persistent_link import (PDP_DEACT, REACTIVATE, REOPEN, ReopenBench,
                                        idle_link_lost)


def test_an_idle_link_reopened_with_nothing_kept_is_not_reset_at_reopen_timeout(tmp_path):
    """An idle link (all acked) lost to +PDP DEACT reopens onto a healthy socket. Neither side
    has anything to say for a while: the link is connected and well, so ``reopen_timeout``
    (20 s) must not reset it."""
    s = ReopenBench(tmp_path)
    idle_link_lost(s)
    link = s.socket
    s.clock.advance(1.0)
    s.play(REACTIVATE)
    s.connect_ok()
    assert link.stats()["state"] == "connected"
    s.clock.advance(25.0)  # nobody speaks; keepalive_idle (480 s) is far off
    assert not s.local.disconnected
    assert s.modem.counters.get("link_reopen_timeout") == 0


def test_a_reopened_link_whose_resent_bytes_are_acked_is_not_reset_while_both_sides_rest(
        tmp_path):
    """The kept bytes go again on the new socket and the remote acks every one of them (the
    keepalive's AT+QISACK says so). Then the app and the remote are silent past
    ``reopen_timeout``: the link carried, so it must not be reset."""
    s = ReopenBench(tmp_path)
    s.upload(b"request")
    s.module(PDP_DEACT)
    s.clock.advance(1.0)
    s.play(REACTIVATE)
    s.connect_ok()
    s.sent(0, b"request")
    s.clock.advance(1.0)
    assert s.wire() == QISACK_0
    s.module(sack(7, 7))  # the remote has it all
    assert s.socket.socket.acknowledged == 7
    s.clock.advance(25.0)
    assert not s.local.disconnected
    assert s.modem.counters.get("link_reopen_timeout") == 0


def remote_closed_while_reading(s: ReopenBench) -> None:
    """The app's request is acked, the remote answers and closes: the socket drains with an
    AT+QIRD on the wire."""
    s.local_data(b"ask")
    s.sent(0, b"ask")
    s.clock.advance(1.0)
    assert s.wire() == QISACK_0
    s.module(sack(3, 3))
    s.module(b"\r\n0, CLOSED\r\n")
    assert s.socket.stats()["state"] == "draining"
    assert s.wire() == QIRD_0


def test_a_read_timeout_while_draining_after_a_remote_close_does_not_reopen(tmp_path):
    """The remote closed (the server decided: README, Persistent TCP links: "no"). The module
    goes mute during the drain's AT+QIRD: the remote's last bytes are lost, so the local side
    is reset; it must not be carried on a new connection to a server that closed it."""
    s = ReopenBench(tmp_path)
    remote_closed_while_reading(s)
    while s.modem.ready:  # the module says nothing any more
        assert s.harness.take() == b"\x1bAT\r"
    assert s.modem.counters.get("link_dead", cause="read_timeout") == 1  # before the ladder
    assert s.socket.stats()["state"] != "reopening"
    assert s.local.disconnected


def test_a_modem_down_while_draining_after_a_remote_close_does_not_reopen(tmp_path):
    """The same with +PDP DEACT during the drain (older than the commit under review: the same
    class as its fix of the idle check that reopened a closed link)."""
    s = ReopenBench(tmp_path)
    remote_closed_while_reading(s)
    s.module(PDP_DEACT)
    assert s.socket.stats()["state"] != "reopening"
    assert s.local.disconnected


def two_context_link(tmp_path):
    """A modem with both contexts in use, and a reopen link on context 0 (socket 0)."""
    h = TwoContexts(tmp_path / "state").up(TWO_CONTEXTS)
    admission = Admission(REOPEN, h.modem)
    side = admission.buildProtocol(None)
    local = StringTransport()
    side.makeConnection(local)
    h.play([(b"AT+QIFGCNT=0", OK), (b"AT+QIDNSIP=0", OK),
            (open_command()[:-1], OK + b"\r\n0, CONNECT OK\r\n")])
    return h, side, local


def test_two_contexts_a_second_pdp_deact_keeps_an_error_in_doubt_until_its_own_answer(
        tmp_path):
    """Context 1 drops (+PDP DEACT); while the modem asks which context went, context 0 drops
    too (a second +PDP DEACT) and the link's AT+QISEND on context 0 answers ERROR. The first
    question's answers show context 1 alone down (context 0 was still up when asked); the
    second question, under way, would find context 0 down. The ERROR must wait for that
    answer; the first answer released it and the link was reset on a send_error."""
    h, side, local = two_context_link(tmp_path)
    side.dataReceived(b"a" * 100)
    h.play([(b"AT+QISEND=0,100", PROMPT)])
    assert h.take() == b"a" * 100
    h.recv(PDP_DEACT)  # context 1 goes: the modem asks AT+QISTATE of each context
    h.recv(SEND_OK)
    side.dataReceived(b"b" * 50)
    h.play([(b"AT+QISTATE", qistate(b"IP STATUS", 0))])  # context 0 still up
    assert h.take() == b"AT+QISEND=0,50\r"
    h.recv(PDP_DEACT + b"\r\nERROR\r\n")  # context 0 goes too, under this send
    h.play([(b"AT+QIFGCNT=1", OK), (b"AT+QISTATE", qistate(b"PDP DEACT"))])
    # The first question is answered (context 1 alone); the second one is still asking.
    assert h.modem.counters.get("link_dead", cause="send_error") == 0
    assert not local.disconnected


def test_two_contexts_two_pdp_deacts_in_a_row_are_traced_without_an_error(tmp_path):
    """Both contexts drop: two +PDP DEACT, each starts find_lost_context. The second one's end
    must not fail (it found ``_tracing`` None and iterated it: TypeError, an unhandled error
    in a Deferred the modem drops)."""
    h, side, local = two_context_link(tmp_path)
    first, second = h.modem.find_lost_context(), h.modem.find_lost_context()  # as _on_event
    outcomes = []
    for traced in (first, second):
        traced.addBoth(outcomes.append)
    gone = qistate(b"PDP DEACT")
    h.play([(b"AT+QISTATE", gone), (b"AT+QISTATE", gone),  # context 0, for each question
            (b"AT+QIFGCNT=1", OK), (b"AT+QISTATE", gone)])  # the first one's context 1
    assert not h.modem.ready  # both down: the whole modem re-activates
    h.play([(b"AT+QISTATE", gone)])  # the second one's context 1
    assert outcomes == [None, None]
