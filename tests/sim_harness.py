"""Drive the simulator's dialect with bytes, without a pty or a real network (transcript tests)."""

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.internet.error import ConnectionDone

from bridge.sim.dialect import ModuleProtocol
from bridge.sim.options import SimOptions
from bridge.sim.resolver import Resolver


class FakeKernelSocket:
    """What KernelWire writes into: records bytes; `room` limits what the 'kernel' accepts."""

    def __init__(self):
        self.data = bytearray()
        self.room = None

    def send(self, data):
        n = len(data) if self.room is None else min(self.room, len(data))
        self.data += data[:n]
        if self.room is not None:
            self.room -= n
        return n

    def fileno(self):
        return -1  # SIOCOUTQ fails -> nothing left in the "kernel": delivered at once


class FakeTcpTransport(StringTransport):
    def __init__(self):
        super().__init__()
        self.kernel = FakeKernelSocket()
        self.aborted = False

    def getHandle(self):
        return self.kernel

    def abortConnection(self):
        self.aborted = True


class Host:
    """The host end of one module socket."""

    def __init__(self, protocol, transport):
        self.protocol = protocol
        self.transport = transport

    def send(self, data: bytes):
        self.protocol.dataReceived(data)

    def close(self):
        self.protocol.connectionLost(Failure(ConnectionDone()))

    @property
    def received(self) -> bytes:
        return bytes(self.transport.kernel.data)


class Module:
    """A ModuleProtocol on a StringTransport and a MemoryReactorClock."""

    def __init__(self, hosts=None, **options):
        defaults = dict(act_delay=0, deact_delay=0, dns_delay=0)
        defaults.update(options)
        self.reactor = MemoryReactorClock()
        self.options = SimOptions(**defaults)
        self.proto = ModuleProtocol(self.reactor, self.options, Resolver(self.reactor, hosts or {}, 0))
        self.uart = StringTransport()
        self.proto.makeConnection(self.uart)
        self.boot = self.output()

    def output(self) -> bytes:
        out = self.uart.value()
        self.uart.clear()
        return out

    def send(self, data: bytes, advance: float = 0) -> bytes:
        self.proto.dataReceived(data)
        self.reactor.advance(advance)
        return self.output()

    def at(self, command: str, advance: float = 0) -> bytes:
        return self.send(command.encode("latin-1") + b"\r", advance)

    def tick(self, seconds: float = 0) -> bytes:
        self.reactor.advance(seconds)
        return self.output()

    def ready(self, mux=0, indi=0, mode=0) -> None:
        """Echo off and the stack in IP STATUS with the requested modes."""
        for cmd in ("ATE0", f"AT+QIMUX={mux}", f"AT+QIMODE={mode}", f"AT+QINDI={indi}", "AT+QIREGAPP",
                    "AT+QIACT", "AT+QILOCIP"):
            self.at(cmd)

    def accept_connection(self) -> Host:
        """Complete the host side of the last TCP connect the module started."""
        factory = self.reactor.tcpClients[-1][2]
        protocol = factory.buildProtocol(None)
        transport = FakeTcpTransport()
        protocol.makeConnection(transport)
        return Host(protocol, transport)

    def client_connects(self, port=40000):
        """A host client from 127.0.0.1:port reaches the last TCP listener the module opened; its
        Host, or None when the module refuses it."""
        factory = self.reactor.tcpServers[-1][1]
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", port))
        if protocol is None:
            return None
        transport = FakeTcpTransport()
        protocol.makeConnection(transport)
        return Host(protocol, transport)

    def refuse_connection(self) -> None:
        connector = None
        self.reactor.tcpClients[-1][2].clientConnectionFailed(connector, Failure(ConnectionDone()))

    def open(self, index=0, port=5000):
        """QIOPEN (mux form when index is not None) to 127.0.0.1:port; returns (Host, bytes)."""
        target = f'"TCP","127.0.0.1",{port}'
        out = self.at(f"AT+QIOPEN={index},{target}" if index is not None else f"AT+QIOPEN={target}")
        host = self.accept_connection()
        return host, out + self.tick()
