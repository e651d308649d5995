"""What the remote has acknowledged of the bytes sent on one module socket (AT+QISACK=n).

The send window, the close of a socket (a clean close only once the tail is acked) and the
keepalive schedule all ask the same question. They share one AT+QISACK=n at a time: a caller
asking while one is out gets that answer too, and every answer updates the count, whoever asked.

An answer can only add to what is known acked, and one that counts fewer bytes sent than the
module took (``0, 0, 0`` from a link it dropped) tells nothing about this stream.

The window asks only when it is blocked, and asks again after the deficit divided by the ack rate
seen so far. While the acked count does not move the next ask backs off, doubling up to
``ack_poll_stall``: a stalled link costs a handful of AT+QISACK, not one every few milliseconds
(the keepalive schedule, app note §6, is what decides that it is dead).
"""

from typing import Callable, Optional

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from bridge.at.commands import SackResult


class AckClock:
    """When to ask again: the deficit divided by the ack rate; doubling while nothing moves."""

    def __init__(self, low: float, high: float, stall: float) -> None:
        self._low, self._high, self._stall = low, high, stall
        self._rate = 0.0  # acked bytes per second, smoothed
        self._last = None  # (time, acked) of the previous answer
        self._stalled_delay = 0.0  # the last delay used while nothing moved (0 = moving)

    def observe(self, now: float, acked: int) -> None:
        if self._last is not None and now > self._last[0]:
            sample = (acked - self._last[1]) / (now - self._last[0])
            self._rate = sample if self._rate == 0 else (self._rate + sample) / 2
            if acked > self._last[1]:
                self._stalled_delay = 0.0
            else:
                self._stalled_delay = min(max(self._stalled_delay * 2, self._low), self._stall)
        self._last = (now, acked)

    def delay(self, deficit: int) -> float:
        if self._stalled_delay:
            return self._stalled_delay
        if self._rate <= 0:
            return self._low
        return min(max(deficit / self._rate, self._low), self._high)


class AckTracker:
    """Sent and acked byte counts of one socket.

    :param ask: ``() -> Deferred[SackResult]``, one AT+QISACK=n
    :param deficit: ``() -> int``, bytes that must still be acked before the socket can go on
    :param answered: called after every answer (or failure), once the counts are updated
    """

    log = Logger()

    def __init__(self, clock, ask: Callable[[], Deferred], deficit: Callable[[], int],
                 answered: Callable[[], None], settings, name: str) -> None:
        self._clock = clock
        self._ask = ask
        self._deficit = deficit
        self._answered = answered
        self._name = name
        self._poll_clock = AckClock(settings.ack_poll_min, settings.ack_poll_max,
                                    settings.ack_poll_stall)
        self.sent = 0  #: bytes the module took (SEND OK)
        self.acked = 0  #: of those, acked by the remote as of the last answer
        self._query: Optional[Deferred] = None
        self._waiters = []
        self._window_asking = False
        self._poll: Optional[object] = None
        self._stopped = False

    @property
    def unacked(self) -> int:
        return self.sent - self.acked

    def query(self) -> Deferred:
        """AT+QISACK=n -> SackResult, sharing the one in flight; cancelling stops waiting."""
        waiter = Deferred(self._forget)
        self._waiters.append(waiter)
        if self._query is None:
            self._query = self._ask()
            self._query.addBoth(self._answer)
        return waiter

    def learn(self) -> None:
        """The window (or the close) wants fresh counts: ask now unless asking or timed already;
        while a deficit remains, ask again on the clock."""
        if self._window_asking or self._poll is not None or self._stopped:
            return
        self._window_asking = True
        self.query().addBoth(self._learned)

    def stop(self) -> None:
        self._stopped = True
        if self._poll is not None and self._poll.active():
            self._poll.cancel()
        self._poll = None

    def _answer(self, result) -> None:
        self._query = None
        if isinstance(result, SackResult) and not self._stopped:
            if result.sent >= self.sent:
                self.acked = max(self.acked, self.sent - min(result.unacked, self.sent))
            else:
                self._not_ours(result)
                result = SackResult(self.sent, self.acked, self.unacked)  # what is known
            self._poll_clock.observe(self._clock.seconds(), self.acked)
        window_asked = self._window_asking
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if waiter.called:
                continue  # cancelled by an earlier waiter's callback (the socket died meanwhile)
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)
        if not window_asked and not self._stopped:
            self._answered()  # a keepalive answer may unblock the window

    def _not_ours(self, result: SackResult) -> None:
        """The module counts fewer bytes sent than it took: these are not this stream's counters
        (a link it already dropped answers ``0, 0, 0``, docs/at-dialect.md §4.5). Taken as no
        progress: believing them would call every byte acked, end the keepalive's schedule and
        leave nothing to resend on a reopen."""
        self.log.info("{name}: AT+QISACK counts {theirs} bytes sent, fewer than the {ours} the "
                      "module took: not this link's counters; no progress assumed",
                      name=self._name, theirs=result.sent, ours=self.sent)

    def _learned(self, result) -> None:
        self._window_asking = False
        if self._stopped:
            return
        if not isinstance(result, SackResult):
            self.log.warn("{name}: AT+QISACK failed: {why}", name=self._name,
                          why=result.getErrorMessage() if isinstance(result, Failure) else result)
            self._poll_clock.observe(self._clock.seconds(), self.acked)  # no progress seen
        deficit = self._deficit()
        if deficit > 0:
            self._poll = self._clock.callLater(self._poll_clock.delay(deficit), self._polled)
        self._answered()

    def _polled(self) -> None:
        self._poll = None
        self.learn()

    def _forget(self, waiter: Deferred) -> None:
        if waiter in self._waiters:
            self._waiters.remove(waiter)
