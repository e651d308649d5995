"""SIM, radio function and network registration, as far as the TCP/IP stack depends on them."""

from typing import Callable, Optional

STAT_NOT_REGISTERED, STAT_HOME, STAT_SEARCHING, STAT_DENIED, STAT_ROAMING = 0, 1, 2, 3, 5


class Cellular:
    """SIM PIN state, AT+CFUN level, CREG/CGREG status and GPRS attach.

    @param clock: IReactorTime.
    @param pin: PIN the SIM wants, or None for a SIM that is READY at boot.
    @param register_delay: seconds from "SIM ready and radio on" until registered.
    @param register_deny: registration is denied forever.
    @param on_change: called with the new registration stat when it changes.
    @param roaming: registered on a visited network (stat 5) rather than at home (stat 1).
    """

    def __init__(self, clock, pin: Optional[str], register_delay: float, register_deny: bool,
                 on_change: Callable[[int], None], roaming: bool = False):
        self._clock = clock
        self._pin = pin
        self._delay = register_delay
        self._deny = register_deny
        self._on_change = on_change
        self._roaming = roaming
        self._timer = None
        self.cfun = 1
        self.pin_ok = pin is None
        self.attach_wanted = True
        self._since = None
        self._restart()

    @property
    def sim_state(self) -> str:
        return "READY" if self.pin_ok else "SIM PIN"

    def enter_pin(self, pin: str) -> bool:
        if self.pin_ok or pin != self._pin:
            return False
        self.pin_ok = True
        self._restart()
        return True

    def set_cfun(self, level: int) -> None:
        self.cfun = level
        self._restart()

    @property
    def stat(self) -> int:
        if self._since is None:
            return STAT_NOT_REGISTERED
        if self._deny:
            return STAT_DENIED
        if self._clock.seconds() < self._since + self._delay:
            return STAT_SEARCHING
        return STAT_ROAMING if self._roaming else STAT_HOME

    @property
    def registered(self) -> bool:
        return self.stat in (STAT_HOME, STAT_ROAMING)

    def set_roaming(self, roaming: bool) -> None:
        """The module moves to a visited network (or back home): stat 5 (or 1) once
        registered, reported like any other registration change."""
        before = self.stat
        self._roaming = roaming
        if self.stat != before:
            self._on_change(self.stat)

    @property
    def attached(self) -> bool:
        return self.registered and self.attach_wanted

    def stop(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _restart(self) -> None:
        self.stop()
        before = self.stat
        if self.pin_ok and self.cfun == 1:
            self._since = self._clock.seconds()
        else:
            self._since = None
        if self._since is not None and not self._deny and self._delay > 0:
            self._timer = self._clock.callLater(self._delay, self._registered_now)
        if self.stat != before:
            self._on_change(self.stat)

    def _registered_now(self) -> None:
        self._timer = None
        self._on_change(self.stat)
