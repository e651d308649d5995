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
        self.listener = None  # (proto, max clients, twisted port)
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

    def forget(self, sock: SimSocket) -> None:
        """Free a slot after the module reported it closed (single link only)."""
        self.slots.pop((sock.server, sock.index), None)
        self.link_closed = True

    # -- server ---------------------------------------------------------------------------------

    def listen(self, proto: str, max_clients: int) -> bool:
        if self.listener is not None or proto != "TCP":
            return False
        try:
            port = self._reactor.listenTCP(self.lports["TCP"], _Acceptor(self), interface="127.0.0.1")
        except Exception:
            self.log.failure("QISERVER listen failed")
            return False
        self.listener = (proto, max_clients, port)
        return True

    @property
    def listen_port(self):
        return self.listener[2].getHost().port if self.listener else None

    def close_listener(self) -> bool:
        if self.listener is None:
            return False
        self.listener[2].stopListening()
        self.listener = None
        return True

    def accept(self, addr):
        """A host client connected to the listener: a server socket, or None to refuse."""
        if self.listener is None:
            return None
        servers = [key for key in self.slots if key[0]]
        if len(servers) >= self.listener[1]:
            return None
        index = next((i for i in range(SLOTS if self.mux else 1) if (True, i) not in self.slots
                      and (not self.mux or (False, i) not in self.slots)), None)
        if index is None:
            return None
        sock = SimSocket(self._reactor, index, True, "TCP", (addr.host, addr.port), self._options,
                         self._events, self.cid)
        self.slots[(True, index)] = sock
        return HostStream(sock)

    def describe_sockets(self) -> dict:
        out = {}
        for (server, index), sock in sorted(self.slots.items()):
            key = "server" if server and not self.mux else str(index)
            out[key] = sock.describe()
        return out


class _Acceptor(protocol.ServerFactory):
    """Listener factory of AT+QISERVER: each accepted host connection becomes a server socket."""

    noisy = False

    def __init__(self, context: Context):
        self._context = context

    def buildProtocol(self, addr):
        return self._context.accept(addr)
