"""Ring dumps as files: the AT traffic before a module-level event (or on SIGUSR1) goes to a file
under ``state_dir/dumps/``, and the log gets one line naming it.

A whole ring is up to 64 KiB, about 1,200 lines: in the journal it buried everything around it.
The files are owner-only (0600: they show which commands the module was sent) and bounded: the
newest :data:`DUMPS_KEPT` of each modem stay, older ones are removed. Names sort by time:
``modem-NAME-20261205T044001.123Z-pdp_lost.log`` (ISO 8601 basic format, UTC, so a DST change
cannot reorder them).
"""

import os
import re
import time
from typing import Optional

from twisted.logger import Logger

#: Dump files kept per modem; writing one more removes the oldest.
DUMPS_KEPT = 20

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def file_word(text: str) -> str:
    """``text`` as it may appear in a file name (``step restart`` -> ``step-restart``)."""
    return _UNSAFE.sub("-", text).strip("-.") or "-"


def to_millisecond(seconds: float) -> tuple:
    """``(whole seconds, milliseconds)``, rounded as a whole: 0.9996 s is (1, 0), not (0, 0)."""
    return divmod(int(round(seconds * 1000)), 1000)


def utc_stamp(seconds: float) -> str:
    """``20261205T044001.123Z``: sorts as it happened, and needs no quoting in a shell."""
    whole, millis = to_millisecond(seconds)
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(whole)) + ".%03dZ" % millis


class DumpFiles:
    """Where one owner's (a modem's) ring dumps go.

    :param directory: created on first use (0700), e.g. ``state_dir/dumps``
    :param owner: the file names' prefix and the files' first line, e.g. ``modem-main``
    """

    log = Logger()

    def __init__(self, directory: str, owner: str, keep: int = DUMPS_KEPT) -> None:
        self.directory = directory
        self.owner = owner
        self._prefix = file_word(owner) + "-"
        # The stamp after the prefix: modem "main" is not modem "main-2"'s prefix.
        self._mine = re.compile(re.escape(self._prefix) + r"\d{8}T\d{6}\.\d{3}Z-.*\.log\Z")
        self._keep = keep
        self._failing = False  # warned already: one warning per spell of failures

    def write(self, text: str, reason: str, when: float) -> Optional[str]:
        """Write ``text`` (a ring dump) -> the file's path; None if the directory cannot be
        written (warned once until a write succeeds again: the daemon carries on without)."""
        base = f"{self._prefix}{utc_stamp(when)}-{file_word(reason)}"
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            path = self._create(base, f"# AT traffic of {self.owner} ({reason}), oldest first\n"
                                      f"{text}\n")
        except OSError as error:
            if not self._failing:
                self.log.warn("cannot write AT traffic dumps to {directory}: {error}; logging "
                              "the newest entries instead", directory=self.directory,
                              error=error)
            self._failing = True
            return None
        self._failing = False
        self._prune()
        return path

    def _create(self, base: str, content: str) -> str:
        """A new file (never one already there: two dumps in the same millisecond both stay, the
        later one named ``_02``, which sorts after the plain name as ``_`` sorts after ``.``)."""
        for attempt in range(1, 100):
            path = os.path.join(self.directory, base + (f"_{attempt:02d}" if attempt > 1 else "")
                                + ".log")
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(content)
            return path
        raise FileExistsError(f"{base}: too many dumps in one millisecond")

    def files(self) -> list:
        """This owner's dump files, oldest first."""
        names = [name for name in os.listdir(self.directory) if self._mine.match(name)]
        return [os.path.join(self.directory, name) for name in sorted(names)]

    def _prune(self) -> None:
        try:
            for path in self.files()[:-self._keep]:
                os.remove(path)
        except OSError as error:  # the next write tries again
            self.log.info("cannot remove an old AT traffic dump: {error}", error=error)
