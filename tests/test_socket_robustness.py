"""Module sockets against misbehaving protocols and awkward timing, on transcripts: a protocol
that raises, URCs inside a read, one waiter and many lingering sockets, a linger cut by a remote
close, a window AT+QISACK that keeps failing."""

from twisted.internet.endpoints import connectProtocol
from twisted.internet.protocol import Protocol
from twisted.logger import capturedLogs

from bridge.modem.endpoint import ModemEndpoint
from bridge.modem.pool import SocketPool
from tests.socket_bench import (CLOSED_0, QICLOSE_0, QIRD_0, QIRDI_0, QISACK_0, LinkBench,
                                ModemBench, qird)


class Recorder(Protocol):
    reason = None

    def connectionLost(self, reason=None):
        self.reason = reason


class RaisesOnLost(Protocol):
    def connectionLost(self, reason=None):
        raise RuntimeError("boom in connectionLost")


class RaisesOnData(Recorder):
    def dataReceived(self, data):
        raise ValueError("protocol error")


class RaisesOnMade(Protocol):
    def connectionMade(self):
        raise RuntimeError("boom in connectionMade")


class WritesOnLost(Protocol):
    """Like a TLS layer, which sends its alert from connectionLost."""

    def connectionLost(self, reason=None):
        self.transport.write(b"alert")


def connect(bench, protocol, n=0):
    results = []
    connectProtocol(ModemEndpoint(bench.modem, "10.1.2.3", 80), protocol).addBoth(results.append)
    bench.connect_ok(n)
    return results


def test_a_protocol_whose_connection_lost_raises_still_gets_its_socket_closed(tmp_path):
    bench = ModemBench(tmp_path)
    connect(bench, RaisesOnLost())
    bench.module(CLOSED_0)
    assert bench.wire() == QIRD_0
    with capturedLogs():
        bench.module(b"\r\nOK\r\n")  # drained: the clean close, whose connectionLost raises
    assert bench.wire() == QICLOSE_0
    bench.module(b"\r\n0, CLOSE OK\r\n")
    assert bench.modem.slots_in_use == frozenset()


def test_one_raising_protocol_does_not_hide_the_modem_going_down_from_the_others(tmp_path):
    bench = ModemBench(tmp_path)
    other = Recorder()
    connect(bench, RaisesOnLost(), 0)
    connect(bench, other, 1)
    with capturedLogs():
        bench.module(b"\r\n+PDP DEACT\r\n")
    assert other.reason is not None and bench.modem.slots_in_use == frozenset()
    assert bench.harness.states[-1][0] == "down"


def test_a_protocol_that_raises_on_received_bytes_closes_its_socket(tmp_path):
    for receive, arrival in (("pull", None), ("push", b"\r\n+RECEIVE: 0, 3\r\nbad")):
        bench = ModemBench(tmp_path / receive, receive=receive)
        protocol = RaisesOnData()
        connect(bench, protocol)
        with capturedLogs():
            if arrival is None:
                bench.module(QIRDI_0)
                assert bench.wire() == QIRD_0
                bench.module(qird(b"bad"))
            else:
                bench.module(arrival)
        assert bench.wire() == QICLOSE_0, receive  # not one more AT+QIRD
        assert protocol.reason.check(ValueError), receive


def test_a_protocol_that_raises_in_connection_made_fails_the_connect_and_frees_the_index(
        tmp_path):
    bench = ModemBench(tmp_path)
    results = connect(bench, RaisesOnMade())
    assert results[0].check(RuntimeError)
    assert bench.wire() == QICLOSE_0
    bench.module(b"\r\n0, CLOSE OK\r\n")
    assert bench.modem.slots_in_use == frozenset()


def test_a_write_from_connection_lost_on_modem_down_is_not_taken_for_data(tmp_path):
    bench = ModemBench(tmp_path)
    connect(bench, WritesOnLost())
    bench.module(b"\r\n+PDP DEACT\r\n")
    assert bench.modem.counters.get("link_dead", cause="send_error") == 0
    assert bench.modem.counters.get("link_dead", cause="late_write") == 0


def test_a_qirdi_inside_an_empty_read_gets_another_read(tmp_path):
    s = LinkBench(tmp_path)
    s.module(QIRDI_0)
    assert s.wire() == QIRD_0
    s.module(qird(b"first"))
    assert s.wire() == QIRD_0
    s.module(b"\r\n" + QIRDI_0 + b"\r\nOK\r\n")  # the empty answer may predate that +QIRDI
    assert s.wire() == QIRD_0
    s.module(qird(b"second"))
    assert s.local.value() == b"firstsecond"


def test_one_waiter_takes_one_lingering_socket_not_all_of_them(tmp_path):
    bench = LinkBench(tmp_path)
    sides = [(bench.side, bench.local)]
    for n in range(1, 6):
        sides.append(bench.accept())
        bench.connect_ok(n)
    for side, _ in sides[:3]:
        side.readConnectionLost()  # sockets 0, 1, 2 linger
    bench.accept()  # one connection waits
    bench.clock.advance(0.2)
    assert [local.disconnecting for _, local in sides[:3]].count(True) == 1


def test_closed_sockets_are_not_kept_by_their_profile(tmp_path):
    bench = LinkBench(tmp_path)
    closed = []
    for i in range(5):
        if i:
            bench.side, bench.local = bench.accept()
            bench.connect_ok(0)
        closed.append(bench.socket)
        bench.module(CLOSED_0)
        bench.module(b"\r\nOK\r\n")
        assert bench.wire().endswith(QICLOSE_0)
        bench.module(b"\r\n0, CLOSE OK\r\n")
    kept = [value for value in vars(bench.admission).values() if isinstance(value, (set, list))]
    assert not any(socket in container for socket in closed for container in kept)
    assert bench.admission.served == 5


def test_a_waiter_cancelled_by_an_earlier_waiters_callback_is_skipped():
    pool = SocketPool()
    first, second = pool.acquire("x"), pool.acquire("x")
    first.addCallback(lambda index: second.cancel())
    second.addErrback(lambda failure: None)
    pool.set_ready(True)
    assert pool.in_use == frozenset({0}) and pool.waiting() == 0


def test_a_remote_close_during_the_linger_keeps_the_bound_for_a_paused_reader(tmp_path):
    s = LinkBench(tmp_path, settings=dict(linger=2.0))
    s.side.readConnectionLost()
    s.socket.pauseProducing()
    s.module(QIRDI_0)  # bytes the paused reader has not taken
    s.clock.advance(1.0)
    s.module(CLOSED_0)
    s.clock.advance(0.9375)
    assert not s.local.disconnecting
    s.clock.advance(0.0625)  # the linger, counted from the last traffic
    assert s.local.disconnected and s.wire() == QICLOSE_0
    assert s.modem.counters.get("link_dead", cause="linger_unread") == 1


def test_a_window_qisack_that_keeps_failing_backs_off_too(tmp_path):
    s = LinkBench(tmp_path, settings=dict(window=1460))
    s.local_data(b"y" * 2920)
    assert s.send_ok(1).endswith(QISACK_0)
    asked = 1
    with capturedLogs():
        s.module(b"\r\nERROR\r\n")
        for _ in range(1000):  # 10 s in 10 ms steps
            s.clock.advance(0.01)
            if s.wire() == QISACK_0:
                asked += 1
                s.module(b"\r\nERROR\r\n")
    assert asked <= 15  # 10 ms doubling up to 2 s: about a dozen in 10 s, not a thousand
