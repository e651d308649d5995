"""The module's six socket indices (AT+QIOPEN=<n>, n = 0..5), handed out one link at a time."""

from typing import Optional, Set

SLOTS = 6


class SlotAllocator:
    """Lowest free index first, so transcripts and the module's QISTATE lines stay predictable."""

    def __init__(self, count: int = SLOTS) -> None:
        self.count = count
        self._used: Set[int] = set()

    def allocate(self) -> Optional[int]:
        """A free index, now marked used; None when all are taken."""
        for index in range(self.count):
            if index not in self._used:
                self._used.add(index)
                return index
        return None

    @property
    def in_use(self) -> frozenset:
        """The taken indices (tests check them; the module may sleep only when none is)."""
        return frozenset(self._used)

    def release(self, index: int) -> None:
        """Free ``index``; releasing a free index is harmless (a link may close twice)."""
        if not 0 <= index < self.count:
            raise ValueError(f"socket index {index} is not in 0..{self.count - 1}")
        self._used.discard(index)
