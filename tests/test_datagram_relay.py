"""A udp profile's relay on transcripts: sessions keyed by the local source, idle expiry, the
bounded queue (count and age), max_links, reopen after the modem went down, and drops counted by
cause. The modem is the real one (push receive) on a StringTransport and a task.Clock."""

from twisted.logger import capturedLogs, formatEvent

from bridge.at import commands
from bridge.config import Listen, ProfileConfig, Remote
from bridge.proxy.datagram import DatagramRelay
from tests.modem_harness import OK
from tests.socket_bench import PROMPT, REACTIVATE, SEND_OK, ModemBench

UDP = Remote("UDP", "10.1.2.3", 53)
A, B, C, D = (("127.0.0.1", port) for port in (4001, 4002, 4003, 4004))


class LocalPort:
    """The profile's bound UDP port: what the relay writes back to local sources."""

    def __init__(self):
        self.sent = []

    def write(self, data, addr):
        self.sent.append((data, addr))


class RelayBench(ModemBench):
    def __init__(self, tmp_path, persistent=False, **profile):
        super().__init__(tmp_path, receive="push", persistent=persistent)
        self.profile = ProfileConfig("dns", Listen("udp", "udp:0", 0, "127.0.0.1"), UDP,
                                     modem="main", **profile)
        self.relay = DatagramRelay(self.profile, self.modem)
        self.local = LocalPort()
        self.relay.makeConnection(self.local)

    def datagram(self, data: bytes, source) -> None:
        self.relay.datagramReceived(data, source)

    def sent_up(self, n: int, data: bytes) -> None:
        """The relay's next command is one AT+QISEND of ``data`` on socket ``n``; answer it."""
        assert self.wire() == b"AT+QISEND=%d,%d\r" % (n, len(data))
        self.module(PROMPT)
        assert self.wire() == data
        self.module(SEND_OK)

    def session(self, source, first: bytes, n=0) -> None:
        """``first`` from a new ``source`` opens module socket ``n`` and goes out on it."""
        self.datagram(first, source)
        self.connect_ok(n, UDP)
        self.sent_up(n, first)

    def pushed(self, n: int, data: bytes) -> None:
        self.module(b"\r\n+RECEIVE: %d, %d\r\n" % (n, len(data)) + data)

    def closed(self, n: int) -> None:
        assert self.wire() == b"AT+QICLOSE=%d\r" % n
        self.module(b"\r\n%d, CLOSE OK\r\n" % n)


def lines(events, text):
    return [formatEvent(e) for e in events if text in formatEvent(e)]


def test_each_source_gets_its_own_module_socket_and_its_own_replies(tmp_path):
    s = RelayBench(tmp_path)
    s.session(A, b"from a")
    s.session(B, b"from b", 1)
    s.datagram(b"a again", A)
    s.sent_up(0, b"a again")  # the same session: no new open
    s.pushed(1, b"to b")
    s.pushed(0, b"\r\nOK\r\n")
    assert s.local.sent == [(b"to b", B), (b"\r\nOK\r\n", A)]
    stats = s.relay.stats()
    assert (stats["sessions"], stats["started"]) == (2, 2)
    assert (stats["datagrams_up"], stats["bytes_up"]) == (3, 19)
    assert (stats["datagrams_down"], stats["bytes_down"]) == (2, 10)
    assert stats["drops"] == {}


def test_an_idle_session_closes_its_socket_and_the_next_datagram_starts_a_new_one(tmp_path):
    s = RelayBench(tmp_path, udp_idle=30)
    s.session(A, b"q")
    s.clock.advance(29)
    s.pushed(0, b"reply")  # traffic either way keeps the session
    s.clock.advance(29)
    assert s.wire() == b""
    with capturedLogs() as events:
        s.clock.advance(1)
        s.closed(0)
    assert s.modem.slots_in_use == frozenset() and s.relay.sessions == {}
    [line] = lines(events, "ended")
    assert "127.0.0.1:4001" in line and "idle 30 s" in line and "module socket(s) 0" in line
    assert "1 datagrams up, 1 down" in line
    s.session(A, b"later")
    assert s.relay.stats()["started"] == 2


def test_sessions_count_against_max_links_and_wait_in_a_bounded_queue(tmp_path):
    s = RelayBench(tmp_path, max_links=1, queue=2, queue_timeout=5, udp_idle=10)
    s.session(A, b"a")
    s.datagram(b"b1", B)  # B must wait: the profile holds its one socket
    s.datagram(b"b2", B)
    s.datagram(b"b3", B)  # past `queue` datagrams waiting in B's session
    s.datagram(b"c1", C)  # a second waiting source is allowed
    s.datagram(b"d1", D)  # past `queue` sources waiting: not even a session
    assert s.wire() == b""
    assert s.relay.stats()["drops"] == {"queue_full": 2}
    assert (s.relay.stats()["waiting"], s.relay.stats()["pending"]) == (2, 3)
    s.clock.advance(4)
    s.datagram(b"b4", B)  # B's queue is still full
    s.clock.advance(1)  # b1, b2, c1 are 5 s old
    assert s.relay.stats()["pending"] == 0
    assert s.relay.stats()["drops"] == {"queue_full": 3, "queue_timeout": 3}
    s.clock.advance(2)
    s.datagram(b"b5", B)
    s.clock.advance(3)  # A (and C) idle 10 s: A's socket goes to B, the oldest waiter
    s.closed(0)
    s.connect_ok(0, UDP)
    s.sent_up(0, b"b5")
    assert s.modem.slots_in_use == frozenset({0})
    assert sorted(s.relay.sessions) == [B]
    assert s.relay.stats()["drops"] == {"queue_full": 3, "queue_timeout": 3}


def test_a_datagram_too_large_for_one_qisend_is_dropped_with_one_line_per_source(tmp_path):
    s = RelayBench(tmp_path)
    with capturedLogs() as events:
        s.datagram(b"x" * 1461, A)
        assert s.wire() == b""  # nothing to carry: no session, no socket
        s.datagram(b"z" * 1460, A)
        s.connect_ok(0, UDP)
        s.sent_up(0, b"z" * 1460)
        s.datagram(b"y" * 2000, A)
    assert len(lines(events, "larger than 1460 bytes")) == 1
    assert s.relay.stats()["drops"] == {"too_large": 2}
    assert s.relay.stats()["started"] == 1


def test_oversize_datagrams_do_not_keep_a_session_from_going_idle(tmp_path):
    s = RelayBench(tmp_path, udp_idle=60)
    s.session(A, b"q")
    for _ in range(2):
        s.clock.advance(30)
        s.datagram(b"x" * 2000, A)
    s.closed(0)  # idle 60 s: only the oversize ones came
    assert s.relay.sessions == {} and s.modem.slots_in_use == frozenset()
    assert s.relay.stats()["drops"] == {"too_large": 2}


def test_with_reopen_a_session_survives_pdp_deact_and_its_datagrams_wait(tmp_path):
    s = RelayBench(tmp_path, persistent=True, reopen=True)
    s.session(A, b"before")
    s.module(b"\r\n+PDP DEACT\r\n")
    s.datagram(b"during", A)  # waits for the new socket
    s.play(REACTIVATE)
    s.connect_ok(0, UDP)  # opened again, without a new datagram
    s.sent_up(0, b"during")
    s.pushed(0, b"after")
    assert s.local.sent == [(b"after", A)]
    stats = s.relay.stats()
    assert (stats["sessions"], stats["started"], stats["datagrams_up"]) == (1, 1, 2)


def test_without_reopen_the_session_ends_and_the_next_datagram_starts_a_new_one(tmp_path):
    s = RelayBench(tmp_path, persistent=True)
    s.session(A, b"before")
    with capturedLogs() as events:
        s.module(b"\r\n+PDP DEACT\r\n")
    [line] = lines(events, "ended")
    assert "modem down" in line
    assert s.relay.sessions == {}
    s.play(REACTIVATE)
    assert s.wire() == b""  # nothing reopens by itself
    s.session(A, b"next")
    assert s.relay.stats()["started"] == 2


def test_a_failed_open_without_reopen_drops_what_waited_and_ends_the_session(tmp_path):
    s = RelayBench(tmp_path)
    s.datagram(b"one", A)
    s.datagram(b"two", A)
    assert s.wire() == b"AT+QIDNSIP=0\r"
    s.module(OK)
    s.wire()
    s.module(OK + b"\r\n0, CONNECT FAIL\r\n")
    s.closed(0)
    assert s.relay.sessions == {} and s.modem.slots_in_use == frozenset()
    assert s.relay.stats()["drops"] == {"open_failed": 2}


def test_a_failed_reopen_is_retried_with_backoff(tmp_path):
    s = RelayBench(tmp_path, persistent=True, reopen=True)
    s.session(A, b"x")
    s.pushed(0, b"answer")  # the socket proved the path
    s.module(b"\r\n0, CLOSED\r\n")  # the module dropped the socket: reopen at once
    s.closed(0)  # ... on index 1: 0 was still closing
    assert s.wire() == b"AT+QIDNSIP=0\r"
    s.module(OK)
    assert s.wire() == b'AT+QIOPEN=1,"UDP","10.1.2.3",53\r'
    s.module(OK + b"\r\n1, CONNECT FAIL\r\n")
    s.closed(1)
    s.clock.advance(0.99)
    assert s.wire() == b""
    s.clock.advance(0.01)
    s.connect_ok(0, UDP)
    assert s.relay.stats()["sessions"] == 1


def test_a_socket_the_module_keeps_closing_is_reopened_after_a_growing_backoff(tmp_path):
    """``n, CLOSED`` right after every CONNECT OK: without a backoff the UART would carry
    AT+QIOPEN/AT+QICLOSE back to back for as long as the source keeps the session."""
    s = RelayBench(tmp_path, persistent=True, reopen=True)
    s.session(A, b"x")
    for delay in (1.0, 2.0, 4.0):
        s.module(b"\r\n0, CLOSED\r\n")
        s.closed(0)
        s.clock.advance(delay - 0.01)
        assert s.wire() == b""
        s.clock.advance(0.01)
        s.connect_ok(0, UDP)
    s.clock.advance(10)  # this one lived long enough: the next loss reopens at once
    s.module(b"\r\n0, CLOSED\r\n")
    s.closed(0)
    s.connect_ok(1, UDP)  # 0 was still closing


def down_while_reopening(s: RelayBench) -> None:
    """+PDP DEACT, the session's reopen, and +PDP DEACT again while its AT+QIOPEN waits for
    CONNECT OK: the open fails with the modem down."""
    s.module(b"\r\n+PDP DEACT\r\n")
    s.play(REACTIVATE)
    assert s.wire() == b"AT+QIDNSIP=0\r"
    s.module(OK)
    assert s.wire() == b'AT+QIOPEN=0,"UDP","10.1.2.3",53\r'
    s.module(OK)  # accepted; CONNECT OK pending
    s.module(b"\r\n+PDP DEACT\r\n")


def test_an_open_that_fails_with_the_modem_down_is_tried_again_when_it_is_ready(tmp_path):
    """The session reopens as soon as the modem is ready again, not after a backoff timer."""
    s = RelayBench(tmp_path, persistent=True, reopen=True)
    s.session(A, b"x")
    down_while_reopening(s)
    s.play(REACTIVATE)
    assert s.modem.ready
    s.connect_ok(0, UDP)
    assert s.relay.stats()["sessions"] == 1


def test_a_session_that_ends_while_waiting_for_the_modem_opens_nothing_later(tmp_path):
    s = RelayBench(tmp_path, persistent=True, reopen=True, udp_idle=10)
    s.session(A, b"x")
    down_while_reopening(s)
    s.clock.advance(10)  # idle meanwhile
    assert s.relay.sessions == {}
    s.play(REACTIVATE)
    assert s.wire() == b""  # no open for an ended session
    assert s.modem.slots_in_use == frozenset()


def test_the_daemon_stopping_ends_reopening_sessions_instead_of_reopening_them(tmp_path):
    s = RelayBench(tmp_path, persistent=True, reopen=True)
    s.session(A, b"x")
    with capturedLogs() as events:
        s.modem.stopService()  # the modem stops before the listeners do
    assert s.relay.sessions == {}
    assert not lines(events, "reopening") and lines(events, "ended")


def test_the_listener_stopping_ends_every_session(tmp_path):
    s = RelayBench(tmp_path)
    s.session(A, b"x")
    s.relay.doStop()
    s.closed(0)
    assert s.relay.sessions == {} and s.modem.slots_in_use == frozenset()


def test_a_datagram_on_the_wire_when_its_session_ends_is_still_counted(tmp_path):
    s = RelayBench(tmp_path)
    s.session(A, b"first")
    s.datagram(b"last", A)
    assert s.wire() == b"AT+QISEND=0,4\r"
    s.relay.doStop()  # the session ends while "last" waits for its prompt
    assert s.relay.sessions == {}
    s.module(PROMPT)
    assert s.wire() == b"last"
    s.module(SEND_OK)
    s.closed(0)
    assert s.relay.stats()["datagrams_up"] == 2


def test_the_loss_account_adds_up_when_a_send_ends_the_socket(tmp_path):
    """The AT+QISEND's ``> `` never comes: the socket ends (its stream is corrupt) before the
    command fails, and that datagram is still a counted drop."""
    s = RelayBench(tmp_path, persistent=True, reopen=True)
    s.session(A, b"first")
    s.datagram(b"lost", A)
    assert s.wire() == b"AT+QISEND=0,4\r"
    s.clock.advance(commands.DEFAULT_TIMEOUTS.prompt + 1)
    stats = s.relay.stats()
    assert (stats["datagrams_up"], stats["drops"]) == (1, {"send_failed": 1})


def test_a_datagram_that_arrives_while_the_lost_socket_settles_waits_for_the_reopen(tmp_path):
    s = RelayBench(tmp_path, persistent=True, reopen=True)
    s.session(A, b"first")
    s.datagram(b"on the wire", A)
    assert s.wire() == b"AT+QISEND=0,11\r"
    s.module(b"\r\n+PDP DEACT\r\n")  # the socket is gone; its AT+QISEND still decides
    s.datagram(b"during", A)
    assert s.relay.stats()["pending"] == 1
    s.module(b"\r\nERROR\r\n")
    s.play(REACTIVATE)
    s.connect_ok(0, UDP)
    s.sent_up(0, b"during")
    stats = s.relay.stats()
    assert (stats["datagrams_up"], stats["drops"]) == (2, {"send_failed": 1})


def test_a_session_that_ends_while_its_reopen_opens_closes_the_late_socket(tmp_path):
    s = RelayBench(tmp_path, persistent=True, reopen=True, udp_idle=10)
    s.session(A, b"x")
    s.clock.advance(5)
    s.module(b"\r\n+PDP DEACT\r\n")
    s.play(REACTIVATE)
    assert s.wire() == b"AT+QIDNSIP=0\r"
    s.module(OK)
    assert s.wire() == b'AT+QIOPEN=0,"UDP","10.1.2.3",53\r'
    s.clock.advance(5)  # idle 10 s while the module opens
    assert s.relay.sessions == {}
    s.module(OK + b"\r\n0, CONNECT OK\r\n")
    s.closed(0)
    assert s.modem.slots_in_use == frozenset()
