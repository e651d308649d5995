"""One connected module socket (AT+QIOPEN=n) as a Twisted transport, producer and consumer.

Its protocol sees what any TCP protocol sees: ``dataReceived``, then ``connectionLost`` with
``ConnectionDone`` for a clean close and :class:`SocketLost`, a ``ConnectionLost`` (the reason
in its message, the cause in ``cause``), when bytes may have been lost: a dead link, SEND FAIL
past its retries, a modem that went down.

Uplink: ``write`` fills a buffer that leaves in chunks of at most 1460 bytes, each its own
fixed-length ``AT+QISEND=n,len`` (so 0x1A/0x1B are plain bytes), while the bytes sent but not yet
acked stay within the send window (:mod:`bridge.modem.acks`); ``send_window = 0`` is
stop-and-wait. ``SEND FAIL`` backs off and retries the very same bytes. A registered producer is
paused above ``high_water`` buffered bytes and resumed at ``low_water``.

Downlink: in pull mode (``+QIRDI`` + ``AT+QIRD``, app note §5.3.2) the socket reads only while its
consumer has not paused it, so a slow reader slows the remote sender. In push mode
(``+RECEIVE``) nothing can slow the sender: bytes delivered while paused are counted, and past
``push_limit`` the socket fails rather than buffer without bound.

Close (the module cannot half-close a socket): ``loseConnection`` sends what is buffered, waits
(bounded by ``ack_wait``) until it is acked, then AT+QICLOSE. ``loseWriteConnection`` does the same,
but then lingers: the remote's reply still flows until the remote closes or nothing moved for
``linger`` seconds (sooner, after a short idle moment, when another connection waits for a socket);
a write meanwhile is still carried (the socket is not really half-closed) and the linger starts
again once it is acked.
A linger never outlives ``linger`` while the module holds bytes a paused reader cannot take: those
would be lost, so the socket fails. ``n, CLOSED`` drains every buffered byte to the protocol,
then closes cleanly, unless sent bytes are not known to be acked: one AT+QISACK decides (a peer
that closes with our bytes unread has not got them). The index is released only after the close
answer, so no tail of this stream can reach the next user of the same index.

Liveness: every SEND OK feeds the app note's QISACK schedule and idle sockets are probed or
checked with AT+QISTATE (:mod:`bridge.modem.liveness`).
"""

import enum
from dataclasses import dataclass
from functools import partial, wraps
from typing import Optional

from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IAddress, IConsumer, IPushProducer, ITransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from bridge.at import commands
from bridge.at.commands import MAX_READ, MAX_SEND, ReadResult, SendResult
from bridge.at.errors import ATError, CommandTimeout
from bridge.at.events import Closed, DataAvailable, Received, RemoteIp, StreamCorrupt
from bridge.keepalive import KeepaliveTimings
from bridge.modem.acks import AckTracker
from bridge.modem.liveness import LinkLiveness
from bridge.modem.pump import BulkJob

#: A lingering socket idle this long gives its index to a connection waiting for one.
RECLAIM_IDLE = 0.2
#: Why a client socket ends when a server's client is put on its index in push mode (the modem
#: hands it the ``RemoteIp``): ``+RECEIVE: n`` names no side, its bytes could be either's.
INDEX_SHARED = ("a module-side server's client was put on this socket's index, and pushed "
                "+RECEIVE names no side: its bytes could not be told from this link's")


class SocketLost(ConnectionLost):
    """ConnectionLost naming its cause (``link_dead``'s, or ``modem_down``), for a layer that
    decides by it: a persistent link reopens after a dead link, not after a corrupt stream
    (:mod:`bridge.modem.persistent`)."""

    def __init__(self, reason: str, cause: str) -> None:
        super().__init__(reason)
        self.cause = cause


def _called_by_protocol(method):
    """Marks a transport method the protocol calls: a close it causes reaches the protocol's
    ``connectionLost`` on the next reactor turn, as with Twisted's own transports, never from
    inside the call. TLSMemoryBIOProtocol drops its TLS state in ``connectionLost`` and then goes
    on using it (e.g. ``loseConnection`` on close_notify inside its ``dataReceived``)."""

    @wraps(method)
    def call(self, *args):
        self._protocol_calls += 1
        try:
            return method(self, *args)
        finally:
            self._protocol_calls -= 1

    return call


@dataclass(frozen=True)
class SocketSettings:
    """Tuning of one socket; the defaults are the documented behaviour.

    :ivar window: bytes sent but unacked allowed (``send_window``); 0 = stop-and-wait
    :ivar linger: seconds without traffic after ``loseWriteConnection`` before AT+QICLOSE
    :ivar high_water / low_water: buffered uplink bytes at which the producer pauses / resumes
    :ivar push_limit: push mode: bytes delivered to a paused consumer before the socket fails
    :ivar ack_wait: after the last write, how long to wait for every sent byte to be acked
    :ivar send_retries / send_backoff: SEND FAIL retries of the same chunk, first delay (doubling)
    :ivar ack_poll_min / ack_poll_max: bounds of the delay between window AT+QISACKs
    :ivar ack_poll_stall: the longest delay between them while the acked count does not move
    :ivar keepalive: the modem's ``keepalive_*`` timings
    :ivar probe: bytes sent on an idle socket (profile ``probe``); empty = check AT+QISTATE
    """

    window: int = 5840
    linger: float = 2.0
    chunk: int = MAX_SEND
    read_size: int = MAX_READ
    high_water: int = 16384
    low_water: int = 4096
    push_limit: int = 262144
    ack_wait: float = 30.0
    send_retries: int = 6
    send_backoff: float = 0.1
    ack_poll_min: float = 0.01
    ack_poll_max: float = 0.5
    ack_poll_stall: float = 2.0
    keepalive: KeepaliveTimings = KeepaliveTimings()
    probe: bytes = b""


class Phase(enum.Enum):
    CONNECTED = "connected"  # both ways
    FLUSHING = "flushing"  # no more writes: sending the buffer, then waiting for its acks
    LINGERING = "lingering"  # all sent and acked after loseWriteConnection: still receiving
    DRAINING = "draining"  # the remote closed: taking what the module still holds
    CLOSING = "closing"  # AT+QICLOSE issued; the protocol has been told
    CLOSED = "closed"  # index released


_NEXT = {
    Phase.CONNECTED: {Phase.FLUSHING, Phase.DRAINING, Phase.CLOSING, Phase.CLOSED},
    Phase.FLUSHING: {Phase.LINGERING, Phase.DRAINING, Phase.CLOSING, Phase.CLOSED},
    Phase.LINGERING: {Phase.FLUSHING, Phase.DRAINING, Phase.CLOSING, Phase.CLOSED},
    Phase.DRAINING: {Phase.CLOSING, Phase.CLOSED},
    Phase.CLOSING: {Phase.CLOSED},
    Phase.CLOSED: set(),
}


@implementer(IAddress)
@dataclass(frozen=True)
class ModuleAddress:
    """One end of a module socket: ``modem`` names the modem, ``slot`` its index; the peer end
    carries the remote's ``host`` and ``port`` as given to AT+QIOPEN."""

    type: str
    host: str
    port: int
    modem: str = ""
    slot: Optional[int] = None


class AddressedSocket:
    """A transport on one module socket index: its peer, PDP context and side, and its commands
    addressed to them.

    :param modem: the Modem (``selection``, ``local_ip``, ``name``)
    :param slot: the module socket index
    :param peer: the remote (``ModuleAddress``)
    :param context: the PDP context it lives on (AT+QIFGCNT id, app note §7)
    :param server: accepted by a module-side server (AT+QISRVC=2 sockets, app note §3.4)
    """

    def __init__(self, modem, slot: int, peer: ModuleAddress, context: int, server: bool) -> None:
        self.modem = modem
        self.slot = slot
        self.peer = peer
        self.context = context
        self.server = server

    def addressed(self, command):
        """``command`` to be written once the module's choice of context and side is this
        socket's. Asked of the modem for each command: it may start serving, or use the second
        context, after this socket opened."""
        return command.addressing(self.modem.selection(self.context, self.server))

    def getPeer(self) -> ModuleAddress:
        return self.peer

    def getHost(self) -> ModuleAddress:
        return ModuleAddress(self.peer.type, self.modem.local_ip or "", 0, self.modem.name,
                             self.slot)


class StreamSocket(AddressedSocket):
    """What the stream transports share (a module socket, a transparent session: app note
    §4): their tuning, their protocol, and giving a linger up for a connection that waits for
    the module's socket (:class:`~bridge.modem.pool.SocketPool` calls ``reclaim``)."""

    def __init__(self, modem, slot: int, peer: ModuleAddress, settings: SocketSettings,
                 context: int, server: bool) -> None:
        super().__init__(modem, slot, peer, context, server)
        self.clock = modem.reactor
        self.settings = settings
        self.protocol = None
        self.opened_at = self._last_traffic = self.clock.seconds()
        self._reclaim = None

    @property
    def lingering(self) -> bool:
        """Half-closed by the local side, waiting for the remote's reply."""
        raise NotImplementedError

    def reclaim(self) -> None:
        """Somebody waits for a socket: close once idle for ``RECLAIM_IDLE``, as a linger end."""
        if not self.lingering or self._reclaim is not None:
            return
        idle = self.clock.seconds() - self._last_traffic
        self._reclaim = self.clock.callLater(max(0.0, RECLAIM_IDLE - idle), self._reclaim_due)

    def _reclaim_due(self) -> None:
        self._reclaim = None
        if not self.lingering or not self.modem.sockets.wanted_by_waiter(self.slot):
            return
        if self._module_holds_bytes():
            # Not idle. Look again later; for a paused reader the linger end decides.
            self._reclaim = self.clock.callLater(RECLAIM_IDLE, self._reclaim_due)
            return
        if self.clock.seconds() - self._last_traffic < RECLAIM_IDLE:
            self.reclaim()  # traffic came meanwhile: idle again first
            return
        self.log.info("{socket!r}: lingering, idle {t:g} s and wanted by a waiting connection; "
                      "closing early", socket=self, t=RECLAIM_IDLE)
        self.modem.sockets.reclaiming(self.slot)
        self._close_gracefully()

    def _module_holds_bytes(self) -> bool:
        """The module holds bytes for us that are on their way (a read in flight or due)."""
        return False

    def ages(self) -> dict:
        """Seconds since it opened (``age``) and since it last carried a byte (``idle``)."""
        now = self.clock.seconds()
        return {"age": now - self.opened_at, "idle": now - self._last_traffic}

    def _close_gracefully(self) -> None:
        raise NotImplementedError

    def _cancel(self, *names: str) -> None:
        """Cancel the timers held in these attributes."""
        for name in names:
            timer = getattr(self, name)
            if timer is not None and timer.active():
                timer.cancel()
            setattr(self, name, None)


@implementer(ITransport, IPushProducer, IConsumer)
class ModuleSocket(StreamSocket):
    """The transport of one connected module socket.

    :param modem: the Modem (``reactor``, ``pump``, ``issue``, ``sockets``, ``counters``,
        ``receive_mode``, ``selection``, ``timeouts``, ``query_stack``, ``attach_socket``,
        ``detach_socket``)
    :param slot: the module socket index, held by this socket until it is released; ``peer``,
        ``context``, ``server``: see :class:`AddressedSocket`
    """

    log = Logger()

    def __init__(self, modem, slot: int, peer: ModuleAddress, settings: SocketSettings,
                 context: int = 0, server: bool = False) -> None:
        super().__init__(modem, slot, peer, settings, context, server)
        self.phase = Phase.CONNECTED
        self._pull = modem.receive_mode == "pull"
        self._linger_after_flush = False
        self._farewell = False  # the protocol's last words are on their way (_close_gracefully)
        self.bytes_down = 0  # delivered to the protocol
        self.consumer_pauses = 0  # times the consumer paused us
        self.peak_held = 0  # most bytes ever held (uplink buffer + downlink delivered while paused)
        self._uplink = bytearray()
        self._sending = False
        self._reading = False
        self._want_read = False  # the module said it holds bytes for us (+QIRDI, CLOSED)
        self._announced = 0  # +QIRDI seen so far
        self._announced_at_read = 0  # of those, seen when the AT+QIRD in flight went out
        self._turn_read = False  # alternate send/read when both are wanted
        self._paused = False  # our consumer paused us
        self._held = 0  # bytes delivered since our consumer paused us
        self._producer = None  # the producer that writes to us (paused above high water)
        self._producer_paused = False
        self._send_failures = 0
        self._in_doubt = False  # an ERROR waits for the modem to trace a +PDP DEACT
        self.remote_closed = False  # `n, CLOSED` came: whatever ends the socket, the remote did
        self._protocol_calls = 0  # depth of protocol calls into us (see _called_by_protocol)
        self._telling = False  # the protocol's connectionLost is due or running
        self._backoff = None
        self._acks_deadline = None
        self._linger = None
        self.acks = AckTracker(self.clock, self._ask_acks, self._ack_deficit, self._acks_answered,
                               settings, f"socket {slot}")
        self._liveness = LinkLiveness(self.clock, slot, settings.keepalive, settings.probe,
                                      self.acks.query, partial(modem.query_stack, context),
                                      self._send_probe,
                                      self._fail)

    def __repr__(self) -> str:
        return f"<ModuleSocket {self.slot} {self.peer.host}:{self.peer.port} {self.phase.value}>"

    # -- set-up -----------------------------------------------------------------------------------

    def makeConnection(self, protocol) -> None:
        """Attach ``protocol`` and start carrying (the endpoint calls this on CONNECT OK)."""
        self.protocol = protocol
        self.modem.attach_socket(self.slot, self, self.context)
        self.modem.pump.add(self)
        self._liveness.opened()
        protocol.makeConnection(self)
        self.modem.pump.kick()

    @property
    def acknowledged(self) -> int:
        """Bytes of the stream written to this socket that the remote has acknowledged, as of
        the last AT+QISACK answer (a profile's probe bytes count too)."""
        return self.acks.acked

    # -- ITransport -------------------------------------------------------------------------------

    @_called_by_protocol
    def write(self, data: bytes) -> None:
        if not data:
            return
        if self.phase is Phase.LINGERING:
            # The module cannot half-close, so a lingering socket can still carry: a protocol
            # layered on it (TLS answering a renegotiation) may have to write. Flush, then linger
            # again.
            self._stop_lingering()
        if not (self.phase is Phase.CONNECTED
                or (self.phase is Phase.FLUSHING and self._linger_after_flush)):
            if not self._telling:  # else dropped, as a TCP transport drops writes after an
                # abortConnection or inside connectionLost (a TLS layer sends its alert there)
                self._refuse_write(len(data))
            return
        self._uplink += data
        self._note_held()
        if (self._producer is not None and not self._producer_paused
                and len(self._uplink) >= self.settings.high_water):
            self._producer_paused = True
            self._producer.pauseProducing()
        self.modem.pump.kick()

    def writeSequence(self, data) -> None:
        self.write(b"".join(data))

    @_called_by_protocol
    def loseWriteConnection(self) -> None:
        """Half-close: send the rest, wait until it is acked, then linger for the reply."""
        if self.phase is Phase.CONNECTED:
            self._linger_after_flush = True
            self._to(Phase.FLUSHING)
            self._after_uplink_progress()

    @_called_by_protocol
    def loseConnection(self) -> None:
        """Send the rest, wait until it is acked, then AT+QICLOSE."""
        if self.phase is Phase.CONNECTED:
            self._to(Phase.FLUSHING)
        if self.phase is Phase.FLUSHING:
            self._linger_after_flush = False
            self._after_uplink_progress()
        elif self.phase is Phase.LINGERING:
            self._close_gracefully()
        elif self.phase is Phase.DRAINING:
            self._close_socket(Failure(ConnectionDone()))

    @_called_by_protocol
    def abortConnection(self) -> None:
        """AT+QICLOSE now; bytes not yet sent are dropped, the protocol hears ConnectionAborted."""
        if self.phase not in (Phase.CLOSING, Phase.CLOSED):
            self._close_socket(Failure(ConnectionAborted()))

    # -- IConsumer --------------------------------------------------------------------------------

    def registerProducer(self, producer, streaming: bool) -> None:
        if not streaming:
            raise ValueError("a module socket takes push producers only")
        if self._producer is not None:
            raise RuntimeError(f"{self!r} already has a producer: {self._producer!r}")
        self._producer = producer
        self._producer_paused = False

    def unregisterProducer(self) -> None:
        self._producer = None

    # -- IPushProducer ----------------------------------------------------------------------------

    def pauseProducing(self) -> None:
        self._paused = True
        self.consumer_pauses += 1

    def resumeProducing(self) -> None:
        self._paused = False
        self._held = 0
        self.modem.pump.kick()

    def stopProducing(self) -> None:
        """Our consumer is going away: finish sending and close."""
        self.loseConnection()

    # -- module events ----------------------------------------------------------------------------

    def socket_event(self, event) -> None:
        """URCs naming this socket (routed by the Modem)."""
        if isinstance(event, DataAvailable):
            self._announced += 1
            self._want_read = True
            self.modem.pump.kick()
        elif isinstance(event, Received):
            self._deliver(event.data)
        elif isinstance(event, Closed):
            self._remote_closed()
        elif isinstance(event, StreamCorrupt):
            self._fail("an AT+QISEND timed out: the module may have taken resync bytes as payload",
                       "stream_corrupt")
        elif isinstance(event, RemoteIp):
            self._fail(INDEX_SHARED, "index_shared")

    def modem_down(self, reason: str) -> None:
        """PDP lost, reboot or port lost: the module's sockets are gone, this one too."""
        if self.phase in (Phase.CLOSING, Phase.CLOSED):
            return
        if self._farewell:
            self._farewell_undelivered(f"modem down ({reason})")
            told = Failure(ConnectionDone())
        else:
            self.log.warn("socket {slot}: modem down ({reason})", slot=self.slot, reason=reason)
            told = Failure(SocketLost(f"modem down: {reason}", "modem_down"))
        self._to(Phase.CLOSING)  # a write from the protocol's connectionLost is not carried
        self._stop()
        self._tell_protocol(told)
        self._release()

    # -- bulk work offered to the pump ------------------------------------------------------------

    def next_bulk(self) -> Optional[BulkJob]:
        if self.phase in (Phase.CLOSING, Phase.CLOSED) or self._in_doubt:
            return None
        send, read = self._can_send(), self._can_read()
        if send and read:
            self._turn_read = not self._turn_read
            send = not self._turn_read
        if send:
            return self._send_job()
        if read:
            self._reading = True
            self._announced_at_read = self._announced
            t = self.modem.timeouts
            return BulkJob(commands.qird(self.settings.read_size, self.slot, self.context,
                                         self.server, timeout=t.qird), self._read_done)
        return None

    def _can_read(self) -> bool:
        return (self._pull and self._want_read and not self._paused and not self._reading
                and not (self.phase is Phase.FLUSHING and not self._linger_after_flush))

    def _can_send(self) -> bool:
        """Uplink bytes wait and the window has room; a full window asks for acks."""
        if not self._uplink or self._backoff is not None or self._sending:
            return False
        if self.phase not in (Phase.CONNECTED, Phase.FLUSHING):
            return False
        if self._window_allows(min(len(self._uplink), self.settings.chunk)):
            return True
        self.acks.learn()
        return False

    def _window_allows(self, size: int) -> bool:
        if self.settings.window == 0:
            return self.acks.unacked == 0
        return self.acks.unacked + size <= self.settings.window

    # -- uplink -----------------------------------------------------------------------------------

    def _send_job(self) -> BulkJob:
        chunk = bytes(self._uplink[:self.settings.chunk])
        self._sending = True
        t = self.modem.timeouts
        command = commands.qisend(chunk, self.slot, timeout=t.send, prompt_timeout=t.prompt)
        return BulkJob(self.addressed(command), partial(self._sent, size=len(chunk)))

    def _sent(self, result, size: int) -> None:
        self._sending = False
        if self.phase in (Phase.CLOSING, Phase.CLOSED):
            return
        if isinstance(result, Failure):
            self._fail_unless_context_lost(f"AT+QISEND failed: {result.getErrorMessage()}",
                                           "send_error")
            return
        if not isinstance(result, SendResult) or not result.ok:
            self._send_failed()
            return
        self._send_failures = 0
        del self._uplink[:size]
        self.acks.sent += size
        self._traffic()
        self._liveness.data_sent()
        if (self._producer_paused and self._producer is not None
                and len(self._uplink) <= self.settings.low_water):
            self._producer_paused = False
            self._producer.resumeProducing()
        self._after_uplink_progress()

    def _send_failed(self) -> None:
        """SEND FAIL: the module's buffer is full; the same bytes go again after a pause."""
        self._send_failures += 1
        if self._send_failures > self.settings.send_retries:
            self._fail(f"SEND FAIL {self._send_failures} times in a row", "send_fail")
            return
        delay = self.settings.send_backoff * 2 ** (self._send_failures - 1)
        self.log.info("socket {slot}: SEND FAIL; retrying the same {size} bytes in {delay:.2f} s",
                      slot=self.slot, size=min(len(self._uplink), self.settings.chunk),
                      delay=delay)
        self._backoff = self.clock.callLater(delay, self._retry)

    def _retry(self) -> None:
        self._backoff = None
        self.acks.learn()
        self.modem.pump.kick()

    def _ask_acks(self):
        command = commands.qisack(self.slot, timeout=self.modem.timeouts.qisack)
        return self.modem.issue(self.addressed(command))

    def _acks_answered(self) -> None:
        if self.phase not in (Phase.CLOSING, Phase.CLOSED):
            self._after_uplink_progress()
            self.modem.pump.kick()

    def _ack_deficit(self) -> int:
        """Bytes that must still be acked before the socket can go on (0 = none)."""
        if self.phase in (Phase.CLOSING, Phase.CLOSED):
            return 0
        if self._uplink:
            size = min(len(self._uplink), self.settings.chunk)
            if self._window_allows(size):
                return 0
            return max(self.acks.unacked + size - self.settings.window, 1)
        if self._acks_deadline is not None:
            return self.acks.unacked
        return 0

    def _after_uplink_progress(self) -> None:
        """Flushing: once all is sent, wait for the acks, then linger or close."""
        if self.phase is not Phase.FLUSHING or self._uplink or self._sending:
            return
        if self.acks.unacked > 0:
            if self._acks_deadline is None:
                self._acks_deadline = self.clock.callLater(self.settings.ack_wait,
                                                           self._acks_overdue)
                self.acks.learn()
            return
        self._cancel("_acks_deadline")
        if self._linger_after_flush:
            self._to(Phase.LINGERING)
            self._linger = self.clock.callLater(self.settings.linger, self._linger_over)
            self.modem.sockets.add_reclaimable(self)
        else:
            self._close_gracefully()

    def _acks_overdue(self) -> None:
        """The remote never acked the tail: a clean close would say it was delivered."""
        self._acks_deadline = None
        self._fail(f"{self.acks.unacked} bytes still unacked {self.settings.ack_wait:g} s after "
                   "the last write", "acks_overdue")

    # -- lingering --------------------------------------------------------------------------------

    def _linger_over(self) -> None:
        self._linger = None
        if (self._reading or (self._want_read and not self._paused)
                or (self.phase is Phase.DRAINING and not self._want_read)):
            # A read is in flight or due (its bytes are traffic), or the drain after a remote
            # close ends by itself: the linger starts again.
            self._linger = self.clock.callLater(self.settings.linger, self._linger_over)
            return
        if self._want_read:
            self._fail(f"no traffic for {self.settings.linger:g} s after the local EOF while "
                       "the module holds bytes the paused local reader has not taken",
                       "linger_unread")
            return
        self.log.info("socket {slot}: no traffic for {t:g} s after the local EOF; closing",
                      slot=self.slot, t=self.settings.linger)
        self._close_gracefully()

    def _close_gracefully(self) -> None:
        """Everything written is sent and acked (or a linger is over): close. A protocol that
        ends its stream with bytes of its own (TLS's close_notify, :mod:`bridge.tls.link`) has
        its ``lastWords()`` sent first. They are a farewell, not payload: what the application
        wrote is all delivered, so if the farewell cannot be (the remote closed meanwhile, the
        link died), the close stays clean."""
        last_words = getattr(self.protocol, "lastWords", None)
        words = last_words() if last_words is not None and not self._farewell else b""
        if not words:
            self._close_socket(Failure(ConnectionDone()))
            return
        self._farewell = True
        self._linger_after_flush = False
        if self.phase is Phase.LINGERING:
            self._stop_lingering()
        self._uplink += words
        self.modem.pump.kick()

    def _stop_lingering(self) -> None:
        """Back to flushing: the linger, and any reclaim of this socket, are off."""
        self._cancel("_linger", "_reclaim")
        self.modem.sockets.remove_reclaimable(self)
        self._to(Phase.FLUSHING)

    @property
    def lingering(self) -> bool:
        return self.phase is Phase.LINGERING

    def _module_holds_bytes(self) -> bool:
        """A read in flight, due, or waiting for a paused reader (pull mode)."""
        return self._reading or self._want_read

    def _traffic(self) -> None:
        self._last_traffic = self.clock.seconds()
        if self._linger is not None:
            self._linger.reset(self.settings.linger)

    # -- downlink ---------------------------------------------------------------------------------

    def _read_done(self, result) -> None:
        self._reading = False
        if self.phase in (Phase.CLOSING, Phase.CLOSED):
            return
        if isinstance(result, Failure):
            if result.check(ATError) and self.phase is Phase.DRAINING:
                self._want_read = False  # ERROR after `n, CLOSED`: the socket is gone, drained
                self._drained()
            elif result.check(ATError):
                self._fail_unless_context_lost("AT+QIRD answered ERROR but the remote close was "
                                               "never reported: received bytes may be lost",
                                               "read_error")
            elif result.check(CommandTimeout):  # no payload was written: the uplink is intact
                self._fail(f"AT+QIRD failed: {result.getErrorMessage()}", "read_timeout")
            else:
                self._fail(f"AT+QIRD failed: {result.getErrorMessage()}", "read_error")
            return
        if isinstance(result, ReadResult) and result.data:
            self._deliver(result.data)
            return
        if self._announced != self._announced_at_read:
            # A +QIRDI came while this read was out (URCs arrive anywhere, docs/at-dialect.md
            # §8.1): the empty answer may predate the bytes it announced.
            self.modem.pump.kick()
            return
        self._want_read = False
        if self.phase is Phase.DRAINING:
            self._drained()

    def _deliver(self, data: bytes) -> None:
        if self.phase in (Phase.CLOSING, Phase.CLOSED):
            return
        self.bytes_down += len(data)
        self._traffic()
        self._liveness.data_received()
        try:
            self.protocol.dataReceived(data)
        except Exception:
            failure = Failure()
            self.log.failure("socket {slot}: the protocol failed on received bytes; closing",
                             failure, slot=self.slot)
            if self.phase not in (Phase.CLOSING, Phase.CLOSED):
                self._close_socket(failure)
            return
        if not self._paused:
            return
        self._held += len(data)
        self._note_held()
        if not self._pull and self._held > self.settings.push_limit:
            self._fail(f"push mode: the reader is too slow ({self._held} bytes waiting beyond "
                       "its buffer); failing rather than buffering without bound",
                       "slow_local_reader")

    def _remote_closed(self) -> None:
        if self.phase not in (Phase.CONNECTED, Phase.FLUSHING, Phase.LINGERING):
            return
        self.log.info("socket {slot}: remote closed", slot=self.slot)
        self.remote_closed = True
        reading = self._pull and not (self.phase is Phase.FLUSHING
                                      and not self._linger_after_flush)
        # A linger goes on bounding a paused reader (see _linger_over); a reclaim stops, and so
        # does the keepalive: the link is ending, not dead (an AT+QISTATE answer saying
        # "CLOSED" now must not call it dead and drop the remote's last bytes).
        self._liveness.stop()
        self._cancel("_reclaim", "_acks_deadline")
        self.modem.sockets.remove_reclaimable(self)
        self._to(Phase.DRAINING)
        if reading:
            self._want_read = True
            self.modem.pump.kick()
        else:
            self._drained()

    def _drained(self) -> None:
        """The remote closed and every byte it sent is delivered: a clean close, unless some of
        ours may not have reached it (then one AT+QISACK decides)."""
        if self._farewell:  # all of ours was acked before it (see _close_gracefully)
            self._close_socket(Failure(ConnectionDone()))
        elif self._uplink or self._sending:
            self._fail(f"the remote closed with {len(self._uplink)} bytes still unsent",
                       "unsent_at_remote_close")
        elif self.acks.unacked > 0:
            # A peer closing with our bytes unread sends RST, not FIN: a clean close would say
            # the tail was delivered. Known-acked (the common case) costs no query.
            self.acks.query().addBoth(self._acks_at_remote_close)
        else:
            self._close_socket(Failure(ConnectionDone()))

    def _acks_at_remote_close(self, result) -> None:
        """The one AT+QISACK after the drain: all acked -> clean close, else fail."""
        if self.phase is not Phase.DRAINING:
            return
        if isinstance(result, Failure):
            self._fail(f"the remote closed with {self.acks.unacked} sent bytes not known to be "
                       f"acked (AT+QISACK failed: {result.getErrorMessage()})",
                       "unacked_at_remote_close")
        elif self.acks.unacked > 0:
            self._fail(f"the remote closed with {self.acks.unacked} sent bytes unacked",
                       "unacked_at_remote_close")
        else:
            self._close_socket(Failure(ConnectionDone()))

    def _note_held(self) -> None:
        self.peak_held = max(self.peak_held, len(self._uplink) + self._held)

    # -- ending -----------------------------------------------------------------------------------

    def _send_probe(self, data: bytes) -> None:
        """The idle probe goes out like written bytes, unless the uplink is busy or finished."""
        if self.phase is Phase.CONNECTED and not self._uplink:
            self._uplink += data
            self.modem.pump.kick()

    def _refuse_write(self, size: int) -> None:
        """A write after loseConnection/loseWriteConnection or the remote's close cannot be
        carried: the protocol must learn that its bytes were not delivered."""
        self._fail(f"{size} bytes written after the stream stopped carrying "
                   f"({self.phase.value})", "late_write")

    def _fail_unless_context_lost(self, reason: str, cause: str) -> None:
        """An ERROR while the modem traces a ``+PDP DEACT`` to its context may be this socket's
        context going: nothing more is sent or read until that is decided, then the socket
        either went down with it (``modem_down``) or fails as usual."""
        doubt = self.modem.context_doubt()
        if doubt is None:
            self._fail(reason, cause)
            return
        self._in_doubt = True
        doubt.addCallback(lambda _: self._fail(reason, cause))

    def _fail(self, reason: str, cause: str) -> None:
        """Bytes may be lost: one line, ``link_dead{cause}``, ConnectionLost, AT+QICLOSE."""
        if self.phase in (Phase.CLOSING, Phase.CLOSED):
            return
        if self._farewell:
            self._farewell_undelivered(reason)
            self._close_socket(Failure(ConnectionDone()))
            return
        self.log.warn("socket {slot} to {host}:{port} is dead: {reason}", slot=self.slot,
                      host=self.peer.host, port=self.peer.port, reason=reason)
        self.modem.counters.incr("link_dead", cause=cause)
        self._close_socket(Failure(SocketLost(reason, cause)))

    def _farewell_undelivered(self, why: str) -> None:
        """Only the protocol's last words are at stake, all payload was acked: a clean end."""
        self.log.info("socket {slot}: closing without its farewell delivered: {why}",
                      slot=self.slot, why=why)

    def _close_socket(self, reason: Failure) -> None:
        """AT+QICLOSE=n (after a remote close it may answer ERROR too), and tell the protocol."""
        self._to(Phase.CLOSING)
        self._stop()
        command = commands.qiclose(self.slot, timeout=self.modem.timeouts.qiclose)
        self.modem.issue(self.addressed(command)).addBoth(self._socket_closed)
        self._tell_protocol(reason)

    def _socket_closed(self, result) -> None:
        if isinstance(result, Failure) and not result.check(ATError):
            self.log.warn("socket {slot}: AT+QICLOSE failed: {why}", slot=self.slot,
                          why=result.getErrorMessage())
        self._release()

    def _release(self) -> None:
        if self.phase is Phase.CLOSED:
            return
        self._to(Phase.CLOSED)
        self._stop()
        self._uplink.clear()
        self.modem.detach_socket(self.slot)
        self.modem.sockets.release(self.slot)

    def _tell_protocol(self, reason: Failure) -> None:
        protocol, self.protocol = self.protocol, None
        self._producer = None
        if protocol is None:
            return
        self._telling = True
        if self._protocol_calls:
            self.clock.callLater(0, self._told, protocol, reason)
        else:
            self._told(protocol, reason)

    def _told(self, protocol, reason: Failure) -> None:
        try:
            protocol.connectionLost(reason)
        except Exception:
            self.log.failure("socket {slot}: the protocol's connectionLost failed", slot=self.slot)
        finally:
            self._telling = False

    def _stop(self) -> None:
        self.modem.pump.remove(self)
        self.modem.sockets.remove_reclaimable(self)
        self.acks.stop()
        self._liveness.stop()
        self._cancel("_backoff", "_acks_deadline", "_linger", "_reclaim")

    def _to(self, phase: Phase) -> None:
        if phase not in _NEXT[self.phase]:
            raise AssertionError(f"socket {self.slot}: {self.phase.value} -> {phase.value}")
        self.phase = phase

    # -- diagnostics ------------------------------------------------------------------------------

    def stats(self) -> dict:
        """What this socket holds in memory and has carried."""
        return {"slot": self.slot, "state": self.phase.value, "uplink_buffered": len(self._uplink),
                "downlink_held": self._held, "sent": self.acks.sent,
                "unacked": self.acks.unacked, "received": self.bytes_down,
                "local_paused": self._paused, "reading_paused": self._producer_paused,
                "peak_held": self.peak_held, "local_pauses": self.consumer_pauses, **self.ages()}
