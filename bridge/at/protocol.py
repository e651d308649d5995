"""ATProtocol: the one owner of the UART.

Shape from txtorcon's TorControlProtocol (one command on the wire, a Deferred per command, events
that never disturb the in-flight command, everything failed on disconnect) and mechanics from
Twisted's memcache (small command objects, length-framed payloads, an in-flight timeout means the
stream is out of sync).

Routing of each line (docs/at-dialect.md §12.4): the echo of the in-flight command is dropped;
then the in-flight command claims lines specifically its own (``1, CLOSE OK`` for AT+QICLOSE=1,
``+QISACK:``, ``STATE:`` ...); then URCs are recognised; then generic finals (OK, ERROR, +CME
ERROR) and free-form info lines go to the in-flight command; whatever is left is an
``Unsolicited`` event.  A bare ``CONNECT`` switches to data mode only when a transparent
AT+QIOPEN or ATO is on the wire or a transparent server listens; any other is logged and dropped,
so a stray one cannot wedge a mux-mode engine.  A reply with no end line (AT+QIDNSGIP's
addresses) is complete once the module goes quiet after its first own line
(``Command.quiet_end``).  The next queued command is written as soon as the
previous final is routed, before its Deferred fires: at 115200 baud the turnaround is the
throughput.

Limits follow the line: with a ``baud`` a command's limit grows by the line time of the payload
it moves, and the wait for an AT+QISEND's ``> `` by that of its line and of every byte the module
sends before the prompt (the UART backlog queued ahead of it).  An in-flight timeout resyncs (ESC,
``AT``) before anything else is written; an AT+QISEND that timed out before its ``> `` first gets
``len`` ESC bytes, so a module whose prompt was only late takes those as the payload instead of
the resync (``StreamCorrupt`` is emitted before either).
Every resync first drops a half-cut payload from the framer: a truncated or bogus frame would
otherwise swallow the module's answers to it.  The framer is told what the command on the wire
may produce: payload is written only on the ``> `` of an AT+QISEND whose line is out and has no
final result yet, never on a ``>`` in junk.

Some socket commands address what a module setting selects: AT+QISEND/QISACK/QICLOSE act on the
foreground context (AT+QIFGCNT, app note §7) and on client or server-accepted sockets (AT+QISRVC,
app note §3.2, §3.4). A command's ``Selection`` names what it needs; when the engine does not know
that choice to be in force it writes the selecting command first, at the moment of writing (so
the choice on the wire is always the one it tracks). A selector that fails fails its command
unsent: a payload must never reach another socket. A restarting module forgets its choices, and
so does the engine: on a boot URC, on every resync (autobauding prints nothing when a module
restarts silently, docs/at-dialect.md §2), and when its owner says so (``forget_selection``).

With a ``sleep`` controller (``bridge.modem.sleep.SleepController``) every command waits for its
``wake()`` before it is written (the module's UART listens 20 ms after DTR went LOW), and
``idle()`` is called whenever the wire is free and nothing is queued.

With ``counters`` (a :class:`~bridge.counters.Counters`) every command that ends is counted as
``at_command{command, result}``: its name (``+QISEND``, never its arguments) and how it ended
(:func:`result_of`); the resync's own ``AT`` probes too.
"""

from collections import deque
from typing import Callable, Optional

from twisted.internet.defer import Deferred, fail
from twisted.internet.protocol import Protocol
from twisted.logger import Logger

from bridge.at import commands
from bridge.at.commands import Command, Priority, ReadCommand, SendCommand
from bridge.at.datamode import DataMode
from bridge.at.errors import (CommandError, CommandTimeout, LinkLost, ModuleRestarted,
                              ResyncFailed, SelectionFailed)
from bridge.at.events import (RESTART_SIGNS, Boot, Resynced, StreamCorrupt, Unsolicited, parse_urc,
                              received_from)
from bridge.at.framing import Data, Framer, Junk, Line, Marker, Payload, Prompt
from bridge.at.redact import redact
from bridge.at.ring import TrafficRing, log_event
from bridge.at.stall import STALL_TIMEOUT, StallWatch
from bridge.counters import DataUsage

ESC = b"\x1b"
#: UART bits per byte: start bit, 8 data bits, stop bit.
BITS_PER_BYTE = 10
#: How long each resync ``AT`` may take, and how many tries before giving up.
RESYNC_TIMEOUT = 2.0
RESYNC_ATTEMPTS = 3
#: How a command ended, by its failure's type (the ``result`` label of ``at_command``).
RESULTS = ((CommandError, "error"), (LinkLost, "lost"), (ModuleRestarted, "restarted"),
           (ResyncFailed, "abandoned"), (SelectionFailed, "not_sent"))


def result_of(error: Optional[Exception]) -> str:
    """``ok``, ``timeout`` (on the wire), ``queue_timeout`` (never reached it), ``error`` (the
    module's ERROR/+CME ERROR), ``lost`` (port gone), ``restarted`` (module restarted),
    ``abandoned`` (module mute after a resync), ``not_sent`` (its selecting command failed)."""
    if error is None:
        return "ok"
    if isinstance(error, CommandTimeout):
        return "queue_timeout" if error.queued else "timeout"
    return next((result for kind, result in RESULTS if isinstance(error, kind)), "failed")


def _unwritten_payload_filler(command) -> bytes:
    """Bytes to write before a resync when ``command`` timed out waiting for its ``> ``.

    The prompt wait already allows for the backlog the engine sees ahead of the prompt
    (``ATProtocol._prompt_behind``), so this is rare; but a fixed-length AT+QISEND whose prompt is
    later still has put the module in payload input: it would take the next ``len`` bytes, our ESC
    and ``AT\\r`` included, as data and look mute.  ``len`` ESC bytes end that input either way:
    as payload they complete it (the module answers SEND OK and the remote gets them, then the
    close of a link that is being failed: README, "Dead links and recovery"), or the first one
    cancels it (app note §5.2.2.2 reads so); on the command line each ESC only clears it.
    """
    if isinstance(command, SendCommand) and not command.prompted:
        return ESC * len(command.payload)
    return b""


class _Outstanding:
    """A command with its Deferred and its current timer (queue wait or wire wait)."""

    def __init__(self, command: Command, deferred: Optional[Deferred], attempt: int = 0) -> None:
        self.command = command
        self.deferred = deferred
        self.timer = None
        self.limit = command.timeout  # of the wait ``timer`` runs for
        self.abandoned = False  # cancelled by the caller while on the wire
        self.attempt = attempt  # > 0 for a resync probe
        self.escaping = False  # a resync probe whose escape goes first (transparent modem)
        self.selecting_for: Optional[_Outstanding] = None  # the command a selector goes before
        self.settling = False  # ``timer`` waits for the module's silence (``Command.quiet_end``)
        self.settle_by = 0.0  # when a settling reply ends even if the module keeps talking

    @property
    def is_resync(self) -> bool:
        return self.attempt > 0

    @property
    def awaits_prompt(self) -> bool:
        """An AT+QISEND line is out and its timer is the wait for the ``> ``."""
        command = self.command
        return self.timer is not None and isinstance(command, SendCommand) and not command.prompted


class ATProtocol(Protocol):
    """Commands in, typed results and events out, over one serial byte stream."""

    log = Logger()

    def __init__(self, clock, *, payload_echo: bool = False, ring: Optional[TrafficRing] = None,
                 resync_timeout: float = RESYNC_TIMEOUT, resync_attempts: int = RESYNC_ATTEMPTS,
                 guard_time: float = 1.0, escape_timeout: float = 2.0, sleep=None,
                 stall_timeout: float = STALL_TIMEOUT, baud: Optional[int] = None,
                 counters=None, usage: Optional[DataUsage] = None) -> None:
        """
        :param clock: an ``IReactorTime`` (``task.Clock`` in tests)
        :param payload_echo: the module echoes AT+QISEND payloads (AT+QISDE=1); skip them
        :param guard_time: silence around ``+++`` (the module needs >= 0.5 s, app note §4)
        :param sleep: ``wake() -> Deferred`` awaited before each command, ``idle()`` when the
            queues are empty; None: write at once
        :param stall_timeout: silence in the middle of a payload after which it is dropped
        :param baud: the UART's line rate: a command's limit grows by the time its payload needs
            on the line (``Command.transfer_bytes``); None or 0: unpaced, no extra time
        :param counters: where each ended command is counted (``at_command``); None: nowhere
        :param usage: gets every payload byte written (``sent``) and read (``received``), of
            every socket kind: a modem's ``DataUsage``, which outlives its engines
        """
        self.clock = clock
        self.counters = counters
        self.sleep = sleep
        self.payload_echo = payload_echo
        self.ring = ring if ring is not None else TrafficRing(clock)
        self.usage = usage if usage is not None else DataUsage()
        self.last_response: Optional[float] = None
        """``clock.seconds()`` when the module last answered a command (for the watchdog)."""
        self._resync_timeout = resync_timeout
        self._resync_attempts = resync_attempts
        self._baud = baud
        self._framer = Framer()
        self._stall = StallWatch(clock, self._framer, self._payload_stalled, stall_timeout)
        self._queues = {priority: deque() for priority in Priority}
        self._current: Optional[_Outstanding] = None
        self._desynced = False
        self._lost = False
        self._listeners: list = []
        self._selected: dict = {}  # selecting setting -> the value known to be in force
        self.transparent_server_listening = False
        """Set while a transparent-mode server listens: its accepted client arrives as an
        unprompted ``CONNECT`` (app note §4.2, §5.1) that must switch the UART to data mode."""
        self.data_mode = DataMode(self, self._framer, clock, guard_time, escape_timeout,
                                  baud / BITS_PER_BYTE if baud else None, self.usage)
        self.transparent = False
        """Set on a transparent modem's engine: its writes are timed for the data mode's
        escapes, and each resync starts with an escape (``DataMode.escape_for_resync``), for a
        module still in data mode would pass ESC and ``AT`` to its peer as payload, and every
        recovery starts with a resync."""

    # -- public API -------------------------------------------------------------------------------

    def issue(self, command: Command) -> Deferred:
        """Queue ``command``; the Deferred fires with its typed result or fails with a typed error.

        Cancelling it removes a queued command; a command already on the wire runs to its end
        and its result is dropped.
        """
        if self._lost:
            return fail(LinkLost(f"{command.text}: the UART connection is gone"))
        entry = _Outstanding(command, None)
        entry.deferred = Deferred(lambda _: self._cancel(entry))
        entry.timer = self.clock.callLater(command.timeout + self._line_time_ahead(),
                                           self._queued_timeout, entry)
        self._queues[command.priority].append(entry)
        self._pump()
        return entry.deferred

    def add_listener(self, listener: Callable) -> None:
        """Call ``listener(event)`` for every URC and engine event (see ``bridge.at.events``)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable) -> None:
        self._listeners.remove(listener)

    def forget_selection(self) -> None:
        """The module's choices (AT+QIFGCNT, AT+QISRVC) are no longer known: the next command
        that depends on one selects it again. For the owner that learns of a possible restart the
        engine cannot see (a reset found by a settings check)."""
        self._selected.clear()

    @property
    def busy(self) -> bool:
        """A command is on the wire (or a resync is running)."""
        return self._current is not None

    # -- Protocol ---------------------------------------------------------------------------------

    def connectionMade(self) -> None:
        self._pump()  # commands issued before the port opened

    def dataReceived(self, data: bytes) -> None:
        self._prompt_behind(len(data))
        self._still_talking()
        for frame in self._framer.feed(data):
            try:
                self._route(frame)
            except Exception:
                self.log.failure("AT engine failed on frame {frame!r}", frame=frame)
        self.data_mode.after_read()
        self._stall.after_read()

    def connectionLost(self, reason=None) -> None:
        self._lost = True
        self.data_mode.lost()
        self._stall.stop()
        error = LinkLost(f"UART connection lost: {reason.getErrorMessage() if reason else ''}")
        outstanding = [self._current] if self._current else []
        self._current = None
        for queue in self._queues.values():
            outstanding.extend(queue)
            queue.clear()
        for entry in outstanding:
            self._stop_timer(entry)
            self._fire(entry, error)

    # -- writing ----------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Write raw bytes (recorded in the ring); for the engine and its data mode only."""
        self.ring.sent(data)
        if self.transparent:
            self.data_mode.wrote(len(data))
        self.transport.write(data)

    def write_payload(self, data: bytes) -> None:
        """Write payload bytes (an AT+QISEND's, its resync filler, data mode's): the ring shows
        only their length and a hex prefix."""
        self.ring.sent_payload(data)
        self.usage.count_sent(len(data))
        if self.transparent:
            self.data_mode.wrote(len(data))
        self.transport.write(data)

    def _pump(self) -> None:
        """Write the next queued command if the wire is free."""
        if self._current is not None or self._lost or self.transport is None:
            return
        if self.data_mode.active:
            return
        entry = self._next_queued()
        if entry is None:
            if self.sleep is not None:
                self.sleep.idle()
            return
        if self._desynced:
            self._queues[entry.command.priority].appendleft(entry)
            self._start_resync(1)
            return
        selector = self._selector_for(entry)
        if selector is not None:
            self._queues[entry.command.priority].appendleft(entry)
            if entry.timer is not None:
                entry.timer.delay(selector.limit)  # the selector's wait is not its own
            entry = selector
        self._stop_timer(entry)
        self._current = entry  # the wire is ours from now on, even while the module wakes
        if self.sleep is None:
            self._write_command(entry)
        else:
            self.sleep.wake().addCallback(lambda _: self._write_command(entry))

    def _selector_for(self, entry: _Outstanding) -> Optional[_Outstanding]:
        """The selecting command to write before ``entry`` (AT+QIFGCNT / AT+QISRVC, its
        ``Selection``), or None when the module's choice is known to match. Deciding here, at
        the moment of writing, follows what is really on the wire: commands of other sockets
        may have changed the choice since ``entry`` was queued."""
        for name, value in entry.command.selection.settings():
            if self._selected.get(name) != value:
                selector = _Outstanding(commands.select(name, value), None)
                selector.selecting_for = entry
                return selector
        return None

    def _learn_selection(self, entry: _Outstanding, error: Optional[Exception]) -> None:
        """Record the module's choice after a selecting command; when it failed, the choice is
        unknown and the command it went before is failed unsent."""
        command = entry.command
        if command.selects is None:
            return
        name, value = command.selects
        if error is None:
            self._selected[name] = value
            return
        self._selected.pop(name, None)
        dependent = entry.selecting_for
        if dependent is not None and dependent in self._queues[dependent.command.priority]:
            self._queues[dependent.command.priority].remove(dependent)
            self._stop_timer(dependent)
            self._fire(dependent, SelectionFailed(dependent.command.text, command.text, error))

    def _write_command(self, entry: _Outstanding) -> None:
        if self._current is not entry or self._lost:
            return  # the port went away while the module was waking
        command = entry.command
        self.write(command.wire_bytes())
        self._framer.expect(
            prompt=isinstance(command, SendCommand),
            read_length=command.length if isinstance(command, ReadCommand) else None)
        if isinstance(command, SendCommand):
            self._arm(entry, command.prompt_timeout + self._line_time(len(command.wire_bytes())))
        else:
            self._arm_for_answer(entry)

    def _arm_for_answer(self, entry: _Outstanding) -> None:
        """Wait for the final result: the base limit plus the line time of the payload."""
        command = entry.command
        self._arm(entry, command.timeout + self._line_time(command.transfer_bytes))

    def _arm(self, entry: _Outstanding, limit: float) -> None:
        entry.limit = limit
        entry.timer = self.clock.callLater(limit, self._wire_timeout, entry)

    def _prompt_behind(self, size: int) -> None:
        """Bytes the module sends before an AT+QISEND's ``> `` were queued ahead of it on the
        UART (pushed +RECEIVE frames, URCs, the echo): the prompt is late by their line time, and
        the prompt wait is pushed back by as much.  A prompt that misses even this wait costs the
        link (``_unwritten_payload_filler``), so the wait follows what the line really carries."""
        entry = self._current
        if entry is not None and entry.awaits_prompt:
            behind = self._line_time(size)
            entry.limit += behind
            entry.timer.delay(behind)

    def _line_time_ahead(self) -> float:
        """How long the commands already on the wire or queued may hold the line with their
        payloads at the configured baud: a newcomer may wait that much longer in the queue (its
        own limit is for the module's answer, not for other commands' payloads)."""
        if not self._baud:
            return 0.0
        ahead = [self._current] if self._current is not None else []
        ahead.extend(entry for queue in self._queues.values() for entry in queue)
        return self._line_time(sum(len(entry.command.wire_bytes()) + entry.command.transfer_bytes
                                   for entry in ahead))

    def _line_time(self, size: int) -> float:
        """Seconds ``size`` bytes need on the UART at the configured baud; 0 when unpaced."""
        return size * BITS_PER_BYTE / self._baud if self._baud else 0.0

    def _next_queued(self) -> Optional[_Outstanding]:
        for priority in Priority:
            if self._queues[priority]:
                return self._queues[priority].popleft()
        return None

    # -- reading ----------------------------------------------------------------------------------

    def _route(self, frame) -> None:
        if isinstance(frame, Line):
            self.ring.received(frame.text)
            self._route_line(frame.text)
        elif isinstance(frame, Payload):
            self.ring.received_payload(frame.header, frame.data)
            self.usage.count_received(len(frame.data))
            self._route_payload(frame)
        elif isinstance(frame, Prompt):
            self.ring.received(b"> ")
            self._on_prompt()
        elif isinstance(frame, Data):
            self.ring.received_payload(b"data", frame.data)
            self.data_mode.data(frame.data)
        elif isinstance(frame, Marker):
            self.data_mode.marker(frame.text)
        elif isinstance(frame, Junk):
            self.ring.received(frame.data)
            self.log.warn("skipped {size} junk bytes from the module ({reason})",
                          size=len(frame.data), reason=frame.reason)

    def _route_line(self, line: bytes) -> None:
        entry = self._current
        command = entry.command if entry else None
        if line == b"OK" and entry is not None and entry.escaping:
            self.log.info("the module was still in data mode: its escape answered OK")
            return
        if line == b"CONNECT":
            if not self._connect_expected(command):
                self._ignore_connect(command)
                return
            self.data_mode.enter()  # before anything can be written as a command
        if command is not None and command.is_echo(line):
            return
        if command is not None and command.claim(line):
            self._check_done()
            self._await_quiet(entry)
            return
        event = parse_urc(line)
        if event is not None:
            restart = isinstance(event, Boot) and event.kind in RESTART_SIGNS
            if restart:
                self.forget_selection()  # back at power-up values, which we do not assume
            self.emit(event)
            if restart:  # after the modem has heard of it: the sockets are down already
                self._restarted(entry, event.kind)
            return
        if command is not None and command.take(line):
            self._check_done()
            return
        self.log.debug("unsolicited line {line!r}", line=redact(line))
        self.emit(Unsolicited(line))

    def _connect_expected(self, command: Optional[Command]) -> bool:
        """Only transparent mode has data mode: a mux module's stray ``CONNECT`` must not wedge
        the engine in a data mode nobody will ever leave."""
        in_flight = command is not None and command.enters_data_mode
        return in_flight or self.transparent_server_listening

    def _ignore_connect(self, command: Optional[Command]) -> None:
        self.log.warn("ignored a bare CONNECT from the module (data mode needs a transparent "
                      "AT+QIOPEN or ATO on the wire, or a transparent server listening; "
                      "on the wire: {command})",
                      command=command.text if command is not None else "nothing")

    def _route_payload(self, frame: Payload) -> None:
        if self._current is not None and self._current.command.take_payload(frame):
            return
        event = received_from(frame)
        if event is None:
            self.log.warn("payload {header!r} arrived with no read in flight; dropped",
                          header=frame.header)
            return
        self.emit(event)

    def _on_prompt(self) -> None:
        """The framer cuts a prompt only for the AT+QISEND on the wire (``Framer.expect``)."""
        entry = self._current
        command = entry.command
        command.prompted = True
        self.write_payload(command.payload)
        if self.payload_echo:
            self._framer.expect_echo(command.payload)
        self._stop_timer(entry)
        self._arm_for_answer(entry)

    def _await_quiet(self, entry: _Outstanding) -> None:
        """A reply with no end line (``Command.quiet_end``) got its first own line: from now on
        the module's silence completes it, instead of the command's limit failing it."""
        command = entry.command
        if self._current is not entry or command.quiet_end is None or entry.settling:
            return
        self._stop_timer(entry)
        entry.settling = True
        entry.settle_by = self.clock.seconds() + command.timeout
        self._arm(entry, command.quiet_end)

    def _still_talking(self) -> None:
        """Bytes from the module postpone the end of a reply that ends in silence, up to the
        command's limit again (a module that never stops talking does not hold the wire)."""
        entry = self._current
        if entry is not None and entry.settling:
            left = max(0.0, entry.settle_by - self.clock.seconds())
            entry.timer.reset(min(entry.limit, left))

    def _check_done(self) -> None:
        entry = self._current
        if entry is None or not entry.command.done:
            return
        self._current = None
        self._framer.expect()
        self._stop_timer(entry)
        self.last_response = self.clock.seconds()
        if entry.is_resync:
            self._count(entry, entry.command.error)
            self._resync_answered(entry)
            return
        self._learn_selection(entry, entry.command.error)
        self._pump()  # next command out before any callback runs
        self._fire(entry, entry.command.error)

    def _restarted(self, entry: Optional[_Outstanding], sign: str) -> None:
        """The module restarted. A bulk command (AT+QISEND, AT+QIRD) serves a socket, and the
        restart took every socket (the modem has just heard of it): one on the wire fails at
        once instead of at its limit (an AT+QISEND waits up to 20 s for SEND OK), and the
        recovery starts. Any other command may be one the restart's bring-up wrote after the
        first boot line (``RDY``, then ``+CFUN: 1``): it waits as before."""
        if entry is None or entry.command.priority is not Priority.BULK:
            return
        self._current = None
        self._framer.expect()
        self._stop_timer(entry)
        self._pump()
        self._fire(entry, ModuleRestarted(f"{entry.command.text}: the module restarted ({sign}) "
                                          "while it was on the wire"))

    # -- events -----------------------------------------------------------------------------------

    def emit(self, event) -> None:
        """Hand ``event`` to every listener; a failing listener is logged, never propagated."""
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                self.log.failure("AT event listener {listener!r} failed on {event!r}",
                                 listener=listener, event=event)

    # -- timeouts and resync ----------------------------------------------------------------------

    def _queued_timeout(self, entry: _Outstanding) -> None:
        entry.timer = None
        self._queues[entry.command.priority].remove(entry)
        command = entry.command
        self._fire(entry, CommandTimeout(command.text, command.timeout, queued=True))

    def _wire_timeout(self, entry: _Outstanding) -> None:
        entry.timer = None
        if entry.settling:
            entry.command.went_quiet()
            self._check_done()
            return
        self._current = None
        self._framer.expect()
        if entry.is_resync:
            self._count(entry, CommandTimeout(entry.command.text, entry.limit, queued=False))
            self._resync_retry(entry.attempt)
            return
        command = entry.command
        self._current = probe = self._resync_probe(1)  # nothing else may be written now
        error = CommandTimeout(command.text, entry.limit, queued=False)
        self._learn_selection(entry, error)
        if isinstance(command, SendCommand):
            # Filler or resync bytes may become this socket's payload: its stream is corrupt.
            self.emit(StreamCorrupt(command.socket))
        log_event(self.log, self.ring, "command-timeout",
                  "{command} timed out on the wire; resynchronising", command=command.text)
        self._fire(entry, error)
        self._send_resync(probe, filler=_unwritten_payload_filler(command))

    def _start_resync(self, attempt: int, escape: bool = True) -> None:
        self._current = probe = self._resync_probe(attempt)
        if escape and self.transparent:
            probe.escaping = True
            self.data_mode.escape_for_resync(lambda: self._escaped_for_resync(probe))
        else:
            self._send_resync(probe)

    def _escaped_for_resync(self, probe: _Outstanding) -> None:
        if self._current is probe:
            probe.escaping = False
            self._send_resync(probe)

    def _resync_probe(self, attempt: int) -> _Outstanding:
        return _Outstanding(commands.at(self._resync_timeout), None, attempt)

    def _send_resync(self, probe: _Outstanding, filler: bytes = b"") -> None:
        """ESC ends a pending ``> `` input; ``AT`` must then answer OK.

        ``filler`` goes first: it completes a fixed-length payload the module may still be
        waiting for (see ``_unwritten_payload_filler``), so the resync bytes reach its command line.
        """
        if self._lost:
            return
        self.forget_selection()  # whatever answers may have restarted silently
        self._drop_partial_payload("resync")
        if filler:
            self.write_payload(filler)
        self.write(ESC)
        self.write(probe.command.wire_bytes())
        probe.timer = self.clock.callLater(self._resync_timeout, self._wire_timeout, probe)

    def _resync_answered(self, probe: _Outstanding) -> None:
        if probe.command.error is not None:  # e.g. ERROR for junk left on the command line
            self._resync_retry(probe.attempt)
            return
        self._desynced = False
        self.log.info("module answered AT: back in sync")
        self.emit(Resynced(True))
        self._pump()

    def _resync_retry(self, attempt: int) -> None:
        if attempt < self._resync_attempts:
            self._start_resync(attempt + 1)
            return
        self._current = None
        self._desynced = True
        log_event(self.log, self.ring, "resync-failed", "module silent after {n} resync attempts",
                  n=attempt)
        abandoned = [entry for queue in self._queues.values() for entry in queue]
        for queue in self._queues.values():
            queue.clear()
        self.emit(Resynced(False))
        for entry in abandoned:
            self._stop_timer(entry)
            self._fire(entry, ResyncFailed(f"{entry.command.text}: module does not answer AT"))

    def _payload_stalled(self) -> None:
        self._drop_partial_payload("no byte for the stall timeout")

    def _drop_partial_payload(self, why: str) -> None:
        dropped = self._framer.reset()
        if dropped:
            self.log.warn("dropped {size} bytes of a half-received payload ({why})",
                          size=dropped, why=why)

    def resync(self, escaped: bool = False) -> None:
        """Resynchronise now (after data mode ended uncertainly); queued commands wait.
        ``escaped``: an escape just went unanswered, so the first attempt needs none."""
        if self._current is None and not self._lost:
            self._start_resync(1, escape=not escaped)

    # -- helpers ----------------------------------------------------------------------------------

    def _cancel(self, entry: _Outstanding) -> None:
        if entry is self._current:
            entry.abandoned = True
            return
        queue = self._queues[entry.command.priority]
        if entry in queue:
            queue.remove(entry)
            self._stop_timer(entry)

    @staticmethod
    def _stop_timer(entry: _Outstanding) -> None:
        if entry.timer is not None and entry.timer.active():
            entry.timer.cancel()
        entry.timer = None

    def _count(self, entry: _Outstanding, error: Optional[Exception]) -> None:
        if self.counters is not None:
            self.counters.incr("at_command", command=entry.command.name, result=result_of(error))

    def _fire(self, entry: _Outstanding, error: Optional[Exception]) -> None:
        """``entry`` ended: counted, and its caller told (unless it gave up on it)."""
        self._count(entry, error)
        if entry.deferred is None or entry.abandoned or entry.deferred.called:
            return
        if error is not None:
            entry.deferred.errback(error)
        else:
            entry.deferred.callback(entry.command.result)

    def resume_commands(self) -> None:
        """Data mode ended: queued commands may go out again."""
        self._pump()
