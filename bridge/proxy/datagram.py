"""One udp profile's local port: a session per local source address, each on a module socket.

NAT style: the first datagram from a new (address, port) opens a module UDP socket
(:class:`~bridge.modem.datagram.ModemDatagramEndpoint`, group = the profile, limit =
``max_links``); what that socket receives goes back to that source. A session ends after
``udp_idle`` seconds without a datagram either way and closes its socket.

Nothing grows without bound; past a bound the newest datagram is dropped and counted by cause:

- ``queue_full``: ``queue`` datagrams of the session already wait for its socket (opening,
  reopening, or every socket the profile may hold is taken), or a new source arrives while
  ``queue`` sessions already wait for their first socket;
- ``queue_timeout``: a datagram waited ``queue_timeout`` s for a socket;
- ``too_large``: more than one AT+QISEND carries (1460 bytes): never split, since a split
  datagram arrives as two. Such a datagram opens no session and does not keep one from going
  idle: nothing is carried for it (one log line per source);
- ``uplink_full``, ``send_failed``, ``unsent``: the module socket's (see its module);
- ``open_failed``: still waiting when the open failed (CONNECT FAIL, modem down) without reopen;
- ``session_ended``: still waiting when the session ended;
- ``local_send_failed``: the local socket refused a reply (the local kernel's own drops, a full
  receive buffer, are counted by the kernel: ``/proc/net/udp``).

``reopen = yes``: a session whose socket is lost (``+PDP DEACT``, module reboot, port lost, a
remote close) opens a new one; the pool hands it out when the modem is ready again, so the local
application sees only a gap. Meanwhile its datagrams wait as above. An open that fails because
the modem (or the profile's context) is down is tried again when it is ready; any other failure,
and the loss of a socket that never proved itself (no datagram back, less than
``REOPEN_PROVEN`` s), wait for a backoff first: a module that closes every socket right after
``CONNECT OK`` must not get AT+QIOPEN/AT+QICLOSE back to back. Without ``reopen`` the session
ends, and the source's next datagram starts a new one.
"""

import collections

from twisted.internet.defer import CancelledError
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from bridge.modem.datagram import TOO_LARGE, ModemDatagramEndpoint
from bridge.modem.persistent import reopen_backoff

QUEUE_FULL = "queue_full"
QUEUE_TIMEOUT = "queue_timeout"
OPEN_FAILED = "open_failed"
SESSION_ENDED = "session_ended"
LOCAL_SEND_FAILED = "local_send_failed"
#: A socket that lived this long (or brought a datagram back) proved the path: reopen at once.
REOPEN_PROVEN = 10.0
#: Sources remembered for their one ``too_large`` log line (the oldest is forgotten past this).
TOO_LARGE_SOURCES = 256
COUNTS = ("datagrams_up", "bytes_up", "datagrams_down", "bytes_down")


def _address(source) -> str:
    return f"{source[0]}:{source[1]}"


def drops_text(drops) -> str:
    return ", ".join(f"{cause}={n}" for cause, n in sorted(drops.items()) if n) or "none"


class DatagramRelay(DatagramProtocol):
    """The protocol behind one udp profile's listening port, on ``modem``'s sockets."""

    log = Logger()
    noisy = False

    def __init__(self, profile, modem) -> None:
        self.profile = profile
        self.modem = modem
        self.clock = modem.reactor
        self.name = f"profile:{profile.name}"
        self.endpoint = ModemDatagramEndpoint(modem, profile.remote.host, profile.remote.port,
                                              group=profile.name, limit=profile.max_links,
                                              context=profile.context)
        self.sessions = {}  # local source address -> _Session
        self.started = 0
        self.counts = collections.Counter()  # of ended sessions
        self.drops = collections.Counter()  # of ended sessions, and of datagrams with none
        self._too_large_logged = {}  # sources logged for too_large, oldest first (bounded)

    # -- the local port ---------------------------------------------------------------------------

    def datagramReceived(self, data: bytes, source) -> None:
        session = self.sessions.get(source)
        if len(data) > self.endpoint.settings.largest:
            self._drop_too_large(source, len(data), session)
            return
        if session is None:
            profile = self.profile
            if (self.modem.sockets.must_wait(profile.name, profile.max_links)
                    and self.waiting() >= profile.queue):
                self.drops[QUEUE_FULL] += 1
                return
            session = self.sessions[source] = _Session(self, source)
            self.started += 1
            session.start()
        session.uplink(data)

    def _drop_too_large(self, source, size: int, session) -> None:
        (session.drops if session is not None else self.drops)[TOO_LARGE] += 1
        if source in self._too_large_logged:
            return
        self._too_large_logged[source] = None
        if len(self._too_large_logged) > TOO_LARGE_SOURCES:
            del self._too_large_logged[next(iter(self._too_large_logged))]
        self.log.warn("[{name}] dropping datagrams from {source} larger than {largest} bytes "
                      "(got {size}): one AT+QISEND carries no more, and a split datagram would "
                      "arrive as two (logged once per source)", name=self.name,
                      source=_address(source), size=size, largest=self.endpoint.settings.largest)

    def reply(self, session: "_Session", data: bytes) -> None:
        """A datagram from the module socket of ``session`` goes back to its source."""
        try:
            self.transport.write(data, session.source)
        except OSError as error:
            session.drops[LOCAL_SEND_FAILED] += 1
            self.log.debug("[{name}] reply to {source} refused: {error}", name=self.name,
                           source=_address(session.source), error=error)

    def stopProtocol(self) -> None:
        """The listener stops: every session ends and closes its socket."""
        for session in list(self.sessions.values()):
            session.end("the listener stopped")

    def ended(self, session: "_Session") -> None:
        self.sessions.pop(session.source, None)
        self.account(session.counts, session.drops)

    def account(self, counts, drops) -> None:
        """Counts and drops of an ended session, or of its socket that ended after it (the
        datagram on the wire at the close decided late)."""
        self.counts.update(counts)
        self.drops.update(drops)

    # -- diagnostics ------------------------------------------------------------------------------

    def waiting(self) -> int:
        """Sessions that wait for their first socket."""
        return sum(1 for session in self.sessions.values() if session.waiting_first)

    def stats(self) -> dict:
        """Sessions, datagrams and bytes each way, drops by cause (ended and live sessions)."""
        counts, drops = collections.Counter(self.counts), collections.Counter(self.drops)
        for session in self.sessions.values():
            live_counts, live_drops = session.tally()
            counts.update(live_counts)
            drops.update(live_drops)
        return {"sessions": len(self.sessions), "waiting": self.waiting(),
                "started": self.started,
                "pending": sum(len(session.pending) for session in self.sessions.values()),
                **{key: counts[key] for key in COUNTS},
                "drops": {cause: n for cause, n in sorted(drops.items()) if n}}


class _ModuleSide(DatagramProtocol):
    """The protocol on a session's module socket."""

    noisy = False

    def __init__(self, session: "_Session") -> None:
        self.session = session

    def datagramReceived(self, data: bytes, peer) -> None:
        self.session.downlink(data)

    def connectionLost(self, reason) -> None:
        self.session.socket_lost(self.transport, reason)


class _Session:
    """One local source and the module socket it talks through."""

    log = Logger()

    def __init__(self, relay: DatagramRelay, source) -> None:
        self.relay = relay
        self.profile = relay.profile
        self.clock = relay.clock
        self.source = source
        self.socket = None  # the ModuleDatagramSocket, until it reported its end
        self.waiting_first = True  # no socket yet at all
        self.over = False
        self.accounted = False  # the relay has this session's counts: later ones go there too
        self.counts = collections.Counter()  # of this session's ended sockets
        self.drops = collections.Counter()  # of this session and its ended sockets
        self.slots = []  # module socket indices used, in order
        self.pending = collections.deque()  # (arrival time, datagram) waiting for a socket
        self._opening = None  # the endpoint's Deferred while an open runs
        self._expiry = None
        self._retry = None  # the backoff's timer before the next open
        self._until_ready = None  # when_ready's Deferred before the next open
        self._opened_at = 0.0
        self._backoff = reopen_backoff(self.profile.reopen_max_delay)
        self._idle = self.clock.callLater(self.profile.udp_idle, self._idle_over)

    def __repr__(self) -> str:
        return f"<_Session {_address(self.source)} {self.relay.name}>"

    # -- datagrams --------------------------------------------------------------------------------

    def uplink(self, data: bytes) -> None:
        """A datagram from the local source (one that a module socket can carry)."""
        self._idle.reset(self.profile.udp_idle)
        if self.socket is not None and self.socket.open:
            self.socket.write(data)
        elif len(self.pending) >= self.profile.queue:
            self.drops[QUEUE_FULL] += 1
        else:
            self.pending.append((self.clock.seconds(), data))
            self._arm_expiry()

    def downlink(self, data: bytes) -> None:
        """A datagram from the remote, through the module socket."""
        self._idle.reset(self.profile.udp_idle)
        self.relay.reply(self, data)

    # -- the module socket ------------------------------------------------------------------------

    def start(self) -> None:
        self._opening = self.relay.endpoint.connect(_ModuleSide(self))
        self._opening.addCallbacks(self._opened, self._open_failed)

    def _opened(self, side: _ModuleSide) -> None:
        self._opening = None
        self.socket = side.transport
        self.slots.append(self.socket.slot)
        self._opened_at = self.clock.seconds()
        self.log.info("[{name}] udp session from {source} {verb} on module socket {slot}",
                      name=self.relay.name, source=_address(self.source), slot=self.socket.slot,
                      verb="opened" if self.waiting_first else "reopened")
        self.waiting_first = False
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        pending, self.pending = self.pending, collections.deque()
        for _, datagram in pending:
            self.socket.write(datagram)

    def _open_failed(self, failure) -> None:
        self._opening = None
        if failure.check(CancelledError) or self.over:
            return
        why = failure.getErrorMessage()
        if not self.profile.reopen:
            self._drop_pending(OPEN_FAILED)
            self.end(f"open failed: {why}")
        elif not self.relay.modem.context_ready(self.profile.context):
            self.log.warn("[{name}] udp session from {source}: open failed ({why}); again when "
                          "the modem is ready", name=self.relay.name,
                          source=_address(self.source), why=why)
            self._until_ready = self.relay.modem.when_ready(self.profile.context)
            self._until_ready.addCallbacks(self._reopen, lambda failure: failure.trap(
                CancelledError))
        else:
            self._reopen_later(f"open failed ({why})")

    def _reopen_later(self, why: str) -> None:
        delay = self._backoff.next_delay()
        self.log.warn("[{name}] udp session from {source}: {why}; reopening in {delay:g} s",
                      name=self.relay.name, source=_address(self.source), why=why, delay=delay)
        self._retry = self.clock.callLater(delay, self._reopen)

    def _reopen(self, _=None) -> None:
        self._retry = self._until_ready = None
        self.start()

    def socket_lost(self, socket, reason) -> None:
        """The module socket stopped carrying (our close, modem down, remote close ...); its
        counts are final."""
        counts = {key: socket.counts[key] for key in COUNTS}
        self.counts.update(counts)
        self.drops.update(socket.drops)
        if self.accounted:
            self.relay.account(counts, socket.drops)
        if socket is self.socket:
            self.socket = None
        if self.over:
            return
        why = reason.getErrorMessage()
        if not self.profile.reopen or not self.relay.modem.running:
            self.end(f"module socket lost: {why}")  # the daemon stopping is no reason to reopen
            return
        lost = f"module socket {socket.slot} lost ({why})"
        lived = self.clock.seconds() - self._opened_at
        if socket.counts["datagrams_down"] or lived >= REOPEN_PROVEN:
            self._backoff.reset()
        elif self.relay.modem.context_ready(self.profile.context):
            self._reopen_later(lost)
            return
        self.log.warn("[{name}] udp session from {source}: {lost}; reopening",
                      name=self.relay.name, source=_address(self.source), lost=lost)
        self.start()

    # -- ending -----------------------------------------------------------------------------------

    def _idle_over(self) -> None:
        self._idle = None
        self.end(f"idle {self.profile.udp_idle:g} s")

    def end(self, why: str) -> None:
        """Close the socket (if any), drop what waits, forget the session; one log line."""
        if self.over:
            return
        self.over = True
        for timer in (self._idle, self._expiry, self._retry):
            if timer is not None and timer.active():
                timer.cancel()
        if self._until_ready is not None:
            self._until_ready.cancel()
        if self._opening is not None:
            self._opening.cancel()
        self._drop_pending(SESSION_ENDED)
        if self.socket is not None:
            self.socket.loseConnection()
        self.relay.ended(self)
        self.accounted = True
        self.log.info("[{name}] udp session from {source} ended ({why}): module socket(s) "
                      "{slots}, {up} datagrams up, {down} down, dropped: {drops}",
                      name=self.relay.name, source=_address(self.source), why=why,
                      slots=",".join(map(str, self.slots)) or "none",
                      up=self.counts["datagrams_up"], down=self.counts["datagrams_down"],
                      drops=drops_text(self.drops))

    def _drop_pending(self, cause: str) -> None:
        if self.pending:
            self.drops[cause] += len(self.pending)
            self.pending.clear()

    def _arm_expiry(self) -> None:
        if self._expiry is None and self.pending:
            due = self.pending[0][0] + self.profile.queue_timeout - self.clock.seconds()
            self._expiry = self.clock.callLater(max(0.0, due), self._expire)

    def _expire(self) -> None:
        """Datagrams that waited ``queue_timeout`` for a socket are dropped, oldest first."""
        self._expiry = None
        deadline = self.clock.seconds() - self.profile.queue_timeout
        while self.pending and self.pending[0][0] <= deadline:
            self.pending.popleft()
            self.drops[QUEUE_TIMEOUT] += 1
        self._arm_expiry()

    # -- diagnostics ------------------------------------------------------------------------------

    def tally(self):
        """(counts, drops) including the live socket's."""
        counts, drops = collections.Counter(self.counts), collections.Counter(self.drops)
        if self.socket is not None:
            counts.update({key: self.socket.counts[key] for key in COUNTS})
            drops.update(self.socket.drops)
        return counts, drops
