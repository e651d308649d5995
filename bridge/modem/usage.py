"""DataUsage: the bytes a modem's module carried for us, both ways (M2M SIMs are billed by
volume), as status and metrics show them; UsageStore keeps them in the state directory across
restarts.

The engine counts at the two places every payload byte passes (``ATProtocol.write_payload``
and its routing of payload and data-mode frames), so mux, UDP and transparent links are all
counted the same way, as the module sees them: payload only, no AT framing.
"""

import json
import os
from typing import Optional

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

#: Seconds between writes of the counts while they change (and once more at stop).
SAVE_INTERVAL = 60.0


class DataUsage:
    """Payload bytes written to (``sent``) and read from (``received``) the module's sockets."""

    def __init__(self, sent: int = 0, received: int = 0) -> None:
        self.sent = sent
        self.received = received

    def as_dict(self) -> dict:
        return {"sent": self.sent, "received": self.received}


class UsageStore:
    """``<state_dir>/<modem>.usage`` (JSON): ``load()`` into ``usage`` at start; written every
    ``interval`` seconds while they may change, if they did, and when they stop. A file that cannot be read
    or makes no sense is a warning and the counts start from zero: a lost count must not keep a
    gateway from carrying data."""

    log = Logger()

    def __init__(self, clock, state_dir: str, modem_name: str, usage: DataUsage,
                 interval: float = SAVE_INTERVAL) -> None:
        self.path = os.path.join(state_dir, f"{modem_name}.usage")
        self.usage = usage
        self._saved: Optional[dict] = None
        self._loop = LoopingCall(self.save)
        self._loop.clock = clock
        self._interval = interval

    def start_saving(self) -> None:
        """The counts may move now (the modem is ready): write them every ``interval``."""
        if not self._loop.running:
            self._loop.start(self._interval, now=False)

    def stop_saving(self) -> None:
        """They no longer move (the modem is down or stopping): write them once more."""
        if self._loop.running:
            self._loop.stop()
        self.save()

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
