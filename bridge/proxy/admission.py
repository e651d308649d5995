"""One tcp profile's listener: each accepted connection is spliced to a module socket (with
``tls``, to TLS on it: :mod:`bridge.tls`; with ``reopen``, to a link that outlives its module
sockets: :mod:`bridge.modem.persistent`).

The module's six sockets are the modem's to share out (:class:`~bridge.modem.pool.SocketPool`):
a profile holds at most ``max_links`` of them, and its connections wait for one, paused, in a
FIFO bounded by ``queue`` and in time by ``queue_timeout``. Past either bound the connection is
reset, not closed: an empty clean close would look like an empty answer to the app.

Its :class:`~bridge.proxy.accounting.Ledger` accounts every connection: a link's bytes and close
cause, and the connections that never got a link (refused, connect failed, gone while waiting).
"""

import dataclasses

from twisted.internet.defer import CancelledError
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from bridge.errors import ModemDown
from bridge.modem.endpoint import ModemEndpoint
from bridge.modem.persistent import PersistentEndpoint, ReopenTimings
from bridge.proxy.accounting import (CONNECT_FAILED, LOCAL, MODEM_DOWN, QUEUE_FULL, Ledger,
                                     address_text)
from bridge.proxy.splice import LocalSide, ModuleSide
from bridge.tls.link import SecureEndpoint
from bridge.tls.policy import client_policy


class Admission(Factory):
    """The factory behind one tcp profile's listener, on ``modem``'s sockets."""

    log = Logger()
    noisy = False  # the service logs its listeners; "Starting factory <...>" adds nothing

    def __init__(self, profile, modem) -> None:
        self.name = f"profile:{profile.name}"
        self.ledger = Ledger(modem.counters, modem.reactor, "profile", profile.name, "")
        self.retarget(profile, modem)
        self.served = 0
        self._links = {}  # module transport -> its LocalSide, while it carries

    def retarget(self, profile, modem) -> None:
        """Connections from now on follow ``profile`` on ``modem`` (a reload changed them); links
        already open keep the module socket, and the remote, they have."""
        self.profile = profile
        self.modem = modem
        settings = dataclasses.replace(modem.socket_settings(), linger=profile.linger,
                                       probe=profile.probe)
        endpoint = ModemEndpoint(modem, profile.remote.host, profile.remote.port, settings,
                                 group=profile.name, limit=profile.max_links,
                                 wait=profile.queue_timeout, context=profile.context)
        if profile.tls:
            endpoint = SecureEndpoint(endpoint, client_policy(profile), profile.tls_timeout,
                                      modem.reactor, self.name)
        if profile.reopen:
            endpoint = PersistentEndpoint(endpoint, ReopenTimings(
                maximum=profile.reopen_max_delay, timeout=profile.reopen_timeout), self.name)
        self.endpoint = endpoint
        # links from now on: their remote, and the counters of the modem that carries them
        self.ledger.remote = f"{profile.remote.host}:{profile.remote.port}"
        self.ledger.counters = modem.counters

    def buildProtocol(self, addr) -> LocalSide:
        local = LocalSide(self)
        local.factory = self
        return local

    def arrived(self, local: LocalSide) -> None:
        """A local connection wants a module socket."""
        pool, profile = self.modem.sockets, self.profile
        if pool.must_wait(profile.name, profile.max_links):
            waiting = pool.waiting(profile.name)
            if waiting >= profile.queue:
                self.log.warn("[{name}] refusing a connection: {n} already waiting for a module "
                              "socket", name=self.name, n=waiting)
                self.ledger.closed(local.link, QUEUE_FULL)
                local.reset()
                return
            self.log.info("[{name}] connection waits for a module socket ({n} waiting)",
                          name=self.name, n=waiting + 1)
        connecting = local.connecting = self.endpoint.connect(
            Factory.forProtocol(lambda: ModuleSide(local)))
        connecting.addCallbacks(self._connected, self._failed, (local,), errbackArgs=(local,))

    def _connected(self, module: ModuleSide, local: LocalSide) -> None:
        self.served += 1
        self._links[module.transport] = local
        local.spliced(module)

    @staticmethod
    def link_client(local: LocalSide) -> str:
        """The local app's address, as the link's close line names it."""
        return address_text(local.transport.getPeer())

    def ended(self, socket) -> None:
        """A module socket of this profile stopped carrying (its ModuleSide was told)."""
        self._links.pop(socket, None)

    def _failed(self, failure, local: LocalSide) -> None:
        local.connecting = None
        if failure.check(CancelledError):  # the local connection went away while it waited
            self.ledger.closed(local.link, LOCAL)
            return
        self.ledger.closed(local.link, MODEM_DOWN if failure.check(ModemDown) else CONNECT_FAILED)
        self.log.warn("[{name}] connect to {host}:{port} failed: {reason}; resetting the local "
                      "connection", name=self.name, host=self.profile.remote.host,
                      port=self.profile.remote.port, reason=failure.getErrorMessage())
        local.reset()

    @property
    def sockets(self) -> list:
        """This profile's links that still carry, lowest module socket index first (a link that
        reopens, holding none, last)."""
        return sorted(self._links, key=lambda socket: (socket.slot is None, socket.slot or 0))

    def finish_links(self) -> int:
        """End every link gracefully (:meth:`LocalSide.finish`) -> how many."""
        links = list(self._links.values())
        for local in links:
            local.finish()
        return len(links)

    def abort_links(self) -> int:
        """Abort the links still open (a graceful end took too long) -> how many."""
        sockets = list(self._links)
        for socket in sockets:
            socket.abortConnection()
        return len(sockets)

    def local_of(self, socket):
        """The local connection (``LocalSide``) spliced to one of :attr:`sockets`."""
        return self._links.get(socket)

    def stats(self) -> dict:
        """Sockets, waiting connections and the bytes the bridge holds for them."""
        sockets = [s.stats() for s in self.sockets]
        return {"links": sockets, "waiting": self.modem.sockets.waiting(self.profile.name),
                "served": self.served,
                "buffered": sum(s["uplink_buffered"] + s["downlink_held"] for s in sockets)}
