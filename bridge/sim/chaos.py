"""Chaos mode: seeded, harmless URCs slipped in before final result codes."""

import random

HARMLESS = ("Call Ready", "SMS Ready", "+CREG: 1", "+CGREG: 1")
CHANCE = 0.5


class Chaos:
    """Decides, reproducibly for a seed, whether and which URC precedes the next final result."""

    def __init__(self, seed: int):
        self._random = random.Random(seed)

    def pick(self, registered: bool):
        """A URC text, or None for "not this time"."""
        if self._random.random() >= CHANCE:
            return None
        choices = HARMLESS if registered else HARMLESS[:2]
        return self._random.choice(choices)
