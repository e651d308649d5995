"""A udp server's module-side peer forwarded to the local service (``forward = udp:ADDR:PORT``).

The module makes each peer (address, port) that sends to its UDP listening port a server socket
of its own, announced by ``n, REMOTE IP: ip`` at its first datagram (app note §3.2, §3.4). That
socket becomes a server-side :class:`~bridge.modem.datagram.ModuleDatagramSocket` (AT+QISRVC=2
before AT+QISEND, one AT+QISEND per datagram to that peer; pushed ``+RECEIVE`` one per datagram
from it), and the peer gets a local UDP socket of its own, connected to the local service: the
peer's datagrams go out of it, and the service's replies to it go back to that peer alone.
Boundaries are kept both ways.

A peer silent both ways for the server's ``udp_idle`` seconds is forgotten: its module socket is
closed (AT+QISRVC=2, AT+QICLOSE=n) and its local socket released; the module announces it anew
at its next datagram. Drops are the module socket's (``too_large``, ``uplink_full``,
``send_failed``, ``unsent``: see :mod:`bridge.modem.datagram`) and the local socket's
(``local_send_failed``: the local kernel refused a datagram; ``local_refused``: the local service
is not there, ICMP port unreachable); all counted by cause when the peer ends.
"""

import collections
import ipaddress

from twisted.internet.error import CannotListenError, MessageLengthError
from twisted.internet.protocol import DatagramProtocol

from bridge.modem.datagram import TOO_LARGE, DatagramSettings, ModuleDatagramSocket
from bridge.proxy.accounting import CONNECT_FAILED, IDLE, LOCAL, close_cause
from bridge.proxy.datagram import LOCAL_SEND_FAILED, drops_text
from bridge.proxy.forwarding import Forwarding

LOCAL_REFUSED = "local_refused"


class LocalDatagramEndpoint:
    """The local service of a udp server: ``open(protocol)`` binds a fresh local UDP socket for
    one peer, connected to the service (so that only its replies come in) -> the port."""

    def __init__(self, reactor, host: str, port: int) -> None:
        self.reactor = reactor
        self.host, self.port = host, port
        # Loopback service, loopback socket; another address: the kernel's source on connect.
        self.interface = "127.0.0.1" if ipaddress.IPv4Address(host).is_loopback else ""

    def open(self, protocol):
        port = self.reactor.listenUDP(0, protocol, interface=self.interface)
        port.connect(self.host, self.port)
        return port


class DatagramForwarding(Forwarding):
    """One module-side UDP peer: its module socket and its local socket."""

    @staticmethod
    def local_endpoint(reactor, forward) -> LocalDatagramEndpoint:
        return LocalDatagramEndpoint(reactor, forward.host, forward.port)

    def __init__(self, server, index: int, ip: str) -> None:
        super().__init__(server, index, ip)
        self.over = False
        self.idle = server.server.udp_idle
        self.drops = collections.Counter()  # the local socket's, by cause
        self.local = None
        self.opened = self.client = self.cause = None  # its server's ledger's: one of its links
        self._idle = server.reactor.callLater(self.idle, self._idle_over)
        self.socket = ModuleDatagramSocket(server.modem, index, self.peer, DatagramSettings(),
                                           context=server.context, server=True)
        self.socket.makeConnection(_Side(self, self.from_peer))
        server.ledger.opened(self, ip)
        try:
            self.local = server.endpoint.open(_Side(self, self.from_service))
        except (CannotListenError, OSError) as error:
            self.unreachable(f"no local socket: {error}")
            self.end("no local socket", CONNECT_FAILED)
            return
        self.forwarded()

    @property
    def uplink(self) -> int:
        """Bytes to the peer (out through the module)."""
        return self.socket.counts["bytes_up"]

    @property
    def downlink(self) -> int:
        """Bytes from the peer."""
        return self.socket.counts["bytes_down"]

    # -- datagrams --------------------------------------------------------------------------------

    def from_peer(self, datagram: bytes) -> None:
        """A datagram from the module-side peer: to the local service."""
        self._idle.reset(self.idle)
        try:
            self.local.write(datagram)
        except (OSError, MessageLengthError):
            self.drops[LOCAL_SEND_FAILED] += 1

    def from_service(self, datagram: bytes) -> None:
        """A reply of the local service: to the peer (the module socket counts its drops; the
        first one too large for an AT+QISEND is logged, once per peer)."""
        self._idle.reset(self.idle)
        if len(datagram) > self.socket.settings.largest and not self.socket.drops[TOO_LARGE]:
            self.log.warn("[{label}] a {size}-byte reply to {ip} on socket {index} is larger "
                          "than one AT+QISEND carries ({largest}): dropped, never split (later "
                          "ones are only counted)", label=self.server.label, size=len(datagram),
                          ip=self.ip, index=self.index, largest=self.socket.settings.largest)
        self.socket.write(datagram)

    # -- ending -----------------------------------------------------------------------------------

    def close(self) -> None:
        self.end("the server stopped", LOCAL)

    def _idle_over(self) -> None:
        self.end(f"idle {self.idle:g} s", IDLE)

    def end(self, why: str, cause: str) -> None:
        """Close the module socket (if it still carries) and the local socket; count (``cause``
        and bytes in the server's ledger), log once."""
        if self.over:
            return
        self.over = True
        if self._idle.active():
            self._idle.cancel()
        self.socket.loseConnection()
        if self.local is not None:
            self.local.stopListening()
        self.server.ledger.closed(self, cause, log=False)
        drops = self.socket.drops + self.drops
        for dropped_for, count in drops.items():
            self.server.modem.counters.incr("server_datagrams_dropped", count, server=self.name,
                                            cause=dropped_for)
        counts = self.socket.counts
        self.finished(f"{why}; {counts['datagrams_down']} datagrams from it, "
                      f"{counts['datagrams_up']} to it, dropped: {drops_text(drops)}")


class _Side(DatagramProtocol):
    """Either socket of a peer's forwarding, its module socket or its local socket: what
    arrives goes to ``arrived``."""

    noisy = False  # the peer's start and end are logged, one line each

    def __init__(self, forwarding: DatagramForwarding, arrived) -> None:
        self.forwarding = forwarding
        self.arrived = arrived

    def datagramReceived(self, datagram: bytes, addr) -> None:
        self.arrived(datagram)

    def connectionLost(self, reason) -> None:
        """The module socket's end (a local UDP port has none)."""
        self.forwarding.end(f"module socket lost: {reason.getErrorMessage()}",
                            close_cause(reason, False))

    def connectionRefused(self) -> None:
        """The local socket's: ICMP port unreachable from the local service."""
        self.forwarding.drops[LOCAL_REFUSED] += 1
