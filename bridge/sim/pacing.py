"""Serialisation timing shared by the UART and the radio: a byte stream at a fixed rate.

A `Pacer` answers "when may the next bytes leave?" so that the long-run rate is exact (no token
bucket burst): sending k bytes occupies the line for k / rate seconds after it was last free.
"""


class Pacer:
    """Occupancy clock of one direction of a serial line.

    @param bytes_per_second: line rate; 0 or less means unlimited (everything leaves at once).
    """

    def __init__(self, bytes_per_second: float):
        self.rate = float(bytes_per_second)
        self._free_at = 0.0

    @property
    def unlimited(self) -> bool:
        return self.rate <= 0

    def ready_at(self, now: float) -> float:
        """The moment the line is free again (never in the past)."""
        return max(now, self._free_at)

    def allowance(self, now: float, tick: float) -> int:
        """Bytes that may go now for a continuous backlog served every `tick` seconds.

        Counting from when the line became free (not from now) lets a late timer catch up, so
        the long-run rate stays exact however the reactor schedules us.
        """
        if self.unlimited:
            return 1 << 30
        if now < self._free_at:
            return 0
        return max(1, int((now - self._free_at + tick) * self.rate))

    def consume(self, nbytes: int) -> None:
        """`nbytes` of a continuous backlog went out right after the previous ones."""
        if not self.unlimited:
            self._free_at += nbytes / self.rate

    def restart(self, now: float) -> None:
        """The line was idle (or blocked): no catching up for time that had nothing to send."""
        self._free_at = max(self._free_at, now)

    def occupy(self, now: float, nbytes: int) -> float:
        """Book the line for `nbytes` starting when it is free; return when they have left."""
        if self.unlimited:
            return now
        self._free_at = self.ready_at(now) + nbytes / self.rate
        return self._free_at


def baud_to_bytes_per_second(baud: int) -> float:
    """UART framing: start bit, 8 data bits, stop bit = 10 bits per byte."""
    return baud / 10.0 if baud > 0 else 0.0
