"""The transparent-mode session (AT+QIMODE=1) as a Twisted transport, producer and consumer.

A transparent module has one link, and while it is in data mode the UART *is* that link (app
note §4): ``write`` hands bytes to the engine's data mode (:mod:`bridge.at.datamode`, which
guards them so that no payload ever forms an escape) and the module's bytes come straight back
to the protocol. Backpressure is the UART's: the serial port's write queue pauses our producer
(the port holds at most a few kB), and with ``rtscts`` a paused consumer stops the reading of the
port, so the kernel holds the module back with RTS. Without ``rtscts`` stopping the reads would
lose bytes: they are delivered anyway, and past ``push_limit`` held by a paused consumer the
session fails rather than buffer without bound.

While data mode is left (a keepalive check, or the engine probing a possible ``CLOSED``) writes
wait in the session, its producer paused above ``high_water``, until ATO's ``CONNECT``.

Liveness: data mode has no SEND OK, so the app note's QISACK schedule
(:class:`~bridge.keepalive.AckProgressWatch`) starts on uplink bytes, and bytes from the remote
end it (they prove the link). Each check is an escape, AT+QISACK, ATO: it costs the uplink the
escape's guard silence twice (README, "Transparent sessions"). No ack progress by the last
retry: the link is dead, the protocol hears :class:`~bridge.modem.socket.SocketLost`.

Close: ``loseConnection`` sends what waits, escapes, AT+QICLOSE (the module still delivers what
it took). ``loseWriteConnection`` first lingers: the remote's reply flows until it closes or
nothing moved for ``linger`` seconds (sooner while a connection waits for the session). The
remote closing shows as ``CLOSED`` in the stream, after all its bytes: ConnectionDone. Its
context lost, a module restart, the port lost, the modem down: SocketLost.
"""

import enum
from typing import Optional

from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.interfaces import IConsumer, IPushProducer, ITransport
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from bridge.at import commands
from bridge.at.errors import ATEngineError
from bridge.at.events import Closed
from bridge.errors import ModemDown
from bridge.keepalive import AckProgressWatch
from bridge.modem.socket import ModuleAddress, SocketLost, SocketSettings, StreamSocket

#: Why data mode ended (``bridge.at.datamode``) -> the cause a lost session names.
END_CAUSES = {"pdp": "modem_down", "restarted": "modem_down", "lost": "modem_down",
              "abandoned": "escape_unanswered", "resume_failed": "resume_failed"}
#: How long a server's client may take from ``REMOTE IP`` to its ``CONNECT`` (app note §4.2:
#: one after the other).
CONNECT_WAIT = 10.0


class Phase(enum.Enum):
    OPEN = "open"  # carrying both ways
    LINGERING = "lingering"  # the local side sent EOF: the remote's reply still flows
    CLOSING = "closing"  # the protocol has been told; escaping and closing on the module
    CLOSED = "closed"  # the session released


@implementer(IPushProducer)
class _PortGate:
    """Registered with the serial port while the session writes to it: the port's full write
    queue pauses the session's producer."""

    def __init__(self, session: "TransparentSession") -> None:
        self._session = session

    def pauseProducing(self) -> None:
        self._session.port_full(True)

    def resumeProducing(self) -> None:
        self._session.port_full(False)

    def stopProducing(self) -> None:
        """The port is going away: data mode's end tells the session."""


@implementer(ITransport, IPushProducer, IConsumer)
class TransparentSession(StreamSocket):
    """The transport of the module's one transparent link, in data mode when made.

    :param modem: the Modem (``reactor``, ``protocol`` (the engine), ``issue``, ``sockets``,
        ``counters``, ``config.rtscts``, ``attach_socket``, ``detach_socket``)
    :param slot: the pool's index held by this session (0: the module has one link)
    """

    log = Logger()

    def __init__(self, modem, slot: int, peer: ModuleAddress, settings: SocketSettings,
                 context: int = 0, server: bool = False) -> None:
        super().__init__(modem, slot, peer, settings, context, server)
        self.phase = Phase.OPEN
        self.bytes_up = 0
        self.bytes_down = 0
        self.checks = 0  # keepalive escapes made
        self._engine = None
        self._gate = _PortGate(self)
        self._outbox = bytearray()  # written while data mode is left
        self._away = False  # data mode left for a check, or a probe is deciding a marker
        self._checking = False  # a keepalive check is in flight (it ends in command mode)
        self._check_due: Optional[Deferred] = None  # a check waiting for a probe's end
        self._module_closing = False  # AT+QICLOSE issued
        self._awaiting_connect = False  # a server's client: REMOTE IP came, CONNECT is next
        self._close_when_sent = False  # loseConnection came while away: close once back
        self._producer = None
        self._producer_paused = False
        self._port_full = False
        self._paused = False  # our consumer paused us
        self._held = 0  # bytes delivered since our consumer paused us (no rtscts)
        self._reading_paused = False
        self._linger = None
        self._connect_wait = None
        timings = settings.keepalive
        self._watch = AckProgressWatch(self.clock, self._check, self._dead, timings.first,
                                       timings.interval, timings.retries, link="session")

    def __repr__(self) -> str:
        return f"<TransparentSession {self.peer.host}:{self.peer.port} {self.phase.value}>"

    # -- set-up -----------------------------------------------------------------------------------

    def makeConnection(self, protocol) -> None:
        """Attach ``protocol`` to the data mode the module just entered."""
        self.protocol = protocol
        self._engine = self.modem.protocol
        self._awaiting_connect = not self._engine.data_mode.active
        if self._awaiting_connect:
            self._connect_wait = self.clock.callLater(CONNECT_WAIT, self._connect_overdue)
        self.modem.attach_socket(self.slot, self, self.context)
        self._engine.transport.registerProducer(self._gate, True)
        protocol.makeConnection(self)
        self._engine.data_mode.set_sink(self)

    def discard(self) -> None:
        """Close a session nobody will use (an open cancelled meanwhile, a refused client):
        once in data mode, it escapes and closes on the module."""
        self.makeConnection(Protocol())
        self.abortConnection()

    # -- ITransport -------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if not data or self.phase in (Phase.CLOSING, Phase.CLOSED):
            return  # as a TCP transport drops writes after a close
        self.bytes_up += len(data)
        self._traffic()
        self._outbox += data
        self._send()
        self._watch.data_sent()

    def writeSequence(self, data) -> None:
        self.write(b"".join(data))

    def loseWriteConnection(self) -> None:
        """Half-close: the module cannot, so the session lingers for the reply."""
        if self.phase is Phase.OPEN:
            self.phase = Phase.LINGERING
            self._linger = self.clock.callLater(self.settings.linger, self._linger_over)
            self.modem.sockets.add_reclaimable(self)

    def loseConnection(self) -> None:
        """Send what waits, then escape and AT+QICLOSE."""
        if self.phase in (Phase.OPEN, Phase.LINGERING):
            self._close_gracefully()

    def abortConnection(self) -> None:
        if self.phase in (Phase.OPEN, Phase.LINGERING):
            self._outbox.clear()
            self._close(Failure(ConnectionAborted()))

    # -- IConsumer --------------------------------------------------------------------------------

    def registerProducer(self, producer, streaming: bool) -> None:
        if not streaming:
            raise ValueError("a transparent session takes push producers only")
        self._producer = producer
        self._producer_paused = False
        self._gate_producer()

    def unregisterProducer(self) -> None:
        self._producer = None

    def port_full(self, full: bool) -> None:
        """The serial port's write queue is full (or drained again)."""
        self._port_full = full
        self._gate_producer()

    def _gate_producer(self) -> None:
        should = self._port_full or len(self._outbox) >= self.settings.high_water
        if self._producer is None or should == self._producer_paused:
            return
        if not should and len(self._outbox) > self.settings.low_water:
            return
        self._producer_paused = should
        if should:
            self._producer.pauseProducing()
        else:
            self._producer.resumeProducing()

    # -- IPushProducer ----------------------------------------------------------------------------

    def pauseProducing(self) -> None:
        self._paused = True
        self._read_port(True)

    def resumeProducing(self) -> None:
        self._paused = False
        self._held = 0
        self._read_port(False)

    def stopProducing(self) -> None:
        self.loseConnection()

    def _read_port(self, pause: bool) -> None:
        """With RTS/CTS a paused consumer stops the port's reading (the module is held back);
        an escape needs the module's answer, so reading resumes for it."""
        pause = pause and self.modem.config.rtscts and not self._away
        if self._engine is None or pause == self._reading_paused:
            return
        self._reading_paused = pause
        if pause:
            self._engine.transport.pauseProducing()
        else:
            self._engine.transport.resumeProducing()

    # -- the engine's data mode (its sink) ----------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self.bytes_down += len(data)
        self._traffic()
        self._watch.alive()
        if self._paused:
            self._held += len(data)
            if self._held > self.settings.push_limit:
                self._fail(f"the local reader took nothing while {self._held} bytes came "
                           "(without rtscts the module cannot be held back)", "downlink_overrun")
                return
        if self.protocol is not None:
            self.protocol.dataReceived(data)

    def data_mode_resumed(self) -> None:
        """In data mode (a server's client's CONNECT), or back after an escape (ATO's
        CONNECT): what waits goes out."""
        self._away = self._awaiting_connect = False
        self._cancel("_connect_wait")
        self._reading_paused = False  # the escape had the port read; paused again if need be
        if self.phase is Phase.CLOSING:
            self._leave_module()
            return
        self._read_port(self._paused)
        self._send()
        if self._close_when_sent and self.phase is not Phase.CLOSING:
            self._close_gracefully()
        due, self._check_due = self._check_due, None
        if due is not None and not due.called and self.phase is not Phase.CLOSING:
            self._check().chainDeferred(due)

    def data_mode_ended(self, reason: str) -> None:
        """The remote closed: EOF after every byte; the module gone (its context, a restart,
        the port): SocketLost; an escape unanswered (``abandoned``): SocketLost too. The
        module's link is closed where the module is still there to close it."""
        if self.phase is Phase.CLOSED or reason == "escaped":
            return
        if self.phase is not Phase.CLOSING:
            if reason == "closed":
                self.log.info("session to {host}:{port}: the remote closed",
                              host=self.peer.host, port=self.peer.port)
                self._tell_protocol(Failure(ConnectionDone()))
            else:
                cause = END_CAUSES.get(reason, reason)
                self.log.warn("session to {host}:{port} lost: {reason}", host=self.peer.host,
                              port=self.peer.port, reason=reason)
                self.modem.counters.incr("link_dead", cause=cause)
                self._tell_protocol(Failure(SocketLost(f"data mode ended: {reason}", cause)))
        if reason in ("closed", "abandoned", "resume_failed"):
            self._close_on_module()
        else:
            self._release()

    # -- module events ----------------------------------------------------------------------------

    def socket_event(self, event) -> None:
        """A ``CLOSED`` URC in command mode: the remote closed while we were away (a check).
        What it sent meanwhile waited in the module, which no longer gives it out. For a
        server's client before its ``CONNECT``: nothing was carried, a clean end."""
        if not isinstance(event, Closed) or self.phase is Phase.CLOSED:
            return
        if self._awaiting_connect:
            self._awaiting_connect = False
            self._tell_protocol(Failure(ConnectionDone()))
            self._close_on_module()
        elif self._away:
            self._fail("the remote closed while data mode was left for a check; what it sent "
                       "meanwhile cannot be read", "remote_closed_away")

    def modem_down(self, reason: str) -> None:
        if self.phase is Phase.CLOSED:
            return
        if self.phase is not Phase.CLOSING:
            self.log.warn("session to {host}:{port}: modem down ({reason})",
                          host=self.peer.host, port=self.peer.port, reason=reason)
            self._tell_protocol(Failure(SocketLost(f"modem down: {reason}", "modem_down")))
        engine = self._engine
        self._release()
        if engine is not None and engine.data_mode.active:
            engine.data_mode.abandon()

    def _connect_overdue(self) -> None:
        self._connect_wait = None
        if self._awaiting_connect and self.phase is not Phase.CLOSED:
            self._awaiting_connect = False
            self._fail(f"no CONNECT within {CONNECT_WAIT:g} s of the client's REMOTE IP",
                       "connect_overdue")

    # -- sending ----------------------------------------------------------------------------------

    def _send(self) -> None:
        data_mode = self._engine.data_mode if self._engine is not None else None
        if self._outbox and not self._away and data_mode is not None and data_mode.writable:
            data, self._outbox = bytes(self._outbox), bytearray()
            data_mode.write(data)
        elif self._outbox and data_mode is not None and data_mode.active:
            self._away = True  # a probe escape is deciding a marker: wait for its end
        self._gate_producer()

    # -- keepalive --------------------------------------------------------------------------------

    def _check(self) -> Deferred:
        """One keepalive check: escape, AT+QISACK, then ATO (or AT+QICLOSE if it found the
        link dead) -> Deferred(SackResult)."""
        if self.phase not in (Phase.OPEN, Phase.LINGERING):
            return fail(ModemDown("the session is closing"))
        data_mode = self._engine.data_mode
        if not data_mode.writable:  # a probe escape decides a marker: check once it is done
            self._check_due = Deferred()
            return self._check_due
        self.checks += 1
        self._away = self._checking = True
        self._read_port(False)
        answer = Deferred()
        escaping = data_mode.escape()
        escaping.addCallbacks(self._escaped_for_check, self._check_escape_failed,
                              (answer,), errbackArgs=(answer,))
        return answer

    def _escaped_for_check(self, _, answer: Deferred) -> None:
        asking = self.modem.issue(self.addressed(commands.qisack(
            timeout=self.modem.timeouts.qisack)))
        asking.addBoth(self._answer, answer)  # the watch may find the link dead here
        asking.addBoth(self._after_check)

    @staticmethod
    def _answer(result, answer: Deferred):
        """Hand a check's outcome to the watch, unless it stopped meanwhile (cancelled)."""
        if answer.called:
            return
        if isinstance(result, Failure):
            answer.errback(result)
        else:
            answer.callback(result)

    def _check_escape_failed(self, failure, answer: Deferred) -> None:
        """No OK to the escape: the module is not where we think (rebooted, silent), unless
        the escape showed the session ended (``data_mode_ended`` told us)."""
        self._checking = False
        if self.phase is not Phase.CLOSED and self._engine.data_mode.active:
            # Before the watch hears of it (it might call the link dead first and close it
            # with an escape of its own): data_mode_ended('abandoned') ends the session, or
            # closes it if it was closing already.
            self._engine.data_mode.abandon()
        self._answer(failure, answer)

    def _after_check(self, _) -> None:
        """In command mode after a check: back to data mode, or close if it is over."""
        self._checking = False
        if self.phase is Phase.CLOSING:
            self._close_on_module()
        elif self.phase is not Phase.CLOSED:
            back = self.modem.issue(commands.ato(timeout=self.modem.timeouts.simple))
            back.addErrback(self._ato_failed)

    def _ato_failed(self, failure) -> None:
        if self.phase is Phase.CLOSED:
            return
        self._fail(f"ATO after a keepalive check failed: {failure.getErrorMessage()}",
                   "resume_failed")

    def _dead(self, reason: str) -> None:
        self._fail(reason, "no_ack_progress")

    # -- linger -----------------------------------------------------------------------------------

    def _traffic(self) -> None:
        self._last_traffic = self.clock.seconds()
        if self._linger is not None and self._linger.active():
            self._linger.reset(self.settings.linger)

    def _linger_over(self) -> None:
        self._linger = None
        self.log.info("session to {host}:{port}: no traffic for {t:g} s after the local EOF; "
                      "closing", host=self.peer.host, port=self.peer.port, t=self.settings.linger)
        self._close_gracefully()

    @property
    def lingering(self) -> bool:
        return self.phase is Phase.LINGERING

    # -- closing ----------------------------------------------------------------------------------

    def _close_gracefully(self) -> None:
        """A clean end: what waits (and a TLS layer's ``lastWords``) goes out first."""
        last_words = getattr(self.protocol, "lastWords", None)
        words = last_words() if last_words is not None else b""
        if words:
            self._outbox += words
            self._send()
        if self._outbox:
            self._close_when_sent = True  # away: once back, it is sent, then we close
            return
        self._close(Failure(ConnectionDone()))

    def _fail(self, reason: str, cause: str) -> None:
        if self.phase in (Phase.CLOSING, Phase.CLOSED):
            return
        self.log.warn("session to {host}:{port} is dead: {reason}", host=self.peer.host,
                      port=self.peer.port, reason=reason)
        self.modem.counters.incr("link_dead", cause=cause)
        self._outbox.clear()
        self._close(Failure(SocketLost(reason, cause)))

    def _close(self, reason: Failure) -> None:
        """Tell the protocol, then leave data mode and close the module's link."""
        self._tell_protocol(reason)
        self._leave_module()

    def _leave_module(self) -> None:
        """Escape and AT+QICLOSE; a check in flight does it once answered, a probe escape
        deciding a marker once it is decided (``data_mode_resumed`` or ``data_mode_ended``), a
        server's client once its CONNECT came (a command now would reach it as payload)."""
        if self._checking or self._awaiting_connect:
            return
        data_mode = self._engine.data_mode if self._engine is not None else None
        if data_mode is not None and data_mode.writable:
            data_mode.escape().addCallbacks(lambda _: self._close_on_module(),
                                            self._close_escape_failed)
        elif data_mode is None or not data_mode.active:
            self._close_on_module()

    def _close_escape_failed(self, failure) -> None:
        if self.phase is Phase.CLOSED or self._module_closing:
            return  # the escape showed the remote had closed: data_mode_ended closed it
        self.log.warn("session to {host}:{port}: no OK to the closing escape ({why}); "
                      "resynchronising", host=self.peer.host, port=self.peer.port,
                      why=failure.getErrorMessage())
        if self._engine is not None:
            self._engine.data_mode.abandon()
        self._close_on_module()

    def _close_on_module(self) -> None:
        """AT+QICLOSE (after a remote close it may answer ERROR too), then release."""
        if self.phase is Phase.CLOSED or self._module_closing:
            return
        self._module_closing = True
        self._tell_protocol(Failure(ConnectionDone()))
        # It may wait behind a resync (after a probe or an unanswered escape): not a reason
        # to leave the link open on the module.
        closing = self.modem.issue(self.addressed(commands.qiclose(
            timeout=self.modem.timeouts.qiclose + self.modem.resync_budget)))
        closing.addErrback(self._close_failed)
        closing.addBoth(lambda _: self._release())

    def _close_failed(self, failure) -> None:
        if not failure.check(ATEngineError, ModemDown):
            self.log.warn("session: AT+QICLOSE failed: {why}", why=failure.getErrorMessage())

    def _tell_protocol(self, reason: Failure) -> None:
        """Once: the protocol hears the end."""
        if self.phase is Phase.OPEN or self.phase is Phase.LINGERING:
            self.phase = Phase.CLOSING
        self._stop()
        protocol, self.protocol = self.protocol, None
        if protocol is None:
            return
        try:
            protocol.connectionLost(reason)
        except Exception:
            self.log.failure("session: the protocol's connectionLost failed")

    def _stop(self) -> None:
        self._watch.stop()
        self.modem.sockets.remove_reclaimable(self)
        self._cancel("_linger", "_reclaim", "_connect_wait")

    def _release(self) -> None:
        if self.phase is Phase.CLOSED:
            return
        self._tell_protocol(Failure(ConnectionDone()))
        self.phase = Phase.CLOSED
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.data_mode.detach(self)
        if engine is not None and engine.transport is not None:
            if self._reading_paused:
                engine.transport.resumeProducing()
            engine.transport.unregisterProducer()
        self._outbox.clear()
        self.modem.detach_socket(self.slot)
        self.modem.sockets.release(self.slot)

    # -- diagnostics ------------------------------------------------------------------------------

    def stats(self) -> dict:
        return {"slot": self.slot, "state": self.phase.value, "uplink_buffered": len(self._outbox),
                "downlink_held": self._held, "sent": self.bytes_up, "received": self.bytes_down,
                "checks": self.checks, "local_paused": self._paused,
                "reading_paused": self._producer_paused, **self.ages()}
