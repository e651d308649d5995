"""End-to-end test bed: real loopback sockets -> the cellbridge service tree (in process, on the
pytest-twisted reactor) -> pty -> the in-process simulator -> real loopback servers.

Every wait is bounded (:func:`until` polls a condition, :func:`within` awaits a Deferred); nothing
asserts wall-clock speed. The bridge listens on ``tcp:0`` and the bed reads the port it bound, so
parallel runs cannot collide on a port picked in advance.
"""

import hashlib
import os
import socket
from contextlib import contextmanager

from twisted.internet import defer, protocol, reactor, task
from twisted.internet.error import ConnectionDone
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from bridge.config import load_config
from bridge.service import make_service
from bridge.sim import SimOptions, Simulator

SALT = [b"\r\nOK\r\n", b"+RECEIVE: 0, 5\r\n", b"\x1a", b"\x1b", b"+++", b"CLOSED\r\n", b"> "]


def salted(size: int, seed: int = 4) -> bytes:
    """Random bytes with every framing-sensitive sequence of the dialect sprinkled through."""
    rng = __import__("random").Random(seed)
    out = bytearray(rng.randbytes(size))
    for i, position in enumerate(range(0, size - 32, 997)):
        piece = SALT[i % len(SALT)]
        out[position:position + len(piece)] = piece
    return bytes(out)


def free_port() -> int:
    """A loopback TCP port free a moment ago (for what must be configured before it binds)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def sha(data) -> str:
    return hashlib.sha256(bytes(data)).hexdigest()


async def until(predicate, timeout=20.0, step=0.01, what="condition"):
    """Poll ``predicate`` on the reactor until true; fail after ``timeout`` seconds."""
    for _ in range(int(timeout / step)):
        if predicate():
            return
        await task.deferLater(reactor, step, lambda: None)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


async def within(deferred, what: str, timeout=20.0):
    """The result of ``deferred``; fail naming ``what`` after ``timeout`` seconds."""
    try:
        return await deferred.addTimeout(timeout, reactor)
    except defer.TimeoutError:
        raise AssertionError(f"timed out after {timeout} s waiting for {what}") from None


@contextmanager
def troubles():
    """The warnings (or worse) logged while inside, formatted, and the failures logged instead
    of raised, with their tracebacks, in order: a test checks that it is exactly the trouble it
    caused (or none; the bytes and reasons it checks can look right while something broke
    underneath)."""
    seen = []

    def observe(event):
        if event.get("log_failure") is not None:
            seen.append(f"{formatEvent(event)}\n{event['log_failure'].getTraceback()}")
        elif event.get("log_level") in (LogLevel.warn, LogLevel.error, LogLevel.critical):
            seen.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    try:
        yield seen
    finally:
        globalLogPublisher.removeObserver(observe)


# -- remote servers ----------------------------------------------------------------------------

class Sink(protocol.Protocol):
    """Keeps what it received, and ``reason``: how its connection ended; sends nothing."""

    reason = None

    def connectionMade(self):
        self.factory.connections.append(self)
        self.received = bytearray()

    def dataReceived(self, data):
        self.received += data

    def connectionLost(self, reason):
        self.reason = reason


class Echo(Sink):
    """A sink that echoes."""

    def dataReceived(self, data):
        super().dataReceived(data)
        self.transport.write(data)


class Source(protocol.Protocol):
    """Sends ``factory.payload`` and closes."""

    def connectionMade(self):
        self.factory.connections.append(self)
        self.transport.write(self.factory.payload)
        self.transport.loseConnection()


def server(kind, payload=b""):
    factory = protocol.Factory.forProtocol(kind)
    factory.connections = []
    factory.payload = payload
    return factory


# -- local clients -----------------------------------------------------------------------------

class Client(protocol.Protocol):
    """Collects what arrives; ``closed`` fires with it when the connection ends."""

    def __init__(self):
        self.received = bytearray()
        self.closed = defer.Deferred()

    def dataReceived(self, data):
        self.received += data

    def connectionLost(self, reason):
        self.closed.callback(bytes(self.received))


async def connect(port, client=None) -> Client:
    client = client or Client()
    await protocol.ClientCreator(reactor, lambda: client).connectTCP("127.0.0.1", port,
                                                                     timeout=10)
    return client


class ResetSeen(Client):
    """A local client that remembers how its connection ended."""

    def connectionLost(self, reason):
        self.reason = reason
        super().connectionLost(reason)


async def open_link(bed) -> ResetSeen:
    """A bridged connection whose first bytes came back through the echo server."""
    client = await connect(bed.port, ResetSeen())
    client.transport.write(b"before")
    await until(lambda: bytes(client.received) == b"before", what="the first echo")
    return client


async def ended(client, what="the local connection to end", timeout=20.0) -> bytes:
    """Everything ``client`` received, once its connection is gone (bounded)."""
    return await within(client.closed, what, timeout)


async def reset_not_eof(client):
    await ended(client)
    assert not client.reason.check(ConnectionDone), "the local app must see a reset, not EOF"


async def echo_works(bed, payload: bytes):
    """A fresh local connection is bridged and echoed (the modem is usable again)."""
    client = await connect(bed.port)
    client.transport.write(payload)
    await until(lambda: bytes(client.received) == payload, what=f"the echo of {payload!r}")
    client.transport.loseConnection()
    await until(bed.idle, what="the module socket to be freed")


# -- the bed -----------------------------------------------------------------------------------

class BoundPort:
    """Stands in for a listener service's endpoint to learn the port a ``tcp:0`` listen bound."""

    def __init__(self, endpoint) -> None:
        self.endpoint = endpoint
        self.port = None

    def listen(self, factory):
        return self.endpoint.listen(factory).addCallback(self._bound)

    def _bound(self, port):
        self.port = port.getHost().port
        return port


class Bed:
    """Simulator + one bridged profile + one remote server. ``async with await Bed.start(...)``.

    Subclasses add INI lines to the sections with ``general_keys``/``modem_keys``/``profile_keys``
    (which may add more ``[profile:NAME]`` sections: ``ports`` has each one's bound port;
    ``metrics_port`` is the bound port of a ``metrics = tcp:0...`` listener), and may
    build the tree with other ``components`` or open the simulator at another ``device``.
    """

    general_keys = ""  #: more ``[cellbridge]`` lines
    modem_keys = ""
    profile_keys = ""
    components = None  #: a ``bridge.service.Components``; None = the real parts

    def __init__(self, tmp_path, remote_factory, receive, linger, sim_options):
        self.tmp_path = tmp_path
        self.remote_factory = remote_factory
        self.receive = receive
        self.linger = linger
        self.sim = Simulator(reactor, SimOptions(**{"baud": 0, "act_delay": 0.05, **sim_options}))
        self.port = None  # the bridge's listening port of profile p, once started
        self.ports = {}  # every profile's, by name
        self.metrics_port = None  # the metrics listener's, with ``metrics = tcp:0...``

    def device(self) -> str:
        """The ``port =`` of the modem section."""
        return self.sim.device

    @classmethod
    async def start(cls, tmp_path, remote_factory, receive="pull", linger=0.2, **sim_options):
        bed = cls(tmp_path, remote_factory, receive, linger, sim_options)
        await bed._start()
        return bed

    kind = "tcp"  #: the profile's kind: its listen and remote are tcp:... or udp:...

    def start_remote(self):
        """The remote server's listening port."""
        return reactor.listenTCP(0, self.remote_factory, interface="127.0.0.1")

    def profile_section(self) -> str:
        """``[profile:p]``, bridged to the remote server (a bed may have none)."""
        return (f"[profile:p]\nlisten = {self.kind}:0:interface=127.0.0.1\n"
                f"remote = {self.kind}:127.0.0.1:{self.remote.getHost().port}\n"
                f"linger = {self.linger}\n")

    def bound_port(self, listener):
        """Call before the tree binds; returns a callable giving the port it bound after."""
        listener.endpoint = bound = BoundPort(listener.endpoint)
        return lambda: bound.port

    async def _start(self):
        self.sim.start()
        self.remote = self.start_remote()
        path = self.tmp_path / "bridge.ini"
        path.write_text(
            f"[cellbridge]\nlog_level = warn\nstate_dir = state\n{self.general_keys}"
            f"[modem:main]\nport = {self.device()}\napn = internet\nreceive = {self.receive}\n"
            f"{self.modem_keys}{self.profile_section()}{self.profile_keys}")
        self.root = make_service(load_config(str(path)), reactor, self.components, environ={})
        bound = {name[len("profile:"):]: self.bound_port(self.root.getServiceNamed(name))
                 for name in self.root.namedServices if name.startswith("profile:")}
        metrics = self.root.namedServices.get("metrics")
        metrics_port = self.bound_port(metrics) if metrics is not None else lambda: None
        self.root.privilegedStartService()
        self.ports = {name: port() for name, port in bound.items()}
        self.metrics_port = metrics_port()
        self.port = self.ports.get("p")
        self.root.startService()
        self.modem = self.root.getServiceNamed("modem:main")
        await within(self.modem.when_ready(), "the modem's first bring-up", timeout=30.0)
        self.listener = self.root.namedServices.get("profile:p")
        self.admission = getattr(self.listener, "factory", None)

    async def stop(self):
        try:
            await within(defer.maybeDeferred(self.root.stopService), "the bridge to stop")
            await within(defer.maybeDeferred(self.remote.stopListening),
                         "the remote server to stop")
        finally:
            self.sim.stop()

    def module_sockets(self) -> dict:
        return self.sim.stats()["sockets"]

    def slots_in_use(self) -> frozenset:
        """The module socket indices the modem has handed out."""
        return self.modem.slots_in_use

    def idle(self) -> bool:
        """No link, no waiting connection, no module socket, every slot free."""
        return (not self.admission.sockets and not self.admission.stats()["waiting"]
                and not self.module_sockets() and not self.slots_in_use())

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.stop()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))
