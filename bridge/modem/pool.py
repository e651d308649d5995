"""Who holds which of the module's six sockets, and who waits for one.

Every user of the modem shares the six AT+QIOPEN indices (app note §3.3: AT+QIMUX=1 gives six),
so waiting for one is the modem's business, not a profile's: a socket is handed out when the modem
is ready and an index is free, to the oldest waiter that its group's limit lets through (a group
is a profile: ``max_links``). A group at its limit does not hold up another group, and a
newcomer never overtakes a waiter of its own group.

Serving is a loop, never recursion: a waiter whose use of the socket fails at once gives it back
inside its callback, and that release only marks the loop to run again. A waiter leaves the queue
before it is served, so nobody can be served twice.

A socket that only lingers for a half-closed client (see :class:`ModuleSocket`) registers here
as reclaimable: while somebody waits, it gives its index up once it has been idle for a moment.

A module-side server shares the same indices: the module picks the index of each client it
accepts (``n, REMOTE IP``, app note §3.4), and while it listens client plus server connections are
at most five. So a modem with servers keeps their ``max_clients`` free (``reserve_for_servers``):
client links get at most the rest, from the highest index down, away from the lowest free index
the module is expected to pick; the index the module picked is then claimed (``claim``).
"""

from collections import deque
from typing import Deque, Dict, Optional, Set

from twisted.internet.defer import Deferred
from twisted.logger import Logger



#: Socket indices with AT+QIMUX=1: AT+QIOPEN=0..5 (app note §2.1, §3.3).
SLOTS = 6
#: Client plus server connections while a module-side server listens (app note §3.4).
WHILE_SERVING = 5


class _Waiter:
    __slots__ = ("group", "limit", "deferred")

    def __init__(self, group: str, limit: int) -> None:
        self.group, self.limit = group, limit
        self.deferred: Optional[Deferred] = None


class SocketPool:
    """The module's socket indices. ``acquire()`` -> Deferred(index); ``release(index)``.

    :param on_count: ``on_count(n)`` whenever the number of indices in use changes (the sleep
        controller lets the module sleep only when none is)
    """

    log = Logger()

    def __init__(self, on_count=lambda n: None, count: int = SLOTS) -> None:
        self._count = count
        self._on_count = on_count
        self._ready = False
        self._waiters: Deque[_Waiter] = deque()
        self._groups: Dict[int, str] = {}  # index in use -> the group holding it
        self._accepted: Set[int] = set()  # of those, the ones a module-side server accepted on
        self._reserved = 0  # connections kept free for module-side servers' clients
        self._reclaimable: Set = set()
        self._reclaiming: Set[int] = set()  # indices closing early for a waiter, not yet back
        self._serving = False
        self._again = False

    # -- holding ----------------------------------------------------------------------------------

    def acquire(self, group: str = "", limit: int = SLOTS) -> Deferred:
        """A Deferred that fires with a free index, at once if one can be had now; cancelling it
        leaves the queue."""
        waiter = _Waiter(group, limit)
        waiter.deferred = Deferred(lambda _: self._leave(waiter))
        self._waiters.append(waiter)
        self._serve()
        if not waiter.deferred.called:
            for socket in list(self._reclaimable):
                socket.reclaim()
        return waiter.deferred

    def must_wait(self, group: str = "", limit: int = SLOTS) -> bool:
        """Would ``acquire(group, limit)`` wait now?"""
        return (not self._ready or self.waiting(group) > 0 or self._held(group) >= limit
                or not self._client_room())

    def release(self, index: int) -> None:
        """Give ``index`` back (once: it may be somebody else's right after) and serve the
        waiters."""
        self._reclaiming.discard(index)
        self._accepted.discard(index)
        if self._groups.pop(index, None) is not None:
            self._on_count(len(self._groups))
        self._serve()

    def set_ready(self, ready: bool) -> None:
        """Indices are handed out only while the modem is ready."""
        self._ready = ready
        if ready:
            self._serve()

    def refuse_waiting(self, error: Exception) -> None:
        """Fail every waiter with ``error``: no index will be handed out for a long while."""
        waiters, self._waiters = list(self._waiters), deque()
        for waiter in waiters:
            waiter.deferred.errback(error)

    def reserve_for_servers(self, count: int) -> None:
        """Keep ``count`` connections free for module-side servers' clients (the sum of their
        ``max_clients``): client links get ``WHILE_SERVING - count`` at most."""
        self._reserved = count

    def claim(self, index: int, group: str) -> bool:
        """The module accepted a server client on ``index``: hold it for ``group``. False if the
        index is already held (the module picked one given to a client link)."""
        if index in self._groups or not 0 <= index < self._count:
            return False
        self._groups[index] = group
        self._accepted.add(index)
        self._on_count(len(self._groups))
        return True

    @property
    def in_use(self) -> frozenset:
        return frozenset(self._groups)

    def waiting(self, group: Optional[str] = None) -> int:
        """Waiters in all, or of ``group``."""
        return sum(1 for w in self._waiters if group is None or w.group == group)

    # -- reclaiming lingering sockets -------------------------------------------------------------

    def add_reclaimable(self, socket) -> None:
        """``socket.reclaim()`` is called while somebody waits; it closes once idle enough."""
        self._reclaimable.add(socket)
        if self._waiters:
            socket.reclaim()

    def remove_reclaimable(self, socket) -> None:
        self._reclaimable.discard(socket)

    def wanted_by_waiter(self, index: int) -> bool:
        """Would freeing ``index`` serve somebody who waits now and is not already being served
        by another index closing early (one waiter must not empty every linger)? Beside a
        server, freeing an accepted client's index gives client links no room."""
        if not self._client_room(freeing=index):
            return False
        group = self._groups.get(index)
        served = sum(1 for w in self._waiters if self._held(w.group) - (w.group == group) < w.limit)
        return served > len(self._reclaiming)

    def reclaiming(self, index: int) -> None:
        """``index`` closes early for a waiter; it counts as on its way back until released."""
        self._reclaiming.add(index)

    # -- serving ----------------------------------------------------------------------------------

    def _serve(self) -> None:
        if self._serving:
            self._again = True
            return
        self._serving = True
        try:
            self._again = True
            while self._again:
                self._again = False
                self._serve_once()
        finally:
            self._serving = False

    def _serve_once(self) -> None:
        blocked = set()  # groups whose oldest waiter could not go: FIFO within a group
        for waiter in list(self._waiters):
            if not self._ready:
                return
            if waiter not in self._waiters:
                continue  # cancelled by an earlier waiter's callback
            if waiter.group in blocked or self._held(waiter.group) >= waiter.limit:
                blocked.add(waiter.group)
                continue
            if not self._client_room():
                return
            free = [index for index in range(self._count) if index not in self._groups]
            # Lowest first (transcripts stay predictable); highest first beside a server, whose
            # module picks the lowest free index for the clients it accepts (see the docstring).
            index = free[-1] if self._reserved else free[0]
            self._waiters.remove(waiter)
            self._groups[index] = waiter.group
            self._on_count(len(self._groups))
            waiter.deferred.callback(index)

    def _client_room(self, freeing: Optional[int] = None) -> bool:
        """Can one more client link be handed an index (once ``freeing`` is given back)?"""
        held = len(self._groups) - (freeing in self._groups)
        links = held - len(self._accepted - {freeing})
        if self._reserved:
            return links < WHILE_SERVING - self._reserved and held < self._count
        return held < self._count

    def _held(self, group: str) -> int:
        return sum(1 for holder in self._groups.values() if holder == group)

    def _leave(self, waiter: _Waiter) -> None:
        if waiter in self._waiters:
            self._waiters.remove(waiter)
