"""Log output for ``cellbridge run``: stderr, filtered by ``log_level``.

Under systemd (``$JOURNAL_STREAM`` set) each line starts with a syslog priority (``<4>``) and has
no timestamp: journald adds its own and turns the prefix into the entry's priority, so
``journalctl -p warning`` works.

What Twisted says about every port and factory it starts and stops (``Admission starting on
8080``, ``(UDP Port 41234 Closed)``, ``Starting factory <...>``) is shown at debug only: the
bridge's factories and protocols are quiet (``noisy = False``), but a listening port logs its
start and end unconditionally. The start-up line says once what listens where.
"""

import os
import re
import sys
from typing import Tuple

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


#: Twisted's own lines about a port it opened or closed, as ``log.msg`` text.
_PORT_NOISE = re.compile(
    r".+ starting on .+|\((?:\w+ )?Port .+ Closed\)|(?:Start|Stopp)ing protocol .+", re.DOTALL)
#: ... and about a factory, as ``Logger`` formats.
_FACTORY_NOISE = {"Starting factory {factory!r}", "Stopping factory {factory!r}"}


def is_twisted_noise(event) -> bool:
    """A line Twisted logs for every port and factory it starts or stops."""
    if event.get("log_format") in _FACTORY_NOISE:
        return True
    return (event.get("log_namespace") == "log_legacy"
            and _PORT_NOISE.fullmatch(event.get("log_text") or "") is not None)


def quieted(observer):
    """``observer``, seeing :func:`is_twisted_noise` lines at debug (a copy: other observers of
    the same event keep its level)."""
    def observe(event):
        if event.get("log_level") == LogLevel.info and is_twisted_noise(event):
            event = dict(event, log_level=LogLevel.debug)
        observer(event)
    return observe


def listening(profiles) -> Tuple[str, str]:
    """The daemon's words once the listeners of ``profiles`` are bound: systemd's STATUS
    (``listening: 2 listener(s)``), and the log line, which adds where (``[profile:web]
    tcp:8080:...``)."""
    where = [f"[profile:{p.name}] {p.listen.endpoint}" for p in profiles]
    status = f"listening: {len(where)} listener(s)"
    return status, f"{status}: {', '.join(where)}" if where else status


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
    quiet = quieted(FilteringLogObserver(observer, [level.predicate]))
    quiet.level = level
    return quiet


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
