"""Bringing a mute module back without a human: the recovery ladder, backoff, the reset command.

A module that stops answering is escalated through ever heavier steps (docs/at-dialect.md §12.8):
resync (ESC, AT) -> AT+QIDEACT and re-activation -> AT+CFUN=1,1 -> the modem's external
``reset_command`` (e.g. a GPIO power-cycle) -> the whole ladder again after an exponential, jittered
delay, for ever, until a step succeeds or the ladder is stopped. The ladder knows nothing about AT:
the modem layer builds the steps, each an action returning a Deferred that succeeds only once the
module is usable again, with its own timeout (the AT+QIDEACT step: 60 s; the command may take up to
2.5 min, but the app note advises giving up after about a minute, app note §5.5).
"""

import random
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

from twisted.internet import defer
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IDelayedCall, IReactorProcess, IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from bridge.counters import Counters


class Backoff:
    """Exponential delays with jitter, for every "retry until it works" loop in cellbridge.

    The n-th delay (from 0) is ``base = min(maximum, initial * factor**n)`` scaled by a uniform
    random factor in ``[1 - jitter, 1]``: jitter only shortens, so ``maximum`` is a true maximum,
    and links or daemons failing together do not retry in lock step. ``reset()`` after a success.
    """

    def __init__(self, rng: random.Random, initial: float = 1.0, maximum: float = 300.0,
                 factor: float = 2.0, jitter: float = 0.25) -> None:
        if not (0 < initial <= maximum and factor >= 1 and 0 <= jitter < 1):
            raise ValueError("need 0 < initial <= maximum, factor >= 1, 0 <= jitter < 1")
        self._rng = rng
        self._initial = initial
        self._maximum = maximum
        self._factor = factor
        self._jitter = jitter
        self._base = initial
        self.attempts = 0

    def next_delay(self) -> float:
        """The delay before the next attempt; each call grows the base up to ``maximum``."""
        delay = self._base * self._rng.uniform(1.0 - self._jitter, 1.0)
        # Grown by multiplication and capped, so a ladder retrying for days never overflows.
        self._base = min(self._maximum, self._base * self._factor)
        self.attempts += 1
        return delay

    def reset(self) -> None:
        self._base = self._initial
        self.attempts = 0


@dataclass(frozen=True)
class Step:
    """One rung: ``action()`` returns a Deferred that succeeds when the module is usable again."""

    name: str
    action: Callable[[], Deferred]
    timeout: float


class RecoveryLadder:
    """Runs the steps in order, escalating on failure or timeout, rounds apart by :class:`Backoff`.

    Every step start and result is one log line with its cause, and counted in ``counters``:
    ``recovery_step_started{step}``, ``recovery_step_result{step, outcome=ok|failed|timeout}`` and
    ``recovered{step}``. ``on_step(step_name, cause)`` is called as each step starts, for the caller
    to dump the AT traffic ring (rate-limiting the dumps is the caller's business).
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, steps: Sequence[Step], backoff: Backoff,
                 counters: Optional[Counters] = None,
                 on_step: Optional[Callable[[str, str], None]] = None) -> None:
        if not steps:
            raise ValueError("a recovery ladder needs at least one step")
        self._clock = clock
        self._steps: List[Step] = list(steps)
        self._backoff = backoff
        self._counters = counters if counters is not None else Counters()
        self._on_step = on_step
        self._result: Optional[Deferred] = None
        self._round = 0
        self._step_call: Optional[Deferred] = None
        self._next_round: Optional[IDelayedCall] = None

    @property
    def running(self) -> bool:
        return self._result is not None

    def run(self, cause: str) -> "Deferred[str]":
        """Climb until a step succeeds; fires with that step's name.

        ``stop()`` (or cancelling the returned Deferred) aborts the step in progress; the Deferred
        then fails with ``CancelledError``, which the caller should trap.
        """
        if self._result is not None:
            raise RuntimeError("recovery ladder already running")
        self._result = Deferred(canceller=self._halt)
        self._round = 1
        self.log.warn("recovery started: {cause}", cause=cause)
        result = self._result
        self._start_step(0, cause)
        return result

    def stop(self) -> None:
        if self._result is not None:
            self._result.cancel()

    def _halt(self, result: Deferred) -> None:
        self._result = None
        if self._next_round is not None and self._next_round.active():
            self._next_round.cancel()
        self._next_round = None
        step_call, self._step_call = self._step_call, None
        if step_call is not None:
            step_call.cancel()
        self.log.info("recovery stopped")

    def _start_step(self, index: int, cause: str) -> None:
        self._next_round = None
        step = self._steps[index]
        self.log.warn("recovery step {step} ({number}/{total}, round {round}) starting; cause: {cause}",
                      step=step.name, number=index + 1, total=len(self._steps), round=self._round,
                      cause=cause)
        self._counters.incr("recovery_step_started", step=step.name)
        if self._on_step is not None:
            self._on_step(step.name, cause)
        started = self._clock.seconds()
        call = self._step_call = maybeDeferred(step.action)
        call.addTimeout(step.timeout, self._clock)
        call.addCallbacks(self._step_succeeded, self._step_failed,
                          callbackArgs=(step, started), errbackArgs=(index, step, started))
        call.addErrback(lambda failure: self.log.failure("recovery ladder bookkeeping failed", failure))

    def _step_succeeded(self, _: object, step: Step, started: float) -> None:
        if self._result is None:  # a step whose canceller reported success: stopped all the same
            return
        self._step_call = None
        self.log.info("recovery step {step} succeeded after {elapsed:.1f} s: module recovered",
                      step=step.name, elapsed=self._clock.seconds() - started)
        self._counters.incr("recovery_step_result", step=step.name, outcome="ok")
        self._counters.incr("recovered", step=step.name)
        self._backoff.reset()
        result, self._result = self._result, None
        result.callback(step.name)

    def _step_failed(self, failure: Failure, index: int, step: Step, started: float) -> None:
        if self._result is None:  # stopped: this is the cancellation of the step, not news
            return
        self._step_call = None
        if failure.check(defer.TimeoutError):
            outcome, why = "timeout", "timed out after {:g} s".format(step.timeout)
        else:
            outcome, why = "failed", failure.getErrorMessage() or failure.type.__name__
        self.log.warn("recovery step {step} failed after {elapsed:.1f} s: {why}",
                      step=step.name, elapsed=self._clock.seconds() - started, why=why)
        self._counters.incr("recovery_step_result", step=step.name, outcome=outcome)
        cause = "step {} {}".format(step.name, why if outcome == "timeout" else "failed: " + why)
        if index + 1 < len(self._steps):
            self._start_step(index + 1, cause)
            return
        delay = self._backoff.next_delay()
        self._round += 1
        self.log.warn("recovery: every step failed; round {round} in {delay:.1f} s",
                      round=self._round, delay=delay)
        self._next_round = self._clock.callLater(
            delay, self._start_step, 0, "round {} found the module still mute ({})".format(
                self._round - 1, cause))


class ResetCommandFailed(Exception):
    """The external reset command exited non-zero, was killed, or could not start."""


class ResetCommandTimeout(ResetCommandFailed):
    """The external reset command ran past its timeout and was killed."""


class _ResetProcess(ProcessProtocol):
    """Fires ``finished`` when the process exits (not when its pipes close: a daemonised
    grandchild may hold them for ever), keeping the output's tail for the error message."""

    TAIL = 2000

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = list(argv)
        self.finished: Deferred = Deferred(canceller=lambda d: self.kill())
        self.killed_for: Optional[str] = None
        self.timer: Optional[IDelayedCall] = None
        self._tail = bytearray()

    def connectionMade(self) -> None:
        self.transport.closeStdin()

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        self._tail += data
        del self._tail[:-self.TAIL]

    def kill(self, why: Optional[str] = None) -> None:
        self.killed_for = why
        try:
            self.transport.signalProcess("KILL")
        except ProcessExitedAlready:
            pass

    def processExited(self, reason: Failure) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        if self.finished.called:  # cancelled
            return
        code = getattr(reason.value, "exitCode", None)
        if self.killed_for is not None:
            self.finished.errback(ResetCommandTimeout("{} {}".format(self.argv, self.killed_for)))
        elif code == 0:
            self.finished.callback(None)
        else:
            output = bytes(self._tail).decode("utf-8", "replace").strip()
            self.finished.errback(ResetCommandFailed("{} ended with {}{}".format(
                self.argv, reason.getErrorMessage(), ": " + output if output else "")))


def run_reset_command(reactor: IReactorProcess, argv: Sequence[str], timeout: float) -> "Deferred[None]":
    """Run ``argv`` (no shell, inherited environment); succeed on exit status 0.

    Fails with :class:`ResetCommandFailed` on a non-zero exit or a failed start, and with
    :class:`ResetCommandTimeout` after SIGKILL once ``timeout`` seconds have passed (the Deferred
    fires only when the process is gone). Cancelling the Deferred kills the process too.
    """
    protocol = _ResetProcess(argv)
    try:
        reactor.spawnProcess(protocol, argv[0], list(argv), env=None)
    except OSError as error:
        return defer.fail(ResetCommandFailed("{} could not start: {}".format(list(argv), error)))
    protocol.timer = reactor.callLater(timeout, protocol.kill, "timed out after {:g} s and was killed"
                                       .format(timeout))
    return protocol.finished
