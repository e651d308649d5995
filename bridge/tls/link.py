"""TLS on one module socket: Twisted's ``TLSMemoryBIOProtocol`` with a bounded, explained
handshake and the close semantics of a module link.

- **Handshake**: :attr:`TLSLink.secured` fires (with the application protocol) once the handshake
  is done and the peer verified (:mod:`bridge.tls.policy`); nothing is spliced before, so no
  payload moves on an unverified link. It fails with :class:`HandshakeFailed` naming the cause
  (the policy's refusal, OpenSSL's alert, the timeout, the link lost). Cancelling it aborts.
- **Half-close**: a module socket cannot half-close; its ``loseWriteConnection`` lingers while
  the reply flows (:mod:`bridge.modem.socket`). TLS does not end the stream then: a TLS 1.2 peer
  answers close_notify by closing, which would cut the reply. The socket asks for
  :meth:`TLSLink.lastWords` when its linger is over, and close_notify goes out just before
  AT+QICLOSE.
- **Close**: ``loseConnection`` sends close_notify and lets the socket close once it is acked,
  without waiting for the peer's own close_notify (RFC 5246 §7.2.1 and RFC 8446 §6.1 allow
  this): waiting would keep a module socket open for as long as the peer likes. After our
  close_notify, the end of the stream is ours, so a peer that just closes is a clean end.
- **Remote close**: the peer's close_notify ends the stream cleanly; it is not answered (the
  remote closes right after it, and a module socket cannot tell whether it still listens). A
  remote that closes without close_notify is a truncation: the application hears
  ``ConnectionLost`` (its local connection is reset).
"""

from OpenSSL import SSL
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectError, ConnectionDone
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer


class HandshakeFailed(ConnectError):
    """The TLS handshake did not complete: the message names why."""

    def __str__(self) -> str:
        return f"TLS handshake failed: {self.args[0]}"


def _why_lost(reason) -> str:
    """Words for how a link ended during its handshake."""
    if reason.check(SSL.Error):
        details = reason.value.args[0] if reason.value.args else None
        if isinstance(details, list):  # pyOpenSSL: [(library, function, reason), ...]
            words = [entry[-1] for entry in details if entry and entry[-1]]
            if words:
                return "; ".join(words)
        return str(reason.value)
    if reason.check(ConnectionDone):
        return "the remote closed the connection during the handshake"
    return reason.getErrorMessage()


class Connection(SSL.Connection):
    """An OpenSSL connection that keeps the error that ended its handshake or its stream
    (``failure``): Twisted's TLS layer hands that error to the application's
    ``connectionLost``, while its own ``connectionLost`` gets the transport's reason. The
    policies (:mod:`bridge.tls.policy`) make these, so that :class:`TLSLink` can name it."""

    failure = None

    def do_handshake(self) -> None:
        return self._remembering(super().do_handshake)

    def recv(self, bufsiz: int, flags=None) -> bytes:
        return self._remembering(super().recv, bufsiz, flags)

    def _remembering(self, call, *args):
        try:
            return call(*args)
        except (SSL.WantReadError, SSL.ZeroReturnError):  # more to come; the peer's close_notify
            raise
        except SSL.Error as error:
            if self.failure is None:
                self.failure = error
            raise


class TLSLink(TLSMemoryBIOProtocol):
    """TLS over one :class:`~bridge.modem.socket.ModuleSocket` (built by :class:`TLSLinkFactory`).

    :ivar secured: fires with the application protocol once the handshake is done
    :ivar refusal: the first reason the policy gave to refuse the peer, for the log line
    """

    log = Logger()

    def __init__(self, factory, wrappedProtocol, _connectWrapped=True) -> None:
        super().__init__(factory, wrappedProtocol, _connectWrapped)
        self.secured = Deferred(lambda _: self.abortConnection())
        self.refusal = None
        self._deadline = None
        self._handshaken = False
        self._said_goodbye = False  # our close_notify is out: the stream's end is ours

    def refuse(self, why: str) -> None:
        """The policy refuses the peer (called during the handshake); the first reason wins."""
        if self.refusal is None:
            self.refusal = why

    def makeConnection(self, transport) -> None:
        factory = self.factory
        self._deadline = factory.clock.callLater(factory.timeout, self._too_slow)
        super().makeConnection(transport)
        # Set before any byte from the peer can arrive: the handshake cannot complete sooner.
        self.getHandle().set_info_callback(self._tls_event)

    def _tls_event(self, connection, where: int, value: int) -> None:
        """OpenSSL's progress report: the handshake is done, or the peer's close_notify came
        (alert description 0). That one is not answered: the remote closes right after it, and
        an answer racing that close on a module socket would count as payload that could not
        be sent, so the application would see a reset instead of the clean end it is."""
        if where & SSL.SSL_CB_HANDSHAKE_DONE:
            self._handshaken = True
        elif where & SSL.SSL_CB_READ_ALERT and value & 0xFF == 0:
            connection.set_shutdown(connection.get_shutdown() | SSL.SENT_SHUTDOWN)

    def _too_slow(self) -> None:
        self._deadline = None
        self.refuse(f"no handshake within {self.factory.timeout:g} s")
        self.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        if self._handshaken and not self.secured.called:
            self._stop_deadline()
            self.secured.callback(self.wrappedProtocol)

    def loseWriteConnection(self) -> None:
        """The application's EOF: the socket lingers for the reply; close_notify comes at its
        end (:meth:`lastWords`)."""
        self.transport.loseWriteConnection()

    def lastWords(self) -> bytes:
        """close_notify, for the socket to send when its linger is over, before AT+QICLOSE."""
        connection = self.getHandle()
        if connection is None or not self._handshaken:
            return b""
        try:
            connection.shutdown()
            words = connection.bio_read(2 ** 15)
        except SSL.Error:
            return b""
        self._said_goodbye = True
        return words

    def loseConnection(self) -> None:
        super().loseConnection()
        self._close_after_goodbye()

    def unregisterProducer(self) -> None:
        super().unregisterProducer()  # a close waiting for the producer sends close_notify now
        self._close_after_goodbye()

    def _close_after_goodbye(self) -> None:
        connection = self.getHandle()
        if (self.disconnecting and connection is not None
                and connection.get_shutdown() & SSL.SENT_SHUTDOWN):
            self._said_goodbye = True
            self.transport.loseConnection()

    def connectionLost(self, reason) -> None:
        self._stop_deadline()
        connection = self.getHandle()
        if self._said_goodbye and reason.check(ConnectionDone) and connection is not None:
            # We ended the stream: the peer's close_notify is not awaited, its absence is not
            # a truncation.
            connection.set_shutdown(SSL.SENT_SHUTDOWN | SSL.RECEIVED_SHUTDOWN)
        failed = getattr(connection, "failure", None)  # what the application will be told
        cause = Failure(failed) if failed is not None else reason
        if not self.secured.called:
            self.secured.errback(HandshakeFailed(string=self.refusal or _why_lost(cause)))
        elif cause.check(SSL.Error):  # e.g. a TLS 1.3 server refusing our client certificate
            peer = self.transport.getPeer()
            self.log.warn("TLS with {host}:{port} failed: {why}", host=peer.host, port=peer.port,
                          why=_why_lost(cause))
        super().connectionLost(reason)

    def _stop_deadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None


class TLSLinkFactory(TLSMemoryBIOFactory):
    """Builds :class:`TLSLink` s around ``wrappedFactory``'s protocols.

    :param policy: a client or server connection creator (:mod:`bridge.tls.policy`)
    :param timeout: seconds the handshake may take
    """

    protocol = TLSLink
    noisy = False

    def __init__(self, policy, is_client: bool, wrappedFactory, timeout: float, clock) -> None:
        super().__init__(policy, is_client, wrappedFactory, clock)
        self.timeout = timeout
        self.clock = clock


@implementer(IStreamClientEndpoint)
class SecureEndpoint:
    """``endpoint`` with TLS on top, like Twisted's ``wrapClientTLS``, except that ``connect``
    fires only once the handshake is done: a caller never starts carrying on a link whose peer
    is not yet verified, and a refusal fails the connect with its reason."""

    def __init__(self, endpoint, policy, timeout: float, clock) -> None:
        self.endpoint = endpoint
        self.policy = policy
        self.timeout = timeout
        self.clock = clock

    def connect(self, factory) -> Deferred:
        links = TLSLinkFactory(self.policy, True, factory, self.timeout, self.clock)
        return self.endpoint.connect(links).addCallback(lambda link: link.secured)
