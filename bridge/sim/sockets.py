"""One module socket: a real host socket seen through the simulated radio.

Uplink: AT+QISEND bytes -> radio pipe (rate, RTT/2) -> straight into the kernel send queue;
acked counts what the peer's kernel really has (SIOCOUTQ), visible RTT/2 later.  Downlink: host
bytes -> radio pipe -> a bounded module receive buffer; the host socket is paused while the
buffer (plus what is in flight) is full, so a slow reader slows the remote sender.  A killed
socket dies at the radio (choice 39): nothing new moves either way and no URC comes, but bytes
already in the host kernel still reach the peer and their acks still count, so acked ends at
exactly what the peer received.

A real peer acks our bytes no later than it sends the reply or FIN that answers them, so the
module must never see a reply or `CLOSED` before that ack: delivery is measured right when host
data, EOF or our own abort happens (not only on the POLL tick), and the close travels RTT/2 like
data.  Once the host socket is gone SIOCOUTQ cannot be asked; the last measurement stands (bytes
still queued then were never delivered -- an RST throws them away).
"""

from collections import deque

from twisted.internet import interfaces, protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from .delivery import DeliveryMeter, KernelWire
from .shaping import SEGMENT, RadioPipe

POLL = 0.01  #: seconds between kernel queue checks while bytes are in flight
DATAGRAM = 65535


class SimSocket:
    """State, counters and both data paths of one module socket.

    @param clock: IReactorTime.
    @param index: slot number 0..5.
    @param server: True for a connection accepted by AT+QISERVER.
    @param proto: "TCP" or "UDP".
    @param remote: (host, port) of the peer.
    @param options: SimOptions (rates, RTT, buffer sizes).
    @param events: receives connected / connect_failed / peer_closed / data_arrived (sock).
    @param cid: the PDP context the socket belongs to.
    """

    log = Logger()

    def __init__(self, clock, index, server, proto, remote, options, events, cid=0):
        self.cid = cid
        self.index = index
        self.server = server
        self.proto = proto
        self.remote = remote
        self.state = "CONNECTING"
        self.sent = 0
        self.dead = False
        self.rx = deque()
        self.rx_buffered = 0
        self.dropped = 0
        self.close_reported = False  # CLOSED / CONNECT FAIL already told to the host
        self._clock = clock
        self._events = events
        self._options = options
        self._rtt = options.rtt_ms / 1000.0
        self._one_way = self._rtt / 2
        segment = SEGMENT if proto == "TCP" else DATAGRAM
        self._up = RadioPipe(clock, options.up_bps, self._one_way, self._to_kernel, segment)
        self._down = RadioPipe(clock, options.down_bps, self._one_way, self._to_module, segment)
        self._meter = DeliveryMeter(clock, self._one_way)
        self._pending = bytearray()
        self._transport = None
        self._wire = None
        self._poller = None
        self._host_paused = False
        self._fail_sends = 0
        self._closing = False
        self._peer_gone = False
        self._reported = False  # connected reported to the module

    # -- lifecycle ------------------------------------------------------------------------------

    def attach(self, transport) -> None:
        """The host socket exists; report `connected` after the radio round trip."""
        self._transport = transport
        if self.proto == "TCP":
            self._wire = KernelWire(transport.getHandle())
        self._clock.callLater(self._rtt if not self.server else 0, self._report_connected)

    def failed(self) -> None:
        """The host connect failed; report it after the radio round trip."""
        self._clock.callLater(self._rtt, self._report_failed)

    def _report_connected(self) -> None:
        if self.state != "CONNECTING":
            return
        self.state = "CONNECTED"
        self._reported = True
        self._events.connected(self)
        if self.rx:
            self._events.data_arrived(self, True)

    def _report_failed(self) -> None:
        if self.state != "CONNECTING":
            return
        self.state = "CLOSED"
        self._events.connect_failed(self)

    def close(self) -> None:
        """Local close: bytes already accepted still go out, then FIN; no more events."""
        self._events = _Silent()
        self._closing = True
        self.state = "CLOSING"
        self.rx.clear()
        self.rx_buffered = 0
        self._down.clear()
        if self._transport is None:
            return
        self._finish_close_if_drained()

    def abort(self) -> None:
        """Tear down at once (PDP loss, reboot, remote-close fault)."""
        self._events = _Silent()
        self.state = "CLOSED"
        self._up.clear()
        self._down.clear()
        self._pending.clear()
        self._stop_poller()
        self._release_transport(graceful=False)

    # -- faults ---------------------------------------------------------------------------------

    def kill(self) -> None:
        """Silent death at the radio: nothing new is handed to the kernel or comes down, no URC;
        what the kernel already has is delivered and acked, then the count stops by itself."""
        if self.dead:
            return
        self.dead = True
        self._pause_host()

    def heal(self) -> None:
        if not self.dead:
            return
        self.dead = False
        self._flush()
        self._check_rx_room()
        if self._peer_gone:
            self._report_peer_closed()
        elif self.rx and self._reported:
            self._events.data_arrived(self, True)

    def remote_close(self) -> None:
        """Fault: the network ends the connection; the host side sees it go, the module `CLOSED`."""
        if self._transport is not None and self.proto == "TCP":
            self.measure_delivery()  # what the RST below throws away was never delivered
            self._transport.abortConnection()
        else:
            self.host_lost()

    def fail_next_sends(self, count: int) -> None:
        self._fail_sends += count

    # -- uplink ---------------------------------------------------------------------------------

    @property
    def acked(self) -> int:
        if self.proto != "TCP":
            return 0
        self.measure_delivery()
        return self._meter.acked()

    def measure_delivery(self) -> None:
        """Ask the kernel now what the peer has; a no-op once the host socket is gone."""
        if self._wire is not None:
            self._meter.sample(self._wire.unsent())

    @property
    def unacked(self) -> int:
        return self.sent - self.acked if self.proto == "TCP" else 0

    def send(self, data: bytes) -> bool:
        """Queue payload from AT+QISEND; False means SEND FAIL (buffer full or forced)."""
        if self._fail_sends:
            self._fail_sends -= 1
            return False
        if self.proto == "TCP" and self.unacked + len(data) > self._options.send_buffer:
            return False
        self.sent += len(data)
        self._up.put(data)
        return True

    def _to_kernel(self, data: bytes) -> None:
        if self.proto == "UDP":
            if self._transport is not None and not self.dead:
                self._transport.write(data)
            return
        self._pending += data
        self._flush()

    def _flush(self) -> None:
        if self.dead or self._wire is None:
            return
        if self._pending:
            taken = self._wire.send(bytes(self._pending))
            del self._pending[:taken]
            self._meter.handed += taken
        self._start_poller()

    def _start_poller(self) -> None:
        if self._poller is None:
            self._poller = LoopingCall(self._poll)
            self._poller.clock = self._clock
            self._poller.start(POLL, now=False)

    def _stop_poller(self) -> None:
        if self._poller is not None:
            if self._poller.running:
                self._poller.stop()
            self._poller = None

    def _poll(self) -> None:
        if self._wire is None:
            self._stop_poller()
            return
        self._flush()
        self.measure_delivery()
        self._meter.acked()
        if self.dead:
            if self._meter.settled:  # nothing more will be handed: the count has stopped
                self._stop_poller()
        elif not self._pending and self._up.queued == 0 and self._meter.settled:
            self._stop_poller()
            self._finish_close_if_drained()

    def _finish_close_if_drained(self) -> None:
        if not self._closing or self._transport is None:
            return
        if self._pending or self._up.queued:
            self._start_poller()
            return
        self._release_transport(graceful=True)

    def _release_transport(self, graceful: bool) -> None:
        transport, self._transport = self._transport, None
        if transport is None:
            return
        if self.proto == "UDP":
            transport.stopListening()
        elif graceful:
            transport.loseConnection()
        else:
            transport.abortConnection()

    # -- downlink -------------------------------------------------------------------------------

    def from_host(self, data: bytes) -> None:
        """Bytes (or one datagram) read from the host socket."""
        if self._closing or self.state == "CLOSED":
            return
        if self.proto == "UDP" and (len(data) > SEGMENT
                                    or self.rx_buffered + len(data) > self._options.rx_buffer):
            self.dropped += 1  # too large for one push frame or read (choice 36), or no room
            return
        self.measure_delivery()  # acks sent before this data must not reach the module after it
        self._down.put(data)
        self._check_rx_room()

    def host_lost(self) -> None:
        """The host connection is gone (peer FIN or RST, or our own close): stop measuring."""
        self._transport = None
        self._wire = None
        self._stop_poller()
        if self._closing or self.state == "CLOSED":
            return
        self._peer_gone = True
        now = self._clock.seconds()
        arrival = max(self._down.last_arrival, now + self._one_way)  # the FIN travels too
        self._clock.callLater(arrival - now, self._report_peer_closed)

    def _report_peer_closed(self) -> None:
        if self.dead or self.state not in ("CONNECTED", "CONNECTING"):
            return
        self.state = "CLOSED"
        self._events.peer_closed(self)

    def _to_module(self, data: bytes) -> None:
        was_empty = self.rx_buffered == 0
        self.rx.append(data)
        self.rx_buffered += len(data)
        if self._reported and not self.dead:
            self._events.data_arrived(self, was_empty)

    def read(self, limit: int) -> bytes:
        """Take up to `limit` bytes (one datagram at most for UDP) from the receive buffer."""
        out = bytearray()
        while self.rx and len(out) < limit:
            head = self.rx[0]
            take = head[: limit - len(out)]
            out += take
            if len(take) == len(head):
                self.rx.popleft()
            else:
                self.rx[0] = head[len(take):]
            if self.proto == "UDP":
                break
        self.rx_buffered -= len(out)
        self._check_rx_room()
        return bytes(out)

    def _check_rx_room(self) -> None:
        if self.proto != "TCP" or self._transport is None or self.dead:
            return
        held = self.rx_buffered + self._down.queued
        if held >= self._options.rx_buffer:
            self._pause_host()
        elif self._host_paused and held < self._options.rx_buffer // 2:
            self._host_paused = False
            self._transport.resumeProducing()

    def _pause_host(self) -> None:
        if not self._host_paused and self._transport is not None and self.proto == "TCP":
            self._host_paused = True
            self._transport.pauseProducing()

    # -- reporting ------------------------------------------------------------------------------

    def describe(self) -> dict:
        host, port = self.remote
        return {
            "state": self.state,
            "proto": self.proto,
            "remote": f"{host}:{port}",
            "sent": self.sent,
            "acked": self.acked,
            "handed": self._meter.handed,  # taken by the host kernel; the rest is on the radio
            "unacked": self.unacked,
            "rx_buffered": self.rx_buffered,
            "dropped": self.dropped,
            "dead": self.dead,
            "server": self.server,
        }


class _Silent:
    """Event sink for sockets the module no longer reports on."""

    def __getattr__(self, name):
        return lambda *args: None


@implementer(interfaces.IHalfCloseableProtocol)
class HostStream(protocol.Protocol):
    """The host TCP connection behind one SimSocket.

    Half-closeable only so that the peer's FIN is seen while the socket is still open: delivery
    is measured then, before the connection is closed for good.  (writeConnectionLost is never
    needed: the simulator never half-closes its side.)
    """

    def __init__(self, sock: SimSocket):
        self.sock = sock

    def connectionMade(self):
        self.sock.attach(self.transport)

    def dataReceived(self, data):
        self.sock.from_host(data)

    def readConnectionLost(self):
        self.sock.measure_delivery()
        self.transport.loseConnection()

    def connectionLost(self, reason):
        self.sock.host_lost()


class HostStreamFactory(protocol.ClientFactory):
    """Connects one SimSocket; a failed connect is reported through the socket."""

    noisy = False

    def __init__(self, sock: SimSocket):
        self.sock = sock

    def buildProtocol(self, addr):
        return HostStream(self.sock)

    def clientConnectionFailed(self, connector, reason):
        self.sock.failed()


class HostDatagram(protocol.DatagramProtocol):
    """The host UDP socket behind one SimSocket, connected to its peer."""

    def __init__(self, sock: SimSocket):
        self.sock = sock

    def startProtocol(self):
        host, port = self.sock.remote
        self.transport.connect(host, port)
        self.sock.attach(self.transport)

    def datagramReceived(self, data, addr):
        self.sock.from_host(data)

    def connectionRefused(self):
        """ICMP port unreachable: UDP has no connection to lose; ignore like a module would."""
