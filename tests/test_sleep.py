"""Sleep mode and the DTR line, on task.Clock with an in-process recorder of the line (a pty cannot
carry DTR): AT+QSCLK=1 once per bring-up, pin HIGH only when idle with no link, >= 20 ms wake."""

import random

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import capturedLogs

from bridge.modem.sleep import WAKE_DELAY, SleepController, dtr_for_pin
from timeline import advance

QSCLK = b"AT+QSCLK=1"
PIN_LOW, PIN_HIGH = dtr_for_pin(False), dtr_for_pin(True)


class RecordedLine:
    """The serial line as the module sees it: DTR changes and command writes, timestamped."""

    def __init__(self, clock):
        self.clock = clock
        self.events = []

    def set_dtr(self, dtr):
        self.events.append((self.clock.seconds(), "dtr", dtr))

    def writes(self):
        return [command for _, kind, command in self.events if kind == "write"]


class FakeATLayer:
    """The AT engine's side of the contract: one command at a time, ``wake()`` awaited before each
    write, the answer ``latency`` seconds later, ``idle()`` once the queue has drained."""

    def __init__(self, clock, line, latency=0.1):
        self.clock = clock
        self.line = line
        self.latency = latency
        self.failing = set()
        self.controller = None
        self._queue = []
        self._busy = False

    def issue(self, command):
        answer = Deferred()
        self._queue.append((command, answer))
        if not self._busy:
            self._next()
        return answer

    def _next(self):
        if not self._queue:
            self._busy = False
            self.controller.idle()
            return
        self._busy = True
        command, answer = self._queue.pop(0)
        self.controller.wake().addCallback(lambda _: self._write(command, answer))

    def _write(self, command, answer):
        self.line.events.append((self.clock.seconds(), "write", command))
        self.clock.callLater(self.latency, self._answer, command, answer)

    def _answer(self, command, answer):
        if command in self.failing:
            answer.errback(RuntimeError("ERROR"))
        else:
            answer.callback("OK")
        self._next()


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def line(clock):
    return RecordedLine(clock)


@pytest.fixture
def at(clock, line):
    return FakeATLayer(clock, line)


def make_controller(clock, line, at, enabled=True):
    at.controller = SleepController(clock, line.set_dtr, lambda: at.issue(QSCLK), enabled=enabled)
    return at.controller


def asleep_at(clock, line, at, when=1.0):
    """Bring-up done at ``when`` with no link open: QSCLK, then the pin HIGH."""
    controller = make_controller(clock, line, at)
    advance(clock, when)
    controller.module_ready()
    advance(clock, 1)
    return controller


def test_pin_level_is_the_inverse_of_pyserial_dtr():
    assert dtr_for_pin(high=True) is False  # deasserted: pin HIGH, module may sleep
    assert dtr_for_pin(high=False) is True  # asserted (pyserial's state on open): pin LOW, awake


def test_ready_with_no_link_enables_sleep_then_raises_the_pin(clock, line, at):
    controller = asleep_at(clock, line, at)
    assert line.events == [(1.0, "write", QSCLK), (1.1, "dtr", PIN_HIGH)]
    assert controller.asleep


def test_command_while_asleep_waits_20_ms_after_pin_low_then_sleeps_again(clock, line, at):
    controller = asleep_at(clock, line, at)
    del line.events[:]
    at.issue(b"AT+CSQ")
    assert line.events == [(2.0, "dtr", PIN_LOW)]
    advance(clock, WAKE_DELAY * 0.99)
    assert line.writes() == []
    advance(clock, WAKE_DELAY * 0.01)
    advance(clock, at.latency)
    wrote_at = line.events[1][0]
    assert line.events[1][1:] == ("write", b"AT+CSQ")
    assert wrote_at >= 2.0 + WAKE_DELAY
    assert line.events[2] == (pytest.approx(2.0 + WAKE_DELAY + at.latency), "dtr", PIN_HIGH)
    assert line.writes().count(QSCLK) == 0  # once per bring-up
    assert controller.asleep


def test_commands_queued_while_awake_do_not_wait_again(clock, line, at):
    asleep_at(clock, line, at)
    del line.events[:]
    for command in (b"AT+CSQ", b"AT+CREG?", b"AT+QISTATE"):
        at.issue(command)
    advance(clock, 5)
    dtr = [event for event in line.events if event[1] == "dtr"]
    assert dtr == [(2.0, "dtr", PIN_LOW), (pytest.approx(2.32), "dtr", PIN_HIGH)]
    assert [t for t, kind, _ in line.events if kind == "write"] == pytest.approx([2.02, 2.12, 2.22])


def test_open_link_keeps_the_module_awake_until_the_count_drops_to_zero(clock, line, at):
    controller = make_controller(clock, line, at)
    controller.links_changed(1)
    controller.module_ready()
    at.issue(b"AT+QISEND=0,5")
    advance(clock, 1)
    assert line.events == [(0, "write", b"AT+QISEND=0,5")]  # no QSCLK, no pin HIGH with a link open
    controller.links_changed(0)
    advance(clock, 1)
    assert line.events[1:] == [(1.0, "write", QSCLK), (1.1, "dtr", PIN_HIGH)]


def test_link_count_dropping_to_zero_under_a_command_waits_for_idle(clock, line, at):
    controller = make_controller(clock, line, at)
    controller.module_ready()
    advance(clock, 1)
    controller.links_changed(1)
    at.issue(b"AT+QIOPEN=0,\"TCP\",\"127.0.0.1\",7")  # wakes: pin LOW, busy
    advance(clock, 0.05)
    controller.links_changed(0)  # CONNECT FAIL while the command is still in flight
    assert not controller.asleep
    advance(clock, 1)
    assert line.events[-1] == (pytest.approx(1.12), "dtr", PIN_HIGH)  # only after the answer


def test_link_opened_by_a_urc_while_asleep_pulls_the_pin_low_at_once(clock, line, at):
    controller = asleep_at(clock, line, at)
    controller.links_changed(1)  # e.g. a module-side listener accepted a connection
    assert line.events[-1] == (2.0, "dtr", PIN_LOW)
    advance(clock, 0.005)
    at.issue(b"AT+QIRD=0,1,0,1500")
    advance(clock, 0.0149)
    assert b"AT+QIRD=0,1,0,1500" not in line.writes()
    advance(clock, 0.0001)
    assert line.writes()[-1] == b"AT+QIRD=0,1,0,1500"  # 20 ms after the pin went LOW, not after the command
    advance(clock, 1)
    assert not controller.asleep


def test_qsclk_again_after_each_bring_up_and_no_sleep_while_module_lost(clock, line, at):
    controller = asleep_at(clock, line, at)
    controller.module_lost()  # RDY out of the blue: bring-up again
    for command in (b"AT", b"ATE0", b"AT+QIMUX=1"):
        at.issue(command)
        advance(clock, 1)  # the AT layer goes idle between bring-up commands
    assert not controller.asleep
    controller.module_ready()
    advance(clock, 1)
    assert line.writes().count(QSCLK) == 2
    assert controller.asleep


def test_qsclk_failure_is_logged_and_not_retried_until_the_next_bring_up(clock, line, at):
    at.failing.add(QSCLK)
    controller = make_controller(clock, line, at)
    with capturedLogs() as events:
        controller.module_ready()
        advance(clock, 1)
    for command in (b"AT+CSQ", b"AT+CREG?"):
        at.issue(command)
        advance(clock, 1)
    assert line.writes() == [QSCLK, b"AT+CSQ", b"AT+CREG?"]
    assert [e for e in line.events if e[1] == "dtr"] == []
    assert any("AT+QSCLK=1 failed" in e["log_format"] for e in events)


def test_sleep_disabled_never_touches_dtr_or_sends_qsclk(clock, line, at):
    controller = make_controller(clock, line, at, enabled=False)
    controller.module_ready()
    at.issue(b"AT+CSQ")
    advance(clock, 1)
    assert line.events == [(0, "write", b"AT+CSQ")]


@pytest.mark.parametrize("seed", range(30))
def test_every_write_happens_with_pin_low_for_at_least_20_ms(clock, line, at, seed):
    """A random mix of commands, link changes and reboots: the wake rule holds for every write."""
    rng = random.Random(seed)
    controller = make_controller(clock, line, at)
    controller.module_ready()
    links = 0
    for _ in range(60):
        action = rng.random()
        if action < 0.4:
            at.issue(b"AT+CMD%d" % rng.randrange(100))
        elif action < 0.7:
            links = max(0, links + rng.choice((-1, 1)))
            controller.links_changed(links)
        elif action < 0.75:
            controller.module_lost()
            controller.module_ready()
        advance(clock, rng.choice((0.001, 0.01, 0.05, 0.5, 3)))
    advance(clock, 10)
    pin_low_since = float("-inf")  # pyserial asserts DTR on open: LOW since for ever
    woken_writes = 0
    for when, kind, value in line.events:
        if kind == "dtr":
            pin_low_since = when if value == PIN_LOW else None
        else:
            assert pin_low_since is not None, "command written with the pin HIGH"
            assert when >= pin_low_since + WAKE_DELAY
            woken_writes += pin_low_since > 0
    assert woken_writes >= 3  # the sequence really slept and woke the module
