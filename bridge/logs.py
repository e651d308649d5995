"""Log output for ``cellbridge run``: stderr, filtered by ``log_level``.

Under systemd (``$JOURNAL_STREAM`` set) each line starts with a syslog priority (``<4>``) and has
no timestamp: journald adds its own and turns the prefix into the entry's priority, so
``journalctl -p warning`` works.
"""

import os
import sys

from twisted.logger import (FileLogObserver, FilteringLogObserver, LogLevel,
                            LogLevelFilterPredicate, eventAsText, globalLogBeginner,
                            textFileLogObserver)

SYSLOG_PRIORITY = {LogLevel.debug: 7, LogLevel.info: 6, LogLevel.warn: 4, LogLevel.error: 3,
                   LogLevel.critical: 2}


def journal_line(event):
    """One journald line: ``<priority>[system] text``."""
    priority = SYSLOG_PRIORITY.get(event.get("log_level"), 6)
    text = eventAsText(event, includeTimestamp=False)
    return "".join(f"<{priority}>{line}\n" for line in text.splitlines())


def make_observer(level_name, stream=None, environ=None):
    """A log observer writing events at ``level_name`` or above to ``stream`` (default stderr);
    its ``level`` attribute is the :class:`LevelSwitch` that changes that level (a reload)."""
    stream = sys.stderr if stream is None else stream
    environ = os.environ if environ is None else environ
    if environ.get("JOURNAL_STREAM"):
        observer = FileLogObserver(stream, journal_line)
    else:
        observer = textFileLogObserver(stream)
    level = LevelSwitch(level_name)
    filtering = FilteringLogObserver(observer, [level.predicate])
    filtering.level = level
    return filtering


class LevelSwitch:
    """The minimum level of one observer, changeable while it runs (a reload applies
    ``log_level`` at once)."""

    def __init__(self, level_name) -> None:
        self.predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(level_name))

    def __call__(self, level_name) -> None:
        self.predicate.defaultLogLevel = LogLevel.levelWithName(level_name)
        self.predicate.clearLogLevels()


def start_logging(level_name) -> LevelSwitch:
    """Log to stderr at ``level_name``; returns what changes the level later."""
    observer = make_observer(level_name)
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    return observer.level
