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
  AT+QICLOSE, as a farewell (its loss is not a loss of payload).
- **Close**: ``loseConnection`` sends close_notify and lets the socket close once it is acked,
  without waiting for the peer's own close_notify (RFC 5246 §7.2.1 and RFC 8446 §6.1 allow
  this): waiting would keep a module socket open for as long as the peer likes. After our
  close_notify, the end of the stream is ours, so a peer that just closes is a clean end.
- **Remote close**: the peer's close_notify ends the stream cleanly. It is answered as the
  module socket closes, as a farewell: if the remote has already closed, the answer is moot and
  the end stays clean. A remote that closes without close_notify is a truncation: the
  application hears ``ConnectionLost`` (its local connection is reset).
"""

from OpenSSL import SSL
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectError, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IHandshakeListener, IStreamClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer


class HandshakeFailed(ConnectError):
    """The TLS handshake did not complete: the message names why."""

    def __str__(self) -> str:
        return f"TLS handshake failed: {self.args[0]}"


def _openssl_words(error: SSL.Error) -> str:
    details = error.args[0] if error.args else None
    if isinstance(details, list):  # pyOpenSSL: [(library, function, reason), ...]
        words = [entry[-1] for entry in details if entry and entry[-1]]
        if words:
            return "; ".join(words)
    return str(error)


@implementer(IHandshakeListener)
class _Watch(Protocol):
    """Between a :class:`TLSLink` and its application protocol, through Twisted's public
    interfaces: it hears the handshake complete, and the true cause of an end (a TLS error
    closes the transport first, which then reports a mere ``ConnectionDone``; Twisted hands the
    wrapped protocol the real cause). Everything else passes straight on; the application's
    transport is the link itself."""

    def __init__(self, link: "TLSLink", app) -> None:
        self.link = link
        self.app = app

    def makeConnection(self, transport) -> None:
        self.app.makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:
        self.app.dataReceived(data)

    def handshakeCompleted(self) -> None:
        self.link.handshake_completed()

    def connectionLost(self, reason) -> None:
        self.link.ended(reason)
        self.app.connectionLost(reason)


class TLSLink(TLSMemoryBIOProtocol):
    """TLS over one :class:`~bridge.modem.socket.ModuleSocket` (built by :class:`TLSLinkFactory`).

    :ivar app: the application protocol (its transport is this link)
    :ivar secured: fires with ``app`` once the handshake is done
    :ivar refusal: the first reason the policy gave to refuse the peer, for the log line
    """

    log = Logger()

    def __init__(self, factory, wrappedProtocol) -> None:
        super().__init__(factory, _Watch(self, wrappedProtocol))
        self.app = wrappedProtocol
        self.secured = Deferred(lambda _: self.abortConnection())
        self.refusal = None
        self._deadline = None
        self._handshaken = False
        self._answer_owed = False  # the peer's close_notify came; ours is held (_tls_event)
        self._peer_closed = False  # the peer's close_notify came: nothing more can be sent
        self._late = 0  # bytes the application wrote after that (TLS drops them)
        self._write_closed = False  # loseWriteConnection: the socket lingers
        self._timed_out = False
        self._transport_reason = None  # how the socket ended, for a cut handshake
        self._said_goodbye = False  # our close_notify is out: the stream's end is ours

    @property
    def slot(self):
        """The index of the module socket under the TLS, as a module socket answers it."""
        return self.transport.slot

    @property
    def remote_closed(self) -> bool:
        """The peer ended the stream: its close_notify, or its module socket's remote close
        (who closed a link first, :mod:`bridge.proxy.splice`)."""
        return self._peer_closed or getattr(self.transport, "remote_closed", False)

    def stats(self) -> dict:
        """The module socket's figures: its bytes are TLS records, what the module carries."""
        return {**self.transport.stats(), "tls": True}

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
        """OpenSSL's progress report, for one event: the peer's close_notify (an alert read,
        description 0). TLS would answer it at once, as payload; the answer is held back and
        becomes the link's last words (:meth:`lastWords`), a farewell the module socket sends
        as it closes: a remote that closes right after its close_notify would otherwise make
        the unsent answer look like lost payload, and the application see a reset instead of
        the clean end it is."""
        read_alert = where & SSL.SSL_CB_READ_ALERT == SSL.SSL_CB_READ_ALERT  # not a bit of its own
        if read_alert and value & 0xFF == 0:
            self._peer_closed = True
            shutdown = connection.get_shutdown()
            if not shutdown & SSL.SENT_SHUTDOWN:  # else it answers ours: nothing is owed
                connection.set_shutdown(shutdown | SSL.SENT_SHUTDOWN)
                self._answer_owed = True

    def handshake_completed(self) -> None:
        """(From the watch.) Before any application byte is delivered."""
        self._handshaken = True
        self._stop_deadline()
        self.secured.callback(self.app)

    def _too_slow(self) -> None:
        self._deadline = None
        self._timed_out = True
        self.abortConnection()

    def write(self, data: bytes) -> None:
        if data and self._peer_closed:
            # TLS would drop them silently and the application read a clean EOF after all.
            self._late += len(data)
            return
        super().write(data)

    def loseWriteConnection(self) -> None:
        """The application's EOF: the socket lingers for the reply; close_notify comes at its
        end (:meth:`lastWords`)."""
        self._write_closed = True
        self.transport.loseWriteConnection()

    def lastWords(self) -> bytes:
        """close_notify (ours, or the answer to the peer's), for the socket to send as it
        closes: at the end of a linger, or once the peer's close_notify ended the stream."""
        connection = self.getHandle()
        if connection is None or not self._handshaken:
            return b""
        if self._answer_owed:
            self._answer_owed = False
            connection.set_shutdown(SSL.RECEIVED_SHUTDOWN)  # the answer was held, not sent
        elif connection.get_shutdown() & SSL.SENT_SHUTDOWN:
            return b""
        try:
            connection.shutdown()
            words = connection.bio_read(2 ** 15)
        except SSL.Error:
            return b""
        self._said_goodbye = True
        return words

    def loseConnection(self) -> None:
        if self._write_closed:
            # The socket lingers after our EOF and takes no more payload: close_notify goes
            # as its farewell.
            self.transport.loseConnection()
            return
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
        self._transport_reason = reason
        if self._late and reason.check(ConnectionDone):
            peer = self.transport.getPeer()
            why = f"{self._late} bytes written after the peer's close_notify were not sent"
            self.log.warn("[{label}] TLS with {host}:{port}: {why}", label=self.factory.label,
                          host=peer.host, port=peer.port, why=why)
            reason = Failure(ConnectionLost(why))
        connection = self.getHandle()
        if self._said_goodbye and reason.check(ConnectionDone) and connection is not None:
            # We ended the stream: the peer's close_notify is not awaited, its absence is not
            # a truncation.
            connection.set_shutdown(SSL.SENT_SHUTDOWN | SSL.RECEIVED_SHUTDOWN)
        super().connectionLost(reason)

    def ended(self, cause) -> None:
        """(From the watch, before the application hears it.) A link that ends before its
        handshake fails ``secured``; a TLS error after it is one line."""
        if not self.secured.called:
            self.secured.errback(HandshakeFailed(string=self._why_unsecured(cause)))
        elif cause.check(SSL.Error):  # e.g. a TLS 1.3 server refusing our client certificate
            peer = self.transport.getPeer()
            self.log.warn("[{label}] TLS with {host}:{port} failed: {why}",
                          label=self.factory.label, host=peer.host, port=peer.port,
                          why=_openssl_words(cause.value))

    def _why_unsecured(self, cause) -> str:
        """The first true reason: the policy's refusal, OpenSSL's, the deadline, or the
        socket's own end (which TLS reports as a mere "non-clean" loss)."""
        if self.refusal:
            return self.refusal
        if cause.check(SSL.Error):
            return _openssl_words(cause.value)
        if self._timed_out:
            return f"no handshake within {self.factory.timeout:g} s"
        ending = self._transport_reason or cause
        if ending.check(ConnectionDone):
            return "the remote closed the connection during the handshake"
        told = ending.value.args[0] if ending.value.args else None  # the socket's own words
        return told if isinstance(told, str) and told else ending.getErrorMessage()

    def _stop_deadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None


class TLSLinkFactory(TLSMemoryBIOFactory):
    """Builds :class:`TLSLink` s around ``wrappedFactory``'s protocols.

    :param policy: a client or server connection creator (:mod:`bridge.tls.policy`)
    :param timeout: seconds the handshake may take
    :param label: whose links they are, for log lines (``profile:NAME``, ``server:NAME``)
    """

    protocol = TLSLink
    noisy = False

    def __init__(self, policy, is_client: bool, wrappedFactory, timeout: float, clock,
                 label: str = "tls") -> None:
        super().__init__(policy, is_client, wrappedFactory, clock)
        self.timeout = timeout
        self.clock = clock
        self.label = label


@implementer(IStreamClientEndpoint)
class SecureEndpoint:
    """``endpoint`` with TLS on top, like Twisted's ``wrapClientTLS``, except that ``connect``
    fires only once the handshake is done: a caller never starts carrying on a link whose peer
    is not yet verified, and a refusal fails the connect with its reason."""

    def __init__(self, endpoint, policy, timeout: float, clock, label: str = "tls") -> None:
        self.endpoint = endpoint
        self.policy = policy
        self.timeout = timeout
        self.clock = clock
        self.label = label

    def connect(self, factory) -> Deferred:
        links = TLSLinkFactory(self.policy, True, factory, self.timeout, self.clock, self.label)
        return self.endpoint.connect(links).addCallback(lambda link: link.secured)
