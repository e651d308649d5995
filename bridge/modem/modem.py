"""Modem: the service that owns one module (port, AT engine, URC routing; bring-up and recovery
through its Supervisor, socket opening through its SocketOpener, the HealthPoll), and what its
sockets share: the bulk :class:`~bridge.modem.pump.Pump` and the
:class:`~bridge.modem.pool.SocketPool` of the six indices.

Module sockets (:class:`~bridge.modem.socket.ModuleSocket`, reached through
:class:`~bridge.modem.endpoint.ModemEndpoint`) get their URCs routed here by index, and are told
when everything on the module is gone ("down": PDP lost, module rebooted, mute, port lost). The
way back to "ready" is the :class:`~bridge.modem.supervisor.Supervisor`'s; with
``persistent=False`` (``cellbridge probe``) there is none: "down" stays down.

With both PDP contexts in use (app note §7) one context can go down alone: ``+PDP DEACT`` names
no context, so the modem asks the module (AT+QISTATE on each) which one is gone. Only that
context's sockets are told "down" and its opens fail; it is brought back alone, and the other
context's links carry on. Both gone, or no clear answer: the whole modem is down as before. While
a recovery (or the bring-up) activates the contexts, the answer would be about contexts it has not
finished with: the question waits until it is done.
"""

import dataclasses
import os
import random
from typing import Callable, Dict, NamedTuple, Optional

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.defer import Deferred, fail, inlineCallbacks, succeed
from twisted.internet.error import ConnectError
from twisted.logger import Logger

from bridge.at import commands
from bridge.at.errors import ATEngineError
from bridge.at.commands import DEFAULT_TIMEOUTS, Selection, Timeouts
from bridge.at.dumps import DumpFiles
from bridge.at.events import (Boot, Closed, ConnectResult, DataAvailable, PdpDeact, Received,
                              Registration, RemoteIp, Resynced, RESTART_SIGNS, ServerStarted,
                              StreamCorrupt)
from bridge.at.protocol import RESYNC_ATTEMPTS, RESYNC_TIMEOUT, ATProtocol
from bridge.at.ring import TrafficRing, describe_payload
from bridge.counters import Counters, DataUsage
from bridge.errors import CellbridgeError, ModemDown
from bridge.modem.bringup import REGISTERED, STAT_NAMES, BringUp, Pacing
from bridge.modem.health import HEALTH_INTERVAL, HealthPoll
from bridge.keepalive import KeepaliveTimings
from bridge.modem.opener import SocketOpener
from bridge.modem.pinstore import PinStore
from bridge.modem.pool import SLOTS, SocketPool
from bridge.modem.pump import Pump
from bridge.modem.recovery import run_reset_command
from bridge.modem.roaming import REFUSAL as ROAMING_REFUSAL, RoamingGate
from bridge.modem.sleep import SleepController
from bridge.modem.socket import SocketSettings
from bridge.modem.stack import ACTIVE_STATES, StackMachine
from bridge.modem.supervisor import RecoveryTimings, Supervisor
from bridge.modem.transport import TransportError, open_port
from bridge.modem.usage import UsageStore

#: Without an answer for this long (and nothing on the wire) the modem is not healthy.
ANSWER_STALE = 120.0
SOCKET_EVENTS = (ConnectResult, Closed, DataAvailable, Received, StreamCorrupt)
#: What module-side servers hear: an accepted client (on whatever index the module picked, even
#: one a client link holds: never that link's business) and ``SERVER OK``.
SERVER_EVENTS = (RemoteIp, ServerStarted)
PDP_LOST = "PDP context deactivated by the network (+PDP DEACT)"


class _Attached(NamedTuple):
    """A socket's URC receiver and the PDP context its socket lives on."""

    handler: object
    context: int


class _ModemProtocol(ATProtocol):
    """The AT engine, telling its modem when the port goes away; ``lost`` fires then.

    The modem hears of the loss before the engine fails its outstanding commands: whoever
    reacts to such a failure (a socket closing, a waiting connection served next) must find the
    modem already down, or it would issue new commands into the dead engine and react again."""

    def __init__(self, clock, on_lost: Callable, **options) -> None:
        super().__init__(clock, **options)
        self._on_lost = on_lost
        self.lost = Deferred()

    def connectionLost(self, reason=None) -> None:
        self._on_lost(self, reason)
        super().connectionLost(reason)
        self.lost.callback(None)


class Modem(Service):
    """One module. ``on_fatal(error)`` is called for what must stop the daemon (SIM locked, port
    cannot be opened at start); with ``persistent=False`` (probe) any bring-up failure or loss is
    fatal or final, else the supervisor brings the module back.

    :param timeouts: overrides the limits otherwise built from ``config.timeouts``
    :param pacing, timings, resync_timeout: shorter limits for tests
    :param run_command: ``run_reset_command``'s signature, for the ladder's last step
    """

    log = Logger()

    def __init__(self, reactor, config, state_dir: str, *, on_fatal: Optional[Callable] = None,
                 persistent: bool = True, timeouts: Optional[Timeouts] = None,
                 pacing: Pacing = Pacing(), health_interval: float = HEALTH_INTERVAL,
                 port_opener=open_port, rng: Optional[random.Random] = None,
                 timings: RecoveryTimings = RecoveryTimings(),
                 resync_timeout: float = RESYNC_TIMEOUT, counters: Optional[Counters] = None,
                 run_command: Callable = run_reset_command) -> None:
        self.reactor = reactor
        self.config = config
        self.name = f"modem:{config.name}"
        self.receive_mode = config.receive
        #: PDP contexts the profiles and servers on this modem use (the service tree adds them)
        self.contexts_in_use = {0}
        #: a module-side server listens: socket commands must say client or server side
        self.serves = False
        self.protocol: Optional[ATProtocol] = None
        self.ready = False
        #: "stopped", "starting", "ready" or "down" (``state_reason`` says why), since
        #: ``state_since`` (clock time): what ``cellbridge status`` shows
        self.state = "stopped"
        self.state_reason = ""
        self.state_since = reactor.seconds()
        self.local_ip: Optional[str] = None  #: the first context's
        self.local_ips: dict = {}  #: every context in use -> its local IP
        self._ups = 0  # how often the modem came up: answers from before the last one are stale
        #: contexts down alone while the modem is ready (the other one carries on)
        self.contexts_down: set = set()
        self.info: dict = {}
        self.stacks = {0: StackMachine(), 1: StackMachine()}  #: per PDP context
        self.stack = self.stacks[0]
        self.pins = PinStore(reactor, state_dir, config.name)
        self.counters = counters if counters is not None else Counters()
        self.usage = DataUsage()  #: what the module carried for us (metered SIMs)
        self._usage_store = UsageStore(reactor, state_dir, config.name, self.usage)
        self.persistent = persistent
        self.timeouts = (timeouts if timeouts is not None
                         else dataclasses.replace(DEFAULT_TIMEOUTS, **dict(config.timeouts)))
        self.pacing = pacing
        self.sleep = SleepController(reactor, self._set_dtr, self._enable_sleep,
                                     enabled=config.sleep)
        self.supervisor = Supervisor(self, timings, rng, run_command)
        self.mux = config.mode == "mux"
        #: six module sockets (AT+QIMUX=1), or the one transparent session (app note §4)
        self.sockets = SocketPool(on_count=self.sleep.links_changed, count=SLOTS if self.mux else 1)
        self.pump = Pump(self.issue)
        self._on_fatal = on_fatal or (lambda error: None)
        self._port_opener = port_opener
        self._resync_timeout = resync_timeout
        #: ``roaming = no``: data held down while the module is roaming
        self.roaming = RoamingGate(config.roaming, self._roaming_hold, waits=persistent)
        self.health = HealthPoll(reactor, self.name, lambda: self.protocol, self.info, self.timeouts,
                                 health_interval, self._registration_seen)
        self._opener = SocketOpener(self)
        self._handlers: Dict[int, _Attached] = {}
        self._ready_waiters: list = []
        self._tracing: Optional[list] = None  # find_lost_context runs: context_doubt waiters
        self._traces = 0  # find_lost_context calls running (a second +PDP DEACT starts one)
        self._open_waiters: list = []
        self._state_listeners: list = []
        self._context_listeners: list = []
        self._server_listeners: list = []
        self._engine: Optional[ATProtocol] = None  # the last one, kept for last_answer
        #: called with each AT traffic ring entry, whichever engine records it
        self.traffic_observers: list = []
        #: where each engine's ring is saved on module events and on SIGUSR1
        self.dumps = DumpFiles(os.path.join(state_dir, "dumps"), f"modem-{config.name}")
        self._port = None

    # -- service ----------------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._usage_store.load()
        self._enter("starting", "opening the port and bringing the module up")
        self._connect().addCallbacks(self._opened, self._open_failed)

    def stopService(self):
        super().stopService()
        self.supervisor.stop()
        self._mark_down("stopping", expected=True)
        self._usage_store.close()
        self._enter("stopped")
        for _, waiter in list(self._ready_waiters):
            waiter.cancel()  # it will not be ready again
        self.log.info("{name}: data carried: {sent} bytes sent, {received} bytes received "
                      "(kept in {path})", name=self.name, sent=self.usage.sent,
                      received=self.usage.received, path=self._usage_store.path)
        return self.close_port()

    def when_open(self) -> Deferred:
        """Fires when the port is open (systemd readiness), fails if it cannot be opened."""
        if self.protocol is not None:
            return succeed(None)
        waiter = Deferred()
        self._open_waiters.append(waiter)
        return waiter

    def when_ready(self, context: Optional[int] = None) -> Deferred:
        """Fires (None) the next time bring-up completes, or PDP ``context`` (if given) is back
        alone; now if the modem is ready (with ``context`` up). Cancelling it stops the wait;
        the modem stopping cancels it too (CancelledError)."""
        if self.context_ready(context):
            return succeed(None)
        waiter = Deferred(lambda d: self._ready_waiters.remove((context, d)))
        self._ready_waiters.append((context, waiter))
        return waiter

    def context_ready(self, context: Optional[int] = None) -> bool:
        """The modem is ready, and PDP ``context`` (if given) is not down alone."""
        return self.ready and context not in self.contexts_down

    @property
    def two_contexts(self) -> bool:
        """The profiles or servers use the second PDP context (app note §7)."""
        return self.contexts_in_use != {0}

    def add_state_listener(self, listener: Callable) -> None:
        """``listener(state, reason)`` with state "ready" or "down": the whole modem."""
        self._state_listeners.append(listener)

    def add_context_listener(self, listener: Callable) -> None:
        """``listener(context, state, reason)`` with state "down" or "ready": one PDP context
        lost or back alone while the modem stays ready (a whole-modem change goes to the state
        listeners only, and covers every context)."""
        self._context_listeners.append(listener)

    def add_server_listener(self, listener: Callable) -> None:
        """``listener(event)`` for each of :data:`SERVER_EVENTS`."""
        self._server_listeners.append(listener)

    @property
    def port(self):
        """The open ``ModemPort`` (None while the port is lost or closed)."""
        return self._port

    @property
    def ring(self):
        """The AT traffic ring of the last engine (kept after its port was lost), or None."""
        return self._engine.ring if self._engine is not None else None

    @property
    def resync_budget(self) -> float:
        """The longest an engine resync can take (a command queued behind it waits that long);
        on a transparent modem each attempt escapes first."""
        attempt = self._resync_timeout
        if self.protocol is not None and self.protocol.transparent:
            attempt += self.protocol.data_mode.escape_time
        return RESYNC_ATTEMPTS * attempt

    @property
    def last_answer(self) -> Optional[float]:
        """Clock time of the module's last command answer (for the systemd watchdog)."""
        return self._engine.last_response if self._engine is not None else None

    def healthy(self) -> bool:
        """The module answers (or a command is still within its timeout), or recovery is under
        way: the watchdog must not restart a daemon that is already bringing its module back.
        A transparent session in data mode owns the UART, busy or idle: nothing can be asked of
        the module then, and the session's own checks find a dead link."""
        if self.persistent and self.supervisor.recovering:
            return True
        if self.protocol is None:
            return False
        if self.protocol.data_mode.active:
            return True  # a transparent session owns the UART: no command can be asked
        last = self.last_answer
        return (last is None or self.protocol.busy
                or self.reactor.seconds() - last < ANSWER_STALE)

    # -- the port (the supervisor's hooks: reopen_port, close_port) ------------------------------

    def _connect(self) -> Deferred:
        """Open the port with a fresh engine -> Deferred(None) once it is ``self.protocol``."""
        ring = TrafficRing(self.reactor, observers=self.traffic_observers, dumps=self.dumps)
        protocol = _ModemProtocol(self.reactor, self._port_lost, sleep=self.sleep, ring=ring,
                                  resync_timeout=self._resync_timeout, baud=self.config.baudrate,
                                  counters=self.counters, usage=self.usage)
        protocol.transparent = self.config.mode == "transparent"
        for secret in (self.config.pin, self.config.password, self.config.password1):
            if secret:
                protocol.ring.add_secret(secret.encode())
        protocol.add_listener(self._on_event)
        opening = defer.maybeDeferred(self._port_opener, self.reactor, self.config, protocol)
        return opening.addCallback(self._attach_port, protocol)

    def _attach_port(self, port, protocol) -> None:
        if not self.running:
            port.close()
            raise ModemDown(f"{self.name}: stopped while the port was opening")
        self._port = port
        self.protocol = self._engine = protocol
        if self.config.dtr_escape:  # AT&D1, +++ disabled (bring-up): a DTR pulse escapes
            protocol.data_mode.dtr = port.set_dtr
        if self.config.dcd:  # AT&C1: DCD tells a remote close from payload
            protocol.data_mode.carrier = port.carrier
        self.log.info("{name}: port {port} open", name=self.name, port=port.description)

    def reopen_port(self) -> Deferred:
        """Open the port again after it was lost (a ``sim`` child is spawned anew)."""
        return self._connect()

    def close_port(self) -> Deferred:
        """Close the port on purpose; fires once it (and a ``sim`` child) is released."""
        port, engine = self._port, self.protocol
        self._port = self.protocol = None  # so that its connectionLost is not a "port lost"
        if port is None:
            return succeed(None)
        closing = [port.close()]
        if engine is not None:
            closing.append(engine.lost)
        return defer.gatherResults(closing, consumeErrors=True)

    def _opened(self, _) -> None:
        self._fire_all(self._open_waiters, None)
        self.supervisor.start()

    def _open_failed(self, failure) -> None:
        error = failure.value
        if isinstance(error, ModemDown):
            return  # stopped meanwhile
        if not isinstance(error, CellbridgeError):
            error = TransportError(f"{self.config.port}: {failure.getErrorMessage()}")
        waiters, self._open_waiters = self._open_waiters, []
        for waiter in waiters:
            waiter.errback(error)
        self._on_fatal(error)

    def _port_lost(self, protocol, reason) -> None:
        if protocol is not self.protocol:
            return  # we closed it
        self.protocol = None
        if not self.running:
            return
        why = reason.getErrorMessage() if reason is not None else "closed"
        if not self.persistent:
            self.log.error("{name}: lost the module's port: {why}", name=self.name, why=why)
            if not self.ready:
                self._on_fatal(TransportError(f"{self.config.port}: port lost: {why}"))
            self._mark_down(f"port lost: {why}")
            return
        self.supervisor.port_lost(why)

    def _set_dtr(self, asserted: bool) -> None:
        if self._port is not None:
            self._port.set_dtr(asserted)

    def _enable_sleep(self) -> Deferred:
        if self.protocol is None:
            return fail(ModemDown(f"{self.name}: the port is not open"))
        return self.protocol.issue(commands.setting("+QSCLK", 1, timeout=self.timeouts.simple))

    # -- bring-up results (the supervisor's hooks: new_bring_up, came_up, mark_down, fatal) -------

    def new_bring_up(self) -> BringUp:
        return BringUp(self.reactor, self.protocol.issue, self.config, self.pins, self.stack,
                       self.timeouts, self.pacing, selection=self.selection, roaming=self.roaming,
                       stacks={context: self.stacks[context] for context in self.contexts_in_use})

    def came_up(self, result) -> None:
        if self.protocol is None:
            return
        self.info.update(result.info)
        self.local_ip = result.local_ip
        self.local_ips = dict(result.local_ips)
        self.contexts_down.clear()
        self.mux = result.mux
        self.ready = True
        self._enter("ready", f"local IP {self.local_ip}")
        self._ups += 1
        self.log.info("{name}: ready, local IP {ip} ({model}, {registration}, signal {signal})",
                      name=self.name, ip=self.local_ip, model=self.info.get("model"),
                      registration=self.info.get("registration"), signal=self.info.get("signal"))
        self.health.start()
        self.sleep.module_ready()
        self._notify("ready", f"local IP {self.local_ip}")
        self._wake_ready()
        self.sockets.set_ready(True)

    def fatal(self, error) -> None:
        self._on_fatal(error)

    def mark_down(self, reason: str) -> None:
        self._mark_down(reason)

    def mark_context_down(self, context: int, reason: str) -> None:
        """PDP ``context`` alone is gone: its sockets are told, its opens fail; the other
        context's carry on."""
        if not self.ready or context in self.contexts_down:
            return
        self.contexts_down.add(context)
        self._opener.fail_waiting(ModemDown(f"{self.name}: context {context}: {reason}"), context)
        self._tell_sockets_down(reason, context)
        self.log.warn("{name}: context {context} down: {reason}", name=self.name, context=context,
                      reason=reason)
        self._notify_context(context, "down", reason)

    def context_came_up(self, context: int, local_ip: str) -> None:
        """PDP ``context`` is back alone (the supervisor's hook)."""
        if not self.ready:
            return
        self.contexts_down.discard(context)
        self.local_ips[context] = local_ip
        if context == 0:
            self.local_ip = local_ip
        self.log.info("{name}: context {context} ready, local IP {ip}", name=self.name,
                      context=context, ip=local_ip)
        self._notify_context(context, "ready", f"local IP {local_ip}")
        self._wake_ready(context)

    # -- state ------------------------------------------------------------------------------------

    def _mark_down(self, reason: str, expected: bool = False) -> None:
        """Everything on the module is gone: sockets are told, waiters fail, polling stops; the
        engine forgets the module's selection (a reset the engine did not see, found by the
        settings check, put AT+QISRVC back at 1, and bring-up does not write it)."""
        if self.protocol is not None:
            self.protocol.forget_selection()
        self.health.stop()
        self._usage_store.flush()
        self.sleep.module_lost()
        self.sockets.set_ready(False)
        was_ready, self.ready = self.ready, False  # before anyone hears: they may open again
        self._opener.fail_waiting(ModemDown(f"{self.name}: {reason}"))
        if not was_ready:
            return
        self._enter("down", reason)
        self._tell_sockets_down(reason)
        (self.log.info if expected else self.log.warn)("{name}: down: {reason}", name=self.name,
                                                       reason=reason)
        self._notify("down", reason)

    def _enter(self, state: str, reason: str = "") -> None:
        """The modem's state for status; ``state_since`` moves only when the state changes."""
        if state != self.state:
            self.state_since = self.reactor.seconds()
        self.state, self.state_reason = state, reason

    def _tell_sockets_down(self, reason: str, context: Optional[int] = None) -> None:
        """``modem_down(reason)`` to every socket, or to those of ``context``."""
        for attached in list(self._handlers.values()):
            if context is not None and attached.context != context:
                continue
            try:
                attached.handler.modem_down(reason)
            except Exception:
                self.log.failure("{name}: socket handler {handler!r} failed on modem down",
                                 name=self.name, handler=attached.handler)

    def _notify(self, state: str, reason: str) -> None:
        self._tell(self._state_listeners, state, reason)

    def _notify_context(self, context: int, state: str, reason: str) -> None:
        self._tell(self._context_listeners, context, state, reason)

    def _tell(self, listeners: list, *args) -> None:
        for listener in list(listeners):
            try:
                listener(*args)
            except Exception:
                self.log.failure("listener {listener!r} failed", listener=listener)

    def _wake_ready(self, context: Optional[int] = None) -> None:
        """``when_ready`` waiters: all of them when the modem came up, else those of
        ``context``."""
        due = [(c, waiter) for c, waiter in self._ready_waiters if context in (None, c)]
        for entry in due:
            self._ready_waiters.remove(entry)
        for _, waiter in due:
            waiter.callback(None)

    @staticmethod
    def _fire_all(waiters: list, value) -> None:
        pending = list(waiters)
        waiters.clear()
        for waiter in pending:
            waiter.callback(value)

    # -- events -----------------------------------------------------------------------------------

    def _on_event(self, event) -> None:
        if isinstance(event, SOCKET_EVENTS):
            self._route(event)
        elif isinstance(event, PdpDeact) and self.two_contexts and self.supervisor.job is not None:
            self.supervisor.ask_which_context_when_done()
        elif isinstance(event, PdpDeact) and self.ready and self.two_contexts:
            self.find_lost_context()
        elif isinstance(event, SERVER_EVENTS):
            self._index_shared(event)
            self._tell(self._server_listeners, event)
        elif isinstance(event, PdpDeact):
            self.stack.step("PDP DEACT")
            self._lost_module(self.supervisor.context_lost, PDP_LOST)
        elif isinstance(event, Boot) and event.kind in RESTART_SIGNS:
            self.stack.state = None
            self._lost_module(self.supervisor.module_reset, f"the module restarted ({event.kind})")
        elif isinstance(event, Boot):
            if self.ready and self.persistent:
                self.supervisor.check_settings(f"{event.kind} out of the blue")
        elif isinstance(event, Registration):
            if self.ready and event.stat not in REGISTERED:
                self.log.warn("{name}: registration lost: {kind} {stat} ({what})", name=self.name,
                              kind=event.kind, stat=event.stat,
                              what=STAT_NAMES.get(event.stat, "?"))
            self._registration_seen(event.stat)
        elif isinstance(event, Resynced) and not event.ok:
            self._lost_module(self.supervisor.module_mute, "the module does not answer AT")
        elif isinstance(event, Resynced) and self.ready and self.persistent:
            self.supervisor.check_settings("a resync")

    def _registration_seen(self, stat: int) -> None:
        """A CREG/CGREG stat from a URC or the health poll: roaming with ``roaming = no`` takes
        data down until home (bridge.modem.roaming)."""
        if self.ready and self.roaming.blocks(stat):
            self.roaming.hold()
            self._lost_module(self.supervisor.roaming, ROAMING_REFUSAL)

    def _roaming_hold(self) -> None:
        """Data is held down for roaming: connections waiting for a socket are refused."""
        self.sockets.refuse_waiting(ConnectError(string=ROAMING_REFUSAL))

    def _lost_module(self, recover: Callable[[str], None], reason: str) -> None:
        if self.persistent:
            recover(reason)
        else:
            self._mark_down(reason)

    @inlineCallbacks
    def find_lost_context(self):
        """``+PDP DEACT`` names no context (app note §2.2): AT+QISTATE on each context in use
        says which is gone (any state but an active one counts as gone). One gone: it alone
        goes down and comes back; both, none or no answer: the whole modem, as with one
        context."""
        ups, down = self._ups, []
        self._traces += 1
        if self._tracing is None:
            self._tracing = []
        try:
            for context in sorted(self.contexts_in_use):
                report = yield self.query_stack(context)
                if report.state not in ACTIVE_STATES:
                    down.append(context)
        except (ATEngineError, ModemDown) as error:
            self.log.warn("{name}: +PDP DEACT: which context is down is unknown: {error}",
                          name=self.name, error=error)
            down = []
        try:
            if not self.ready or self._ups != ups:
                return  # the module went away meanwhile: its recovery covers every context
            if len(down) != 1:
                self._lost_module(self.supervisor.context_lost, PDP_LOST)
            elif self.persistent:
                self.supervisor.context_down(down[0], PDP_LOST)
            else:
                self.mark_context_down(down[0], PDP_LOST)
        finally:
            self._traces -= 1
            if not self._traces:  # every +PDP DEACT traced: the doubt is over
                waiters, self._tracing = self._tracing, None
                self._fire_all(waiters, None)

    def context_doubt(self) -> Optional[Deferred]:
        """While a ``+PDP DEACT`` is traced to its context (:meth:`find_lost_context`): a
        Deferred that fires once that is decided, else None. A socket command that answers
        ERROR meanwhile may only show that its context is gone: then the socket goes down with
        it (``modem_down``) rather than fail on its own."""
        if self._tracing is None:
            return None
        waiter = Deferred()
        self._tracing.append(waiter)
        return waiter

    def _index_shared(self, event) -> None:
        """A server's client put on an index a client link holds: in push mode ``+RECEIVE: n``
        names no side (docs/at-dialect.md §4.8), so until the server side is closed the link
        cannot tell its bytes from the newcomer's. It hears the ``RemoteIp`` (and fails) rather
        than be fed them; in pull mode +QIRDI and AT+QIRD name the side, and nothing is shared."""
        if not isinstance(event, RemoteIp) or self.receive_mode != "push":
            return
        attached = self._handlers.get(event.socket)
        if attached is not None and not attached.handler.server:
            attached.handler.socket_event(event)

    def _route(self, event) -> None:
        socket = event.socket
        if socket is None and not self.mux:
            socket = 0  # transparent mode: the single link is slot 0
        awaited = isinstance(event, ConnectResult) and self._opener.connect_result(socket, event)
        attached = self._handlers.get(socket)
        handler = attached.handler if attached is not None else None
        if (isinstance(event, DataAvailable) and handler is not None
                and handler.server != event.server):
            self.log.warn("{name}: +QIRDI for the {side} side of socket {socket}, whose link is on "
                          "the other side: ignored", name=self.name, socket=socket,
                          side="server" if event.server else "client")
        elif handler is not None:
            handler.socket_event(event)
        elif isinstance(event, Received):
            self.log.warn("{name}: dropped data for socket {socket}, which has no link: {data}",
                          name=self.name, socket=socket, data=describe_payload(event.data).decode())
        elif not awaited:
            self.log.debug("{name}: event for socket {socket} with no link: {event!r}",
                           name=self.name, socket=socket, event=event)

    # -- sockets' API -----------------------------------------------------------------------------

    def issue(self, command) -> Deferred:
        """Issue an AT command; fails with ModemDown unless the modem is ready."""
        if not self.ready or self.protocol is None:
            return fail(ModemDown(f"{self.name} is not ready"))
        return self.protocol.issue(command)

    def query_stack(self, context: int = 0) -> Deferred:
        """Ask the module for the stack state of ``context`` (AT+QISTATE/QISTAT) and adopt it
        -> StackState."""
        if self.protocol is None:
            return fail(ModemDown(f"{self.name}: the port is not open"))
        stack = self.stacks[context]
        command = stack.status_command(self.mux, self.timeouts.simple)
        command.addressing(self.selection(context))
        return self.protocol.issue(command).addCallback(stack.observed)

    def selection(self, context: int = 0, server: Optional[bool] = None) -> Selection:
        """What a command on a socket of ``context`` (and side, for AT+QISEND/QISACK/QICLOSE)
        must have selected first (``Selection``). Nothing on a modem that uses context 0 alone
        and no server: its module keeps the power-up choices and bring-up's AT+QIFGCNT=0."""
        return Selection(context=context if self.two_contexts else None,
                         server=server if self.serves and server is not None else None)

    @property
    def slots_in_use(self) -> frozenset:
        """The module socket indices handed out (read only)."""
        return self.sockets.in_use

    def socket_settings(self) -> SocketSettings:
        """The tuning of this modem's sockets (``send_window``, ``keepalive_*``)."""
        return SocketSettings(window=self.config.send_window,
                              keepalive=KeepaliveTimings.from_config(self.config))

    def attach_socket(self, index: int, handler, context: int = 0) -> None:
        """Deliver this socket's URC events to ``handler.socket_event(event)`` and tell it
        ``handler.modem_down(reason)`` when the module's sockets (or those of its PDP
        ``context``) are gone; ``handler.server`` says which side the socket is on (a +QIRDI
        for the other side is not its)."""
        self._handlers[index] = _Attached(handler, context)

    def detach_socket(self, index: int) -> None:
        self._handlers.pop(index, None)

    def open_socket(self, index: int, proto: str, host: str, port: int,
                    context: int = 0) -> Deferred:
        """AT+QIDNSIP, AT+QIOPEN, wait for CONNECT OK -> Deferred(None); ConnectFailed or
        ModemDown otherwise (see :class:`~bridge.modem.opener.SocketOpener`)."""
        if not self.ready:
            return fail(ModemDown(f"{self.name} is not ready"))
        if context in self.contexts_down:
            return fail(ModemDown(f"{self.name}: context {context} is down"))
        return self._opener.open(index, proto, host, port, context)


def make_modem_service(modem_config, root, **options) -> Modem:
    """The ``modem:NAME`` child of the service tree (bridge.service extension point): a port
    that cannot be opened or a locked SIM stops the daemon with the error's exit status.
    ``options`` go to :class:`Modem` (tests pass short timeouts and timings)."""
    modem = Modem(root.reactor, modem_config, root.config.general.state_dir, on_fatal=root.fail,
                  **options)
    root.add_readiness(modem.when_open())
    root.add_health_check(modem.healthy)
    return modem
