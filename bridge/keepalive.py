"""Dead-link detection for module TCP links: the AT+QISACK ack-progress schedule and the idle probe.

GPRS drops connections without telling anyone: the module keeps reporting the socket as connected
while nothing gets through (app note §6). The only honest evidence is the peer's TCP acks, which
``AT+QISACK[=n]`` reports as ``sent, acked, unacked`` byte counts. So after data leaves the module
we watch the acked count; a link whose acks stop moving while bytes are still in flight is dead.

Only TCP links are watched. UDP links have no acks (the module reports acked = 0 for ever), so
callers never create an :class:`AckProgressWatch` for them and this scheme never declares one dead.

Both classes are pure: time comes from the injected clock, the AT traffic from injected callables.
"""

from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure


@dataclass(frozen=True)
class KeepaliveTimings:
    """A modem's ``keepalive_*`` settings (seconds, fractions allowed), handed to each link."""

    first: float = 5.0
    interval: float = 10.0
    retries: int = 12
    idle: float = 480.0

    @classmethod
    def from_config(cls, modem_config) -> "KeepaliveTimings":
        return cls(modem_config.keepalive_first, modem_config.keepalive_interval,
                   modem_config.keepalive_retries, modem_config.keepalive_idle)


class AckStatus(NamedTuple):
    """One ``+QISACK: <sent>, <acked>, <nAcked>`` answer, in bytes since the link opened."""

    sent: int
    acked: int
    unacked: int


class AckProgressWatch:
    """The app note's QISACK scheme for one TCP link, with acked progress restarting it.

    Timeline, from t0 = the SEND OK that started the schedule (defaults in brackets):

    - check 0 at ``t0 + first`` [t0+5], then check k at ``t0 + first + k * interval`` for
      k = 1..``retries`` [t0+15, t0+25, ..., t0+125], each check one ``query_acks()``;
    - a check with ``unacked == 0`` ends the schedule (the next ``data_sent()`` starts a new one).
      A link the module already dropped also answers ``0, 0, 0`` (docs/at-dialect.md §4.5): that
      case is caught by the close URC or AT+QISTATE, not here;
    - a check whose ``acked`` is greater than the previous check's *restarts the schedule from that
      check*: that check becomes check 0 of a new schedule, so the next check is at that check's
      time + ``interval`` and the link dies only after ``interval * retries`` [120 s] without progress.
      (It is not treated as a new t0: no new data was sent, so the ``first`` grace period for a fresh
      SEND OK does not apply.) The first check of a fresh schedule has no previous check: it only
      records the baseline;
    - after the check at the last retry, still unacked and no progress: ``on_dead(reason)``, where
      reason is ``"no ack progress for N s (M bytes unacked)"`` (or ``(AT+QISACK unanswered)`` if no
      check of this schedule got an answer), N counted from t0 or from the last check with progress.
      The watch does not log the death itself: the caller's one line says what it does about it.

    ``query_acks`` may return any object with ``sent``/``acked``/``unacked`` (e.g. the AT engine's
    ``SackResult``). ``data_sent()`` never restarts a running schedule: a link that keeps sending while nothing is
    acked must still die on time. A query that fails (errback, e.g. the AT command timed out) is
    logged and counts as a check without progress. Never two queries in flight: a check is
    scheduled only once the previous answer is in; if an answer comes so late that later check
    times have passed, those checks are skipped (the time budget is fixed, so detection stays
    bounded by ``first + interval * retries`` plus one query's duration). All times may be fractions.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        query_acks: Callable[[], "Deferred[AckStatus]"],
        on_dead: Callable[[str], None],
        first: float = 5.0,
        interval: float = 10.0,
        retries: int = 12,
        link: str = "?",
    ) -> None:
        self._clock = clock
        self._query_acks = query_acks
        self._on_dead = on_dead
        self._first = first
        self._interval = interval
        self._retries = retries
        self._link = link
        self._stopped = False
        self._origin: Optional[float] = None  # time of check 0; None while no schedule runs
        self._check = 0  # index of the check scheduled or in flight, 0..retries
        self._progress_at = 0.0  # t0, or the time of the last check that showed progress
        self._last: Optional[AckStatus] = None  # the previous check's answer
        self._next_call: Optional[IDelayedCall] = None
        self._query: Optional[Deferred] = None
        self._sent_during_query: Optional[float] = None

    @property
    def running(self) -> bool:
        """True while a schedule is running (between the first SEND OK and its end)."""
        return self._origin is not None

    def data_sent(self) -> None:
        """Call on every SEND OK of data on this link: starts a schedule unless one is running."""
        if self._stopped:
            return
        now = self._clock.seconds()
        if self._query is not None:
            self._sent_during_query = now
        if self._origin is None:
            self._start(now)

    def alive(self) -> None:
        """Bytes came from the peer: the link is proven and a running schedule ends (the next
        ``data_sent`` starts one). For a link with no SEND OK (a transparent session), whose
        uplink bytes start the schedule as they are written."""
        if self._query is None:
            self._end()

    def stop(self) -> None:
        """Cancel the pending check and the query in flight; the watch stays inert afterwards."""
        self._stopped = True
        self._end()
        query, self._query = self._query, None
        if query is not None:
            query.cancel()

    def _start(self, t0: float) -> None:
        self._origin = t0 + self._first
        self._progress_at = t0
        self._last = None
        self._schedule(0)

    def _end(self) -> None:
        self._origin = None
        if self._next_call is not None and self._next_call.active():
            self._next_call.cancel()
        self._next_call = None

    def _check_time(self, check: int) -> float:
        # Computed from the origin each time, so fractional intervals do not accumulate error.
        return self._origin + check * self._interval

    def _schedule(self, check: int) -> None:
        self._check = check
        delay = max(0.0, self._check_time(check) - self._clock.seconds())
        self._next_call = self._clock.callLater(delay, self._run_check)

    def _run_check(self) -> None:
        self._next_call = None
        self._sent_during_query = None
        query = self._query = maybeDeferred(self._query_acks)
        # The answer may already be in (then _query is None again by the time addCallbacks returns).
        query.addCallbacks(self._on_status, self._on_query_failed)
        query.addErrback(lambda failure: self.log.failure("keepalive bookkeeping failed", failure))

    def _on_status(self, status: AckStatus) -> None:
        self._query = None
        if self._stopped:
            return
        if status.unacked <= 0:
            self.log.debug("link {link}: all {sent} bytes acked, keepalive schedule ends",
                           link=self._link, sent=status.sent)
            self._end()
            if self._sent_during_query is not None:
                # This answer may predate that SEND OK: watch the new data from its own t0.
                self._start(self._sent_during_query)
            return
        previous, self._last = self._last, status
        if previous is not None and status.acked > previous.acked:
            self.log.debug("link {link}: acked {before} -> {after}, keepalive schedule restarts",
                           link=self._link, before=previous.acked, after=status.acked)
            self._origin = self._check_time(self._check)
            self._progress_at = self._origin
            self._check = 0
        self._schedule_next()

    def _on_query_failed(self, failure: Failure) -> None:
        self._query = None
        if self._stopped:
            return
        self.log.warn("link {link}: AT+QISACK failed ({error}); counted as a check without progress",
                      link=self._link, error=failure.getErrorMessage() or failure.type.__name__)
        self._schedule_next()

    def _schedule_next(self) -> None:
        now = self._clock.seconds()
        check = self._check + 1
        while check <= self._retries and self._check_time(check) < now:
            check += 1
        if check > self._check + 1:
            self.log.info("link {link}: {n} keepalive check(s) skipped, AT+QISACK answered late",
                          link=self._link, n=check - self._check - 1)
        if check <= self._retries:
            self._schedule(check)
            return
        detail = "AT+QISACK unanswered" if self._last is None else "{} bytes unacked".format(self._last.unacked)
        reason = "no ack progress for {:g} s ({})".format(now - self._progress_at, detail)
        self._end()
        self._on_dead(reason)


class IdleProbe:
    """Notices a link that has carried no traffic for ``idle`` seconds, so its death can be checked.

    QISACK cannot see a dead idle link (nothing is in flight). Every ``idle`` seconds without
    traffic either way, this calls ``send_probe(probe_bytes)`` once; the data path then sends the
    probe like any data and its SEND OK starts the link's :class:`AckProgressWatch` as usual. With
    empty ``probe_bytes`` (the default profile: never inject bytes into the app's stream) it calls
    ``on_idle()`` instead, for the caller to check the link against ``AT+QISTATE``. The timer
    re-arms after firing, so a link that stays idle is checked every ``idle`` seconds.
    Call ``activity()`` when the link opens and on every send or receive.
    """

    def __init__(
        self,
        clock: IReactorTime,
        idle: float,
        send_probe: Callable[[bytes], None],
        probe_bytes: bytes,
        on_idle: Optional[Callable[[], None]] = None,
    ) -> None:
        self._clock = clock
        self._idle = idle
        self._send_probe = send_probe
        self._probe_bytes = probe_bytes
        self._on_idle = on_idle
        self._stopped = False
        self._timer: Optional[IDelayedCall] = None

    def activity(self) -> None:
        """Traffic happened: the link is idle again only ``idle`` seconds from now."""
        if self._stopped:
            return
        if self._timer is not None and self._timer.active():
            self._timer.reset(self._idle)
        else:
            self._timer = self._clock.callLater(self._idle, self._fire)

    def stop(self) -> None:
        """Disarm for good (the link closed)."""
        self._stopped = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _fire(self) -> None:
        self._timer = self._clock.callLater(self._idle, self._fire)
        if self._probe_bytes:
            self._send_probe(self._probe_bytes)
        elif self._on_idle is not None:
            self._on_idle()
