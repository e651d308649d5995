"""What an operator sees of the modems' AT traffic: every line live (the tree's
:class:`TrafficTap`, which ``cellbridge trace`` and the log at ``log_level = debug`` watch), and
the rings saved to files on ``kill -USR1``.

Both show the ring's text (bridge.at.ring): PIN and passwords masked, payloads as length and a
short hex prefix, so nothing here leaks more than a dump that is safe to paste into a bug report.
"""

import signal
from functools import partial

from twisted.logger import Logger

log = Logger()
#: the debug lines' own namespace: ``[bridge.traffic#debug] modem:main: <ring entry>``
traffic_log = Logger(namespace="bridge.traffic")


def modem_services(root):
    """The ``modem:NAME`` children of the service tree."""
    return [service for service in root if (service.name or "").startswith("modem:")]


class TrafficTap:
    """The AT traffic of every modem of the tree, including those a reload adds or restarts: a
    watcher joins once and hears ``watcher(modem name, ring entry)`` until it leaves."""

    def __init__(self) -> None:
        self.watchers: list = []

    def watch(self, modem) -> None:
        """Hear ``modem``'s ring entries from now on (each modem child, as it is built)."""
        observers = getattr(modem, "traffic_observers", None)
        if observers is not None:  # a stand-in without an AT engine has none
            observers.append(partial(self._heard, modem.name))

    def _heard(self, name: str, entry: str) -> None:
        for watcher in list(self.watchers):
            watcher(name, entry)


def log_traffic_line(name: str, entry: str) -> None:
    """The debug log's watcher: one line per ring entry."""
    traffic_log.debug("{modem}: {entry}", modem=name, entry=entry)


def set_traffic_logging(root, enabled: bool) -> None:
    """Log every AT line of every modem at debug, or stop (when ``log_level`` changes)."""
    watchers = root.traffic.watchers
    if log_traffic_line in watchers:
        watchers.remove(log_traffic_line)
    if enabled:
        watchers.append(log_traffic_line)


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
