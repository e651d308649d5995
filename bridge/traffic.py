"""What an operator sees of the modems' AT traffic in the log: every line at ``log_level =
debug``, and the rings saved to files on ``kill -USR1``.

Both show the ring's text (bridge.at.ring): PIN and passwords masked, payloads as length and a
short hex prefix, so nothing here leaks more than a dump that is safe to paste into a bug report.
"""

import signal

from twisted.logger import Logger

log = Logger()
#: the debug lines' own namespace: ``[bridge.traffic#debug] modem:main: <ring entry>``
traffic_log = Logger(namespace="bridge.traffic")


def modem_services(root):
    """The ``modem:NAME`` children of the service tree."""
    return [service for service in root if (service.name or "").startswith("modem:")]


class DebugTrafficLog:
    """A modem's traffic observer that logs each ring entry at debug."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, entry: str) -> None:
        traffic_log.debug("{modem}: {entry}", modem=self.name, entry=entry)


def set_traffic_logging(root, enabled: bool) -> None:
    """Log every AT line of every modem at debug, or stop. Off, nothing watches the traffic (an
    observer would cost every line a log event only to be filtered out). Call it again when
    ``log_level`` changes, and for a modem added to the tree."""
    for modem in modem_services(root):
        observers = getattr(modem, "traffic_observers", None)
        if observers is None:
            continue  # a stand-in without an AT engine
        observers[:] = [o for o in observers if not isinstance(o, DebugTrafficLog)]
        if enabled:
            observers.append(DebugTrafficLog(modem.name))


def save_traffic_rings(root) -> None:
    """Save each modem's ring to a file and log one line naming it, at warn (asked for, so
    shown at the usual levels)."""
    for service in modem_services(root):
        ring = getattr(service, "ring", None)
        if ring is None:
            log.warn("{name}: no AT traffic yet (SIGUSR1)", name=service.name)
        else:
            log.warn("{name}: SIGUSR1: {saved}", name=service.name, saved=ring.save("sigusr1"))


def install_ring_dump(reactor, root, only_if_free: bool = False) -> None:
    """``kill -USR1`` saves every modem's AT traffic ring (on demand, without a restart). The
    saving runs in the reactor: a signal handler may interrupt it anywhere. ``only_if_free``:
    leave SIGUSR1 to whoever took it already (twistd rotates its ``--logfile`` with it)."""
    if only_if_free and signal.getsignal(signal.SIGUSR1) not in (signal.SIG_DFL, None):
        log.info("SIGUSR1 is taken (twistd's log rotation): the AT traffic rings are saved only "
                 "on module events")
        return
    signal.signal(signal.SIGUSR1,
                  lambda signum, frame: reactor.callFromThread(save_traffic_rings, root))
