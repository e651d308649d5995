"""Transparent data mode (AT+QIMODE=1): the UART is the socket until an escape or a close.

Entered when the module prints a bare ``CONNECT`` to a transparent AT+QIOPEN or an ATO on the
wire, or while a transparent server listens (``ATProtocol.transparent_server_listening``, app note
§4.2); any other bare ``CONNECT`` is logged and ignored (a mux-mode module has no data mode).
Bytes then flow raw both ways; the session's consumer (the *sink*) gets them through
``data_received(data)`` and hears ``data_mode_ended(reason)`` when data mode ends: 'escaped' (our
escape), 'closed' (the remote closed), 'pdp' (+PDP DEACT), 'restarted' (boot URCs), 'lost' (the
UART went away) or 'abandoned' (the owner gave up on an escape the module did not answer).

Payload goes out through a :class:`~bridge.at.plusguard.PlusGuard`: no payload ever forms an
escape. Leaving on purpose (``escape()``): with ``dtr`` set (DTR wired, AT&D1, ``+++`` disabled in
AT+QITCFG) a DTR ON->OFF pulse once the line has drained; otherwise silence for ``guard_time``,
``+++``, silence, then ``OK`` (app note §4: >= 0.5 s on each side, < 20 ms between the pluses).
The silence counts from when our last byte can have left the UART. The port reports what it
still holds (``transport.unsent()``: Twisted's queue and the driver's, TIOCOUTQ); what it does
not report (a pty's buffers, an adapter's FIFO: at most ``transport.unseen``) is bounded by line
time: the line is quiet by the earlier of "every byte written, at the line rate" and "the unseen
buffer, at the line rate, after the port reported itself drained".

A session end shows in the data stream and is ambiguous (app note §6.3): the module prints
``\\r\\nCLOSED\\r\\n`` or ``\\r\\n+PDP DEACT\\r\\n`` (after a restart, its boot URCs ending in
``Call Ready`` or ``SMS Ready``) and is in command mode, but the peer could have sent the same
bytes. Rule used here: the framer holds back a stream tail that is (the start of) such a marker;
if more bytes follow it was payload and is delivered. If it stays the tail for ``guard_time``:
with ``carrier`` (DCD wired, AT&C1: on while the link exists) the carrier decides; otherwise we
probe with an escape: ``OK`` means the module was still in data mode (the marker was payload:
deliver it and resume with ATO); no ``OK`` means it was the module: the session has ended, the
held bytes are dropped and the line is resynchronised (``+++`` sits on its command line).
"""

from typing import Callable, Optional

from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger

from bridge.at import commands
from bridge.at.errors import CommandTimeout, LinkLost
from bridge.at.events import Boot, Closed, DataModeEnded, PdpDeact
from bridge.at.framing import DATA_MODE_MARKERS, ESCAPE_OK_MARKER
from bridge.at.plusguard import PlusGuard

ESCAPE = b"+++"
#: Bytes kept for a sink that is not attached yet (data right after CONNECT).
EARLY_DATA_LIMIT = 64 * 1024
#: How long a possible marker start (e.g. a trailing CR) is held before it is delivered as data.
HOLD_DELAY = 0.05
#: How often the port is asked whether our bytes have left, before an escape.
DRAIN_POLL = 0.01
#: Silence after the line drained before DTR drops (the module's UART still sees its last byte).
DTR_SETTLE = 0.05
#: Bytes a port that does not say (``transport.unseen``) may hold without reporting them.
UNSEEN_BUFFER = 16384
#: The least silence a module keeps after ``+++`` before it answers OK (app note §4): an OK
#: sooner than this after our ``+++`` is the peer's data.
MODULE_GUARD = 0.5
#: What each held marker means once the module is shown to have said it: (end reason, event).
MARKER_ENDS = {b"CLOSED": ("closed", Closed(None)), b"+PDP DEACT": ("pdp", PdpDeact()),
               b"Call Ready": ("restarted", Boot("boot in data mode", "Call Ready")),
               b"SMS Ready": ("restarted", Boot("boot in data mode", "SMS Ready"))}


class DataMode:
    """Data-mode state of one ATProtocol: sink, guarded writes, escape, close detection.

    The owner may wire the pins after construction: ``dtr(asserted)`` drives DTR (escapes by a
    pulse instead of ``+++``), ``carrier()`` reads DCD (True/False, None when unreadable).
    """

    log = Logger()

    def __init__(self, protocol, framer, clock, guard_time: float, escape_timeout: float,
                 line_rate: Optional[float], usage) -> None:
        self._protocol = protocol
        self._usage = usage  # its ``received`` counts what data mode delivers
        self._framer = framer
        self._clock = clock
        self._guard_time = guard_time
        self._escape_timeout = escape_timeout
        self.dtr: Optional[Callable[[bool], None]] = None
        self.carrier: Optional[Callable[[], Optional[bool]]] = None
        self.active = False
        self._sink = None
        self._early = bytearray()
        self._plus = PlusGuard(clock, self._send_payload)
        self._drained_at = float("-inf")  # when the port last reported its queue empty
        self._rate = line_rate  # bytes per second on the line; None: unpaced
        self._backlog = 0.0  # bytes written and not yet on the wire, at the line rate,
        self._backlog_at = float("-inf")  # as of this time
        self._escaping: Optional[Deferred] = None
        self._escape_sent_at = float("-inf")  # when our last '+++' went out
        self._probing: Optional[bytes] = None  # the marker a probe escape is deciding
        self._tail_marker: Optional[bytes] = None  # the marker held at the stream's tail
        self._probe_data = bytearray()
        self._timer = None  # the one pending step: hold release, quiet wait, escape or its answer

    # -- public, through ATProtocol.data_mode ------------------------------------------------

    def detach(self, sink) -> None:
        """``sink`` is gone: it hears nothing more (the next data mode is another's)."""
        if self._sink is sink:
            self._sink = None

    def set_sink(self, sink) -> None:
        """Attach the session consumer; bytes that came before it are delivered at once."""
        self._sink = sink
        early, self._early = bytes(self._early), bytearray()
        if early:  # counted when they arrived
            self._call_sink(sink.data_received, early)

    @property
    def writable(self) -> bool:
        """Payload may be written now (in data mode, and no escape under way)."""
        return self.active and self._escaping is None and self._probing is None

    def write(self, data: bytes) -> None:
        """Send raw bytes to the peer (only while ``writable``)."""
        if not self.writable:
            raise RuntimeError("not in transparent data mode")
        self._plus.write(data)

    def escape(self) -> Deferred:
        """Leave data mode (DTR pulse, or guard + ``+++`` + guard); fires when the module says
        OK, fails with CommandTimeout (still in data mode) if it does not."""
        if not self.writable:
            return fail(RuntimeError("not in transparent data mode"))
        self._escaping = Deferred()
        self._after_quiet(self._send_escape)
        return self._escaping

    def abandon(self) -> None:
        """The owner gives up on this data mode (an escape went unanswered, the modem went
        down): leave it, tell the sink, and resynchronise (on a transparent modem the resync
        escapes first, ``escape_for_resync``), so the module is asked plainly whether it still
        answers."""
        if not self.active:
            return
        self._cancel_timer()
        self._raise_dtr()
        self._leave()
        self._probing, self._probe_data = None, bytearray()
        escaping, self._escaping = self._escaping, None
        self._protocol.resync()  # first: whatever the sink issues goes after it
        self._end("abandoned")
        if escaping is not None:
            escaping.errback(CommandTimeout("+++", 0.0, queued=False))

    @property
    def escape_time(self) -> float:
        """The longest ``escape_for_resync`` takes: the line's unseen bytes, two guards."""
        unseen = self._unseen() / self._rate if self._rate else 0.0
        return unseen + 2 * self._guard_time

    def escape_for_resync(self, then) -> None:
        """Before a resync of a module that may still be in data mode: once the line is quiet,
        ``+++`` (or a DTR pulse) and the guard after it, then ``then()``. In command mode the
        ``+++`` only sits on the command line, which the resync's ESC clears."""
        def escape():
            self._signal_escape()
            after = DTR_SETTLE if self.dtr is not None else self._guard_time
            self._timer = self._clock.callLater(after, self._raise_then, then)

        self._after_quiet(escape)

    def _read_answers(self) -> None:
        """An escape's answer must be read, whatever a paused consumer asked of the port (its
        owner pauses it again once the data mode resumes)."""
        resume = getattr(self._protocol.transport, "resumeProducing", None)
        if resume is not None:
            resume()

    def _raise_then(self, then) -> None:
        self._timer = None
        self._raise_dtr()
        then()

    # -- driven by ATProtocol -------------------------------------------------------------------

    def enter(self) -> None:
        if not self.active:
            self.active = True
            self._early = bytearray()  # a former session's leftovers are nobody's
            self._framer.set_data_mode(True, markers=DATA_MODE_MARKERS)
            if self._sink is not None:  # back after a probe escape's ATO
                self._call_sink(self._sink.data_mode_resumed)

    def wrote(self, size: int) -> None:
        """``size`` bytes went to the UART (a command, an escape or payload)."""
        self._plus.written()
        if self._rate:
            now = self._clock.seconds()
            left = self._backlog - (now - self._backlog_at) * self._rate
            self._backlog, self._backlog_at = max(0.0, left) + size, now

    def data(self, data: bytes) -> None:
        if self._probing is not None:
            self._probe_data += data
            return
        if self._timer is not None and self._escaping is None:
            self._cancel_timer()  # bytes after a held tail: it was payload
        self._tail_marker = None
        self._deliver(data)

    def marker(self, text: bytes) -> None:
        if text == b"OK" and (self._escaping is not None or self._probing is not None):
            if self._ok_too_soon():
                self.data(self._framer.release_held())  # the peer's: the module is silent yet
                return
            self._escaped()
        elif self._probing is None and text in MARKER_ENDS:
            self._tail_marker = text  # an escape of ours under way decides it too
            if self._escaping is None:
                self._cancel_timer()
                self._timer = self._clock.callLater(self._guard_time, self._decide)

    def _ok_too_soon(self) -> bool:
        """An OK before the module's guard after our ``+++`` ended cannot be its answer (a
        DTR drop is answered at once)."""
        return (self.dtr is None
                and self._clock.seconds() - self._escape_sent_at < MODULE_GUARD)

    def after_read(self) -> None:
        """Deliver a held marker *start* if nothing completes it soon."""
        if self.active and self._timer is None and self._framer.held:
            self._timer = self._clock.callLater(HOLD_DELAY, self._release_held)

    def lost(self) -> None:
        self._cancel_timer()
        if self._escaping is not None:
            escaping, self._escaping = self._escaping, None
            escaping.errback(LinkLost("UART connection lost during an escape"))
        if self.active:
            self._leave()
            self._end("lost")

    # -- steps ------------------------------------------------------------------------------------

    def _send_payload(self, data: bytes) -> None:
        if self.active:
            self._protocol.write_payload(data)

    def _release_held(self) -> None:
        self._timer = None
        if self.writable:
            self._deliver(self._framer.release_held())

    def _after_quiet(self, step) -> None:
        """Run ``step`` once our last byte has left the UART and (for ``+++``) the guard time has
        passed after it; with DTR, a short settle."""
        self._cancel_timer()
        unsent = self._unsent()
        now = self._clock.seconds()
        if unsent:
            self._drained_at = float("inf")
            self._timer = self._clock.callLater(DRAIN_POLL, self._after_quiet, step)
            return
        if self._drained_at == float("inf"):
            self._drained_at = now
        after = DTR_SETTLE if self.dtr is not None else self._guard_time
        self._timer = self._clock.callLater(max(0.0, self._line_quiet() + after - now), step)

    def _line_quiet(self) -> float:
        """When our last byte has surely left the UART (see the module docstring)."""
        handed = max(self._plus.quiet_from, self._drained_at)
        if not self._rate:
            return handed
        every_byte = self._backlog_at + self._backlog / self._rate
        return max(handed, min(every_byte, handed + self._unseen() / self._rate))

    def _unseen(self) -> int:
        return getattr(self._protocol.transport, "unseen", UNSEEN_BUFFER)

    def _unsent(self) -> int:
        unsent = getattr(self._protocol.transport, "unsent", None)
        return unsent() if unsent is not None else 0

    def _decide(self) -> None:
        """The marker stayed the tail: the carrier or a probe escape says whose it was."""
        self._timer = None
        text, self._tail_marker = self._tail_marker, None
        carrier = self.carrier() if self.carrier is not None else None
        if carrier is True:
            self._release_held()
        elif carrier is False:
            self._ended_by_module(text, resync=False)
        else:
            self._probing = text
            self.log.info("possible {marker} at the end of the data stream; probing with an "
                          "escape", marker=text.decode())
            self._after_quiet(self._send_escape)

    def _send_escape(self) -> None:
        if self._escaping is not None and self._tail_marker is not None:
            # A marker came while we waited to escape: our escape is its probe as well.
            self._probing, self._tail_marker = self._tail_marker, None
        self._framer.set_data_mode(True, markers=(ESCAPE_OK_MARKER,))
        self._signal_escape()
        wait = self._escape_timeout + (0.0 if self.dtr is not None else self._guard_time)
        self._timer = self._clock.callLater(wait, self._unanswered)

    def _signal_escape(self) -> None:
        """DTR ON->OFF, or ``+++``; the port is read for the answer."""
        self._read_answers()
        if self.dtr is not None:
            self.dtr(False)
        else:
            self._protocol.write(ESCAPE)
            self._escape_sent_at = self._clock.seconds()

    def _raise_dtr(self) -> None:
        if self.dtr is not None:
            self.dtr(True)

    def _escaped(self) -> None:
        """``OK`` after the escape: the module is in command mode now."""
        self._cancel_timer()
        self._raise_dtr()
        self._leave()
        if self._probing is not None:
            self._probing = None
            data, self._probe_data = bytes(self._probe_data), bytearray()
            self._deliver(data)  # the marker was the peer's data
        if self._escaping is None:  # only a probe: back to data mode
            self._protocol.issue(commands.ato()).addErrback(self._resume_failed)
        else:
            escaping, self._escaping = self._escaping, None
            self._protocol.emit(DataModeEnded("escaped"))
            escaping.callback(None)
        self._protocol.resume_commands()

    def _unanswered(self) -> None:
        """No ``OK`` after the escape."""
        self._timer = None
        self._raise_dtr()
        escaping, self._escaping = self._escaping, None
        timeout = CommandTimeout("+++", self._guard_time + self._escape_timeout, queued=False)
        if self._probing is not None:
            text, self._probing = self._probing, None
            self._probe_data = bytearray()
            self._ended_by_module(text, resync=True)  # the sink hears why first
            if escaping is not None:
                escaping.errback(timeout)
            return
        self._framer.set_data_mode(True, markers=DATA_MODE_MARKERS)
        escaping.errback(timeout)

    def _ended_by_module(self, text: bytes, resync: bool) -> None:
        """The held marker was the module's: the session is over, the module in command mode."""
        reason, event = MARKER_ENDS[text]
        self._leave()
        if resync:  # our '+++' sits on the module's command line: cleared before anything
            self._protocol.resync(escaped=True)
        if reason == "restarted":
            self._protocol.forget_selection()
        # The modem hears first: a lost context or a restart takes it down before the session
        # frees its place for a waiting connection.
        self._protocol.emit(event)
        self._end(reason)
        self._protocol.resume_commands()

    def _resume_failed(self, failure) -> None:
        """ATO refused after a probe: the link went meanwhile, and what the peer sent since the
        escape waits in the module, which no longer gives it out."""
        self.log.warn("ATO after a probe escape failed: {error}", error=failure.value)
        self._end("resume_failed")

    def _leave(self) -> None:
        self.active = False
        self._tail_marker = None
        self._plus.stop()
        self._framer.set_data_mode(False)

    def _end(self, reason: str) -> None:
        sink, self._sink = self._sink, None
        if reason != "escaped":
            self._protocol.emit(DataModeEnded(reason))
        if sink is not None:
            self._call_sink(sink.data_mode_ended, reason)

    def _deliver(self, data: bytes) -> None:
        """Every byte the peer sent, however it was held or probed, leaves through here."""
        if not data:
            return
        self._usage.count_received(len(data))
        if self._sink is None:
            room = EARLY_DATA_LIMIT - len(self._early)
            if len(data) > room:
                self.log.warn("no data sink: dropped {n} bytes", n=len(data) - room)
            self._early += data[:room]
            return
        self._call_sink(self._sink.data_received, data)

    def _call_sink(self, method, *args) -> None:
        try:
            method(*args)
        except Exception:
            self.log.failure("data sink failed")

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
