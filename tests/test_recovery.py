"""The recovery ladder and Backoff on task.Clock: escalation order, step timeouts, rounds, stop()."""

import random

import pytest
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs

from bridge.counters import Counters
from bridge.modem.recovery import Backoff, RecoveryLadder, Step

LADDER = [("resync", 10.0), ("pdp", 60.0), ("cfun", 30.0), ("reset_command", 120.0)]


class ModuleScript:
    """The steps' side of the module: records each action's start and answers as scripted.

    ``outcomes[name]`` is "ok", "fail" (both immediate) or "hang" (a Deferred nobody fires,
    whose cancellation is recorded).
    """

    def __init__(self, clock):
        self.clock = clock
        self.outcomes = {name: "fail" for name, _ in LADDER}
        self.started = []
        self.cancelled = []

    def steps(self):
        return [Step(name, lambda name=name: self._act(name), timeout) for name, timeout in LADDER]

    def _act(self, name):
        self.started.append((self.clock.seconds(), name))
        outcome = self.outcomes[name]
        if outcome == "ok":
            return succeed("OK")
        if outcome == "fail":
            return fail(RuntimeError("{} got no answer".format(name)))
        return Deferred(canceller=lambda d: self.cancelled.append((self.clock.seconds(), name)))

    def names(self):
        return [name for _, name in self.started]


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def module(clock):
    return ModuleScript(clock)


@pytest.fixture
def counters():
    return Counters()


def make_ladder(clock, module, counters, on_step=None, seed=5):
    backoff = Backoff(random.Random(seed), initial=2.0, maximum=20.0, factor=2.0, jitter=0.25)
    return RecoveryLadder(clock, module.steps(), backoff, counters=counters, on_step=on_step), backoff


def test_steps_escalate_in_order_and_first_success_ends_the_ladder(clock, module, counters):
    module.outcomes["cfun"] = "ok"
    ladder, backoff = make_ladder(clock, module, counters)
    result = ladder.run("AT+CSQ timed out")
    assert module.names() == ["resync", "pdp", "cfun"]
    assert result.called and result.result == "cfun"
    assert not ladder.running and clock.getDelayedCalls() == []
    assert counters.get("recovered", step="cfun") == 1
    assert counters.get("recovery_step_result", step="resync", outcome="failed") == 1
    assert counters.get("recovery_step_result", step="cfun", outcome="ok") == 1
    assert counters.get("recovery_step_started", step="reset_command") == 0


def test_each_start_and_result_is_one_log_line_with_its_cause(clock, module, counters):
    module.outcomes["pdp"] = "ok"
    ladder, _ = make_ladder(clock, module, counters)
    with capturedLogs() as events:
        ladder.run("AT+CSQ timed out")
    lines = [e["log_format"].format(**e) for e in events]
    assert [e["log_level"] for e in events] == [LogLevel.warn] * 4 + [LogLevel.info]
    assert lines == [
        "recovery started: AT+CSQ timed out",
        "recovery step resync (1/4, round 1) starting; cause: AT+CSQ timed out",
        "recovery step resync failed after 0.0 s: resync got no answer",
        "recovery step pdp (2/4, round 1) starting; cause: step resync failed: resync got no answer",
        "recovery step pdp succeeded after 0.0 s: module recovered",
    ]


def test_on_step_hook_sees_every_step_with_its_cause(clock, module, counters):
    module.outcomes["reset_command"] = "ok"
    seen = []
    ladder, _ = make_ladder(clock, module, counters, on_step=lambda name, cause: seen.append((name, cause)))
    ladder.run("mute")
    assert seen == [("resync", "mute"),
                    ("pdp", "step resync failed: resync got no answer"),
                    ("cfun", "step pdp failed: pdp got no answer"),
                    ("reset_command", "step cfun failed: cfun got no answer")]


def test_step_timeout_counts_as_failure_and_escalates(clock, module, counters):
    module.outcomes["pdp"] = "hang"  # AT+QIDEACT that never says DEACT OK
    module.outcomes["cfun"] = "ok"
    ladder, _ = make_ladder(clock, module, counters)
    result = ladder.run("mute")
    clock.advance(59.9)
    assert module.names() == ["resync", "pdp"] and not result.called
    clock.advance(0.1)
    assert module.started == [(0, "resync"), (0, "pdp"), (60.0, "cfun")]
    assert module.cancelled == [(60.0, "pdp")]  # the hung command was withdrawn
    assert counters.get("recovery_step_result", step="pdp", outcome="timeout") == 1
    assert result.result == "cfun"


def test_whole_ladder_repeats_with_growing_jittered_backoff(clock, module, counters):
    ladder, _ = make_ladder(clock, module, counters, seed=11)
    reference = Backoff(random.Random(11), initial=2.0, maximum=20.0, factor=2.0, jitter=0.25)
    expected_delays = [reference.next_delay() for _ in range(6)]
    ladder.run("mute")
    round_starts = [0.0]
    for delay in expected_delays:
        clock.advance(delay)
        round_starts.append(clock.seconds())
    assert [t for t, name in module.started if name == "resync"] == pytest.approx(round_starts)
    assert module.names() == [name for name, _ in LADDER] * 7
    bases = [2, 4, 8, 16, 20, 20]
    for delay, base in zip(expected_delays, bases):
        assert base * 0.75 <= delay <= base
    assert counters.get("recovery_step_started", step="cfun") == 7
    assert ladder.running


def test_success_in_a_later_round_resets_backoff(clock, module, counters):
    ladder, backoff = make_ladder(clock, module, counters)
    result = ladder.run("mute")
    assert backoff.attempts == 1
    module.outcomes["resync"] = "ok"
    clock.advance(2.0)
    assert result.result == "resync"
    assert backoff.attempts == 0
    assert module.names() == ["resync", "pdp", "cfun", "reset_command", "resync"]


def test_stop_mid_step_cancels_it_and_fails_run_with_cancelled(clock, module, counters):
    module.outcomes["cfun"] = "hang"
    ladder, _ = make_ladder(clock, module, counters)
    result = ladder.run("mute")
    clock.advance(5)
    ladder.stop()
    assert module.cancelled == [(5, "cfun")]
    assert result.called and isinstance(result.result.value, CancelledError)
    result.addErrback(lambda f: f.trap(CancelledError))
    clock.advance(1000)
    assert module.names() == ["resync", "pdp", "cfun"]
    assert clock.getDelayedCalls() == [] and not ladder.running
    assert counters.get("recovery_step_result", step="cfun", outcome="timeout") == 0


def test_stop_during_backoff_wait_prevents_the_next_round(clock, module, counters):
    ladder, _ = make_ladder(clock, module, counters)
    result = ladder.run("mute")
    result.addErrback(lambda f: f.trap(CancelledError))
    ladder.stop()
    assert clock.getDelayedCalls() == []
    clock.advance(1000)
    assert len(module.started) == 4


def test_run_while_running_is_refused_but_a_new_run_after_success_works(clock, module, counters):
    module.outcomes["resync"] = "hang"
    ladder, _ = make_ladder(clock, module, counters)
    ladder.run("mute")
    with pytest.raises(RuntimeError):
        ladder.run("again")
    module.outcomes["pdp"] = "ok"
    clock.advance(10)
    assert not ladder.running
    module.outcomes["resync"] = "fail"
    assert ladder.run("mute again").result == "pdp"


def test_step_raising_synchronously_is_a_failure_not_a_crash(clock, counters):
    def broken():
        raise OSError("serial port gone")

    ladder = RecoveryLadder(clock, [Step("resync", broken, 1.0), Step("cfun", lambda: succeed(None), 1.0)],
                            Backoff(random.Random(1)), counters=counters)
    assert ladder.run("mute").result == "cfun"
    assert counters.get("recovery_step_result", step="resync", outcome="failed") == 1


def test_backoff_without_jitter_doubles_up_to_maximum_and_reset_restarts():
    backoff = Backoff(random.Random(0), initial=0.5, maximum=5.0, factor=2.0, jitter=0.0)
    assert [backoff.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    backoff.reset()
    assert backoff.next_delay() == 0.5


def test_backoff_jitter_stays_within_bounds_and_is_reproducible_with_a_seed():
    first = Backoff(random.Random(42), initial=1.0, maximum=60.0, jitter=0.5)
    second = Backoff(random.Random(42), initial=1.0, maximum=60.0, jitter=0.5)
    delays = [first.next_delay() for _ in range(2000)]
    assert delays == [second.next_delay() for _ in range(2000)]
    bases = [min(60.0, 2.0 ** min(n, 6)) for n in range(2000)]
    assert all(0.5 * base <= delay <= base for delay, base in zip(delays, bases))
    assert len(set(delays[10:])) > 1000  # jitter really spreads the capped delays


@pytest.mark.parametrize("kwargs", [dict(initial=0), dict(initial=5, maximum=1), dict(factor=0.5),
                                    dict(jitter=1.0)])
def test_backoff_rejects_nonsense(kwargs):
    with pytest.raises(ValueError):
        Backoff(random.Random(0), **kwargs)


def test_counters_keep_one_series_per_name_and_labels():
    counters = Counters()
    counters.incr("link_dead", link=0, cause="no ack")
    counters.incr("link_dead", cause="no ack", link="0")
    counters.incr("link_dead", link=1, cause="no ack")
    counters.incr("port_lost", amount=3)
    snapshot = counters.snapshot()
    assert snapshot == {
        ("link_dead", (("cause", "no ack"), ("link", "0"))): 2,
        ("link_dead", (("cause", "no ack"), ("link", "1"))): 1,
        ("port_lost", ()): 3,
    }
    counters.incr("port_lost")
    assert snapshot[("port_lost", ())] == 3  # a snapshot is a copy
    assert counters.get("port_lost") == 4 and counters.get("module_reset") == 0
