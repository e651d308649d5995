"""One module UDP socket (AT+QIOPEN=n,"UDP",host,port) as a connected datagram transport.

Connected in Twisted's sense (``listenUDP`` then ``transport.connect(host, port)``): ``write``
takes a datagram and no address, the protocol (a ``DatagramProtocol``) gets
``datagramReceived(data, (host, port))`` from that one peer, and ``loseConnection()`` ends it.

Boundaries are kept both ways. Uplink: each datagram is ONE fixed-length ``AT+QISEND=n,len``
(so 0x1A/0x1B are plain bytes), issued through the modem's bulk pump; a datagram larger than one
AT+QISEND carries (1460 bytes, app note §5.2) is dropped, never split, since a split datagram
arrives as two. UDP has no acks (AT+QISACK's acked is always 0, app note §5.2.2): no window, no
QISACK, no keepalive. ``SEND FAIL`` or ``ERROR`` loses that one datagram, counted, and the next
goes on. The datagrams waiting for the module are bounded in bytes (``queue_bytes``); past it the
newest is dropped.

Downlink: pushed ``+RECEIVE: n, len`` frames are one datagram each (app note §5.3.1). A
``+QIRDI`` is read with AT+QIRD and each answer delivered as one datagram (the simulator returns
one datagram per read, its choice 27); pull mode is not chosen for udp, since a plain AT+QIRD may
return several buffered datagrams at once (app note §5.3.2), but a stray ``+QIRDI`` is served.

Every datagram handed to ``write`` is counted once: sent (``datagrams_up``, on SEND OK) or
dropped by cause in :meth:`stats`, including the one on the wire when the socket ends (its
outcome still comes, even after a close or a modem that went down). The protocol hears
``connectionLost(reason)`` (if it has one) then ``stopProtocol`` once, when the socket stops
carrying for any reason, and no sooner than that datagram's outcome: the counts it reads then are
final.
"""

import collections
from dataclasses import dataclass
from typing import Optional

from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.logger import Logger
from twisted.python.failure import Failure

from bridge.at import commands
from bridge.at.commands import MAX_READ, MAX_SEND, ReadResult, SendResult
from bridge.at.errors import ATError
from bridge.at.events import Closed, DataAvailable, Received, RemoteIp, StreamCorrupt
from bridge.modem.endpoint import ModuleEndpoint
from bridge.modem.pool import SLOTS
from bridge.modem.pump import BulkJob
from bridge.modem.socket import INDEX_SHARED, AddressedSocket, ModuleAddress, SocketSettings

#: Drop causes counted by a datagram socket.
TOO_LARGE = "too_large"  # more than one AT+QISEND carries
UPLINK_FULL = "uplink_full"  # queue_bytes already wait for the module
SEND_FAILED = "send_failed"  # SEND FAIL or ERROR for that datagram
UNSENT = "unsent"  # still queued when the socket ended, or written after


@dataclass(frozen=True)
class DatagramSettings:
    """:ivar queue_bytes: datagram bytes that may wait for the module (a tcp link's high water)
    :ivar largest: the largest datagram one AT+QISEND carries"""

    queue_bytes: int = SocketSettings.high_water
    largest: int = MAX_SEND


class ModemDatagramEndpoint(ModuleEndpoint):
    """UDP to ``host``:``port`` through ``modem``: ``connect(protocol)`` -> Deferred(protocol)
    once ``n, CONNECT OK`` came, its transport a :class:`ModuleDatagramSocket`."""

    proto = "UDP"

    def __init__(self, modem, host: str, port: int,
                 settings: DatagramSettings = DatagramSettings(), group: str = "",
                 limit: int = SLOTS, wait: Optional[float] = None, context: int = 0) -> None:
        super().__init__(modem, host, port, settings, group, limit, wait, context)

    @staticmethod
    def transport_type(modem, slot, address, settings, context):
        return ModuleDatagramSocket(modem, slot, address, settings, context)

    def connect(self, protocol):
        return self.open(lambda address: protocol)


class ModuleDatagramSocket(AddressedSocket):
    """The transport of one open module UDP socket.

    :param modem: the Modem (``reactor``, ``pump``, ``issue``, ``sockets``, ``selection``,
        ``timeouts``, ``attach_socket``, ``detach_socket``)
    :param slot: the module socket index, held until it is released (once); ``peer``,
        ``context``, ``server``: see :class:`~bridge.modem.socket.AddressedSocket`
    """

    log = Logger()

    def __init__(self, modem, slot: int, peer: ModuleAddress, settings: DatagramSettings,
                 context: int = 0, server: bool = False) -> None:
        super().__init__(modem, slot, peer, context, server)
        self.settings = settings
        self.protocol = None
        self.open = False
        self.released = False
        self._queue = collections.deque()
        self._queued_bytes = 0
        self._sending = False
        self._reading = False
        self._want_read = False  # a +QIRDI came: read until the empty answer
        self._announced = 0
        self._announced_at_read = 0
        self._turn_read = False
        self._ending: Optional[Failure] = None  # why, while the datagram on the wire decides
        self.counts = collections.Counter()  # datagrams_up, bytes_up, datagrams_down, bytes_down
        self.drops = collections.Counter()  # cause -> datagrams

    def __repr__(self) -> str:
        return f"<ModuleDatagramSocket {self.slot} {self.peer.host}:{self.peer.port}>"

    # -- set-up -----------------------------------------------------------------------------------

    def makeConnection(self, protocol) -> None:
        """Attach ``protocol`` (the endpoint calls this on CONNECT OK)."""
        self.protocol = protocol
        self.open = True
        self.modem.attach_socket(self.slot, self, self.context)
        self.modem.pump.add(self)
        protocol.makeConnection(self)

    # -- the transport ----------------------------------------------------------------------------

    def write(self, datagram: bytes, addr=None) -> None:
        """Queue one datagram for the peer (``addr``, if given, must be the peer)."""
        if addr is not None and tuple(addr) != (self.peer.host, self.peer.port):
            raise ValueError(f"{self!r} is connected to {self.peer.host}:{self.peer.port}, "
                             f"not {addr}")
        if not self.open:
            self.drops[UNSENT] += 1
            return
        if len(datagram) > self.settings.largest:
            self.drops[TOO_LARGE] += 1
            return
        if not datagram:
            return  # AT+QISEND cannot send zero bytes
        if self._queued_bytes + len(datagram) > self.settings.queue_bytes:
            self.drops[UPLINK_FULL] += 1
            return
        self._queue.append(bytes(datagram))
        self._queued_bytes += len(datagram)
        self.modem.pump.kick()

    def loseConnection(self) -> None:
        """AT+QICLOSE; datagrams not yet sent are dropped (``unsent``)."""
        self._close(Failure(ConnectionDone()))

    def abortConnection(self) -> None:
        self._close(Failure(ConnectionAborted()))

    stopListening = loseConnection

    # -- module events ----------------------------------------------------------------------------

    def socket_event(self, event) -> None:
        """URCs naming this socket (routed by the Modem)."""
        if isinstance(event, Received):
            self._deliver(event.data)
        elif isinstance(event, DataAvailable):
            self._announced += 1
            self._want_read = True
            self.modem.pump.kick()
        elif isinstance(event, Closed):
            self._close(Failure(ConnectionLost("the module reported the socket closed")))
        elif isinstance(event, StreamCorrupt):
            self._close(Failure(ConnectionLost("an AT+QISEND timed out: the module may have "
                                               "taken resync bytes as a datagram")))
        elif isinstance(event, RemoteIp):
            self._close(Failure(ConnectionLost(INDEX_SHARED)))

    def modem_down(self, reason: str) -> None:
        """PDP lost, reboot or port lost: the module's sockets are gone, this one too."""
        if not self.open:
            return
        self._stop()
        self._release()
        self._tell(Failure(ConnectionLost(f"modem down: {reason}")))

    # -- bulk work offered to the pump ------------------------------------------------------------

    def next_bulk(self) -> Optional[BulkJob]:
        if not self.open or self._sending or self._reading:
            return None
        send, read = bool(self._queue), self._want_read
        if send and read:
            self._turn_read = not self._turn_read
            send = not self._turn_read
        t = self.modem.timeouts
        if send:
            datagram = self._queue.popleft()
            self._queued_bytes -= len(datagram)
            self._sending = True
            command = commands.qisend(datagram, self.slot, timeout=t.send, prompt_timeout=t.prompt)
            return BulkJob(self.addressed(command),
                           lambda result: self._sent(result, len(datagram)))
        if read:
            self._reading = True
            self._announced_at_read = self._announced
            return BulkJob(commands.qird(MAX_READ, self.slot, self.context, self.server,
                                         timeout=t.qird), self._read_done)
        return None

    def _sent(self, result, size: int) -> None:
        """Counted whether or not the socket still carries: the loss account must add up."""
        self._sending = False
        if isinstance(result, SendResult) and result.ok:
            self.counts["datagrams_up"] += 1
            self.counts["bytes_up"] += size
        else:
            why = result.getErrorMessage() if isinstance(result, Failure) else "SEND FAIL"
            if isinstance(result, Failure) and not result.check(ATError):
                self.log.info("socket {slot}: AT+QISEND failed: {why}", slot=self.slot, why=why)
            self.drops[SEND_FAILED] += 1
        if self._ending is not None:
            reason, self._ending = self._ending, None
            self._tell(reason)

    def _read_done(self, result) -> None:
        self._reading = False
        if not self.open:
            return
        if isinstance(result, ReadResult) and result.data:
            self._deliver(result.data)
            self.modem.pump.kick()
            return
        if isinstance(result, Failure):
            self.log.info("socket {slot}: AT+QIRD failed: {why}", slot=self.slot,
                          why=result.getErrorMessage())
        elif self._announced != self._announced_at_read:
            self.modem.pump.kick()  # a +QIRDI came during the read (docs/at-dialect.md §8.1)
            return
        self._want_read = False

    def _deliver(self, datagram: bytes) -> None:
        if not self.open:
            return
        self.counts["datagrams_down"] += 1
        self.counts["bytes_down"] += len(datagram)
        try:
            self.protocol.datagramReceived(datagram, (self.peer.host, self.peer.port))
        except Exception:
            self.log.failure("socket {slot}: the protocol failed on a datagram", slot=self.slot)

    # -- ending -----------------------------------------------------------------------------------

    def _close(self, reason: Failure) -> None:
        """AT+QICLOSE=n (ERROR accepted: the socket may be gone already), then the index is
        released; the protocol is told at once."""
        if not self.open:
            return
        self._stop()
        command = commands.qiclose(self.slot, timeout=self.modem.timeouts.qiclose)
        closing = self.modem.issue(self.addressed(command))
        closing.addErrback(self._close_failed)
        closing.addBoth(lambda _: self._release())
        self._tell(reason)

    def _close_failed(self, failure) -> None:
        if not failure.check(ATError):
            self.log.warn("socket {slot}: AT+QICLOSE failed: {why}", slot=self.slot,
                          why=failure.getErrorMessage())

    def _stop(self) -> None:
        self.open = False
        self.modem.pump.remove(self)
        if self._queue:
            self.drops[UNSENT] += len(self._queue)
        self._queue.clear()
        self._queued_bytes = 0

    def _release(self) -> None:
        if self.released:
            return
        self.released = True
        self.modem.detach_socket(self.slot)
        self.modem.sockets.release(self.slot)

    def _tell(self, reason: Failure) -> None:
        """The protocol hears the end, once the datagram on the wire (if any) has its outcome."""
        if self._sending:
            self._ending = reason
            return
        protocol, self.protocol = self.protocol, None
        if protocol is None:
            return
        try:
            lost = getattr(protocol, "connectionLost", None)
            if lost is not None:
                lost(reason)
        except Exception:
            self.log.failure("socket {slot}: the protocol's connectionLost failed", slot=self.slot)
        finally:
            protocol.doStop()

    # -- diagnostics ------------------------------------------------------------------------------

    def stats(self) -> dict:
        """Datagrams and bytes carried each way, drops by cause, datagrams still queued."""
        return {"slot": self.slot, "open": self.open, **self.counts, "drops": dict(self.drops),
                "queued": len(self._queue), "queued_bytes": self._queued_bytes}
