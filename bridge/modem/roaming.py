"""``roaming = no``: data only while the module is registered at home (a SIM abroad can cost far
more than the gateway is worth).

One policy, asked in three places: bring-up's registration wait (registered as roaming, it keeps
waiting, with no time limit, until the module is home), the modem's registration reports while
data is up (a ``+CREG:`` URC or the health poll's AT+CREG? with stat 5 takes data down through
the supervisor, which waits for home the same way), and every link open (refused at once while
data is held down, rather than queued for a home network that may be days away).
"""

from typing import Callable, Optional

#: CREG/CGREG stat "registered, roaming" (docs/at-dialect.md §2).
ROAMING = 5
#: Why links are refused and the modem is down meanwhile.
REFUSAL = "roaming, data disabled (roaming = no)"


class RoamingGate:
    """``allowed`` is the ``roaming`` setting; ``holding`` while data is kept down for it.

    :param on_hold: called when holding starts (the modem refuses the connections waiting)
    :param waits: bring-up waits for home; False (``cellbridge probe``, which must end): it
        fails with the reason instead
    """

    def __init__(self, allowed: bool, on_hold: Callable[[], None] = lambda: None,
                 waits: bool = True) -> None:
        self.allowed = allowed
        self.waits = waits
        self.holding = False
        self._on_hold = on_hold

    def blocks(self, *stats: int) -> bool:
        """Does a registration with these CREG/CGREG stats keep data down?"""
        return not self.allowed and ROAMING in stats

    def hold(self) -> None:
        if not self.holding:
            self.holding = True
            self._on_hold()

    def release(self) -> None:
        """Registered at home: data may come up."""
        self.holding = False

    @property
    def refusal(self) -> Optional[str]:
        """Why a link cannot be opened now, or None."""
        return REFUSAL if self.holding else None
