"""The command log kept for stats: what the host asked, stamped with CLOCK_MONOTONIC.

Entries are command lines from their `AT` on, plus the host's mode changes that are no command
line: `+++` (an accepted escape) and `DTR drop` (a DTR drop that left data mode).

time.monotonic() is shared by all processes on Linux, so a test in another process can check a
schedule (e.g. QISACK polling intervals) from this log instead of measuring wall-clock itself.
"""

import time
from collections import deque

KEEP = 10000


class CommandLog:
    def __init__(self, now=time.monotonic, keep: int = KEEP):
        self._now = now
        self._entries = deque(maxlen=keep)

    def record(self, command: str) -> None:
        self._entries.append({"t": self._now(), "cmd": command})

    def entries(self) -> list:
        return list(self._entries)
