"""UART pacing, radio pipe and delivery meter, timed with task.Clock."""

from twisted.internet import protocol
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from bridge.sim import delivery
from bridge.sim.delivery import DeliveryMeter
from bridge.sim.dialect import ModuleProtocol
from bridge.sim.options import SimOptions
from bridge.sim.reports import PUSH_CHUNK
from bridge.sim.resolver import Resolver
from bridge.sim.shaping import RadioPipe
from bridge.sim.sockets import HostStream, SimSocket
from bridge.sim.uart import PacedUart
from sim_harness import FakeTcpTransport


class Port(StringTransport):
    """Stands in for the pty master: records writes and whether it is being read."""

    reading = True

    def stopReading(self):
        self.reading = False

    def startReading(self):
        self.reading = True


class Recorder(protocol.Protocol):
    def __init__(self):
        self.data = b""

    def dataReceived(self, data):
        self.data += data


def paced(baud, high_water=4096):
    clock, port, proto = Clock(), Port(), Recorder()
    uart = PacedUart(clock, baud, high_water)
    uart.attach_port(port)
    uart.connect(proto)
    return clock, port, proto, uart


def test_output_leaves_at_the_baud_rate():
    clock, port, _, uart = paced(9600)  # 960 bytes/s
    uart.write(b"x" * 960)
    sent = []
    for _ in range(10):
        sent.append(len(port.value()))
        clock.advance(0.1)
    assert sent[0] < 20
    assert 480 - 20 <= sent[5] <= 480 + 20
    clock.advance(0.1)
    assert len(port.value()) == 960


def test_input_is_delivered_at_the_baud_rate_and_port_reading_held():
    clock, port, proto, uart = paced(9600)
    uart.receive(b"y" * 2000)
    assert not port.reading  # a backlog: the writer must wait, as on a real line
    clock.advance(0.25)
    assert 240 - 20 <= len(proto.data) <= 240 + 20
    clock.advance(2.0)
    assert proto.data == b"y" * 2000 and port.reading


def test_unpaced_passes_everything_at_once():
    clock, port, proto, uart = paced(0)
    uart.write(b"a" * 10000)
    uart.receive(b"b" * 10000)
    assert len(port.value()) == 10000 and len(proto.data) == 10000


def test_high_backlog_pauses_the_registered_producer():
    clock, port, proto, uart = paced(9600, high_water=100)
    producer = StringTransport()
    uart.registerProducer(producer, True)
    uart.write(b"z" * 200)
    assert producer.producerState == "paused"
    clock.advance(0.25)
    assert producer.producerState == "producing"


def test_writes_between_ticks_still_pause_the_producer():
    clock, port, proto, uart = paced(115200, high_water=4096)
    producer = StringTransport()
    uart.registerProducer(producer, True)
    uart.write(b"a" * 100)  # starts the send timer
    for _ in range(5):
        uart.write(b"b" * 1000)  # each lands while the timer is pending
    assert producer.producerState == "paused"
    clock.advance(5000 / 11520)  # drained below high_water / 4
    assert producer.producerState == "producing"


def test_detached_port_is_never_written_again():
    clock, port, proto, uart = paced(9600)
    uart.write(b"w" * 500)
    uart.receive(b"r" * 500)
    uart.detach_port()
    sent = port.value()
    clock.advance(1)
    assert port.value() == sent and clock.getDelayedCalls() == []


class PushedModule:
    """The dialect on a 115200 baud UART, one mux socket in push mode, fed by an eager source."""

    BAUD, HIGH_WATER, STEP = 115200, 4096, 0.01

    def __init__(self):
        self.clock = MemoryReactorClock()
        self.port = Port()
        self.uart = PacedUart(self.clock, self.BAUD, self.HIGH_WATER)
        self.uart.attach_port(self.port)
        options = SimOptions(act_delay=0, deact_delay=0, dns_delay=0, baud=self.BAUD,
                             uart_high_water=self.HIGH_WATER)
        self.uart.connect(ModuleProtocol(self.clock, options, Resolver(self.clock, {}, 0)))
        self.host_transport = None
        self.peak_backlog = 0
        self.host_was_paused = False
        for cmd in ("ATE0", "AT+QIMUX=1", "AT+QINDI=0", "AT+QIREGAPP", "AT+QIACT", "AT+QILOCIP",
                    'AT+QIOPEN=0,"TCP","127.0.0.1",5000'):
            self.typed(cmd.encode() + b"\r", 0.1)
        self.host = self.clock.tcpClients[-1][2].buildProtocol(None)
        transport = FakeTcpTransport()
        self.host.makeConnection(transport)
        self.host_transport = transport

    def typed(self, data: bytes, seconds: float) -> None:
        self.uart.receive(data)
        self.run(seconds)

    def run(self, seconds: float) -> None:
        """Advance time; the source delivers a burst every step whenever it is being read."""
        for _ in range(round(seconds / self.STEP)):
            if self.host_transport is None:
                pass
            elif self.host_transport.producerState == "producing":
                self.host.dataReceived(b"x" * 65536)  # what one read of a busy socket returns
            else:
                self.host_was_paused = True
            self.clock.advance(self.STEP)
            self.peak_backlog = max(self.peak_backlog, self.uart.backlog)

    def wait_for(self, marker: bytes, limit: float) -> float:
        """Seconds until `marker` left the UART (None if not within `limit`)."""
        start = self.clock.seconds()
        while marker not in self.port.value():
            if self.clock.seconds() - start > limit:
                return None
            self.run(self.STEP)
        return self.clock.seconds() - start


def test_prompt_waits_only_for_the_bounded_backlog_under_a_push_downlink():
    m = PushedModule()
    m.run(3.0)  # steady state: the downlink saturates the UART
    assert b"+RECEIVE: 0, 1460" in m.port.value()
    m.port.clear()
    typing = len(b"AT+QISEND=0,5\r") / 11520
    ahead = m.HIGH_WATER + len(b"\r\n+RECEIVE: 0, 1460\r\n") + PUSH_CHUNK
    m.uart.receive(b"AT+QISEND=0,5\r")
    latency = m.wait_for(b"\r\n> ", limit=10.0)
    assert latency is not None and latency <= typing + ahead / 11520 + 2 * m.STEP
    assert m.peak_backlog <= ahead
    assert m.host_was_paused  # the module stopped reading its host socket meanwhile
    m.port.clear()
    m.uart.receive(b"hello")
    assert m.wait_for(b"\r\nSEND OK\r\n", limit=10.0) is not None
    assert m.host_transport.kernel.data == b"hello"


def test_mute_drops_both_directions_for_a_while():
    clock, port, proto, uart = paced(0)
    uart.mute(2)
    uart.write(b"lost")
    uart.receive(b"AT\r")
    clock.advance(2)
    uart.write(b"heard")
    assert port.value() == b"heard" and proto.data == b""


def test_radio_pipe_rate_and_one_way_delay():
    clock, got = Clock(), []
    pipe = RadioPipe(clock, 8000, 0.1, lambda d: got.append((clock.seconds(), d)))  # 1000 B/s
    pipe.put(b"a" * 500)
    pipe.put(b"b" * 500)
    assert pipe.queued == 1000
    clock.pump([0.05] * 40)
    assert [round(t, 2) for t, _ in got] == [0.6, 1.1]  # serialised, then +100 ms
    assert pipe.queued == 0


def test_radio_pipe_segments_at_1460():
    clock, got = Clock(), []
    RadioPipe(clock, 0, 0, got.append).put(b"s" * 3000)
    assert [len(c) for c in got] == [1460, 1460, 80]


def test_acks_become_visible_half_an_rtt_after_delivery():
    clock = Clock()
    meter = DeliveryMeter(clock, 0.05)
    meter.handed = 100
    meter.sample(40)  # 60 delivered now
    assert meter.acked() == 0
    clock.advance(0.05)
    assert meter.acked() == 60
    meter.sample(0)
    clock.advance(0.049)
    assert meter.acked() == 60
    clock.advance(0.002)
    assert meter.acked() == 100 and meter.settled


# -- delivery accounting against the downlink: a reply never overtakes the ack it answers -------

class PeerKernel:
    """The host socket's kernel: keeps what was sent until the peer acks it (SIOCOUTQ)."""

    def __init__(self):
        self.queued = 0
        self.closed = False

    def send(self, data):
        self.queued += len(data)
        return len(data)

    def peer_acks(self, nbytes):
        self.queued -= nbytes

    def outq(self):
        if self.closed:
            raise ValueError("closed socket")  # what SIOCOUTQ on a closed socket does
        return self.queued


class HostTransport(StringTransport):
    def __init__(self, kernel):
        super().__init__()
        self.kernel = kernel
        self.aborted = False

    def getHandle(self):
        return self.kernel

    def abortConnection(self):
        self.aborted = True


class Seen:
    """Module-side events, each with the acked count QISACK would answer at that instant."""

    def __init__(self, clock):
        self.clock = clock
        self.log = []

    def connected(self, sock):
        pass

    def data_arrived(self, sock, was_empty):
        self.log.append(("data", self.clock.seconds(), sock.acked))

    def peer_closed(self, sock):
        self.log.append(("closed", self.clock.seconds(), sock.acked))


def connected_socket(monkeypatch, rtt_ms=100):
    """A TCP SimSocket on a task.Clock with a controllable peer kernel, connected at t = RTT."""
    monkeypatch.setattr(delivery, "kernel_unsent", lambda sock: sock.outq())
    clock, kernel = Clock(), PeerKernel()
    events = Seen(clock)
    sock = SimSocket(clock, 0, False, "TCP", ("127.0.0.1", 80), SimOptions(rtt_ms=rtt_ms), events)
    host = HostStream(sock)
    host.makeConnection(HostTransport(kernel))
    clock.advance(rtt_ms / 1000)
    return clock, kernel, sock, host, events


def test_ack_is_visible_no_later_than_the_reply_and_close_it_answers(monkeypatch):
    clock, kernel, sock, host, events = connected_socket(monkeypatch)
    assert sock.send(b"GET / HTTP/1.0\r\n\r\n")
    clock.advance(0.05)  # the request reaches the peer's kernel after RTT/2
    assert kernel.queued == 18
    clock.advance(0.003)  # between two kernel polls the peer acks, replies and closes at once
    kernel.peer_acks(18)
    reply_at = clock.seconds()
    host.dataReceived(b"HTTP/1.0 200 OK\r\n\r\n")
    host.readConnectionLost()
    assert host.transport.disconnecting  # the FIN closes the host socket
    kernel.closed = True
    host.connectionLost(Failure(ConnectionDone()))
    clock.advance(0.0499)
    assert events.log == [] and sock.acked == 0  # the ack still travels RTT/2, like the reply
    clock.advance(0.0001)
    assert [(kind, round(at - reply_at, 9), acked) for kind, at, acked in events.log] == [
        ("data", 0.05, 18), ("closed", 0.05, 18)]


def test_eof_without_reply_sees_the_ack_before_closed(monkeypatch):
    clock, kernel, sock, host, events = connected_socket(monkeypatch)
    sock.send(b"bye")
    clock.advance(0.052)
    kernel.peer_acks(3)
    host.readConnectionLost()  # FIN right after the ack, before the next poll
    kernel.closed = True
    host.connectionLost(Failure(ConnectionDone()))
    clock.advance(0.049)
    assert events.log == []  # the FIN travels RTT/2 too, even with no data ahead of it
    clock.advance(0.001)
    assert [(kind, acked) for kind, _, acked in events.log] == [("closed", 3)]


def test_bytes_queued_when_the_peer_resets_are_never_acked(monkeypatch):
    clock, kernel, sock, host, events = connected_socket(monkeypatch)
    sock.send(b"x" * 10)
    clock.advance(0.05)
    kernel.peer_acks(6)
    clock.advance(0.02)  # a poll measured 4 bytes still queued
    kernel.closed = True  # RST: the kernel drops its queue, SIOCOUTQ can no longer be asked
    host.connectionLost(Failure(ConnectionLost()))
    clock.advance(1)
    assert events.log[-1][0] == "closed"
    for _ in range(2):  # asking again later must not find the dropped bytes acked either
        assert (sock.sent, sock.acked, sock.unacked) == (10, 6, 4)
        clock.advance(1)


def test_remote_close_fault_counts_only_what_was_delivered_before_its_reset(monkeypatch):
    clock, kernel, sock, host, events = connected_socket(monkeypatch)
    sock.send(b"y" * 10)
    clock.advance(0.05)
    kernel.peer_acks(7)  # no poll since: only the fault's own measurement can see these 7
    sock.remote_close()
    assert host.transport.aborted
    kernel.closed = True
    host.connectionLost(Failure(ConnectionAborted()))
    for _ in range(2):
        clock.advance(1)
        assert (sock.acked, sock.unacked) == (7, 3)
