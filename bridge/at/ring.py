"""TrafficRing: the last 64 KiB of UART traffic, both directions, safe to paste into a bug report.

Entries are recorded per frame, not per read: a payload is shown as its length and a short hex
prefix (never its content), and every text passes through ``redact`` (PIN, bearer credentials,
registered secrets).  The size budget counts the rendered text, so the dump itself stays bounded.

A dump goes to a file (``DumpFiles``, bridge.at.dumps) and the log only names it; without one (no
dump directory, or it cannot be written) the log gets the newest :data:`TAIL_ENTRIES` entries,
never the whole ring.

Observers see each entry as it is recorded (``cellbridge trace``, AT lines at ``log_level =
debug``): the same redacted text the ring keeps, so nothing shown live could leak more than a dump.
"""

import functools
import time
from collections import deque
from dataclasses import fields
from typing import Callable, List, Optional

from twisted.logger import Logger

from bridge.at.dumps import to_millisecond
from bridge.at.redact import redact

log = Logger()

RING_BYTES = 64 * 1024
HEX_PREFIX = 16
#: Minimum seconds between two dumps triggered by recovery events (a flapping line must not flood).
RECOVERY_DUMP_INTERVAL = 60.0
#: Entries a log line shows when the dump cannot go to a file.
TAIL_ENTRIES = 20


def describe_payload(data: bytes) -> bytes:
    """``[1460 bytes 0001020304...]``: enough to correlate, too little to leak."""
    head = data[:HEX_PREFIX].hex().encode()
    more = b"..." if len(data) > HEX_PREFIX else b""
    return b"[%d bytes %s%s]" % (len(data), head, more)


def repr_without_payload(obj) -> str:
    """``__repr__`` for dataclasses that carry user bytes in ``data``: they appear as
    ``describe_payload`` shows them, so logging an event or frame never logs the payload."""
    def show(name: str) -> str:
        value = getattr(obj, name)
        return describe_payload(value).decode() if name == "data" else repr(value)

    shown = ", ".join(f"{f.name}={show(f.name)}" for f in fields(obj))
    return f"{type(obj).__name__}({shown})"


def iso_timestamp(seconds: float) -> bytes:
    """Local time with milliseconds and offset, like the daemon's log lines:
    ``2026-12-05T04:40:01.123+0000``."""
    whole, millis = to_millisecond(seconds)
    second, offset = _local_second(whole)
    return b"%s.%03d%s" % (second, millis, offset)


@functools.lru_cache(maxsize=4)
def _local_second(whole: int) -> tuple:
    """``(b"2026-12-05T04:40:01", b"+0000")``: every AT line and payload frame is stamped, and
    most share their second with the one before."""
    local = time.localtime(whole)
    return (time.strftime("%Y-%m-%dT%H:%M:%S", local).encode(),
            time.strftime("%z", local).encode())


class TrafficRing:
    """Bounded, timestamped, redacted record of what crossed the UART.

    :param observers: called with each entry's text as it is recorded; a list the caller may
        share between rings (a modem's engines come and go, its observers stay).
    :param dumps: where :meth:`save` writes (a ``DumpFiles``); None: the log gets a tail.
    """

    def __init__(self, clock, size: int = RING_BYTES,
                 dump_interval: float = RECOVERY_DUMP_INTERVAL,
                 observers: Optional[List[Callable[[str], None]]] = None,
                 dumps=None) -> None:
        self._clock = clock
        self.dumps = dumps
        self.observers = observers if observers is not None else []
        self._size = size
        self._dump_interval = dump_interval
        self._entries: deque = deque()
        self._used = 0
        self._secrets: set = set()
        self._last_dump: Optional[float] = None

    def add_secret(self, secret: bytes) -> None:
        """Mask ``secret`` wherever it appears from now on (e.g. the configured PIN)."""
        if secret:
            self._secrets.add(bytes(secret))

    def sent(self, data: bytes) -> None:
        self._record(b">", data)

    def received(self, data: bytes) -> None:
        self._record(b"<", data)

    def sent_payload(self, data: bytes) -> None:
        self._record(b">", describe_payload(data), redacted=True)

    def received_payload(self, header: bytes, data: bytes) -> None:
        self._record(b"<", redact(header, self._secrets) + b" " + describe_payload(data),
                     redacted=True)

    def _record(self, direction: bytes, text: bytes, redacted: bool = False) -> None:
        if not redacted:
            text = redact(text, self._secrets)
        entry = b"%s %s %r" % (iso_timestamp(self._clock.seconds()), direction, text)
        self._entries.append(entry)
        self._used += len(entry) + 1
        while self._used > self._size and self._entries:
            self._used -= len(self._entries.popleft()) + 1
        if self.observers:
            shown = entry.decode("ascii", "replace")
            for observer in list(self.observers):
                try:
                    observer(shown)
                except Exception:  # a watcher's fault must never reach the engine
                    log.failure("traffic observer {observer!r} failed", observer=observer)

    def dump(self) -> str:
        """The whole ring as text, oldest first."""
        return b"\n".join(self._entries).decode("ascii", "replace")

    def save(self, reason: str) -> str:
        """Dump the ring to a file -> the words a log line ends with: the file's name, or (no
        file) the newest entries themselves."""
        if self.dumps is not None:
            path = self.dumps.write(self.dump(), reason, self._clock.seconds())
            if path is not None:
                return f"AT traffic saved to {path}"
        tail = list(self._entries)[-TAIL_ENTRIES:]
        return "last AT traffic:\n" + b"\n".join(tail).decode("ascii", "replace")

    def recovery_dump(self, reason: str) -> Optional[str]:
        """``save(reason)`` unless the ring was saved for recovery in the last interval."""
        now = self._clock.seconds()
        if self._last_dump is not None and now - self._last_dump < self._dump_interval:
            return None
        self._last_dump = now
        return self.save(reason)


def log_event(log, ring: Optional[TrafficRing], reason: str, fmt: str, **fields) -> None:
    """A module-level event at warn, its line ending with where the ring went (``reason``
    names the dump file; rate-limited, see :meth:`TrafficRing.recovery_dump`)."""
    saved = ring.recovery_dump(reason) if ring is not None else None
    if saved is not None:
        fmt += "; {saved}"
        fields["saved"] = saved
    log.warn(fmt, **fields)
