"""The local side: one protocol per accepted TCP connection, handed to a Link once admitted.

Half-close aware (IHalfCloseableProtocol): ``nc -N`` and HTTP/1.0 clients send EOF and still expect
the answer, so EOF is not a close. A connection that waits for a module socket is paused: nothing
is read from it until it is served.
"""

from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from zope.interface import implementer


@implementer(IHalfCloseableProtocol)
class LocalStream(Protocol):
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
        self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        if self.link is not None:
            self.link.local_data(data)

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

    def __init__(self, dispatcher, profile) -> None:
        self.dispatcher = dispatcher
        self.profile = profile

    def buildProtocol(self, addr):
        stream = LocalStream(self.dispatcher, self.profile)
        stream.factory = self
        return stream
