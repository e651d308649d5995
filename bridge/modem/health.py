"""The health poll: AT+CSQ and AT+CREG? every interval, between data without starving it.

A busy engine postpones a round, but at most HEALTH_MAX_SKIPS in a row: then the poll is queued
anyway at CONTROL priority and slips in between two bulk commands, so a long transfer cannot
hide a lost registration. In data mode (transparent) nothing can be sent, so the round is
skipped; so is it while a transparent server listens: its client's ``CONNECT`` puts the UART in
data mode unannounced, and a command crossing it would reach that client as payload. A poll
still unanswered is not doubled.
"""

from typing import Callable, Optional

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from bridge.at import commands
from bridge.at.commands import DEFAULT_TIMEOUTS, Timeouts
from bridge.modem.bringup import REGISTERED, STAT_NAMES, record_signal

#: Seconds between health polls.
HEALTH_INTERVAL = 30.0
#: Rounds a poll may be skipped in a row because the engine is busy; the next one is queued anyway.
HEALTH_MAX_SKIPS = 1


class HealthPoll:
    """Polls the engine that ``engine()`` returns (None: no port); results go to ``info``
    ("signal", "registration"), a registration other than home/roaming is logged as a warning,
    and every CREG stat goes to ``on_registration(stat)`` (the modem's roaming policy)."""

    log = Logger()

    def __init__(self, clock, name: str, engine: Callable[[], Optional[object]], info: dict,
                 timeouts: Timeouts = DEFAULT_TIMEOUTS, interval: float = HEALTH_INTERVAL,
                 on_registration: Callable[[int], None] = lambda stat: None) -> None:
        self.name = name
        self._on_registration = on_registration
        self.info = info
        self._engine = engine
        self._timeouts = timeouts
        self._interval = interval
        self._loop = LoopingCall(self._poll)
        self._loop.clock = clock
        self._skipped = 0
        self._pending = 0  # poll commands not yet answered

    def start(self) -> None:
        """First poll one interval from now (bring-up has just measured both)."""
        self._skipped = 0
        self._loop.start(self._interval, now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def _poll(self) -> None:
        engine = self._engine()
        if (engine is None or engine.data_mode.active or engine.transparent_server_listening
                or self._pending):
            return
        if engine.busy and self._skipped < HEALTH_MAX_SKIPS:
            self._skipped += 1
            self.log.debug("{name}: health poll postponed (engine busy)", name=self.name)
            return
        self._skipped = 0
        simple = self._timeouts.simple
        self._pending = 2
        engine.issue(commands.csq(simple)).addCallbacks(
            self._signal_seen, self._failed).addBoth(self._answered)
        engine.issue(commands.creg_query(simple)).addCallbacks(
            self._registration_seen, self._failed).addBoth(self._answered)

    def _answered(self, _) -> None:
        self._pending -= 1

    def _signal_seen(self, quality) -> None:
        record_signal(self.info, quality)

    def _registration_seen(self, state) -> None:
        what = STAT_NAMES.get(state.stat, "?")
        if state.stat not in REGISTERED:
            self.log.warn("{name}: not registered: CREG {stat} ({what})", name=self.name,
                          stat=state.stat, what=what)
        self.info["registration"] = what
        self._on_registration(state.stat)

    def _failed(self, failure) -> None:
        self.log.warn("{name}: health poll failed: {why}", name=self.name,
                      why=failure.getErrorMessage())
