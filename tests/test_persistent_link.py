"""``reopen = yes`` on transcripts: a tcp profile's link outlives its module socket. The real
Modem on a StringTransport and a task.Clock, the profile's Admission, a local connection on a
StringTransport: after a dead link or a modem down the local connection stays open and unread,
and the new socket's first AT+QISENDs carry exactly the bytes AT+QISACK never showed acked."""

import dataclasses

from twisted.internet.error import ConnectionDone
from twisted.logger import capturedLogs, formatEvent

from tests.modem_harness import OK, PLAIN
from tests.socket_bench import (PROFILE, PROMPT, QISACK_0, REACTIVATE, SEND_OK, LinkBench,
                                open_command, sack)

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
    assert "not reopened within 8 s (3 attempts; lost by modem_down" in line


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
