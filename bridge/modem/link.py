"""One module socket (AT+QIOPEN=n) carrying one local TCP connection, both ways, never dropping.

Uplink: local bytes wait in a buffer and leave in chunks of at most 1460 bytes, each its own
fixed-length ``AT+QISEND=n,len`` (so 0x1A/0x1B are plain bytes), while the bytes sent but not yet
acked stay within the send window. Acks are learned with ``AT+QISACK=n`` only when the window would
block, so an unhindered stream costs one QISACK per window, not one per chunk; while blocked, the
next query is timed from the ack rate seen so far. ``send_window = 0`` is stop-and-wait (one chunk,
then wait for unacked = 0), kept for comparison. ``SEND FAIL`` backs off and retries the very
same bytes; past the retry bound the link is dead and the local side is reset. Above a high-water
mark of buffered uplink bytes the local transport stops being read.

Downlink: in pull mode (``+QIRDI`` + ``AT+QIRD``) the link reads only while the local transport has
not paused it (the link is the transport's push producer), so a slow local reader slows the remote
sender. In push mode (``+RECEIVE``) nothing can slow the sender: bytes written while the local
transport is paused are counted, and past ``push_limit`` the local connection is aborted and
logged.

Liveness (TCP only): every SEND OK feeds the AT+QISACK keepalive schedule and idle links are
probed or checked with AT+QISTATE (:mod:`bridge.modem.liveness`). The window logic and that
schedule share one AT+QISACK=n at a time and both learn from every answer. A link found dead is
logged once with its cause, counted (``link_dead{cause}``), closed with AT+QICLOSE, and its local
connection is reset, never ended with a clean EOF: bytes were lost and the app must know.

Close: local EOF -> finish sending, wait (bounded) until everything is acked, keep delivering what
the remote sends, then ``AT+QICLOSE`` when the remote closes or after ``linger`` seconds without
traffic (postponed while the module may hold bytes the local side has not taken yet). Acks still
missing past the bound fail the link (reset): the app must not believe its tail was delivered.
``n, CLOSED`` -> drain every buffered byte to the local side, then EOF; an AT+QIRD ERROR is the
end of that drain, but without a ``CLOSED`` first it fails the link. If sent bytes are not known
to be acked at that point, one AT+QISACK asks first: still unacked (or no answer) fails the link,
since a peer that closes with unread data has not got the tail. Local bytes the link can no
longer carry reset the local side. The slot is released only after the socket is drained and
closed, so no tail of this stream can reach the next connection on the same slot.
"""

from dataclasses import dataclass
from functools import partial

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from bridge.at import commands
from bridge.at.commands import MAX_READ, MAX_SEND, ReadResult, SackResult, SendResult
from bridge.at.errors import ATError
from bridge.at.events import Closed, DataAvailable, Received, StreamCorrupt
from bridge.keepalive import KeepaliveTimings
from bridge.modem.liveness import LinkLiveness
from bridge.modem.pump import BulkJob


@dataclass(frozen=True)
class LinkSettings:
    """Tuning of one link; the defaults are the documented behaviour.

    :ivar window: bytes sent but unacked allowed (ModemConfig.send_window); 0 = stop-and-wait
    :ivar linger: seconds without traffic after local EOF before AT+QICLOSE (profile ``linger``)
    :ivar high_water / low_water: uplink bytes buffered at which local reading pauses / resumes
    :ivar push_limit: push mode: bytes written to a paused local transport before it is aborted
    :ivar ack_wait: after local EOF, how long to wait for every sent byte to be acked
    :ivar send_retries / send_backoff: SEND FAIL retries of the same chunk, first delay (doubling)
    :ivar ack_poll_min / ack_poll_max: bounds of the delay between AT+QISACK while blocked
    :ivar keepalive: the modem's ``keepalive_*`` timings
    :ivar probe: bytes sent on an idle link (profile ``probe``); empty = check AT+QISTATE instead
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
    keepalive: KeepaliveTimings = KeepaliveTimings()
    probe: bytes = b""


class _AckClock:
    """When to ask AT+QISACK again: the deficit divided by the ack rate seen so far."""

    def __init__(self, settings: LinkSettings) -> None:
        self._settings = settings
        self._rate = 0.0  # acked bytes per second, smoothed
        self._last = None  # (time, acked) of the previous answer

    def observe(self, now: float, acked: int) -> None:
        if self._last is not None and now > self._last[0]:
            sample = (acked - self._last[1]) / (now - self._last[0])
            self._rate = sample if self._rate == 0 else (self._rate + sample) / 2
        self._last = (now, acked)

    def delay(self, deficit: int) -> float:
        low, high = self._settings.ack_poll_min, self._settings.ack_poll_max
        if self._rate <= 0:
            return low
        return min(max(deficit / self._rate, low), high)


@implementer(IPushProducer)
class Link:
    """The bridge between one local transport and one module socket.

    :param clock: IReactorTime
    :param modem: the Modem (issue, attach_socket, open_socket, release_slot, receive_mode, context)
    :param pump: the modem's :class:`~bridge.modem.pump.Pump`
    :param slot: the module socket number the caller allocated
    :param remote: ``bridge.config.Remote`` (proto, host, port)
    :param transport: the local TCP transport (ITCPTransport)
    :param on_finished: ``on_finished(link)`` once the slot is released
    """

    log = Logger()

    def __init__(self, clock, modem, pump, slot: int, remote, transport, settings: LinkSettings,
                 on_finished=lambda link: None) -> None:
        self.clock = clock
        self.modem = modem
        self.pump = pump
        self.slot = slot
        self.remote = remote
        self.transport = transport
        self.settings = settings
        self._on_finished = on_finished
        self._pull = modem.receive_mode == "pull"
        self.state = "new"  # new -> opening -> open -> closing -> closed
        self.bytes_up = 0  # acknowledged by SEND OK
        self.bytes_down = 0  # written to the local transport
        self.local_pauses = 0  # times the local transport's write buffer filled up
        self.peak_held = 0  # most bytes this link ever held (uplink buffer + paused downlink)
        self._uplink = bytearray()
        self._sending = False
        self._acked = 0  # sent minus what QISACK last called unacked
        self._ack_query = None  # the AT+QISACK=n in flight, shared by _ack_waiters
        self._ack_waiters = []
        self._window_asking = False
        self._ack_timer = None
        self._ack_clock = _AckClock(settings)
        self._send_failures = 0
        self._backoff = None
        self._reading_paused = False  # we paused the local transport
        self._local_paused = False  # the local transport paused us
        self._held = 0  # downlink bytes written since the local transport paused us
        self._want_read = False
        self._turn_read = False  # alternate send/read when both are wanted
        self._local_eof = False
        self._local_gone = False
        self._remote_closed = False
        self._acks_deadline = None
        self._linger = None
        self._liveness = None

    def __repr__(self) -> str:
        return f"<Link {self.slot} {self.remote.host}:{self.remote.port} {self.state}>"

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Open the module socket; local bytes are buffered meanwhile."""
        self.state = "opening"
        self.transport.registerProducer(self, True)
        self.modem.attach_socket(self.slot, self)
        opened = self.modem.open_socket(self.slot, self.remote.proto, self.remote.host,
                                        self.remote.port)
        opened.addCallbacks(self._opened, self._open_failed)

    def _opened(self, _) -> None:
        if self.state != "opening":
            return
        self.state = "open"
        self.log.info("link {slot} open to {host}:{port}", slot=self.slot,
                      host=self.remote.host, port=self.remote.port)
        if self.remote.proto == "TCP":
            self._liveness = LinkLiveness(self.clock, self.slot, self.settings.keepalive,
                                          self.settings.probe, self._query_acks,
                                          self.modem.query_stack, self._send_probe, self._fail)
            self._liveness.opened()
        if self._local_gone and not self._uplink:
            self._close_socket()
            return
        self.pump.add(self)
        self._after_uplink_progress()  # the local side may have half-closed while we opened
        self.pump.kick()

    def _open_failed(self, failure: Failure) -> None:
        self.log.warn("link {slot}: connect to {host}:{port} failed: {reason}; resetting the "
                      "local connection", slot=self.slot, host=self.remote.host,
                      port=self.remote.port, reason=failure.getErrorMessage())
        self._abort_local()
        self._release()

    # -- the local side ---------------------------------------------------------------------------

    def local_data(self, data: bytes) -> None:
        if self.state not in ("opening", "open") or self._local_eof:
            self._refuse_local_bytes(len(data))
            return
        self._uplink += data
        self._note_held()
        if not self._reading_paused and len(self._uplink) >= self.settings.high_water:
            self._reading_paused = True
            self.transport.pauseProducing()
        self.pump.kick()

    def _refuse_local_bytes(self, size: int) -> None:
        """Bytes this link can no longer carry: the app must learn they were not delivered.

        A TCP transport stops reading once it is closed or aborted and sends nothing after its
        EOF, so this is a guard for transports that still deliver a buffered tail (a TLS
        wrapper), not a normal path."""
        self.log.warn("link {slot}: {n} local bytes arrived after the link stopped carrying "
                      "(state {state}, local EOF {eof}); resetting the local connection",
                      slot=self.slot, n=size, state=self.state, eof=self._local_eof)
        self._abort_local()

    def local_eof(self) -> None:
        """The local client half-closed: finish sending, then linger for the remote's reply."""
        self._local_eof = True
        self._after_uplink_progress()

    def local_lost(self) -> None:
        """The local connection is gone: finish sending what it sent, then close at once."""
        self._local_gone = True
        self._local_eof = True
        if self.state == "open":
            self._after_uplink_progress()

    def pauseProducing(self) -> None:
        self._local_paused = True
        self.local_pauses += 1

    def resumeProducing(self) -> None:
        self._local_paused = False
        self._held = 0
        self._want_read = self._pull  # a +QIRDI may have been passed over while paused
        self.pump.kick()

    def stopProducing(self) -> None:
        """The transport is going away; :meth:`local_lost` follows from the protocol."""

    # -- module events ----------------------------------------------------------------------------

    def socket_event(self, event) -> None:
        """URCs naming this socket (routed by the Modem)."""
        if isinstance(event, DataAvailable):
            self._want_read = True
            self.pump.kick()
        elif isinstance(event, Received):
            self._deliver(event.data)
        elif isinstance(event, Closed):
            self._remote_close()
        elif isinstance(event, StreamCorrupt):
            self._fail("an AT+QISEND timed out: the module may have taken resync bytes as payload",
                       "stream_corrupt")

    def modem_down(self, reason: str) -> None:
        """PDP lost, reboot or port lost: every socket is gone, so is this link."""
        if self.state in ("closing", "closed"):
            return
        self.log.warn("link {slot}: modem down ({reason}); resetting the local connection",
                      slot=self.slot, reason=reason)
        self._stop_timers()
        self._abort_local()
        self._release()

    # -- bulk work offered to the pump ------------------------------------------------------------

    def next_bulk(self):
        if self.state != "open":
            return None
        send, read = self._can_send(), self._can_read()
        if send and read:
            self._turn_read = not self._turn_read
            send = not self._turn_read
        if send:
            return self._send_job()
        if read:
            return BulkJob(commands.qird(self.settings.read_size, self.slot, self.modem.context),
                           self._read_done)
        return None

    def _can_read(self) -> bool:
        return self._pull and self._want_read and not self._local_paused and not self._local_gone

    def _can_send(self) -> bool:
        """Uplink bytes wait and the window has room; a full window starts an AT+QISACK."""
        if not self._uplink or self._backoff is not None:
            return False
        if self._window_allows(min(len(self._uplink), self.settings.chunk)):
            return True
        self._learn_acks()
        return False

    @property
    def unacked(self) -> int:
        return self.bytes_up - self._acked

    def _window_allows(self, size: int) -> bool:
        if self.settings.window == 0:
            return self.unacked == 0
        return self.unacked + size <= self.settings.window

    # -- uplink -----------------------------------------------------------------------------------

    def _send_job(self) -> BulkJob:
        chunk = bytes(self._uplink[:self.settings.chunk])
        self._sending = True
        return BulkJob(commands.qisend(chunk, self.slot), partial(self._sent, size=len(chunk)))

    def _sent(self, result, size: int) -> None:
        self._sending = False
        if self.state != "open":
            return
        if isinstance(result, Failure):
            self._fail(f"AT+QISEND failed: {result.getErrorMessage()}", "send_error")
            return
        if not isinstance(result, SendResult) or not result.ok:
            self._send_failed()
            return
        self._send_failures = 0
        del self._uplink[:size]
        self.bytes_up += size
        if self._liveness is not None:
            self._liveness.data_sent()
        if (self._reading_paused and not self._local_gone
                and len(self._uplink) <= self.settings.low_water):
            self._reading_paused = False
            self.transport.resumeProducing()
        self._after_uplink_progress()

    def _send_failed(self) -> None:
        """SEND FAIL: the module's buffer is full; the same bytes go again after a pause."""
        self._send_failures += 1
        if self._send_failures > self.settings.send_retries:
            self._fail(f"SEND FAIL {self._send_failures} times in a row", "send_fail")
            return
        delay = self.settings.send_backoff * 2 ** (self._send_failures - 1)
        self.log.info("link {slot}: SEND FAIL; retrying the same {size} bytes in {delay:.2f} s",
                      slot=self.slot, size=min(len(self._uplink), self.settings.chunk),
                      delay=delay)
        self._backoff = self.clock.callLater(delay, self._retry)

    def _retry(self) -> None:
        self._backoff = None
        self._learn_acks()
        self.pump.kick()

    def _query_acks(self) -> Deferred:
        """AT+QISACK=n -> SackResult, at most one in flight: a caller asking while one is out
        shares its answer (the window logic and the keepalive schedule never double the traffic).
        Every answer updates the acked count, whoever asked."""
        waiter = Deferred(self._forget_ack_waiter)
        self._ack_waiters.append(waiter)
        if self._ack_query is None:
            self._ack_query = self.modem.issue(commands.qisack(self.slot))
            self._ack_query.addBoth(self._acks_answered)
        return waiter

    def _acks_answered(self, result) -> None:
        self._ack_query = None
        if isinstance(result, SackResult) and self.state == "open":
            self._acked = self.bytes_up - min(result.unacked, self.bytes_up)
            self._ack_clock.observe(self.clock.seconds(), self._acked)
        window_asked = self._window_asking
        waiters, self._ack_waiters = self._ack_waiters, []
        for waiter in waiters:
            if waiter.called:
                continue  # cancelled by an earlier waiter's callback (the link died meanwhile)
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)
        if self.state == "open" and not window_asked:
            self._after_uplink_progress()  # a keepalive answer may unblock the window
            self.pump.kick()

    def _forget_ack_waiter(self, waiter: Deferred) -> None:
        """A cancelled waiter stops waiting; the query itself goes on for the others."""
        if waiter in self._ack_waiters:
            self._ack_waiters.remove(waiter)

    def _learn_acks(self) -> None:
        """The window logic wants fresh acks (window full, SEND FAIL, waiting after EOF)."""
        if self._window_asking or self._ack_timer is not None or self.state != "open":
            return
        self._window_asking = True
        self._query_acks().addBoth(self._acks_learned)

    def _acks_learned(self, result) -> None:
        self._window_asking = False
        if self.state != "open":
            return
        if not isinstance(result, SackResult):
            self.log.warn("link {slot}: AT+QISACK failed: {why}", slot=self.slot,
                          why=result.getErrorMessage() if isinstance(result, Failure) else result)
        deficit = self._ack_deficit()
        if deficit > 0:
            self._ack_timer = self.clock.callLater(self._ack_clock.delay(deficit), self._poll_acks)
        self._after_uplink_progress()
        self.pump.kick()

    def _poll_acks(self) -> None:
        self._ack_timer = None
        self._learn_acks()

    def _ack_deficit(self) -> int:
        """Bytes that must still be acked before the link can go on (0 = none)."""
        if self._uplink:
            size = min(len(self._uplink), self.settings.chunk)
            if self._window_allows(size):
                return 0
            return max(self.unacked + size - self.settings.window, 1)
        if self._acks_deadline is not None:
            return self.unacked
        return 0

    def _after_uplink_progress(self) -> None:
        """After local EOF: once all is sent, wait for the acks, then linger (or close)."""
        if self.state != "open" or not self._local_eof or self._uplink or self._sending:
            return
        if self.unacked > 0:
            if self._acks_deadline is None:
                self._acks_deadline = self.clock.callLater(self.settings.ack_wait,
                                                           self._acks_overdue)
                self._learn_acks()
            return
        self._uplink_finished()

    def _acks_overdue(self) -> None:
        """The remote never acked the tail: a clean close would tell the app it was delivered."""
        self._acks_deadline = None
        self._fail(f"{self.unacked} bytes still unacked {self.settings.ack_wait:g} s after "
                   "local EOF", "acks_overdue")

    def _uplink_finished(self) -> None:
        if self._acks_deadline is not None:
            self._acks_deadline.cancel()
            self._acks_deadline = None
        if self._local_gone:
            self._close_socket()
        elif not self._remote_closed and self._linger is None:
            # (After a remote close the drain under way ends the link: EOF, then AT+QICLOSE.)
            self._linger = self.clock.callLater(self.settings.linger, self._linger_over)

    def _linger_over(self) -> None:
        self._linger = None
        if self._want_read or self._local_paused:
            # The module may still hold bytes for a local side that cannot take them yet:
            # closing now would drop them behind a clean EOF.
            self._linger = self.clock.callLater(self.settings.linger, self._linger_over)
            return
        self.log.info("link {slot}: no traffic for {t:g} s after local EOF; closing",
                      slot=self.slot, t=self.settings.linger)
        self._close_local()
        self._close_socket()

    # -- downlink ---------------------------------------------------------------------------------

    def _read_done(self, result) -> None:
        if self.state != "open":
            return
        if isinstance(result, Failure):
            if result.check(ATError) and self._remote_closed:
                self._want_read = False  # ERROR after `n, CLOSED`: the socket is gone, drained
                self._drained()
            elif result.check(ATError):
                self._fail("AT+QIRD answered ERROR but the remote close was never reported: "
                           "received bytes may be lost", "read_error")
            else:
                self._fail(f"AT+QIRD failed: {result.getErrorMessage()}", "read_error")
            return
        if isinstance(result, ReadResult) and result.data:
            self._deliver(result.data)
            return
        self._want_read = False
        if self._remote_closed:
            self._drained()

    def _deliver(self, data: bytes) -> None:
        if self._local_gone or self.state not in ("open", "closing"):
            return
        self.bytes_down += len(data)
        self.transport.write(data)
        if self._liveness is not None:
            self._liveness.data_received()
        if self._linger is not None:
            self._linger.reset(self.settings.linger)
        if not self._local_paused:
            return
        self._held += len(data)
        self._note_held()
        if not self._pull and self._held > self.settings.push_limit:
            self._fail(f"push mode: the local reader is too slow ({self._held} bytes waiting "
                       f"beyond its buffer); aborting it rather than buffering without bound",
                       "slow_local_reader")

    def _remote_close(self) -> None:
        if self.state != "open" or self._remote_closed:
            return
        self.log.info("link {slot}: remote closed", slot=self.slot)
        self._remote_closed = True
        if self._pull and not self._local_gone:
            self._want_read = True
            self.pump.kick()
        else:
            self._drained()

    def _drained(self) -> None:
        """The remote closed and every byte it sent is delivered: EOF to the local side, unless
        some of ours may not have reached it (then one AT+QISACK decides)."""
        if self._uplink or self._sending:
            self.log.warn("link {slot}: remote closed with {n} local bytes still unsent; "
                          "resetting the local connection", slot=self.slot,
                          n=len(self._uplink))
            self._abort_local()
        elif self.unacked > 0 and self.remote.proto == "TCP" and not self._local_gone:
            # A peer closing with our bytes unread sends RST, not FIN: a clean EOF would tell
            # the app its tail was delivered. Known-acked (the common case) costs no query.
            self._query_acks().addBoth(self._acks_at_remote_close)
            return
        else:
            self._close_local()
        self._close_socket()

    def _acks_at_remote_close(self, result) -> None:
        """The answer to the one AT+QISACK after the drain: all acked -> EOF, else reset."""
        if self.state != "open":
            return  # ended meanwhile (modem down, local bytes refused...)
        if isinstance(result, Failure):
            # ERROR after `n, CLOSED` is plausible (post-close behaviour unverified): unknown.
            self._fail(f"the remote closed with {self.unacked} sent bytes not known to be acked "
                       f"(AT+QISACK failed: {result.getErrorMessage()})",
                       "unacked_at_remote_close")
        elif self.unacked > 0:
            self._fail(f"the remote closed with {self.unacked} sent bytes unacked",
                       "unacked_at_remote_close")
        else:
            self._drained()

    def _note_held(self) -> None:
        self.peak_held = max(self.peak_held, len(self._uplink) + self._held)

    # -- ending -----------------------------------------------------------------------------------

    def _send_probe(self, data: bytes) -> None:
        """The idle probe: queued like local bytes, unless the uplink is busy or finished."""
        if (self.state == "open" and not self._local_eof and not self._remote_closed
                and not self._uplink):
            self._uplink += data
            self.pump.kick()

    def _fail(self, reason: str, cause: str) -> None:
        """The link is dead: one line, ``link_dead{cause}``, reset the local side, AT+QICLOSE."""
        self.log.warn("link {slot} to {host}:{port} is dead: {reason}; resetting the local "
                      "connection", slot=self.slot, host=self.remote.host,
                      port=self.remote.port, reason=reason)
        self.modem.counters.incr("link_dead", cause=cause)
        self._abort_local()
        self._close_socket()

    def _close_local(self) -> None:
        if not self._local_gone:
            self._local_gone = True
            self.transport.unregisterProducer()  # else loseConnection waits for us
            self.transport.loseConnection()

    def _abort_local(self) -> None:
        """Reset the local connection, even one already closing cleanly: bytes were lost."""
        if not self._local_gone:
            self._local_gone = True
            self.transport.unregisterProducer()
        self.transport.abortConnection()

    def _close_socket(self) -> None:
        """AT+QICLOSE=n; after a remote close it may answer ERROR as well as CLOSE OK."""
        if self.state in ("closing", "closed"):
            return
        self.state = "closing"
        self._stop_timers()
        self.pump.remove(self)
        self.modem.issue(commands.qiclose(self.slot)).addBoth(self._socket_closed)

    def _socket_closed(self, result) -> None:
        if isinstance(result, Failure) and not result.check(ATError):
            self.log.warn("link {slot}: AT+QICLOSE failed: {why}", slot=self.slot,
                          why=result.getErrorMessage())
        self._release()

    def _release(self) -> None:
        if self.state == "closed":
            return
        self.state = "closed"
        self._stop_timers()
        self.pump.remove(self)
        self.modem.detach_socket(self.slot)
        self.modem.release_slot(self.slot)
        self._on_finished(self)

    def _stop_timers(self) -> None:
        if self._liveness is not None:
            self._liveness.stop()
        for name in ("_ack_timer", "_backoff", "_acks_deadline", "_linger"):
            timer = getattr(self, name)
            if timer is not None and timer.active():
                timer.cancel()
            setattr(self, name, None)

    # -- diagnostics ------------------------------------------------------------------------------

    def stats(self) -> dict:
        """What this link holds in memory and has carried (for the proxy's stats)."""
        return {"slot": self.slot, "state": self.state, "uplink_buffered": len(self._uplink),
                "downlink_held": self._held, "sent": self.bytes_up, "unacked": self.unacked,
                "received": self.bytes_down, "local_paused": self._local_paused,
                "reading_paused": self._reading_paused, "peak_held": self.peak_held,
                "local_pauses": self.local_pauses}
