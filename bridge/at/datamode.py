"""Transparent data mode (AT+QIMODE=1): the UART is the socket until ``+++`` or a close.

Entered when the module prints a bare ``CONNECT`` to a transparent AT+QIOPEN or an ATO on the
wire, or while a transparent server listens (``ATProtocol.transparent_server_listening``, app note
§4.2); any other bare ``CONNECT`` is logged and ignored (a mux-mode module has no data mode).
Bytes then flow raw both ways; the session's consumer (the *sink*) gets them through
``data_received(data)`` and hears ``data_mode_ended(reason)`` when data mode ends ('escaped',
'closed' or 'lost').

Leaving on purpose: silence for ``guard_time``, ``+++``, silence, then ``OK`` (app note §4: >= 0.5 s
on each side, < 20 ms between the pluses).

Detecting a remote close is ambiguous (app note §6.3): the module prints ``\\r\\nCLOSED\\r\\n`` (or
``+PDP DEACT``) into the data stream and drops to command mode, but the peer could have sent the
same bytes.  Rule used here: the framer holds back a stream tail that is (the start of) such a
marker; if more bytes follow it was payload and is delivered.  If it stays the tail for
``guard_time``, we probe with ``+++``: ``OK`` means the module was still in data mode (the marker
was payload: deliver it and resume with ATO); no ``OK`` means it was the module: the session is
closed, held bytes are dropped and the line is resynchronised (``+++`` sits on its command line).
"""

from typing import Optional

from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger

from bridge.at import commands
from bridge.at.errors import CommandTimeout, LinkLost
from bridge.at.events import Closed, DataModeEnded
from bridge.at.framing import CLOSE_MARKERS, ESCAPE_OK_MARKER

ESCAPE = b"+++"
#: Bytes kept for a sink that is not attached yet (data right after CONNECT).
EARLY_DATA_LIMIT = 64 * 1024
#: How long a possible marker start (e.g. a trailing CR) is held before it is delivered as data.
HOLD_DELAY = 0.05


class DataMode:
    """Data-mode state of one ATProtocol: sink, escape, close detection."""

    log = Logger()

    def __init__(self, protocol, framer, clock, guard_time: float, escape_timeout: float) -> None:
        self._protocol = protocol
        self._framer = framer
        self._clock = clock
        self._guard = guard_time
        self._escape_timeout = escape_timeout
        self.active = False
        self._sink = None
        self._early = bytearray()
        self._last_write = float("-inf")
        self._escaping: Optional[Deferred] = None
        self._probing = False  # +++ sent to find out whether a CLOSED tail was the module's
        self._probe_data = bytearray()
        self._timer = None  # the one pending step: hold release, quiet wait, +++ or its answer

    # -- public, through ATProtocol.data_mode ------------------------------------------------

    def set_sink(self, sink) -> None:
        """Attach the session consumer; bytes that came before it are delivered at once."""
        self._sink = sink
        early, self._early = bytes(self._early), bytearray()
        if early:
            self._deliver(early)

    def write(self, data: bytes) -> None:
        """Send raw bytes to the peer (only while in data mode and not escaping)."""
        if not self.active or self._escaping is not None or self._probing:
            raise RuntimeError("not in transparent data mode")
        self._protocol.write_payload(data)
        self._last_write = self._clock.seconds()

    def escape(self) -> Deferred:
        """Leave data mode with guard + ``+++`` + guard; fires when the module says OK."""
        if not self.active or self._escaping is not None or self._probing:
            return fail(RuntimeError("not in transparent data mode"))
        self._escaping = Deferred()
        self._after_own_guard(self._send_escape)
        return self._escaping

    # -- driven by ATProtocol -------------------------------------------------------------------

    def enter(self) -> None:
        if not self.active:
            self.active = True
            self._framer.set_data_mode(True)

    def data(self, data: bytes) -> None:
        if self._probing:
            self._probe_data += data
            return
        if self._timer is not None and not self._escaping:
            self._cancel_timer()  # bytes after a held tail: it was payload
        self._deliver(data)

    def marker(self, text: bytes) -> None:
        if text == b"OK" and (self._escaping is not None or self._probing):
            self._escaped()
        elif self._escaping is None and not self._probing:
            self._cancel_timer()
            self._timer = self._clock.callLater(self._guard, self._probe)

    def after_read(self) -> None:
        """Deliver a held marker *start* if nothing completes it soon."""
        if self.active and self._timer is None and self._framer.held:
            self._timer = self._clock.callLater(HOLD_DELAY, self._release_held)

    def lost(self) -> None:
        self._cancel_timer()
        if self._escaping is not None:
            escaping, self._escaping = self._escaping, None
            escaping.errback(LinkLost("UART connection lost during +++"))
        if self.active:
            self._end("lost")

    # -- steps ------------------------------------------------------------------------------------

    def _release_held(self) -> None:
        self._timer = None
        if self.active and not self._probing and self._escaping is None:
            self._deliver(self._framer.release_held())

    def _after_own_guard(self, step) -> None:
        self._cancel_timer()
        wait = max(0.0, self._last_write + self._guard - self._clock.seconds())
        self._timer = self._clock.callLater(wait, step)

    def _probe(self) -> None:
        self._timer = None
        self._probing = True
        self.log.info("possible close marker at the end of the data stream; probing with +++")
        self._after_own_guard(self._send_escape)

    def _send_escape(self) -> None:
        self._framer.set_data_mode(True, markers=(ESCAPE_OK_MARKER,))
        self._protocol.write(ESCAPE)
        self._last_write = self._clock.seconds()
        self._timer = self._clock.callLater(self._guard + self._escape_timeout, self._unanswered)

    def _escaped(self) -> None:
        """``OK`` after ``+++``: the module is in command mode now."""
        self._cancel_timer()
        self._leave()
        if self._probing:
            self._probing = False
            data, self._probe_data = bytes(self._probe_data), bytearray()
            self._deliver(data)  # the suspected marker was the peer's data
            self._protocol.issue(commands.ato()).addErrback(self._resume_failed)
        else:
            escaping, self._escaping = self._escaping, None
            self._protocol.emit(DataModeEnded("escaped"))
            escaping.callback(None)
        self._protocol.resume_commands()

    def _unanswered(self) -> None:
        """No ``OK`` after ``+++``."""
        self._timer = None
        if self._probing:
            # The marker was the module's: the session is gone and '+++' sits on its command line.
            self._probing = False
            self._probe_data = bytearray()
            self._leave()
            self._protocol.emit(Closed(None))
            self._end("closed")
            self._protocol.resync()
            return
        self._framer.set_data_mode(True, markers=CLOSE_MARKERS)
        escaping, self._escaping = self._escaping, None
        escaping.errback(CommandTimeout("+++", self._guard + self._escape_timeout, queued=False))

    def _resume_failed(self, failure) -> None:
        self.log.warn("ATO after a +++ probe failed: {error}", error=failure.value)
        self._end("closed")

    def _leave(self) -> None:
        self.active = False
        self._framer.set_data_mode(False)

    def _end(self, reason: str) -> None:
        self.active = False
        sink, self._sink = self._sink, None
        if reason != "escaped":
            self._protocol.emit(DataModeEnded(reason))
        if sink is not None:
            self._call_sink(sink.data_mode_ended, reason)

    def _deliver(self, data: bytes) -> None:
        if not data:
            return
        if self._sink is None:
            room = EARLY_DATA_LIMIT - len(self._early)
            if len(data) > room:
                self.log.warn("no data sink: dropped {n} bytes", n=len(data) - room)
            self._early += data[:room]
            return
        self._call_sink(self._sink.data_received, data)

    def _call_sink(self, method, arg) -> None:
        try:
            method(arg)
        except Exception:
            self.log.failure("data sink failed")

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
