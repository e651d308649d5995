"""The local side: one protocol per accepted TCP connection, handed to a Link once admitted.

Half-close aware (IHalfCloseableProtocol): ``nc -N`` and HTTP/1.0 clients send EOF and still expect
the answer, so EOF is not a close. A connection that waits for a module socket is paused: nothing
is read from it until it is served. A connection that cannot be served is reset, not closed: an
empty clean close would look like an empty answer to the app.
"""

from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from zope.interface import implementer


@implementer(IHalfCloseableProtocol)
class LocalStream(Protocol):
    log = Logger()

    def __init__(self, dispatcher, profile) -> None:
        self.dispatcher = dispatcher
        self.profile = profile
        self.link = None

    def connectionMade(self) -> None:
        self.transport.pauseProducing()
        self.dispatcher.arrive(self, self.profile)

    def attach(self, link) -> None:
        """Served: from now on bytes go to ``link``."""
        self.link = link
        self.transport.resumeProducing()

    def refuse(self) -> None:
        """No module socket for this connection (queue full or timed out): the app sees a reset."""
        self.transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        if self.link is not None:
            self.link.local_data(data)
            return
        # A waiting connection is paused, so a TCP transport delivers nothing here; a transport
        # that still does (a TLS wrapper's decrypted tail) must not have its bytes vanish.
        self.log.warn("[profile:{name}] {n} bytes from a connection that has no module socket "
                      "yet; resetting it", name=self.profile.name, n=len(data))
        self.refuse()

    def readConnectionLost(self) -> None:
        if self.link is not None:
            self.link.local_eof()

    def writeConnectionLost(self) -> None:
        """Only we half-close for writing, and we never do."""

    def connectionLost(self, reason=None) -> None:
        if self.link is not None:
            self.link.local_lost()
        else:
            self.dispatcher.leave(self)


class StreamFactory(Factory):
    """Builds a :class:`LocalStream` per accepted connection of one profile."""

    noisy = False  # the service logs its listeners; Twisted's "Starting factory <object at 0x..>" adds nothing

    def __init__(self, dispatcher, profile) -> None:
        self.dispatcher = dispatcher
        self.profile = profile

    def buildProtocol(self, addr):
        stream = LocalStream(self.dispatcher, self.profile)
        stream.factory = self
        return stream
