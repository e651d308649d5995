"""A modem's named counters, and the bytes the module carried for us (:class:`DataUsage`).

The counters hold state transitions (link_dead, pdp_lost, module_reset, port_lost, recovered,
each also logged), every AT command by name and result, and what links carried and why they
ended (link_closed, link_bytes, server_*). The metrics exporter (:mod:`bridge.metrics`) and
status publish them without touching the code that counts. Deliberately tiny: no dependency, no
metric types other than a monotonically increasing count.
"""

from typing import Callable, Dict, Optional, Tuple

LabelSet = Tuple[Tuple[str, str], ...]
CounterKey = Tuple[str, LabelSet]


def _labelset(labels: Dict[str, object]) -> LabelSet:
    """Sorted (name, str(value)) pairs, so that label order never creates a second series."""
    return tuple(sorted((key, str(value)) for key, value in labels.items()))


class Counters:
    """A registry of counts, one series per (name, labels), like a Prometheus counter family."""

    def __init__(self) -> None:
        self._counts: Dict[CounterKey, int] = {}

    def incr(self, name: str, amount: int = 1, **labels: object) -> None:
        """Add ``amount`` (default 1) to the series ``name`` with these labels."""
        key = (name, _labelset(labels))
        self._counts[key] = self._counts.get(key, 0) + amount

    def get(self, name: str, **labels: object) -> int:
        """The count of exactly this series (0 if it never happened)."""
        return self._counts.get((name, _labelset(labels)), 0)

    def snapshot(self) -> Dict[CounterKey, int]:
        """A copy of every series: ``{(name, ((label, value), ...)): count}``."""
        return dict(self._counts)


class DataUsage:
    """Payload bytes written to (``sent``) and read from (``received``) the module's sockets.

    The engine adds with ``count_sent``/``count_received``; ``on_change`` (if set) hears that
    the counts moved, so that they are written soon, and nothing runs while they stand still.
    """

    def __init__(self, sent: int = 0, received: int = 0) -> None:
        self.sent = sent
        self.received = received
        self.on_change: Optional[Callable[[], None]] = None

    def count_sent(self, size: int) -> None:
        self.sent += size
        if self.on_change is not None:
            self.on_change()

    def count_received(self, size: int) -> None:
        self.received += size
        if self.on_change is not None:
            self.on_change()

    def as_dict(self) -> dict:
        return {"sent": self.sent, "received": self.received}
