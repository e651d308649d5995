"""The service tree that ``cellbridge run`` and ``twistd cellbridge`` both start.

Children of the root, by name: ``modem:NAME`` (one per modem), ``profile:NAME`` (the listener of
each profile), ``server:NAME`` (one per module-side server), and ``systemd`` last (so it starts after
every listener is bound and, stopping first, says STOPPING=1 before anything closes). With
``[cellbridge] control`` set, ``control`` (the control socket, :mod:`bridge.control`) comes before
``systemd``.

The modem, the bridging and the servers come from other packages through :class:`Components`.
"""

import os

from twisted.application import internet, strports
from twisted.application.service import MultiService, Service
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from bridge.config import config_warnings
from bridge.control.service import make_control_service
from bridge.errors import EXIT_FAILURE, EXIT_OK, CellbridgeError
from bridge.modem.modem import make_modem_service
from bridge.proxy.service import (make_datagram_protocol, make_server_service,
                                  make_stream_factory)
from bridge.systemd import SystemdNotifier


class Components:
    """Where the service tree gets the parts other packages provide; tests pass their own.

    Each method receives the root (:class:`CellbridgeService`: reactor, config, ``fail()``,
    ``add_health_check()``, ``add_readiness()``, ``status()``) and returns something ready to add.
    """

    def modem_service(self, modem, root):
        """An ``IService`` that owns one module."""
        return make_modem_service(modem, root)

    def stream_factory(self, profile, modem_service, root):
        """The ``IProtocolFactory`` behind a tcp profile's listener."""
        return make_stream_factory(profile, modem_service, root)

    def datagram_protocol(self, profile, modem_service, root):
        """The ``DatagramProtocol`` behind a udp profile's port."""
        return make_datagram_protocol(profile, modem_service, root)

    def server_service(self, server, modem_service, root):
        """An ``IService`` for one module-side listener (AT+QISERVER)."""
        return make_server_service(server, modem_service, root)


class CellbridgeService(MultiService):
    """The root service: owns the daemon's exit status, readiness and health.

    :param config: the loaded :class:`~bridge.config.Config`.
    :param reactor: the reactor every child uses (never the global one in library code).
    """

    log = Logger()

    def __init__(self, config, reactor):
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.exit_status = EXIT_OK
        self.notifier = None
        self._health_checks = []
        self._readiness = []

    def add_health_check(self, check):
        """``check()`` -> bool; the systemd watchdog is fed only while every check is true."""
        self._health_checks.append(check)

    def add_readiness(self, deferred):
        """READY=1 waits for ``deferred`` too; call it before or during ``startService``."""
        self._readiness.append(deferred)

    def healthy(self):
        return all(check() for check in self._health_checks)

    def status(self, text):
        """One line for ``systemctl status`` (registration, PDP, link counts ...)."""
        if self.notifier is not None:
            self.notifier.status(text)

    def fail(self, error):
        """Stop the daemon because of ``error``; ``cellbridge run`` exits with its status."""
        if self.exit_status != EXIT_OK:
            return
        self.exit_status = error.exit_status if isinstance(error, CellbridgeError) else EXIT_FAILURE
        self.log.critical("stopping: {error}", error=error)
        if self.reactor.running:
            self.reactor.stop()
        else:
            self.reactor.callWhenRunning(self.reactor.stop)

    def privilegedStartService(self):
        """Bind every listener; a port that cannot be bound stops start-up, naming its profile."""
        Service.privilegedStartService(self)
        for child in self:
            try:
                child.privilegedStartService()
            except CannotListenError as error:
                raise CellbridgeError(f"[{child.name}] listen: {error}") from error

    def startService(self):
        for warning in config_warnings(self.config):  # what `cellbridge check` warns about
            self.log.warn("{warning}", warning=warning)
        super().startService()
        waiting = defer.gatherResults(self._readiness, consumeErrors=True)
        waiting.addCallbacks(self._ready, lambda failure: self.fail(failure.value.subFailure.value))

    def _ready(self, _):
        listeners = [name for name in self.namedServices if name.startswith("profile:")]
        self.log.info("ready: {count} listener(s) bound", count=len(listeners))
        if self.notifier is not None:
            self.notifier.ready(f"ready: {len(listeners)} listener(s) bound")


def contexts_in_use(config, modem_name):
    """The PDP contexts the profiles and servers of a modem use; the first is always up."""
    users = [*config.profiles.values(), *config.servers.values()]
    return {0} | {user.context for user in users if user.modem == modem_name}


def add_modem_services(root, components):
    """One ``modem:NAME`` child per modem, told which PDP contexts it must bring up; returns
    them by modem name."""
    modems = {}
    for modem in root.config.modems.values():
        modems[modem.name] = components.modem_service(modem, root)
        modems[modem.name].contexts_in_use = contexts_in_use(root.config, modem.name)
        modems[modem.name].setName(f"modem:{modem.name}")
        modems[modem.name].setServiceParent(root)
    return modems


def add_profile_services(root, components, modems):
    """One ``profile:NAME`` listener per profile. A tcp listener is a ``strports.service``: its bind
    happens in ``privilegedStartService`` and a failure raises there (``_raiseSynchronously``) instead
    of being logged while the daemon runs on without its port (a bare StreamServerEndpointService
    only logs a failed bind)."""
    for profile in root.config.profiles.values():
        modem = modems[profile.modem]
        if profile.listen.kind == "udp":
            protocol = components.datagram_protocol(profile, modem, root)
            listener = internet.UDPServer(profile.listen.port, protocol,
                                          interface=profile.listen.interface, reactor=root.reactor)
        else:
            factory = components.stream_factory(profile, modem, root)
            listener = strports.service(profile.listen.endpoint, factory, reactor=root.reactor)
        listener.setName(f"profile:{profile.name}")
        listener.setServiceParent(root)


def add_server_services(root, components, modems):
    """One ``server:NAME`` child per module-side server."""
    for server in root.config.servers.values():
        child = components.server_service(server, modems[server.modem], root)
        child.setName(f"server:{server.name}")
        child.setServiceParent(root)


def make_service(config, reactor, components=None, environ=None):
    """Build (not start) the whole tree for ``config``.

    :param components: a :class:`Components`; tests pass fakes.
    :param environ: where the systemd variables come from (default ``os.environ``).
    """
    components = components or Components()
    root = CellbridgeService(config, reactor)
    modems = add_modem_services(root, components)
    add_profile_services(root, components, modems)
    add_server_services(root, components, modems)
    make_control_service(root)
    root.notifier = SystemdNotifier(reactor, root.healthy, os.environ if environ is None else environ)
    root.notifier.setServiceParent(root)
    return root
