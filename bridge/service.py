"""The service tree that ``cellbridge run`` and ``twistd cellbridge`` both start.

Children of the root, by name: ``modem:NAME`` (one per modem), ``profile:NAME`` (the listener of
each profile), ``server:NAME`` (one per module-side server), one child per non-empty key of
:data:`GENERAL_CHILDREN` (``control``, ``metrics``), and ``systemd`` (started after every listener
is bound; at stop it says STOPPING=1 before anything closes). Each child is built by one function
here, which a reload (:mod:`bridge.reload`) calls again for what changed; the stop sequence is
:mod:`bridge.shutdown`'s.

The modem, the bridging and the servers come from other packages through :class:`Components`.
"""

import os

from twisted.application import internet, strports
from twisted.application.service import MultiService, Service
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from bridge import shutdown
from bridge.config import config_warnings
from bridge.control.service import make_control_service
from bridge.errors import EXIT_FAILURE, EXIT_OK, CellbridgeError
from bridge.metrics import make_metrics_service
from bridge.modem.modem import make_modem_service
from bridge.proxy.service import (make_datagram_protocol, make_server_service,
                                  make_stream_factory)
from bridge.logs import listening
from bridge.systemd import SystemdNotifier
from bridge.traffic import TrafficTap, set_traffic_logging

#: The children built from one ``[cellbridge]`` key each: key -> ``build(root)``, which returns
#: the child (an ``IService``, named after the key) or None when the key is empty. A reload that
#: changes the key replaces the child (:meth:`CellbridgeService.rebuild_general_child`).
GENERAL_CHILDREN = {"control": make_control_service, "metrics": make_metrics_service}


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

    :param config: the loaded :class:`~bridge.config.Config` (a reload replaces it).
    :param reactor: the reactor every child uses (never the global one in library code).
    :param components: where the modem, proxy and server children come from.
    :param general_children: :data:`GENERAL_CHILDREN` or a test's.
    """

    log = Logger()

    def __init__(self, config, reactor, components=None, general_children=None):
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.components = components or Components()
        self.general_children = GENERAL_CHILDREN if general_children is None else general_children
        self.exit_status = EXIT_OK
        self.notifier = None
        #: ``set_log_level(name)``, given by whoever started the logging (``cellbridge run``)
        self.set_log_level = None
        #: every modem's AT traffic, live (cellbridge trace, the debug log)
        self.traffic = TrafficTap()
        #: link holders out of the tree whose links still end (a reload removed their profile)
        self.retiring: list = []
        self._health_checks = []
        self._readiness = []

    def add_health_check(self, check):
        """``check()`` -> bool; the systemd watchdog is fed only while every check is true."""
        self._health_checks.append(check)

    def remove_health_check(self, check):
        """A child that goes away (a reload) takes its check along."""
        if check in self._health_checks:
            self._health_checks.remove(check)

    def add_readiness(self, deferred):
        """READY=1 waits for ``deferred`` too; call it before or during ``startService`` (or
        while a reload builds children: the READY=1 that ends the reload waits for it)."""
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
            bind(child)

    def startService(self):
        for warning in config_warnings(self.config):  # what `cellbridge check` warns about
            self.log.warn("{warning}", warning=warning)
        super().startService()
        self.announce_ready()

    def stopService(self):
        """Listeners first, links within their budget, contexts deactivated, ports closed:
        :func:`bridge.shutdown.stop`."""
        Service.stopService(self)
        return shutdown.stop(self)

    def when_ready(self):
        """Fires once every readiness Deferred added so far has (and forgets them)."""
        waiting, self._readiness = self._readiness, []
        return defer.gatherResults(waiting, consumeErrors=True)

    def announce_ready(self):
        """The listening line and READY=1 once every readiness Deferred added so far has fired
        (at start, and at the end of each reload)."""
        self.when_ready().addCallbacks(self._ready, self._not_ready)

    def _not_ready(self, failure):
        self.fail(failure.value.subFailure.value)

    def _ready(self, _):
        """Every listener is bound ("ready" is the modem's word: it can carry links)."""
        bound = [child.name.split(":", 1)[1] for child in self.children_named("profile:")]
        status, line = listening(self.config.profiles[name] for name in bound)
        self.log.info("{line}", line=line)
        if self.notifier is not None:
            self.notifier.ready(status)

    def children_named(self, prefix):
        """The children whose name starts with ``prefix`` (``"profile:"`` ...), in tree order."""
        return [child for child in self if (child.name or "").startswith(prefix)]

    def start_child(self, child):
        """Add ``child`` to a running tree and start it (bind, then start): a listener that
        cannot bind raises CellbridgeError naming it, and is not added."""
        bind(child)
        # What addService does, without binding a second time (its privilegedStartService).
        child.parent = self
        self.namedServices[child.name] = child
        self.services.append(child)
        child.startService()

    def stop_child(self, child):
        """Stop ``child`` and take it out of the tree -> Deferred, once it has stopped."""
        return defer.maybeDeferred(child.disownServiceParent)

    def rebuild_general_child(self, key):
        """The ONE place where a changed ``[cellbridge]`` key (``control``, ``metrics``) replaces
        its child: the old one stops, then the new one (if the key is not empty now) starts ->
        Deferred(what happened, for the reload's log)."""
        old = self.namedServices.get(key)
        stopping = self.stop_child(old) if old is not None else defer.succeed(None)

        def start(_):
            child = build_general_child(self, key)
            if child is None:
                return "stopped" if old is not None else "off"
            self.start_child(child)
            return "restarted" if old is not None else "started"
        return stopping.addCallback(start)

    def reload(self, path):
        """Re-read ``path`` and apply what changed (:mod:`bridge.reload`) -> Deferred."""
        from bridge.reload import Reload
        return Reload.of(self).run(path)

    def reloads_settled(self):
        """Fires once no reload runs: a stop waits for one, which would otherwise start what
        the stop has ended."""
        from bridge.reload import Reload
        return Reload.of(self).settled()


def bind(child):
    """``child.privilegedStartService()`` (a listener binds there); a port that cannot be bound
    raises CellbridgeError naming the child."""
    try:
        child.privilegedStartService()
    except CannotListenError as error:
        raise CellbridgeError(f"[{child.name}] listen: {error}") from error
    except OSError as error:  # a unix: socket in a directory that is missing or locked
        raise CellbridgeError(f"[{child.name}] listen: cannot listen: "
                              f"{error.strerror or error}") from error


def contexts_in_use(config, modem_name):
    """The PDP contexts the profiles and servers of a modem use; the first is always up."""
    users = [*config.profiles.values(), *config.servers.values()]
    return {0} | {user.context for user in users if user.modem == modem_name}


def build_modem(root, modem):
    """The ``modem:NAME`` child for ``modem`` (a ModemConfig), told which PDP contexts it must
    bring up."""
    child = root.components.modem_service(modem, root)
    child.contexts_in_use = contexts_in_use(root.config, modem.name)
    child.setName(f"modem:{modem.name}")
    root.traffic.watch(child)
    return child


def build_listener(root, profile, modem, factory=None):
    """The ``profile:NAME`` listener of ``profile`` on the ``modem`` child. A tcp listener is a
    ``strports.service``: its bind happens in ``privilegedStartService`` and a failure raises
    there (``_raiseSynchronously``) instead of being logged while the daemon runs on without its
    port (a bare StreamServerEndpointService only logs a failed bind). ``factory``: the one an
    earlier listener of the profile had (a reload that moved its address keeps its links)."""
    if profile.listen.kind == "udp":
        protocol = root.components.datagram_protocol(profile, modem, root)
        listener = internet.UDPServer(profile.listen.port, protocol,
                                      interface=profile.listen.interface, reactor=root.reactor)
    else:
        factory = factory or root.components.stream_factory(profile, modem, root)
        listener = strports.service(profile.listen.endpoint, factory, reactor=root.reactor)
    listener.setName(f"profile:{profile.name}")
    return listener


def build_server(root, server, modem):
    """The ``server:NAME`` child of a module-side server on the ``modem`` child."""
    child = root.components.server_service(server, modem, root)
    child.setName(f"server:{server.name}")
    return child


def build_general_child(root, key):
    """The child of ``[cellbridge] key`` from :data:`GENERAL_CHILDREN`, named ``key``, or None
    when the key is empty."""
    child = root.general_children[key](root)
    if child is not None:
        child.setName(key)
    return child


def make_service(config, reactor, components=None, environ=None, general_children=None):
    """Build (not start) the whole tree for ``config``.

    :param components: a :class:`Components`; tests pass fakes.
    :param environ: where the systemd variables come from (default ``os.environ``).
    :param general_children: instead of :data:`GENERAL_CHILDREN` (tests).
    """
    root = CellbridgeService(config, reactor, components, general_children)
    modems = {}
    for modem in config.modems.values():
        modems[modem.name] = build_modem(root, modem)
        modems[modem.name].setServiceParent(root)
    for profile in config.profiles.values():
        build_listener(root, profile, modems[profile.modem]).setServiceParent(root)
    for server in config.servers.values():
        build_server(root, server, modems[server.modem]).setServiceParent(root)
    for key in root.general_children:
        child = build_general_child(root, key)
        if child is not None:
            child.setServiceParent(root)
    root.notifier = SystemdNotifier(reactor, root.healthy, os.environ if environ is None else environ)
    root.notifier.setServiceParent(root)
    set_traffic_logging(root, config.general.log_level == "debug")
    return root
