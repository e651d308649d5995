"""Module-side servers (reverse tunnels): the module listens (AT+QILPORT, AT+QISERVER, app note
§3.2, §3.4) and each client it accepts is connected to a local service.

Listening is one step, :meth:`ModuleServer.listen`, run whenever the modem becomes ready (after
bring-up and after every recovery: whatever took the module's sockets took its listener too, and
the one recovery that keeps them, the resync step, closes the listeners it kept) and
again a while after a failed attempt; the servers of one modem take turns
(:mod:`bridge.proxy.server_desk`, which also says whose a client announced as
``n, REMOTE IP: ip`` is, app note §5.1, and claims its index in the modem's socket pool). A peer
outside ``allow``, a client past ``max_clients`` or an index a client link holds is closed at
once (AT+QISRVC=2, AT+QICLOSE=n), logged and counted.

A tcp server's client becomes a server-side :class:`~bridge.modem.socket.ModuleSocket` spliced
(:mod:`bridge.proxy.splice`) with its own connection to ``forward``: the window, pull with
backpressure, graceful close and keepalive of a client link, the other way round. Nothing is read
from it until the local service has answered; if the local service refuses, the module-side
client is closed. A udp server's peer gets a local socket of its own
(:mod:`bridge.proxy.reverse_datagram`).
"""

import ipaddress
from typing import Dict, Optional

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, TimeoutError, inlineCallbacks
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from bridge.at import commands
from bridge.config_values import remote
from bridge.modem.session import TransparentSession
from bridge.modem.socket import ModuleAddress, ModuleSocket
from bridge.proxy.accounting import CONNECT_FAILED, Ledger
from bridge.proxy.forwarding import Forwarding
from bridge.proxy.reverse_datagram import DatagramForwarding
from bridge.proxy.server_desk import ServerDesk
from bridge.proxy.splice import LocalSide, ModuleSide
from bridge.tls.link import TLSLinkFactory
from bridge.tls.policy import server_policy

#: AT+QISERVER's <type> (app note §3.4).
SERVER_TYPES = {"tcp": 0, "udp": 1}
#: How long ``SERVER OK`` may take after AT+QISERVER's OK (app note §3.2). Whether it always
#: comes is not known for every firmware (docs/at-dialect.md §4.9): without it, the OK stands.
SERVER_OK_WAIT = 10.0
#: After a failed attempt to listen, the next one.
RELISTEN_DELAY = 30.0


class ModuleServer(Service):
    """One ``[server:NAME]`` on ``modem``.

    :param context: the PDP context it listens on (AT+QIFGCNT id, app note §7)
    :param endpoint: where accepted clients are connected (default: ``forward``'s host and port,
        the forwarding kind's ``local_endpoint``)
    """

    log = Logger()

    def __init__(self, server, modem, reactor, context: int, endpoint=None) -> None:
        self.server = server
        self.modem = modem
        self.reactor = reactor
        self.context = context
        self.label = f"server:{server.name}"
        self.forwarding = FORWARDINGS[server.protocol]
        self.endpoint = endpoint or self.forwarding.local_endpoint(reactor, remote(server.forward))
        self.tls = server_policy(server) if server.tls else None
        self.listening = False
        self.clients: Dict[int, Forwarding] = {}
        #: the clients' links: bytes and close causes (tcp clients also get their close lines)
        self.ledger = Ledger(modem.counters, reactor, "server", server.name, server.forward)
        self._generation = 0  # one per modem life: a listen attempt from before a "down" is void
        self._attempt: Optional[Deferred] = None
        self._server_ok: Optional[Deferred] = None
        self._retry = None
        self.desk = ServerDesk.of(modem)
        self.desk.add(self)
        modem.add_state_listener(self._modem_state)
        modem.add_context_listener(self._context_state)

    # -- service ----------------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.listen()

    def stopService(self):
        """Close the accepted clients, then the listener (AT+QISRVC=2, AT+QICLOSE: app note
        §3.4 step 4), as far as the modem still runs; its next bring-up's AT+QIDEACT closes
        whatever is left. The listener is closed too if this server's listen is on the wire: its
        AT+QISERVER may be answered yet (a listen still waiting for its turn stops there).

        AT+QICLOSE without an index closes every listener of the module (app note §3.4), the
        other server's on this modem too: right at daemon stop (where the servers stopping
        together send it once: the desk's ``close_listeners``), not for stopping one server
        alone."""
        on_wire = self.desk.on_wire is self
        super().stopService()
        self._forget_attempt()
        for forwarding in list(self.clients.values()):
            forwarding.close()
        if self.listening or on_wire:
            self._not_listening()
            closing = self.desk.close_listeners(self.context)
            if closing is not None:
                closing.addErrback(lambda failure: self.log.info(
                    "[{label}] closing the listener: {why}", label=self.label,
                    why=failure.getErrorMessage()))

    # -- listening --------------------------------------------------------------------------------

    def listen(self) -> None:
        """Make the module listen (again): AT+QILPORT, AT+QISERVER, ``SERVER OK``. Does nothing
        while an attempt runs, the modem is not ready or the service is stopped."""
        if not self.running or not self.modem.ready or self._attempt is not None:
            return
        self.listening = False
        attempt = self._attempt = self._listen(self._generation)
        attempt.addBoth(self._listened, self._generation)

    @inlineCallbacks
    def _listen(self, generation: int):
        """Wait for this modem's listen turn, then listen (unless the attempt went void
        meanwhile: the modem's next "ready" listens again)."""
        yield self.desk.turns.acquire()
        try:
            if generation == self._generation:
                self.desk.on_wire = self
                yield self._listen_on_wire(generation)
        finally:
            if self.desk.on_wire is self:
                self.desk.on_wire = None
            self.desk.turns.release()

    @inlineCallbacks
    def _listen_on_wire(self, generation: int):
        server, timeouts = self.server, self.modem.timeouts
        on_context = self.modem.selection(self.context)
        self._server_ok = Deferred()
        yield self.modem.issue(commands.qilport(server.protocol.upper(), server.port,
                                                timeouts.simple).addressing(on_context))
        if generation != self._generation:
            return  # void meanwhile (stopped, or the modem went down): no AT+QISERVER
        # A transparent modem listens for its one session (app note §4.2: AT+QISERVER), whose
        # client arrives as REMOTE IP then an unprompted CONNECT: data mode.
        args = (SERVER_TYPES[server.protocol], server.max_clients) if self.modem.mux else ()
        yield self.modem.issue(commands.qiserver(args, timeouts.simple).addressing(on_context))
        if not self.modem.mux:
            self.modem.protocol.transparent_server_listening = True
        try:
            yield self._server_ok.addTimeout(SERVER_OK_WAIT, self.reactor)
        except TimeoutError:
            self.log.info("[{label}] no SERVER OK within {wait:g} s of AT+QISERVER's OK; taking "
                          "the OK as listening", label=self.label, wait=SERVER_OK_WAIT)

    def server_started(self) -> None:
        """``SERVER OK`` came while this server's listen was on the wire."""
        if self._server_ok is not None and not self._server_ok.called:
            self._server_ok.callback(None)

    def _listened(self, result, generation: int) -> None:
        if generation != self._generation:
            return  # the modem went down meanwhile; its next "ready" listens again
        self._attempt = self._server_ok = None
        if not isinstance(result, Failure):
            self.listening = True
            self.log.info("[{label}] listening on the module's {proto} port {port}, forwarded to "
                          "{forward}: clients reach this server at {ip}:{port} if the APN gives "
                          "the module a reachable address", label=self.label,
                          proto=self.server.protocol.upper(), port=self.server.port,
                          forward=self.server.forward, ip=self.modem.local_ip)
            return
        self.modem.counters.incr("server_listen_failed", server=self.server.name)
        self.log.warn("[{label}] the module does not listen: {why}; trying again in {delay:g} s",
                      label=self.label, why=result.getErrorMessage(), delay=RELISTEN_DELAY)
        self._retry = self.reactor.callLater(RELISTEN_DELAY, self._relisten)

    def _relisten(self) -> None:
        self._retry = None
        self.listen()

    def _forget_attempt(self) -> None:
        self._generation += 1
        if self._server_ok is not None and not self._server_ok.called:
            self._server_ok.cancel()  # the void attempt gives the listen turn up now
        self._attempt = self._server_ok = None
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None

    def _modem_state(self, state: str, reason: str) -> None:
        if state == "ready":
            self.listen()
        else:
            self._not_listening()
            self._forget_attempt()

    def _not_listening(self) -> None:
        """The module's listener is gone (or being closed)."""
        self.listening = False
        if self.modem.protocol is not None:
            self.modem.protocol.transparent_server_listening = False

    def _context_state(self, context: int, state: str, reason: str) -> None:
        """Its PDP context alone went down or came back (the other carried on)."""
        if context == self.context:
            self._modem_state(state, reason)

    def _server_side(self):
        return self.modem.selection(self.context, server=True)

    # -- clients ----------------------------------------------------------------------------------

    def admit(self, index: int, ip: str):
        """The module accepted a client from ``ip`` on socket ``index`` (claimed for this server
        by its desk): forward it or refuse it -> the handler of the socket's events now."""
        if not self._allowed(ip):
            return self.refuse(index, ip, "allow", "not in allow")
        if len(self.clients) >= self.server.max_clients:
            return self.refuse(index, ip, "max_clients",
                               f"{len(self.clients)} clients already (max_clients)")
        self.modem.counters.incr("server_accepted", server=self.server.name)
        return self.forwarding(self, index, ip).socket

    def _allowed(self, ip: str) -> bool:
        if not self.server.allow:
            return True
        try:
            address = ipaddress.IPv4Address(ip)
        except ValueError:
            return False
        return any(address in network for network in self.server.allow)

    def refuse(self, index: int, ip: str, cause: str, why: str, claimed: bool = True):
        """Close the server-side socket ``index`` at once; give the index back once it is closed
        (unless it is a client link's) -> the handler of the socket's events meanwhile."""
        self.modem.counters.incr("server_refused", server=self.server.name, cause=cause)
        self.log.warn("[{label}] refused {ip} on socket {index}: {why}", label=self.label, ip=ip,
                      index=index, why=why)
        if not self.modem.mux:  # its CONNECT puts the UART in data mode: the session's close
            session = TransparentSession(self.modem, index, ModuleAddress("TCP", ip, 0),
                                         self.modem.socket_settings(), self.context, True)
            session.discard()
            return session
        refused = _Refused()
        if claimed:
            self.modem.attach_socket(index, refused, self.context)
        close = commands.qiclose(index, self.modem.timeouts.qiclose)
        closing = self.modem.issue(close.addressing(self._server_side()))
        closing.addErrback(lambda failure: self.log.info(
            "[{label}] closing refused socket {index}: {why}", label=self.label, index=index,
            why=failure.getErrorMessage()))
        if claimed:
            closing.addBoth(lambda _: self._refused_closed(index))
        return refused

    def _refused_closed(self, index: int) -> None:
        self.modem.detach_socket(index)
        self.modem.sockets.release(index)

    def ended(self, forwarding: Forwarding) -> None:
        self.clients.pop(forwarding.index, None)

    # -- ending links at a stop (bridge.shutdown) -------------------------------------------------

    def _spliced(self) -> list:
        return [forwarding for forwarding in self.clients.values()
                if isinstance(forwarding, StreamForwarding) and forwarding.local.module is not None]

    @property
    def sockets(self) -> list:
        """The module sockets of tcp clients spliced with their local service."""
        return [forwarding.socket for forwarding in self._spliced()]

    def finish_links(self) -> int:
        """End every spliced tcp client gracefully (:meth:`LocalSide.finish`) -> how many."""
        links = self._spliced()
        for forwarding in links:
            forwarding.local.finish()
        return len(links)

    def abort_links(self) -> int:
        """Close the spliced tcp clients still open -> how many."""
        links = self._spliced()
        for forwarding in links:
            forwarding.close()
        return len(links)


class _Refused:
    """The handler of a refused client's socket until its AT+QICLOSE is answered: what the
    client sent meanwhile (pushed, or announced) was never accepted, and goes nowhere."""

    server = True

    def socket_event(self, event) -> None:
        """Dropped on purpose: the refusal is logged once."""

    def modem_down(self, reason: str) -> None:
        """The socket is gone with the rest; the close answer releases the index."""


class StreamForwarding(Forwarding):
    """One accepted tcp client and its connection to the local service: the admission of that
    connection's :class:`~bridge.proxy.splice.LocalSide`."""

    @staticmethod
    def local_endpoint(reactor, forward):
        return HostnameEndpoint(reactor, forward.host, forward.port)

    def __init__(self, server: ModuleServer, index: int, ip: str) -> None:
        super().__init__(server, index, ip)
        self.ledger = server.ledger
        modem = server.modem
        transport = ModuleSocket if modem.mux else TransparentSession
        self.socket = transport(modem, index, self.peer, modem.socket_settings(),
                                context=server.context, server=True)
        self.local = LocalSide(self)
        self.module = ModuleSide(self.local)
        if server.tls is None:
            self.socket.makeConnection(self.module)
            self._reach_local()
            return
        # The local service is reached once the client's handshake is done.
        links = TLSLinkFactory(server.tls, False, Factory.forProtocol(lambda: self.module),
                               server.server.tls_timeout, server.reactor, server.label)
        link = links.buildProtocol(self.peer)
        self.socket.makeConnection(link)
        link.secured.addCallbacks(lambda _: self._reach_local(), self._handshake_failed)

    def _reach_local(self) -> None:
        self.socket.pauseProducing()  # nothing is read until the local service answers
        factory = Factory.forProtocol(lambda: self.local)
        factory.noisy = False  # the accept and the close are logged, one line each
        connecting = self.local.connecting = self.server.endpoint.connect(factory)
        connecting.addErrback(self._local_failed)

    def _handshake_failed(self, failure) -> None:
        """Counted and logged; the TLS layer has closed the module socket."""
        self.server.modem.counters.incr("server_refused", server=self.name, cause="tls")
        self.log.warn("[{label}] client {ip} on socket {index}: {why}; closing the client",
                      label=self.server.label, ip=self.ip, index=self.index,
                      why=failure.getErrorMessage())

    def close(self) -> None:
        if self.local.connecting is not None:
            self.local.connecting.cancel()
        self.socket.abortConnection()

    def arrived(self, local: LocalSide) -> None:
        """The local service accepted the connection: splice, and start reading the module."""
        self.forwarded()
        local.spliced(self.module)
        self.socket.resumeProducing()

    def link_client(self, local: LocalSide) -> str:
        """The module-side client, as the link's close line names it."""
        return self.ip

    def _local_failed(self, failure) -> None:
        self.local.connecting = None
        if not failure.check(CancelledError):
            self.ledger.closed(self.local.link, CONNECT_FAILED)
        if self.module.gone is not None:  # it ended first, its bytes waiting for this connect
            if not failure.check(CancelledError):
                self.unreachable(failure.getErrorMessage())
            self.ended(self.module.gone)
            return
        if failure.check(CancelledError):
            return  # the module-side client went away first
        self.unreachable(failure.getErrorMessage())
        self.socket.abortConnection()

    def ended(self, socket) -> None:
        """The module socket stopped carrying (its ModuleSide was told, the ledger counted it)."""
        self.server.ended(self)


#: The forwarding of a client, by the server's protocol.
FORWARDINGS = {"tcp": StreamForwarding, "udp": DatagramForwarding}
