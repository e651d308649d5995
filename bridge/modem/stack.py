"""The module's TCP/IP stack state (app note §5.6), tracked on our side and kept in step.

The module only accepts some commands in some states (AT+QIMUX/QIMODE only in IP INITIAL,
AT+QIOPEN only once the context is up), so the modem layer predicts the state after each command
it completes and, at start and after errors, asks the module (AT+QISTAT/QISTATE) and adopts its
answer: the module is the truth, our model only saves round trips.
"""

from typing import Optional

from twisted.logger import Logger

from bridge.at import commands

INITIAL = "IP INITIAL"
START = "IP START"
CONFIG = "IP CONFIG"
IND = "IP IND"
GPRSACT = "IP GPRSACT"
STATUS = "IP STATUS"
PROCESSING = "IP PROCESSING"  # mux: at least one socket in use
CLOSE = "IP CLOSE"  # single link closed
CONNECT_OK = "CONNECT OK"  # single link up
PDP_DEACT = "PDP DEACT"

STATES = (INITIAL, START, CONFIG, IND, GPRSACT, STATUS, "TCP CONNECTING", "UDP CONNECTING",
          CONNECT_OK, CLOSE, PROCESSING, PDP_DEACT)

#: step -> (states the app note allows it from, state after it succeeded); None = from anywhere.
STEPS = {
    "QIDEACT": (None, INITIAL),
    "QIREGAPP": ({INITIAL}, START),
    "QIACT": ({START}, GPRSACT),
    "QILOCIP": ({GPRSACT, STATUS, PROCESSING, CONNECT_OK, CLOSE}, STATUS),
    "PDP DEACT": (None, PDP_DEACT),
}

#: States in which the context is up and AT+QIOPEN is accepted.
OPEN_STATES = frozenset({STATUS, PROCESSING, CLOSE, CONNECT_OK})
#: States of an active context (its sockets live); any other means it is gone or not yet up.
ACTIVE_STATES = OPEN_STATES | {GPRSACT}


#: A mux module reports IP PROCESSING instead of IP STATUS while a socket is in use (app note
#: §5.6.1), which the prediction does not follow: either is no surprise for the other.
ACTIVE_WITH_OR_WITHOUT_SOCKETS = {"IP STATUS", "IP PROCESSING"}


class StackMachine:
    """Our view of ``STATE:``; ``None`` until the first step or observation."""

    log = Logger()

    def __init__(self) -> None:
        self.state: Optional[str] = None

    def step(self, name: str) -> None:
        """``name`` (a key of STEPS) completed: move on, warning if the app note forbids it."""
        allowed, target = STEPS[name]
        if allowed is not None and self.state not in allowed:
            self.log.warn("stack: {step} succeeded in state {state!r}, which the app note does "
                          "not allow; resync advised", step=name, state=self.state)
        self.state = target

    def observe(self, reported: str) -> None:
        """The module said ``STATE: reported``; it wins over our prediction."""
        if reported not in STATES:
            self.log.warn("stack: unknown state {reported!r} reported by the module",
                          reported=reported)
        elif (self.state is not None and reported != self.state
              and {reported, self.state} - ACTIVE_WITH_OR_WITHOUT_SOCKETS):
            self.log.info("stack: module is in {reported!r}, we expected {expected!r}; adopted",
                          reported=reported, expected=self.state)
        self.state = reported

    def observed(self, report):
        """Callback for a status command's StackState; passes it on."""
        self.observe(report.state)
        return report

    @staticmethod
    def status_command(mux: bool, timeout: float):
        """AT+QISTATE with its six socket lines in mux mode, AT+QISTAT (OK, then STATE:) else."""
        return commands.qistate(timeout=timeout) if mux else commands.qistat(timeout=timeout)

    @property
    def context_up(self) -> bool:
        return self.state in OPEN_STATES
