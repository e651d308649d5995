"""StallWatch: a payload that stops arriving mid-frame must not hold the UART forever.

A length header commits the framer to cutting that many bytes, whatever they are.  If the module
stops short (a truncated frame, bytes lost on the line), everything it says next (``OK``, URCs,
other sockets' frames) is taken as the rest of that payload.  A command on the wire would time out
and its resync resets the framer; with nothing on the wire only this watch notices.  A real frame
comes in one burst (1500 bytes take 1.6 s at 9600 baud), so silence longer than a command timeout
in the middle of one means the frame is dead.
"""

from typing import Callable

#: Silence in the middle of a payload after which it is dropped (a simple command's timeout).
STALL_TIMEOUT = 5.0


class StallWatch:
    """Calls ``on_stall()`` when the framer has sat mid-payload with no byte for ``timeout``."""

    def __init__(self, clock, framer, on_stall: Callable[[], None],
                 timeout: float = STALL_TIMEOUT) -> None:
        self._clock = clock
        self._framer = framer
        self._on_stall = on_stall
        self._timeout = timeout
        self._last_read = 0.0
        self._timer = None

    def after_read(self) -> None:
        """Call after every read; cheap when no payload is half-cut (the data pump's hot path)."""
        if not self._framer.mid_payload:
            return
        self._last_read = self._clock.seconds()
        if self._timer is None:
            self._timer = self._clock.callLater(self._timeout, self._check)

    def stop(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _check(self) -> None:
        # One timer per stall, not one per read: re-armed for the rest while bytes still flow.
        self._timer = None
        if not self._framer.mid_payload:
            return
        quiet = self._clock.seconds() - self._last_read
        if quiet < self._timeout:
            self._timer = self._clock.callLater(self._timeout - quiet, self._check)
            return
        self._on_stall()
