"""The module's sleep mode (app note §9): AT+QSCLK=1 and the DTR pin, driven through pyserial.

With ``sleep = yes`` the module may sleep while no link is open: after AT+QSCLK=1 it sleeps when
its DTR pin is HIGH and nothing else keeps it awake. Pulling DTR LOW wakes it, and "the serial
port will be active after DTR is pulled to low status for 20ms" — so every command written while
it may be asleep must wait at least 20 ms after the pin went LOW.

Pin level versus pyserial's ``dtr`` (what ``set_dtr`` receives; ``SerialTransport.setDTR``
passes it straight to pyserial): ``dtr = True`` *asserts* DTR. Asserted is the RS-232 "ON" state
(positive line voltage), and every common path to the module's 2.8 V logic pin inverts it: USB-UART
chips drive DTR as an active-low TTL output (FTDI labels it DTR#; CP210x, CH340 and PL2303 do the
same), and a MAX3232-style level shifter inverts RS-232 to TTL. So on the module's DTR pin:

- pyserial ``dtr = True``  (asserted)   -> pin LOW  -> module awake (the state after opening the
  port: pyserial and the Linux tty both assert DTR on open, so this class starts from "awake");
- pyserial ``dtr = False`` (deasserted) -> pin HIGH -> module may sleep.

A board that adds its own non-inverting stage would need the opposite; none is supported yet.
"""

from typing import Callable

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

#: Wake-up time after the DTR pin goes LOW before the module's UART listens (app note §9).
WAKE_DELAY = 0.020


def dtr_for_pin(high: bool) -> bool:
    """pyserial's ``dtr`` value that puts the module's DTR pin at this level (see module doc)."""
    return not high


class SleepController:
    """Decides when the module may sleep and wakes it before each command.

    The AT layer awaits ``wake()`` before writing every command and calls ``idle()`` when nothing
    is in flight or queued; the link layer reports ``links_changed(count)``; bring-up reports
    ``module_ready()`` when done and ``module_lost()`` when the module must be brought up again.
    The module is put to sleep (AT+QSCLK=1 once per bring-up, then the pin HIGH) only when it is
    ready, no link is open and the AT layer is idle, so the pin never goes HIGH under a command.
    ``enable_sleep()`` issues AT+QSCLK=1 (through the AT queue, like any command). If it fails,
    sleep stays off until the next bring-up rather than retrying at every idle moment.
    With ``enabled=False`` (``sleep = no``) nothing is ever issued and ``wake()`` is immediate.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, set_dtr: Callable[[bool], None],
                 enable_sleep: Callable[[], Deferred], enabled: bool = True,
                 wake_delay: float = WAKE_DELAY) -> None:
        self._clock = clock
        self._set_dtr = set_dtr
        self._enable_sleep = enable_sleep
        self._enabled = enabled
        self._wake_delay = wake_delay
        self._pin_high = False  # pyserial asserted DTR when the port opened: pin LOW, awake
        self._ready = False
        self._busy = False
        self._open_links = 0
        self._qsclk = "off"  # "off" | "pending" | "on" | "failed", for the current bring-up
        self._bring_up = 0  # so that a QSCLK answer from before a reboot is ignored
        self._low_since = float("-inf")  # when the pin last went LOW

    @property
    def asleep(self) -> bool:
        """True while the DTR pin is HIGH (the module may be sleeping)."""
        return self._pin_high

    def module_ready(self) -> None:
        """Bring-up finished: a fresh module, which has forgotten any AT+QSCLK=1."""
        self._ready = True
        self._bring_up += 1
        self._qsclk = "off"
        self._maybe_sleep()

    def module_lost(self) -> None:
        """The module rebooted or the port was lost: no sleeping until the next bring-up."""
        self._ready = False

    def links_changed(self, open_links: int) -> None:
        self._open_links = open_links
        if open_links and self._pin_high:
            self._set_pin(high=False)  # an open link keeps the module awake (no command waits)
        self._maybe_sleep()

    def idle(self) -> None:
        """The AT layer has nothing in flight or queued."""
        self._busy = False
        self._maybe_sleep()

    def wake(self) -> "Deferred[None]":
        """Fires when a command may be written: at once if awake, else 20 ms after DTR went LOW.

        Cancelling the returned Deferred (the command was withdrawn) is harmless.
        """
        if not self._enabled:
            return succeed(None)
        self._busy = True
        if self._pin_high:
            self._set_pin(high=False)
        remaining = self._low_since + self._wake_delay - self._clock.seconds()
        if remaining <= 0:
            return succeed(None)
        return deferLater(self._clock, remaining, lambda: None)

    def _set_pin(self, high: bool) -> None:
        self._pin_high = high
        if not high:
            self._low_since = self._clock.seconds()
        self._set_dtr(dtr_for_pin(high))

    def _maybe_sleep(self) -> None:
        if not (self._enabled and self._ready and not self._busy and not self._open_links
                and not self._pin_high):
            return
        if self._qsclk == "on":
            self._set_pin(high=True)
        elif self._qsclk == "off":
            self._qsclk = "pending"
            maybeDeferred(self._enable_sleep).addCallbacks(
                self._qsclk_done, self._qsclk_failed,
                callbackArgs=(self._bring_up,), errbackArgs=(self._bring_up,))

    def _qsclk_done(self, _: object, bring_up: int) -> None:
        if bring_up == self._bring_up:
            self._qsclk = "on"
            self._maybe_sleep()

    def _qsclk_failed(self, failure: Failure, bring_up: int) -> None:
        if bring_up != self._bring_up:
            return
        self._qsclk = "failed"
        self.log.warn("AT+QSCLK=1 failed ({error}); sleep mode off until the next bring-up",
                      error=failure.getErrorMessage() or failure.type.__name__)
