"""Payload that can never be an escape: the writer's half of the app note's ``+++`` rule.

A module in transparent data mode leaves it on ``+++`` only when (app note §4) the first '+'
comes after >= 500 ms of silence, the three '+' come less than 20 ms apart, and >= 500 ms of
silence follows. What follows a payload is the app's business (it may go quiet for good), so the
writer breaks the first two conditions instead: a write that starts after :data:`SPLIT_AFTER`
seconds without a write (far below any guard a module enforces) and begins with '+' sends that
'+' alone, and the rest :data:`PLUS_HOLD` seconds later (more than twice the 20 ms). So no '+'
that follows silence is ever followed by another within 20 ms, and a '+' that follows a byte
within 500 ms starts nothing. Writes made meanwhile queue behind, in order.

Silence is measured from our write calls, which is never shorter than the silence on the wire
(bytes leave after they are written), so the rule errs on the side of splitting. One case it
cannot see: with RTS/CTS, a module that holds CTS while the line is otherwise idle can release
the held '+' and the rest back to back; ``dtr_escape`` (``+++`` disabled in AT+QITCFG) has no such
gap (README, "Transparent sessions").
"""

from typing import Callable

PLUS = ord("+")
#: A write this long after the previous one may follow silence the module counts as a guard.
SPLIT_AFTER = 0.1
#: How long the bytes after a lone leading '+' wait (the module's limit between '+' is 20 ms).
PLUS_HOLD = 0.05


class PlusGuard:
    """Writes payload through ``send(data)`` so that it never forms a ``+++`` escape.

    :param clock: IReactorTime
    """

    def __init__(self, clock, send: Callable[[bytes], None]) -> None:
        self._clock = clock
        self._send = send
        self._last = float("-inf")
        self._held = bytearray()
        self._timer = None

    @property
    def holding(self) -> int:
        """Bytes waiting behind a lone '+'."""
        return len(self._held)

    @property
    def quiet_from(self) -> float:
        """Clock time after which this writer sends nothing more (held bytes are due first)."""
        return self._timer.getTime() if self._timer is not None else self._last

    def write(self, data: bytes) -> None:
        if not data:
            return
        if self._timer is not None:
            self._held += data
            return
        now = self._clock.seconds()
        if data[0] == PLUS and now - self._last >= SPLIT_AFTER:
            self._emit(data[:1])
            self._held += data[1:]
            self._timer = self._clock.callLater(PLUS_HOLD, self._release)
            return
        self._emit(data)

    def written(self) -> None:
        """Somebody else wrote on the line (the engine's own ``+++``): it is not silent."""
        self._last = self._clock.seconds()

    def stop(self) -> None:
        """Data mode ended: bytes still held are never sent (the session is gone)."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._held = bytearray()

    def _release(self) -> None:
        self._timer = None
        held, self._held = bytes(self._held), bytearray()
        if held:
            self._emit(held)

    def _emit(self, data: bytes) -> None:
        self._last = self._clock.seconds()
        self._send(data)
