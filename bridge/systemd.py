"""systemd readiness, status and watchdog, without a dependency (the protocol is
one datagram, simple enough to speak directly).

The protocol is one datagram per message to the AF_UNIX socket named by ``$NOTIFY_SOCKET`` (a
leading ``@`` means the abstract namespace). Outside systemd the variable is unset and every call is
a no-op, so the daemon behaves the same in a terminal.
"""

import os
import socket
import time

from twisted.application.service import Service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

log = Logger()


def sd_notify(message, environ=os.environ):
    """Send one notification (e.g. ``"READY=1"``); returns whether a datagram was sent.

    Never raises: losing a status line must not take the daemon down.
    """
    address = environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode("utf-8"))
    except OSError as error:
        log.warn("cannot notify systemd at {address!r}: {error}", address=address, error=error)
        return False
    return True


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds: what ``MONOTONIC_USEC=`` carries (sd_notify(3))."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def watchdog_interval(environ=os.environ, pid=None):
    """Seconds between watchdog pings (half of ``WATCHDOG_USEC``), or None when not asked for.

    ``WATCHDOG_PID``, when set, must be ours: the variables are inherited by child processes.
    """
    usec = environ.get("WATCHDOG_USEC", "")
    owner = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if owner and owner != str(os.getpid() if pid is None else pid):
        return None
    return int(usec) / 2e6


class SystemdNotifier(Service):
    """READY=1 / STATUS= / RELOADING=1 / STOPPING=1, and WATCHDOG=1 while ``healthy()`` says so.

    :param clock: an ``IReactorTime`` for the watchdog loop.
    :param healthy: called before each ping; a wedged engine stops the pings and systemd restarts
        the daemon (a module out of coverage should still count as healthy).
    :param environ: where ``NOTIFY_SOCKET`` and ``WATCHDOG_USEC`` come from.
    :param monotonic: ``monotonic_usec``'s stand-in for tests.
    """

    name = "systemd"

    def __init__(self, clock, healthy, environ=os.environ, monotonic=monotonic_usec):
        self._clock = clock
        self._monotonic = monotonic
        self._healthy = healthy
        self._environ = environ
        self._watchdog = None
        self._was_healthy = True

    def notify(self, *lines):
        return sd_notify("\n".join(lines), self._environ)

    def ready(self, status):
        """Tell systemd the service is up (listeners bound): ``Type=notify`` start completes."""
        self.notify("READY=1", f"STATUS={status}")

    def status(self, text):
        self.notify(f"STATUS={text}")

    def reloading(self):
        """A reload begins: systemd keeps ``systemctl reload`` waiting until the next READY=1
        (sd_notify(3): RELOADING=1 must carry the time it was sent, on CLOCK_MONOTONIC)."""
        self.notify("RELOADING=1", f"MONOTONIC_USEC={self._monotonic()}")

    def startService(self):
        super().startService()
        interval = watchdog_interval(self._environ)
        if interval is not None:
            self._watchdog = LoopingCall(self._ping)
            self._watchdog.clock = self._clock
            self._watchdog.start(interval, now=True)

    def stopService(self):
        self.notify("STOPPING=1")
        if self._watchdog is not None and self._watchdog.running:
            self._watchdog.stop()
        return super().stopService()

    def _ping(self):
        try:
            healthy = bool(self._healthy())
        except Exception:
            log.failure("health check failed; treating the daemon as unhealthy")
            healthy = False
        if healthy:
            self.notify("WATCHDOG=1")
        elif self._was_healthy:
            log.warn("unhealthy: withholding systemd watchdog pings")
        self._was_healthy = healthy
