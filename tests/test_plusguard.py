"""Transcripts of the payload writer's '+' split (bridge/at/plusguard.py, app note §4): exact bytes
and the clock time each chunk left at."""

import pytest
from twisted.internet.task import Clock

from bridge.at.plusguard import PLUS_HOLD, SPLIT_AFTER, PlusGuard

START = 1000.0


class Wire:
    """A PlusGuard on a Clock, recording ``(time, bytes)`` of every send."""

    def __init__(self):
        self.clock = Clock()
        self.clock.advance(START)
        self.sent = []
        self.guard = PlusGuard(self.clock, lambda data: self.sent.append((self.clock.seconds(),
                                                                          data)))

    def take(self):
        sent, self.sent = self.sent, []
        return sent


def test_the_timings_are_the_documented_ones():
    assert (SPLIT_AFTER, PLUS_HOLD) == (0.1, 0.05)  # 2.5 times the module's 20 ms between '+'


def test_a_plus_after_silence_goes_alone_and_the_rest_follows_after_the_hold():
    w = Wire()
    w.guard.write(b"+++")
    assert w.take() == [(START, b"+")]
    assert w.guard.holding == 2
    w.clock.advance(PLUS_HOLD - 0.001)
    assert w.take() == []
    w.clock.advance(0.001)
    assert w.take() == [(START + PLUS_HOLD, b"++")]
    assert w.guard.holding == 0


@pytest.mark.parametrize("gap, split", [(SPLIT_AFTER, True), (0.5, True), (0.099, False),
                                        (0.0, False)])
def test_only_a_plus_that_follows_split_after_of_silence_is_split(gap, split):
    w = Wire()
    w.guard.write(b"data")
    w.clock.advance(gap)
    w.guard.write(b"+++AT\r")
    now = START + gap
    if split:
        assert w.take() == [(START, b"data"), (now, b"+")]
        w.clock.advance(PLUS_HOLD)
        assert w.take() == [(now + PLUS_HOLD, b"++AT\r")]
    else:
        assert w.take() == [(START, b"data"), (now, b"+++AT\r")]
        assert w.clock.getDelayedCalls() == []


def test_a_write_that_does_not_start_with_plus_is_never_split():
    w = Wire()
    w.guard.write(b"a+++")
    w.clock.advance(5)
    w.guard.write(b"b+")
    assert w.take() == [(START, b"a+++"), (START + 5, b"b+")]
    assert w.clock.getDelayedCalls() == []


def test_writes_during_the_hold_queue_behind_it_in_order():
    w = Wire()
    w.guard.write(b"+a")
    w.clock.advance(0.01)
    w.guard.write(b"b")
    w.guard.write(b"+c")  # a '+' inside the hold starts no split of its own
    w.clock.advance(0.02)
    w.guard.write(b"d")
    assert w.take() == [(START, b"+")]
    assert w.guard.holding == 5
    w.clock.advance(PLUS_HOLD - 0.03)
    assert w.take() == [(START + PLUS_HOLD, b"ab+cd")]
    w.guard.write(b"+e")  # right after the release: the line is not silent
    assert w.take() == [(START + PLUS_HOLD, b"+e")]


def test_a_lone_plus_is_sent_and_nothing_follows_it():
    w = Wire()
    w.guard.write(b"+")
    assert w.take() == [(START, b"+")]
    w.clock.advance(PLUS_HOLD)
    assert w.take() == []  # an empty hold sends nothing
    w.guard.write(b"+x")  # 0.05 s after the lone '+': within SPLIT_AFTER, not split
    assert w.take() == [(START + PLUS_HOLD, b"+x")]


def test_bytes_somebody_else_wrote_count_as_traffic():
    w = Wire()
    w.clock.advance(1)
    w.guard.written()  # e.g. the engine's own command or escape
    w.clock.advance(SPLIT_AFTER / 2)
    w.guard.write(b"+++")
    assert w.take() == [(START + 1 + SPLIT_AFTER / 2, b"+++")]


def test_quiet_from_is_the_last_write_or_the_release_of_held_bytes():
    w = Wire()
    assert w.guard.quiet_from == float("-inf")  # never wrote
    w.guard.write(b"x")
    assert w.guard.quiet_from == START
    w.clock.advance(1)
    w.guard.write(b"+y")
    assert w.guard.quiet_from == START + 1 + PLUS_HOLD  # the held 'y' is still due
    w.clock.advance(PLUS_HOLD)
    assert w.guard.quiet_from == START + 1 + PLUS_HOLD
    w.clock.advance(3)
    assert w.guard.quiet_from == START + 1 + PLUS_HOLD


def test_stop_drops_held_bytes_for_good():
    w = Wire()
    w.guard.write(b"+abc")
    w.guard.write(b"def")
    w.guard.stop()
    assert w.guard.holding == 0
    assert w.clock.getDelayedCalls() == []
    w.clock.advance(1)
    assert w.take() == [(START, b"+")]
    w.guard.write(b"+g")  # a later data mode: the rule applies afresh
    assert w.take() == [(START + 1, b"+")]
    w.clock.advance(PLUS_HOLD)
    assert w.take() == [(START + 1 + PLUS_HOLD, b"g")]


def test_empty_writes_send_nothing_and_do_not_break_silence():
    w = Wire()
    w.guard.write(b"")
    assert w.take() == []
    assert w.guard.quiet_from == float("-inf")
