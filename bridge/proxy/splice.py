"""A splice of two transports: an accepted local connection and its module socket.

Like ``twisted.protocols.portforward``, each side is a protocol that writes into the other's
transport, with each transport registered as the other's push producer, so backpressure runs both
ways: a full module uplink pauses reading the local socket, a full local socket pauses the module
reads. Beyond portforward: half-close (``nc -N`` and HTTP/1.0 clients send EOF and still expect
the answer, so local EOF becomes the module socket's ``loseWriteConnection``), and a module side
lost uncleanly resets the local connection instead of closing it: an app must not read a clean
EOF after bytes were lost.

The module side may come first: a module-side server's client is accepted before its local
connection exists (:mod:`bridge.proxy.reverse`). Its module socket is paused meanwhile, and what
it delivers anyway (push mode cannot be paused; the socket bounds it; a TLS handshake's last
read) waits for the splice, even if the client has closed cleanly meanwhile: its bytes, then
EOF.

Each splice counts what it carries on its :class:`~bridge.proxy.accounting.Link` (one int add per
chunk) and, when its module side ends, hands it to its admission's ledger with the close cause.
Who closed first is noted when the local side closes (or the bridge ends the link): the module
socket's own close completes later (its bytes drained and acked, AT+QICLOSE), and the other end
may have closed meanwhile.
"""

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from zope.interface import implementer

from bridge.proxy.accounting import REMOTE, Link, close_cause


@implementer(IHalfCloseableProtocol)
class LocalSide(Protocol):
    """The accepted local connection. It is paused from the start: nothing is read until the
    module socket is connected (its bytes wait in the kernel meanwhile).

    ``admission`` (a profile's :class:`~bridge.proxy.admission.Admission` or a server client's
    forwarding) gives ``name``, ``ledger``, ``link_client(local)``, ``arrived(local)`` and
    ``ended(socket)``."""

    log = Logger()

    def __init__(self, admission) -> None:
        self.admission = admission
        self.module = None  # the ModuleSide, once spliced
        self.connecting = None  # the endpoint's connect Deferred while it runs
        self.ended = False
        self.local_first = False  # the app closed or half-closed, or the bridge ended the
        # link, before the remote closed (the close cause, bridge.proxy.accounting)
        self.link = Link()
        self._fed = False  # the module socket is registered as our transport's producer

    def connectionMade(self) -> None:
        self.transport.pauseProducing()
        self.admission.arrived(self)

    def spliced(self, module: "ModuleSide") -> None:
        self.connecting = None
        self.module = module
        self.admission.ledger.opened(self.link, self.admission.link_client(self))
        if module.gone is not None:  # it ended cleanly first: what it delivered, then EOF
            self.transport.write(bytes(module.early))
            module.early.clear()
            self.transport.loseConnection()
            self.link_ended(module.gone, REMOTE)
            return
        module.transport.registerProducer(self.transport, True)
        self.transport.registerProducer(module.transport, True)
        self._fed = True
        if module.early:
            self.transport.write(bytes(module.early))
            module.early.clear()
        self.transport.resumeProducing()

    def dataReceived(self, data: bytes) -> None:
        if self.module is not None and self.module.transport is not None:
            self.link.uplink += len(data)
            self.module.transport.write(data)
            return
        # Nothing can carry these bytes (not connected yet, or the module side has ended): the
        # app must learn that they were not delivered.
        self.log.warn("[{name}] {n} bytes from a local connection with no module socket to carry "
                      "them; resetting it", name=self.admission.name, n=len(data))
        self.reset()

    def _closing(self) -> None:
        """The local side closes or half-closes, or the bridge ends the link: first, unless the
        module socket has already heard the remote close."""
        module = self.module.transport if self.module is not None else None
        if not getattr(module, "remote_closed", False):
            self.local_first = True

    def readConnectionLost(self) -> None:
        self._closing()
        if self.module is not None and self.module.transport is not None:
            self.module.transport.loseWriteConnection()

    def writeConnectionLost(self) -> None:
        """Only the module side's end closes our writing, and it closes the whole connection."""

    def connectionLost(self, reason=None) -> None:
        self.ended = True
        self._closing()
        if self.module is not None and self.module.transport is not None:
            self.module.transport.unregisterProducer()  # a TLS close waits for its producer
            self.module.transport.loseConnection()
        elif self.connecting is not None:
            self.connecting.cancel()

    def link_ended(self, socket, cause: str) -> None:
        """The module side stopped carrying: the link is accounted, the admission told."""
        self.admission.ledger.closed(self.link, cause)
        self.admission.ended(socket)

    def finish(self) -> None:
        """The bridge ends this link (it stops, or its profile went away): nothing more is read
        from the app, what it sent is delivered and acked, the module socket closes gracefully,
        and the app reads what came back, then a clean EOF."""
        if self.module is None or self.module.transport is None:
            return
        self._closing()
        self.module.transport.unregisterProducer()  # its drained uplink must not resume us
        self.transport.pauseProducing()
        self.module.transport.loseConnection()

    def close(self) -> None:
        """Clean close once everything written is sent (the module side ended cleanly)."""
        self._unfeed()  # else loseConnection waits for the producer
        self.transport.loseConnection()

    def reset(self) -> None:
        """Abort: the app sees a reset, never an empty clean close."""
        self._unfeed()
        self.transport.abortConnection()

    def _unfeed(self) -> None:
        if self._fed:
            self._fed = False
            self.transport.unregisterProducer()


class ModuleSide(Protocol):
    """The protocol on the module socket: writes what arrives into the local connection."""

    def __init__(self, local: LocalSide) -> None:
        self.local = local
        self.early = bytearray()  # delivered before the local side was connected
        self.gone = None  # its transport, if it ended cleanly before the local side came

    def dataReceived(self, data: bytes) -> None:
        self.local.link.downlink += len(data)
        if self.local.transport is None:
            self.early += data
        else:
            self.local.transport.write(data)

    def connectionLost(self, reason=None) -> None:
        socket, self.transport = self.transport, None
        local = self.local
        if local.transport is None:  # the local connection is not made yet
            clean = reason is not None and reason.check(ConnectionDone)
            if clean and self.early and local.connecting is not None:
                # A client that sent its bytes and closed at once: they go to the local service
                # once it answers (spliced), then EOF; its end is told then.
                self.gone = socket
                return
            local.link_ended(socket, close_cause(reason, False))
            if local.connecting is not None:
                local.connecting.cancel()
            return
        local.link_ended(socket, close_cause(reason, local.local_first))
        if self.local.ended:
            return
        if reason is not None and reason.check(ConnectionDone):
            self.local.close()
        else:
            self.local.reset()
