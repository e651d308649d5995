"""A TCP stream that outlives its module sockets (``reopen = yes`` on a tcp profile).

AT+QISACK tells how many of the bytes sent on a module socket the remote's TCP has acknowledged
(app note §5.2.2). :class:`PersistentLink` keeps every byte its protocol writes until a module
socket reports it acknowledged, so when the socket dies it can carry the stream on a new one to
the same remote, starting with exactly the bytes never acknowledged on the old one.

What reopens (the cause its socket ended with, :class:`~bridge.modem.socket.SocketLost`): a
link the keepalive finds dead (no ack progress; idle and no longer connected), a tail still
unacked ``ack_wait`` after the last write, SEND FAIL past its retries, an AT+QIRD without an
answer (it wrote nothing: the uplink is intact), and the modem going down (``+PDP DEACT``, a
reboot, the port lost, a mute module's recovery). What does not: a remote close (the server
decided: EOF, or a reset when our bytes may not have reached it, even if the socket then dies
of a reopen cause while its last bytes are read), a corrupt stream (an
AT+QISEND without an answer: filler or resync bytes may have become payload) or any other
failure, the first open failing (``connect`` fails as any endpoint's
does), the daemon stopping, and a link that dies after its protocol's close with every byte
acknowledged (nothing is left to carry, and a new connection would only bring an empty
request).

Meanwhile the protocol's producer is paused (its bytes wait in the local socket's buffers) and
nothing is delivered. Opens are tried once the modem is ready, after 1 s, then doubling up to
``maximum``. ``timeout`` after a loss without the remote acknowledging or sending a byte since
(through any reopens: a remote that accepts connections but takes nothing is no better), the
protocol hears ``ConnectionLost``. What the remote sent that
had not reached us is lost and cannot be known. Acknowledgements are learnt late: bytes the
remote got while their acks were on the way (and, when the modem went down, those acked since
the last AT+QISACK answer) are sent again: at most one send window is repeated, nothing lost.
"""

import random
from dataclasses import dataclass
from typing import Optional

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectError, ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (IConsumer, IPushProducer, IStreamClientEndpoint,
                                         ITransport)
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from bridge.modem.recovery import Backoff
from bridge.modem.socket import ModuleAddress

#: The causes (:class:`~bridge.modem.socket.SocketLost`) after which a link is reopened.
REOPEN_CAUSES = frozenset({"no_ack_progress", "idle_not_connected", "acks_overdue", "send_fail",
                           "read_timeout", "modem_down"})


def reopen_backoff(maximum: float, first: float = 1.0) -> Backoff:
    """Delays between a lost link's open attempts: ``first``, doubling up to ``maximum``. No
    jitter: links lost together wait for the modem, whose socket pool serves them in turn, so
    they cannot retry in lock step."""
    return Backoff(random.Random(), min(first, maximum), maximum, jitter=0.0)


@dataclass(frozen=True)
class ReopenTimings:
    """:ivar first / maximum: delay before the first open attempt, and the most it doubles to
    (``reopen_max_delay``); :ivar timeout: how long a lost link may go without carrying a byte
    (``reopen_timeout``)."""

    first: float = 1.0
    maximum: float = 60.0
    timeout: float = 300.0


@implementer(IStreamClientEndpoint)
class PersistentEndpoint:
    """``endpoint`` (a :class:`~bridge.modem.endpoint.ModemEndpoint`), whose connections reopen
    when their module socket dies. ``label`` names the links in the log."""

    def __init__(self, endpoint, timings: ReopenTimings, label: str) -> None:
        self.endpoint = endpoint
        self.modem = endpoint.modem
        self.timings = timings
        self.label = label

    def connect(self, factory) -> Deferred:
        return PersistentLink(self, factory).open()


@implementer(IPushProducer)
class _Gate:
    """The protocol's producer as a module socket sees it: the socket pauses it when its buffer
    is full, the link while it reopens; it runs only when neither holds it."""

    def __init__(self, link: "PersistentLink") -> None:
        self.link = link
        self.full = False

    def pauseProducing(self) -> None:
        self.full = True
        self.link.steer()

    def resumeProducing(self) -> None:
        self.full = False
        self.link.steer()

    def stopProducing(self) -> None:
        """A module socket never stops its producer (it closes through the protocol)."""


class _Leg(Protocol):
    """The protocol on one module socket of a link."""

    def __init__(self, link: "PersistentLink") -> None:
        self.link = link

    def connectionMade(self) -> None:
        self.link.carried_by(self)

    def dataReceived(self, data: bytes) -> None:
        if self.link.leg is self:
            self.link.carried()  # the remote is there
            self.link.protocol.dataReceived(data)

    def connectionLost(self, reason=None) -> None:
        self.link.leg_lost(self, reason)


@dataclass
class _Reopening:
    """A reopen under way: since when, why, the timers and Deferreds it runs on."""

    since: float
    cause: str
    why: str
    resent: int  # of the bytes kept, those sent on the lost socket (the rest waited)
    timer: object = None
    waiting: Optional[Deferred] = None  # the modem's when_ready
    opening: Optional[Deferred] = None  # the endpoint's connect
    attempts: int = 0


@implementer(ITransport, IConsumer, IPushProducer)
class PersistentLink:
    """The transport its protocol keeps while module sockets come and go under it."""

    log = Logger()

    def __init__(self, endpoint: PersistentEndpoint, factory) -> None:
        self.endpoint = endpoint
        self.modem = endpoint.modem
        self.clock = endpoint.modem.reactor
        self.factory = factory
        self.protocol = None
        self.leg: Optional[_Leg] = None  # the protocol on the socket carrying now
        self.socket = None  # that socket
        self.reopens = 0
        self.opened_at = self.clock.seconds()
        #: Since when nothing has been carried, through the reopens since (None: it carries).
        #: ``timeout`` counts from there, so a remote that accepts every new connection but
        #: never acknowledges a byte does not keep the link reopening for ever.
        self.stalled_since: Optional[float] = None
        self._deadline = None  # when a stall reaches ``timeout``
        self._lost: Optional[_Reopening] = None  # the last loss
        self._base = 0  # stream offset of the current socket's first byte
        self._kept = bytearray()  # written and not known acknowledged, from stream offset:
        self._kept_from = 0
        self._ending = None  # the protocol's close to repeat on a new socket: "write" | "close"
        self._paused = False  # our consumer paused the downlink
        self._producer = None
        self._producer_paused = False
        self._gate = _Gate(self)
        self._legs = Factory.forProtocol(lambda: _Leg(self))
        self._reopening: Optional[_Reopening] = None
        self._backoff = reopen_backoff(endpoint.timings.maximum, endpoint.timings.first)
        self.ended = False

    def __repr__(self) -> str:
        return f"<PersistentLink {self.endpoint.label} on {self.socket!r}>"

    @property
    def slot(self) -> Optional[int]:
        """The module socket index carrying the link; None while it reopens."""
        return self.socket.slot if self.socket is not None else None

    @property
    def remote_closed(self) -> bool:
        """The socket carrying now heard the remote close: the link ends with it (who closed
        a link first, :mod:`bridge.proxy.splice`)."""
        return self.socket is not None and self.socket.remote_closed

    # -- opening ----------------------------------------------------------------------------------

    def open(self) -> Deferred:
        """The first open: fails as the endpoint's would; fires with the protocol."""
        opening = self.endpoint.endpoint.connect(self._legs)
        return opening.addCallback(self._first_opened)

    def _first_opened(self, _) -> Protocol:
        if self.protocol is None:
            raise ConnectError(string="the factory refused the connection")
        return self.protocol

    def carried_by(self, leg: _Leg) -> None:
        """A module socket is connected: the first one builds the protocol, a later one gets
        the bytes never acknowledged first."""
        self.leg, self.socket = leg, leg.transport
        self._base = self._kept_from
        if self.protocol is None:
            self.protocol = self.factory.buildProtocol(self.socket.getPeer())
            if self.protocol is None:
                self.leg = self.socket = None
                leg.transport.abortConnection()
                return
            self.protocol.makeConnection(self)
        if self._producer is not None:
            self._gate.full = False  # as the new socket sees it
            self.socket.registerProducer(self._gate, True)
        if self._paused:
            self.socket.pauseProducing()
        reopening, self._reopening = self._reopening, None
        if reopening is not None:
            self._reopened(reopening)
        self.steer()

    def _reopened(self, reopening: _Reopening) -> None:
        reopening.opening = None  # it fires with this socket's protocol right after
        self._stop(reopening)
        self.reopens += 1
        self._backoff.reset()
        self.modem.counters.incr("link_reopened", cause=reopening.cause)
        self.log.info("[{label}] link to {peer} reopened on module socket {slot} after {t:.1f} s "
                      "({cause}: {why}); {resent} unacknowledged bytes sent again, then {waiting} "
                      "that were waiting", label=self.endpoint.label, peer=self._peer_text(),
                      slot=self.socket.slot, t=self.clock.seconds() - reopening.since,
                      cause=reopening.cause, why=reopening.why, resent=reopening.resent,
                      waiting=len(self._kept) - reopening.resent)
        if self._kept:
            self.socket.write(bytes(self._kept))
        else:
            self.carried()  # nothing waits for an ack: connected is all there is to prove
        if self._ending == "write":
            self.socket.loseWriteConnection()
        elif self._ending == "close":
            self.socket.loseConnection()

    # -- ITransport -------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if not data or self.ended:
            return
        self._forget_acknowledged()
        self._kept += data
        if self.socket is not None:
            self.socket.write(data)

    def writeSequence(self, data) -> None:
        self.write(b"".join(data))

    def loseWriteConnection(self) -> None:
        if self._ending is None:
            self._ending = "write"
        if self.socket is not None:
            self.socket.loseWriteConnection()
        elif self._reopening is not None and not self._kept:
            # All it wrote was acknowledged on the lost socket: a new connection would carry
            # only an empty request, and the reply that was coming is lost.
            self._end(Failure(ConnectionLost(f"{self._reopening.why}; nothing left to carry "
                                             "after the local EOF")))

    def loseConnection(self) -> None:
        self._ending = "close"
        if self.socket is not None:
            self.socket.loseConnection()
        elif self._reopening is not None and not self._kept:
            self._end(Failure(ConnectionDone()))  # nothing left to carry

    def abortConnection(self) -> None:
        if self.socket is not None:
            self.socket.abortConnection()
        elif not self.ended:
            self._end(Failure(ConnectionAborted()))

    def getPeer(self):
        return self.endpoint.endpoint.peer if self.socket is None else self.socket.getPeer()

    def getHost(self):
        if self.socket is not None:
            return self.socket.getHost()
        peer = self.endpoint.endpoint.peer
        return ModuleAddress(peer.type, self.modem.local_ip or "", 0, self.modem.name)

    # -- IConsumer: the protocol's producer, through the gate --------------------------------------

    def registerProducer(self, producer, streaming: bool) -> None:
        if not streaming:
            raise ValueError("a module link takes push producers only")
        self._producer, self._producer_paused = producer, False
        if self.socket is not None:
            self._gate.full = False
            self.socket.registerProducer(self._gate, True)
        self.steer()

    def unregisterProducer(self) -> None:
        self._producer = None
        if self.socket is not None:
            self.socket.unregisterProducer()

    def steer(self) -> None:
        """Pause the producer while the socket is full or while there is no socket; else run."""
        if self._producer is None:
            return
        hold = self.socket is None or self._gate.full
        if hold and not self._producer_paused:
            self._producer_paused = True
            self._producer.pauseProducing()
        elif not hold and self._producer_paused:
            self._producer_paused = False
            self._producer.resumeProducing()

    # -- IPushProducer: the downlink --------------------------------------------------------------

    def pauseProducing(self) -> None:
        self._paused = True
        if self.socket is not None:
            self.socket.pauseProducing()

    def resumeProducing(self) -> None:
        self._paused = False
        if self.socket is not None:
            self.socket.resumeProducing()

    def stopProducing(self) -> None:
        self.loseConnection()

    # -- a socket ends ----------------------------------------------------------------------------

    def leg_lost(self, leg: _Leg, reason: Failure) -> None:
        if leg is not self.leg:
            return  # a socket the protocol refused
        self._forget_acknowledged()
        resent = self._base + self.socket.acks.sent - self._kept_from
        remote_closed = self.socket.remote_closed  # the server decided, whatever came after
        self.leg = self.socket = None
        if self.ended:
            return
        cause = getattr(reason.value, "cause", None)
        if (cause in REOPEN_CAUSES and not remote_closed and self.modem.running
                and (self._ending is None or self._kept)):
            self._start_reopening(_Reopening(self.clock.seconds(), cause,
                                             reason.getErrorMessage(), resent))
        else:
            self._end(reason)

    def _forget_acknowledged(self) -> None:
        """Drop what the current socket reports acknowledged: it never needs to go again."""
        if self.socket is None:
            return
        acknowledged = self._base + self.socket.acknowledged - self._kept_from
        if acknowledged > 0:
            del self._kept[:acknowledged]
            self._kept_from += acknowledged
            self.carried()

    def carried(self) -> None:
        """The remote acknowledged or sent something: the link is not stalled."""
        self.stalled_since = None
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _start_reopening(self, reopening: _Reopening) -> None:
        self._reopening = self._lost = reopening
        if self.stalled_since is None:
            self.stalled_since = reopening.since
            self._deadline = self.clock.callLater(self.endpoint.timings.timeout, self._give_up)
        self.steer()
        self.log.info("[{label}] reopening the link to {peer} ({n} unacknowledged bytes kept)",
                      label=self.endpoint.label, peer=self._peer_text(), n=len(self._kept))
        self._attempt_later(reopening)

    def _attempt_later(self, reopening: _Reopening) -> None:
        reopening.timer = self.clock.callLater(self._backoff.next_delay(), self._attempt,
                                               reopening)

    def _attempt(self, reopening: _Reopening) -> None:
        reopening.timer = None
        if not self.modem.running:
            self._stopping(reopening)
            return
        reopening.waiting = self.modem.when_ready(self.endpoint.endpoint.context)
        reopening.waiting.addCallbacks(self._open_again, self._not_waiting, (reopening,),
                                       errbackArgs=(reopening,))

    def _open_again(self, _, reopening: _Reopening) -> None:
        reopening.waiting = None
        reopening.attempts += 1
        reopening.opening = self.endpoint.endpoint.connect(self._legs)
        reopening.opening.addErrback(self._open_failed, reopening)

    def _open_failed(self, failure: Failure, reopening: _Reopening) -> None:
        reopening.opening = None
        if failure.check(CancelledError) or self._reopening is not reopening:
            return
        self.log.info("[{label}] reopening the link to {peer}: attempt {k} failed ({why})",
                      label=self.endpoint.label, peer=self._peer_text(), k=reopening.attempts,
                      why=failure.getErrorMessage())
        self._attempt_later(reopening)

    def _not_waiting(self, failure: Failure, reopening: _Reopening) -> None:
        failure.trap(CancelledError)
        if reopening.waiting is not None:  # not our cancel: the modem stopped
            reopening.waiting = None
            self._stopping(reopening)

    def _stopping(self, reopening: _Reopening) -> None:
        self._end(Failure(ConnectionLost(f"{reopening.why}; not reopened: the daemon is "
                                         "stopping")))

    def _give_up(self) -> None:
        """Nothing carried for ``timeout`` since a loss: not reopened, or reopened onto a
        remote that takes nothing. The local connection is reset."""
        self._deadline = None
        if self.socket is not None:
            self._forget_acknowledged()  # the acks learnt since the last write count too
            if self.stalled_since is None or not self._kept:
                self.carried()  # it carried, or nothing waits for an ack: not stalled
                return
        timeout, lost, socket = self.endpoint.timings.timeout, self._lost, self.socket
        if socket is not None or lost.since > self.stalled_since:
            how = f"carried nothing through reopens for {timeout:g} s"
        else:
            how = f"not reopened within {timeout:g} s"
        self.log.warn("[{label}] link to {peer} {how} ({n} attempts since the last loss; lost "
                      "by {cause}: {why}); resetting its local connection",
                      label=self.endpoint.label, peer=self._peer_text(), how=how,
                      n=lost.attempts, cause=lost.cause, why=lost.why)
        self.modem.counters.incr("link_reopen_timeout")
        self._end(Failure(ConnectionLost(f"{how} ({lost.why})")))
        if socket is not None:
            socket.abortConnection()

    # -- ending -----------------------------------------------------------------------------------

    def _end(self, reason: Failure) -> None:
        self.ended = True
        self.carried()  # no deadline any more
        if self._reopening is not None:
            self._stop(self._reopening)
            self._reopening = None
        self._kept.clear()
        protocol, self.protocol = self.protocol, None
        self._producer = None
        if protocol is not None:
            protocol.connectionLost(reason)

    @staticmethod
    def _stop(reopening: _Reopening) -> None:
        timer, deferreds = reopening.timer, (reopening.waiting, reopening.opening)
        reopening.timer = reopening.waiting = reopening.opening = None
        if timer is not None and timer.active():
            timer.cancel()
        for deferred in deferreds:
            if deferred is not None:
                deferred.cancel()

    def _peer_text(self) -> str:
        peer = self.endpoint.endpoint.peer
        return f"{peer.host}:{peer.port}"

    # -- diagnostics ------------------------------------------------------------------------------

    def stats(self) -> dict:
        """The carrying socket's figures (or a reopening link's, idle since its loss), with
        the link's age, the reopens so far and the bytes kept for a resend."""
        now = self.clock.seconds()
        if self.socket is not None:
            figures = self.socket.stats()
        else:
            since = self._lost.since if self._lost is not None else self.opened_at
            figures = {"slot": None, "state": "reopening", "uplink_buffered": 0,
                       "downlink_held": 0, "sent": 0, "unacked": 0, "received": 0,
                       "idle": now - since}
        return {**figures, "age": now - self.opened_at, "reopens": self.reopens,
                "kept": len(self._kept)}
