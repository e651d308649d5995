"""DataUsage: the bytes a modem's module carried for us, both ways (M2M SIMs are billed by
volume), as status and metrics show them; UsageStore keeps them in the state directory across
restarts.

The engine counts where every payload byte passes: out through ``ATProtocol.write_payload``, in
through its routing of payload frames (``+RECEIVE``, AT+QIRD, ``IPD``) and data mode's delivery;
so mux, UDP and transparent links are all counted alike, as the module sees them: payload only,
no AT framing.
"""

import json
import os
from typing import Optional

from twisted.logger import Logger

from bridge.counters import DataUsage

#: Seconds from the first change to the write: at most one write this often while data flows.
SAVE_INTERVAL = 60.0


class UsageStore:
    """``<state_dir>/<modem>.usage`` (JSON): ``load()`` into ``usage`` at start; written
    ``interval`` seconds after the counts first move (so at most once an interval while data
    flows) and by ``flush()`` (the modem down or stopping). A file that cannot be read or makes
    no sense is a warning and the counts start from zero: a lost count must not keep a gateway
    from carrying data."""

    log = Logger()

    def __init__(self, clock, state_dir: str, modem_name: str, usage: DataUsage,
                 interval: float = SAVE_INTERVAL) -> None:
        self.path = os.path.join(state_dir, f"{modem_name}.usage")
        self.usage = usage
        self._clock = clock
        self._interval = interval
        self._timer = None
        self._saved: Optional[dict] = None

    def _changed(self) -> None:
        if self._timer is None:
            self._timer = self._clock.callLater(self._interval, self._due)

    def _due(self) -> None:
        self._timer = None
        self.save()

    def flush(self) -> None:
        """Write now (if anything changed) rather than when the interval is up."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.save()

    def close(self) -> None:
        """The modem stops: write, and hear no more counts (a byte its engine reads before the
        port is closed must not arm a write over the file of a modem that replaced it)."""
        self.usage.on_change = None
        self.flush()

    def load(self) -> None:
        try:
            with open(self.path, encoding="ascii") as handle:
                record = json.load(handle)
            sent, received = record["sent"], record["received"]
            if not all(isinstance(n, int) and n >= 0 for n in (sent, received)):
                raise ValueError("counts are not byte counts")
        except FileNotFoundError:
            sent = received = 0
        except (OSError, ValueError, KeyError, TypeError) as error:
            self.log.warn("cannot read the data usage in {path} ({error}); counting from zero",
                          path=self.path, error=error)
            sent = received = 0
        self.usage.sent, self.usage.received = sent, received
        self._saved = self.usage.as_dict()
        self.usage.on_change = self._changed

    def save(self) -> None:
        """Write the counts atomically if they changed since the last write."""
        record = self.usage.as_dict()
        if record == self._saved:
            return
        temporary = self.path + ".tmp"
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            with open(temporary, "w", encoding="ascii") as handle:
                json.dump(record, handle)
            os.replace(temporary, self.path)
        except OSError as error:
            self.log.warn("cannot write the data usage to {path}: {error}", path=self.path,
                          error=error)
            return
        self._saved = record
