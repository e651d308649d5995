"""``reopen = yes`` on transcripts: a tcp profile's link outlives its module socket. The real
Modem on a StringTransport and a task.Clock, the profile's Admission, a local connection on a
StringTransport: after a dead link or a modem down the local connection stays open and unread,
and the new socket's first AT+QISENDs carry exactly the bytes AT+QISACK never showed acked."""

import dataclasses

from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs, formatEvent

from bridge.proxy.admission import Admission
from tests.modem_harness import OK, PLAIN
from tests.socket_bench import (PROFILE, PROMPT, QIRD_0, QISACK_0, REACTIVATE, SEND_OK,
                                LinkBench, open_command, qird, sack)
from tests.test_modem_contexts import TWO_CONTEXTS, TwoContexts, qistate

REOPEN = dataclasses.replace(PROFILE, reopen=True, reopen_timeout=20.0)
#: A keepalive that gives up after the first check and two more, one second apart.
SHORT_KEEPALIVE = dict(keepalive_first=1.0, keepalive_interval=1.0, keepalive_retries=2)
UPLOAD = bytes(range(256)) * 8  # 2048 bytes: one full chunk and 588


class ReopenBench(LinkBench):
    def __init__(self, tmp_path, profile=REOPEN, **config):
        super().__init__(tmp_path, profile=profile, persistent=True,
                         **{**SHORT_KEEPALIVE, **config})

    def sent(self, n: int, data: bytes) -> None:
        """The next command is one AT+QISEND of exactly ``data`` on socket ``n``; answer it."""
        assert self.wire() == b"AT+QISEND=%d,%d\r" % (n, len(data))
        self.module(PROMPT)
        assert self.wire() == data
        self.module(SEND_OK)

    def upload(self, data: bytes) -> None:
        """The local app writes ``data``; it leaves in chunks of 1460 on socket 0."""
        self.local_data(data)
        for start in range(0, len(data), 1460):
            self.sent(0, data[start:start + 1460])

    def keepalive_until_dead(self, sent: int, acked: int) -> None:
        """Every AT+QISACK=0 of the keepalive answers ``sent, acked`` until the link is dead and
        AT+QICLOSE=0 goes out; answer that too."""
        for _ in range(10):
            wire = self.harness.take()
            if wire == b"AT+QICLOSE=0\r":
                self.module(b"\r\n0, CLOSE OK\r\n")
                return
            assert wire == QISACK_0
            self.module(sack(sent, acked))
        raise AssertionError("the keepalive never gave up")

    def reopened(self, n=0) -> None:
        """The backoff's first attempt opens socket ``n`` again."""
        assert self.wire() == b""
        self.clock.advance(1.0)
        self.connect_ok(n)


def lines(events, text):
    return [formatEvent(e) for e in events if text in formatEvent(e)]


def test_a_dead_link_reopens_and_the_new_socket_starts_with_exactly_the_unacked_bytes(tmp_path):
    s = ReopenBench(tmp_path)
    s.upload(UPLOAD)
    with capturedLogs() as events:
        s.keepalive_until_dead(len(UPLOAD), 600)
        assert not s.local.disconnecting and s.local.producerState == "paused"
        s.local_data(b"written meanwhile")  # read before the pause took: kept for the new socket
        s.reopened()
    s.sent(0, (UPLOAD[600:] + b"written meanwhile")[:1460])
    s.sent(0, b"written meanwhile"[-5:])
    assert s.local.producerState == "producing" and not s.local.disconnecting
    assert s.modem.counters.get("link_reopened", cause="no_ack_progress") == 1
    [line] = lines(events, "reopened")
    assert ("[profile:web] link to 10.1.2.3:80 reopened on module socket 0 after 1.0 s "
            "(no_ack_progress: ") in line
    assert line.endswith("1448 unacknowledged bytes sent again, then 17 that were waiting")
    s.module(b"+QIRDI: 0,1,0\r\n")  # the stream goes on both ways on the new socket
    assert s.wire() == b"AT+QIRD=0,1,0,1500\r"
    s.module(b"\r\n+QIRD: 10.1.2.3:80,TCP,5\r\nafter\r\nOK\r\n")
    assert s.local.value() == b"after"


def test_after_a_pdp_deact_the_link_reopens_once_the_modem_is_ready_again(tmp_path):
    s = ReopenBench(tmp_path)
    s.upload(UPLOAD)
    s.module(b"\r\n+PDP DEACT\r\n")  # nothing was known acked: all of it goes again
    assert not s.local.disconnecting and s.local.producerState == "paused"
    s.clock.advance(1.0)  # the first attempt waits for the modem
    s.play(REACTIVATE)
    s.connect_ok()
    s.sent(0, UPLOAD[:1460])
    s.sent(0, UPLOAD[1460:])
    assert s.modem.counters.get("link_reopened", cause="modem_down") == 1
    assert s.local.producerState == "producing"


def test_a_remote_close_is_not_reopened_the_local_side_gets_eof(tmp_path):
    s = ReopenBench(tmp_path)
    s.local_data(b"ask")
    s.sent(0, b"ask")
    s.module(b"\r\n0, CLOSED\r\n")
    assert s.wire() == b"AT+QIRD=0,1,0,1500\r"
    s.module(b"\r\n+QIRD: 10.1.2.3:80,TCP,6\r\nanswer\r\nOK\r\n")
    assert s.wire() == b"AT+QIRD=0,1,0,1500\r"
    s.module(OK)  # drained
    assert s.wire() == QISACK_0  # is "ask" known delivered?
    s.module(sack(3, 3))
    assert s.wire() == b"AT+QICLOSE=0\r"
    s.module(b"\r\n0, CLOSE OK\r\n")
    assert s.local.value() == b"answer" and s.local.disconnecting
    s.clock.advance(60)
    assert s.wire() == b"" and s.modem.counters.get("link_reopened", cause="modem_down") == 0


def test_failed_attempts_back_off_and_past_reopen_timeout_the_local_connection_is_reset(
        tmp_path):
    s = ReopenBench(tmp_path, profile=dataclasses.replace(REOPEN, reopen_timeout=8.0))
    s.upload(b"lost?")
    s.module(b"\r\n+PDP DEACT\r\n")
    s.play(REACTIVATE)
    attempts = []
    with capturedLogs() as events:
        while not s.local.disconnected:
            wire = s.harness.take()
            if wire == b"AT+QIDNSIP=0\r":
                attempts.append(s.clock.seconds())
                s.module(OK)
            elif wire == open_command():
                s.module(OK + b"\r\n0, CONNECT FAIL\r\n")
            elif wire == b"AT+QICLOSE=0\r":
                s.module(b"\r\n0, CLOSE OK\r\n")
            elif wire == b"AT+CSQ\r":  # the modem's own health check, meanwhile
                s.module(b"\r\n+CSQ: 25,0\r\n" + OK)
            else:
                assert wire == b"", wire
                break
    gaps = [b - a for a, b in zip(attempts, attempts[1:])]
    assert gaps == [2.0, 4.0]  # 1 s after the loss, then 2 s, 4 s; the next would be past 8 s
    assert s.local.disconnected  # aborted: a reset, not an EOF
    assert s.modem.counters.get("link_reopen_timeout") == 1
    [line] = lines(events, "not reopened")
    assert "not reopened within 8 s (3 attempts since the last loss; lost by modem_down" in line


def test_a_link_lost_after_the_local_eof_with_everything_acked_is_not_reopened(tmp_path):
    """Nothing is left to carry: a new connection would get an empty request; the reply that
    was coming is lost, so the local side is reset."""
    s = ReopenBench(tmp_path)
    s.local_data(b"request")
    s.sent(0, b"request")
    s.side.readConnectionLost()  # local EOF: flush, wait for the acks, linger
    assert s.wire() == QISACK_0
    s.module(sack(7, 7))
    s.module(b"\r\n+PDP DEACT\r\n")
    assert s.local.disconnected
    s.play(REACTIVATE)
    s.clock.advance(60)
    assert s.wire() == b""


def test_a_local_eof_during_the_reopen_is_repeated_after_the_resend(tmp_path):
    s = ReopenBench(tmp_path)
    s.upload(b"last words")
    s.module(b"\r\n+PDP DEACT\r\n")
    s.side.readConnectionLost()  # the app half-closes while the link reopens
    s.clock.advance(1.0)
    s.play(REACTIVATE)
    s.connect_ok()
    s.sent(0, b"last words")
    assert s.wire() == QISACK_0  # flushing: the tail must be acked before the linger
    s.module(sack(10, 10))
    s.module(b"+QIRDI: 0,1,0\r\n")
    assert s.wire() == b"AT+QIRD=0,1,0,1500\r"
    s.module(b"\r\n+QIRD: 10.1.2.3:80,TCP,5\r\nreply\r\nOK\r\n")
    assert s.local.value() == b"reply" and not s.local.disconnecting


def test_a_local_close_during_the_reopen_still_delivers_what_was_kept(tmp_path):
    s = ReopenBench(tmp_path)
    s.upload(b"final reading")
    s.module(b"\r\n+PDP DEACT\r\n")
    s.side.connectionLost(ConnectionDone())  # the app is gone; its bytes are not
    s.clock.advance(1.0)
    s.play(REACTIVATE)
    s.connect_ok()
    s.sent(0, b"final reading")
    assert s.wire() == QISACK_0
    s.module(sack(13, 13))
    assert s.wire() == b"AT+QICLOSE=0\r"


def test_without_reopen_a_dead_link_resets_the_local_connection(tmp_path):
    s = ReopenBench(tmp_path, profile=PROFILE)
    s.upload(UPLOAD)
    s.keepalive_until_dead(len(UPLOAD), 600)
    assert s.local.disconnected
    s.clock.advance(60)
    assert s.wire() == b""


def test_a_local_eof_during_a_reopen_with_nothing_kept_resets_instead(tmp_path):
    """An idle link lost: everything was acked, so a reopen starts; the app's EOF meanwhile
    leaves nothing to carry, and the reply it waits for cannot come."""
    s = ReopenBench(tmp_path)
    s.local_data(b"request")
    s.sent(0, b"request")
    s.clock.advance(1.0)  # the keepalive's first check: all acked
    assert s.wire() == QISACK_0
    s.module(sack(7, 7))
    s.module(b"\r\n+PDP DEACT\r\n")
    assert not s.local.disconnecting and s.socket.stats()["state"] == "reopening"
    s.side.readConnectionLost()
    assert s.local.disconnected
    s.play(REACTIVATE)
    s.clock.advance(60)
    assert s.wire() == b""


def test_a_reboot_during_a_send_reopens_at_once_with_the_send_counted_unacked(tmp_path):
    """The AT+QISEND on the wire died with the old power cycle: the modem hears of the restart
    before that send fails, so the link is lost to the modem going down (a reopen cause), not
    to a failed send; the bring-up does not wait for the send's 20 s limit."""
    s = ReopenBench(tmp_path)
    s.upload(b"a" * 100)
    s.local_data(b"b" * 50)
    assert s.wire() == b"AT+QISEND=0,50\r"
    s.module(PROMPT)
    assert s.wire() == b"b" * 50
    s.module(b"\r\nRDY\r\n")  # no SEND OK: the module restarted
    assert s.wire() == b"AT\r"  # the bring-up, at once
    assert s.socket.stats()["state"] == "reopening" and not s.local.disconnecting
    s.module(OK)
    s.play(PLAIN[1:])
    s.clock.advance(1.0)
    s.connect_ok()
    s.sent(0, b"a" * 100 + b"b" * 50)
    assert s.modem.counters.get("link_reopened", cause="modem_down") == 1
    assert s.modem.counters.get("link_dead", cause="send_error") == 0


def test_a_remote_that_accepts_but_never_acknowledges_is_given_up_after_reopen_timeout(
        tmp_path):
    """Each reopen connects, and its resent bytes are never acked: the link carries nothing.
    ``reopen_timeout`` counts from the first loss, not from each reopen, or it would go on
    reopening for ever."""
    s = ReopenBench(tmp_path, profile=dataclasses.replace(REOPEN, reopen_timeout=20.0))
    s.upload(b"stuck" * 10)
    opens, closes, sent = [], [], 50
    with capturedLogs() as events:
        while not s.local.disconnected:
            s.clock.advance(0.05)
            wire = s.wire()
            if not wire:
                continue
            if wire.startswith(b"AT+QIOPEN="):
                opens.append(s.clock.seconds())
                s.module(OK + b"\r\n0, CONNECT OK\r\n")
            elif wire.startswith(b"AT+QISEND="):
                s.module(PROMPT)
                s.wire()  # the payload
                s.module(SEND_OK)
            elif wire == QISACK_0:
                s.module(sack(sent, 0))
            elif wire == b"AT+QICLOSE=0\r":
                closes.append(s.clock.seconds())
                s.module(b"\r\n0, CLOSE OK\r\n")
            elif wire in (b"AT+QIDNSIP=0\r", b"AT+CSQ\r"):
                s.module(b"\r\n+CSQ: 25,0\r\n" + OK if wire == b"AT+CSQ\r" else OK)
            else:
                raise AssertionError(wire)
    assert len(opens) >= 4  # each reopen connected, and carried nothing
    assert abs(s.clock.seconds() - closes[0] - 20.0) < 0.1  # from the first loss (0.05 s steps)
    assert s.modem.counters.get("link_reopen_timeout") == 1
    [line] = lines(events, "resetting its local connection")
    assert "carried nothing through reopens for 20 s" in line


STATE_HEAD = OK + b"\r\nSTATE: IP PROCESSING\r\n"
PDP_DEACT = b"\r\n+PDP DEACT\r\n"


def socket_lines(state0: bytes) -> bytes:
    """The six +QISTATE lines (socket 0 in ``state0``, the others free) and the final OK."""
    return (b'+QISTATE: 0,"TCP","10.1.2.3",80,"%s"\r\n' % state0
            + b"".join(b'+QISTATE: %d,"","",,"INITIAL"\r\n' % n for n in range(1, 6)) + OK)


def sent_in_chunks(s: ReopenBench, data: bytes) -> None:
    for start in range(0, len(data), 1460):
        s.sent(0, data[start:start + 1460])


def test_two_contexts_a_pdp_deact_during_a_send_reopens_the_link_instead_of_resetting_it(
        tmp_path):
    """With both PDP contexts in use, ``+PDP DEACT`` does not take the sockets down at once: the
    modem first asks each context which one is gone. The AT+QISEND on the wire meanwhile answers
    ERROR (the socket closed under its payload, simulator choice 22): that waits for the answer,
    so the link goes down with its context (a reopen), not with a failed send (a reset)."""
    h, side, local = two_context_link(tmp_path)
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
    assert not local.disconnected
    h.play([(b"AT+QISTATE", qistate(b"PDP DEACT")),  # context 0 is the one selected
            (b"AT+QIFGCNT=1", OK), (b"AT+QISTATE", qistate(b"IP GPRSACT"))])
    assert not local.disconnected and side.module.transport.stats()["state"] == "reopening"
    assert h.modem.counters.get("link_dead", cause="send_error") == 0


def test_a_remote_close_inside_the_idle_check_answer_gives_eof_and_reopens_nothing(tmp_path):
    """URCs arrive anywhere, also inside a command's answer (docs/at-dialect.md §8.1). The remote
    closes an idle link while the keepalive's AT+QISTATE is out: ``0, CLOSED`` comes inside its
    answer, whose socket line then reads CLOSED. The socket already knows of the remote close
    and drains: the keepalive stopped with it, so the answer cannot call the link dead (which
    would drop the remote's last bytes and reopen to a server that closed it)."""
    s = ReopenBench(tmp_path, keepalive_idle=30.0)
    s.local_data(b"hello")
    s.sent(0, b"hello")
    assert s.harness.take() == QISACK_0
    s.module(sack(5, 5))
    assert s.harness.take() == b"AT+QISTATE\r"  # idle 30 s: is the socket still connected?
    s.module(STATE_HEAD + b"\r\n+QIRDI: 0,1,0\r\n\r\n0, CLOSED\r\n")  # "bye", then FIN
    s.module(socket_lines(b"CLOSED"))
    assert s.socket.stats()["state"] == "draining"
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
    """An AT+QIRD on the wire when the module goes mute times out before the resyncs find the
    module mute: ``read_timeout``, a reopen cause (a read writes no payload, so the uplink
    stream is intact; only downlink may be lost, which a reopen allows)."""
    s = ReopenBench(tmp_path)
    s.upload(b"reading 1\n")
    s.module(b"+QIRDI: 0,1,0\r\n")
    assert s.wire() == QIRD_0
    while s.modem.ready:  # the module says nothing any more
        assert s.harness.take() == b"\x1bAT\r"
    assert s.modem.counters.get("module_mute") == 1
    assert s.modem.counters.get("link_dead", cause="read_error") == 0
    assert not s.local.disconnected
    assert s.socket.stats()["state"] == "reopening"


def test_stopping_the_modem_while_a_link_waits_to_reopen_ends_the_link(tmp_path):
    """The daemon stopping reopens nothing: the modem's stop cancels the ``when_ready`` a reopen
    attempt waits on, and the link ends then, not at its deadline."""
    s = ReopenBench(tmp_path)
    s.upload(b"abc")
    s.module(PDP_DEACT)
    s.clock.advance(1.0)  # the first attempt waits for the modem
    s.modem.stopService()
    assert s.local.disconnected
    s.clock.advance(30)
    assert s.modem.counters.get("link_reopen_timeout") == 0


def test_two_reopens_in_a_row_resend_from_the_last_acknowledged_stream_offset(tmp_path):
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


def test_a_local_close_while_the_reopen_opens_closes_the_late_socket(tmp_path):
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


def test_a_give_up_while_the_reopen_opens_resets_and_closes_the_late_socket(tmp_path):
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


def test_pushed_receive_mode_reopens_and_the_downlink_goes_on(tmp_path):
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


def test_a_reopened_link_whose_resend_was_acked_is_not_given_up_when_the_app_stays_silent(
        tmp_path):
    """The acks of the resent bytes come in answers to the keepalive, not with a write: the
    stall deadline looks at them before it resets anything."""
    s = ReopenBench(tmp_path, profile=dataclasses.replace(REOPEN, reopen_timeout=10.0))
    s.upload(b"reading")
    s.module(b"\r\n+PDP DEACT\r\n")
    s.clock.advance(1.0)
    s.play(REACTIVATE)
    s.connect_ok()
    s.sent(0, b"reading")
    s.clock.advance(1.0)  # the keepalive's first check
    assert s.wire() == QISACK_0
    s.module(sack(7, 7))
    s.clock.advance(60)  # the app says nothing more, nor does the remote
    assert not s.local.disconnecting and s.modem.counters.get("link_reopen_timeout") == 0


def test_an_idle_link_reopened_with_nothing_to_resend_is_carrying(tmp_path):
    s = ReopenBench(tmp_path, profile=dataclasses.replace(REOPEN, reopen_timeout=10.0))
    idle_link_lost(s)
    s.clock.advance(1.0)
    s.play(REACTIVATE)
    s.connect_ok()
    s.clock.advance(60)
    assert not s.local.disconnecting and s.socket.stats()["state"] == "connected"


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
    """The remote closed (the server decided). The module goes mute during the drain's AT+QIRD:
    the remote's last bytes are lost, so the local side is reset, not carried on a new
    connection to a server that closed it."""
    s = ReopenBench(tmp_path)
    remote_closed_while_reading(s)
    while s.modem.ready:  # the module says nothing any more
        assert s.harness.take() == b"\x1bAT\r"
    assert s.modem.counters.get("link_dead", cause="read_timeout") == 1  # before the ladder
    assert s.socket is None  # the link ended: nothing reopens
    assert s.local.disconnected


def test_a_modem_down_while_draining_after_a_remote_close_does_not_reopen(tmp_path):
    """The same with +PDP DEACT during the drain."""
    s = ReopenBench(tmp_path)
    remote_closed_while_reading(s)
    s.module(PDP_DEACT)
    assert s.socket is None  # the link ended: nothing reopens
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
    second question, under way, finds context 0 down. The ERROR waits for every question to be
    answered, not only the first."""
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
    """Both contexts drop: two +PDP DEACT, each starts find_lost_context; both end cleanly (the
    waiters of the doubt are released once, by the last)."""
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
