"""Radio shaping: a one-way pipe with a serialisation rate and a propagation delay.

Bytes put in come out at `deliver` after they have been serialised at the link rate and then
travelled for the one-way delay (RTT/2).  Order is preserved; `queued` counts bytes still inside,
which is what flow control upstream looks at.
"""

from collections import deque
from typing import Callable

from .pacing import Pacer

#: Radio segments: a GPRS MTU of 1500 gives TCP segments of at most 1460 bytes.
SEGMENT = 1460


class RadioPipe:
    """One direction of the simulated GPRS link.

    @param clock: an IReactorTime.
    @param bits_per_second: link rate, 0 = unlimited.
    @param delay: one-way propagation delay in seconds.
    @param deliver: called with each chunk when it arrives at the far end.
    @param segment: largest chunk the link carries at once (datagrams pass a large value).
    """

    def __init__(
        self,
        clock,
        bits_per_second: int,
        delay: float,
        deliver: Callable[[bytes], None],
        segment: int = SEGMENT,
    ):
        self._clock = clock
        self._segment = segment
        self._pacer = Pacer(bits_per_second / 8.0 if bits_per_second > 0 else 0)
        self._delay = delay
        self._deliver = deliver
        self._inflight = deque()  # (arrival time, bytes)
        self._timer = None
        self.queued = 0

    def put(self, data: bytes) -> None:
        if not data:
            return
        now = self._clock.seconds()
        if self._pacer.unlimited and self._delay <= 0 and not self._inflight:
            for start in range(0, len(data), self._segment):
                self._deliver(data[start:start + self._segment])
            return
        for start in range(0, len(data), self._segment):
            segment = data[start:start + self._segment]
            arrival = self._pacer.occupy(now, len(segment)) + self._delay
            self._inflight.append((arrival, segment))
            self.queued += len(segment)
        self._arm()

    @property
    def last_arrival(self) -> float:
        """When the last byte now in flight arrives (now if the pipe is empty)."""
        return self._inflight[-1][0] if self._inflight else self._clock.seconds()

    def clear(self) -> None:
        """Forget everything in flight (link torn down)."""
        self._inflight.clear()
        self.queued = 0
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _arm(self) -> None:
        if self._timer is not None and self._timer.active() or not self._inflight:
            return
        wait = max(0.0, self._inflight[0][0] - self._clock.seconds())
        self._timer = self._clock.callLater(wait, self._release)

    def _release(self) -> None:
        self._timer = None
        now = self._clock.seconds()
        while self._inflight and self._inflight[0][0] <= now + 1e-9:
            _, data = self._inflight.popleft()
            self.queued -= len(data)
            self._deliver(data)
        self._arm()
