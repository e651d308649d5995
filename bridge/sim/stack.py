"""One PDP context of the module's TCP/IP stack: state machine, socket slots, listener.

States follow the app note (section 5.6): IP INITIAL -> IP START (QIREGAPP) -> IP CONFIG /
IP IND (QIACT) -> IP GPRSACT -> IP STATUS (QILOCIP); single-link adds TCP/UDP CONNECTING,
CONNECT OK and IP CLOSE; multi-link reports IP PROCESSING while sockets exist; PDP DEACT after
the network dropped the context.  Socket slots are shared by client and server connections
(a slot is (server?, index)); in multi-link mode an index is never used by both kinds at once.
"""

from twisted.internet import defer, protocol, task
from twisted.logger import Logger

from .sockets import HostDatagram, HostStream, HostStreamFactory, SimSocket

SLOTS = 6
ACTIVE = ("IP GPRSACT", "IP STATUS")
LIVE = ("CONNECTING", "CONNECTED")  #: socket states of a link that is not over


class Context:
    """PDP context `cid` (AT+QIFGCNT id).

    @param reactor: IReactorTCP + IReactorUDP + IReactorTime.
    @param cid: 0 or 1.
    @param options: SimOptions.
    @param events: socket event receiver (the dialect).
    """

    log = Logger()

    def __init__(self, reactor, cid: int, options, events):
        self.cid = cid
        self.bearer, self.apn, self.user, self.password = 1, "CMNET", "", ""
        self.state = "IP INITIAL"
        self.mux = 0
        self.mode = 0
        self.local_ip = f"10.{100 + cid}.0.2"
        self.link_closed = False  # single link: report IP CLOSE
        self.slots = {}
        self.listeners = {}  # proto -> (max clients, listening port)
        self.lports = {"TCP": 2020, "UDP": 3030}
        self.sibling = None  # the module's other context
        self._reactor = reactor
        self._options = options
        self._events = events
        self._activation = None

    # -- state ----------------------------------------------------------------------------------

    @property
    def reported_state(self) -> str:
        if self.state != "IP STATUS":
            return self.state
        if self.mux:
            return "IP PROCESSING" if self.slots else "IP STATUS"
        sock = self.slots.get((False, 0)) or self.slots.get((True, 0))
        if sock is None:
            return "IP CLOSE" if self.link_closed else "IP STATUS"
        if sock.state == "CONNECTING":
            return f"{sock.proto} CONNECTING"
        return "CONNECT OK" if sock.state == "CONNECTED" else "IP CLOSE"

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def register_app(self) -> bool:
        if self.state != "IP INITIAL":
            return False
        self.state = "IP START"
        return True

    def activate(self, attached: bool):
        """AT+QIACT from IP START: a Deferred firing True (active) or False (failed)."""
        if self.state != "IP START" or not attached or self._transparent_clash():
            return defer.succeed(False)
        self.state = "IP CONFIG"
        self._reactor.callLater(self._options.act_delay / 2, self._indicating)
        self._activation = task.deferLater(self._reactor, self._options.act_delay, self._activated)
        return self._activation

    def _transparent_clash(self) -> bool:
        """Two contexts up on one UART exclude transparent mode (app note §7.2)."""
        other = self.sibling
        in_use = other is not None and other.state not in ("IP INITIAL", "IP START", "PDP DEACT")
        return in_use and bool(self.mode or other.mode)

    def _indicating(self):
        if self.state == "IP CONFIG":
            self.state = "IP IND"

    def _activated(self):
        self._activation = None
        if self.state not in ("IP CONFIG", "IP IND"):
            return False
        self.state = "IP GPRSACT"
        return True

    def bring_up(self, attached: bool):
        """Implicit activation by QIOPEN / QISERVER / QIDNSGIP; fires True when usable."""
        if self.active:
            return defer.succeed(True)
        if self.state == "IP INITIAL":
            self.register_app()
        if self.state != "IP START":
            return defer.succeed(False)

        def usable(ok):
            if ok:
                self.state = "IP STATUS"
            return ok

        return self.activate(attached).addCallback(usable)

    def show_ip(self) -> bool:
        """AT+QILOCIP: GPRSACT -> STATUS; False when there is no address to show."""
        if self.state == "IP GPRSACT":
            self.state = "IP STATUS"
        return self.state == "IP STATUS"

    def deactivate(self) -> None:
        """AT+QIDEACT: everything closed, back to IP INITIAL."""
        self._drop_all()
        self.state = "IP INITIAL"

    def lost(self) -> bool:
        """Network dropped the context; True if there was one to lose."""
        had = self.state not in ("IP INITIAL", "IP START", "PDP DEACT")
        self._drop_all()
        if had:
            self.state = "PDP DEACT"
        return had

    def _drop_all(self) -> None:
        if self._activation is not None:
            self._activation.cancel()
            self._activation = None
        for sock in list(self.slots.values()):
            sock.abort()
        self.slots.clear()
        self.close_listener()
        self.link_closed = False

    # -- sockets --------------------------------------------------------------------------------

    def socket(self, server: bool, index: int):
        return self.slots.get((server, index))

    def transparent_link(self):
        """In transparent mode the one link (app note §4), client or server-accepted, a live
        one before one that is over; None in normal mode or without a link."""
        if self.mode != 1:
            return None
        socks = [s for s in (self.socket(False, 0), self.socket(True, 0)) if s is not None]
        return next((s for s in socks if s.state in LIVE), socks[0] if socks else None)

    def index_free(self, index: int) -> bool:
        if self.mux:
            return (False, index) not in self.slots and (True, index) not in self.slots
        return (False, index) not in self.slots

    def reserve(self, index: int, proto: str, host: str, port: int) -> SimSocket:
        """Take slot `index` for a client connection that is about to be opened."""
        sock = SimSocket(self._reactor, index, False, proto, (host, port), self._options,
                         self._events, self.cid)
        self.slots[(False, index)] = sock
        self.link_closed = False
        return sock

    def connect(self, sock: SimSocket, ip: str) -> None:
        """Open the host socket behind a reserved slot."""
        port = sock.remote[1]
        sock.remote = (ip, port)
        if sock.proto == "TCP":
            self._reactor.connectTCP(ip, port, HostStreamFactory(sock), self._options.connect_timeout)
        else:
            interface = "127.0.0.1" if ip.startswith("127.") else ""
            self._reactor.listenUDP(0, HostDatagram(sock), interface=interface)

    def close(self, sock: SimSocket) -> None:
        """Local close of a slot (graceful)."""
        self.slots.pop((sock.server, sock.index), None)
        sock.close()
        if not self.mux:
            self.link_closed = True

    # -- server ---------------------------------------------------------------------------------

    def listen(self, proto: str, max_clients: int) -> bool:
        """AT+QISERVER: listen on the QILPORT of ``proto`` (one listener per protocol)."""
        if proto in self.listeners:
            return False
        port = self.lports[proto]
        try:
            if proto == "TCP":
                listening = self._reactor.listenTCP(port, _Acceptor(self), interface="127.0.0.1")
            else:
                listening = self._reactor.listenUDP(port, _DatagramAcceptor(self),
                                                    interface="127.0.0.1")
        except Exception:
            self.log.failure("QISERVER listen failed")
            return False
        self.listeners[proto] = (max_clients, listening)
        return True

    def listen_port(self, proto: str = "TCP"):
        listener = self.listeners.get(proto)
        return listener[1].getHost().port if listener else None

    def close_listener(self) -> bool:
        """AT+QICLOSE on the server side without an index: every listener goes, and with a UDP
        listener the peers it carried (they have no host socket of their own)."""
        if not self.listeners:
            return False
        for proto, (_, listening) in self.listeners.items():
            listening.stopListening()
        self.listeners.clear()
        for key, sock in list(self.slots.items()):
            if key[0] and sock.proto == "UDP":
                self.close(sock)
        return True

    def _server_slot(self, proto: str):
        """The index for a new server socket of ``proto``, or None (max clients, or all taken).

        A single link's server socket that is over (closed, told, drained) is replaced by the
        next client, as a new QIOPEN replaces a single link that is over; transparent mode takes
        no client while a link lives (one link only, app note §4).
        """
        listener = self.listeners.get(proto)
        if listener is None:
            return None
        if self.mode == 1 and any(sock.state in LIVE for sock in self.slots.values()):
            return None
        if not self.mux:
            held = self.socket(True, 0)
            over = held is None or (held.state == "CLOSED" and held.close_reported and not held.rx)
            return 0 if over else None
        servers = [sock for key, sock in self.slots.items() if key[0] and sock.proto == proto]
        if len(servers) >= listener[0]:
            return None
        return next((i for i in range(SLOTS) if (True, i) not in self.slots
                     and (False, i) not in self.slots), None)

    def _new_server_socket(self, index: int, proto: str, remote) -> SimSocket:
        sock = SimSocket(self._reactor, index, True, proto, remote, self._options, self._events,
                         self.cid)
        self.slots[(True, index)] = sock
        return sock

    def accept(self, addr):
        """A host client connected to the TCP listener: a server socket, or None to refuse."""
        index = self._server_slot("TCP")
        if index is None:
            return None
        return HostStream(self._new_server_socket(index, "TCP", (addr.host, addr.port)))

    def datagram(self, data: bytes, addr, port) -> None:
        """A datagram on the UDP listener: the peer's server socket gets it; a new peer becomes
        one (announced by REMOTE IP only now, app note §3.2), or is dropped past max clients."""
        sock = next((sock for key, sock in self.slots.items()
                     if key[0] and sock.proto == "UDP" and sock.remote == addr), None)
        if sock is None:
            index = self._server_slot("UDP")
            if index is None:
                return
            sock = self._new_server_socket(index, "UDP", addr)
            sock.attach(_PeerWire(port, addr))
        sock.from_host(data)

    def describe_sockets(self) -> dict:
        out = {}
        for (server, index), sock in sorted(self.slots.items()):
            key = "server" if server and not self.mux else str(index)
            out[key] = sock.describe()
        return out


class _DatagramAcceptor(protocol.DatagramProtocol):
    """The UDP listener of AT+QISERVER=1: each peer (address, port) is one server socket."""

    noisy = False

    def __init__(self, context: Context):
        self._context = context

    def datagramReceived(self, data, addr):
        self._context.datagram(data, addr, self.transport)


class _PeerWire:
    """The host side of a UDP server socket: the listener's port, writing to one peer."""

    def __init__(self, port, addr):
        self._port, self._addr = port, addr

    def write(self, data: bytes) -> None:
        self._port.write(data, self._addr)

    def stopListening(self) -> None:
        """The port is the listener's: closing one peer's socket leaves it open."""


class _Acceptor(protocol.ServerFactory):
    """Listener factory of AT+QISERVER: each accepted host connection becomes a server socket."""

    noisy = False

    def __init__(self, context: Context):
        self._context = context

    def buildProtocol(self, addr):
        return self._context.accept(addr)
