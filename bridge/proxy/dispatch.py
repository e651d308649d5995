"""Who gets a module socket: one Dispatcher per modem, shared by every profile on it.

The module has six sockets for all profiles together, so admission is per modem: a local
connection is served at once when the modem is ready, a slot is free and its profile holds fewer
than ``max_links``; otherwise it waits, not read (its transport paused), in a FIFO bounded per
profile by ``queue`` and in time by ``queue_timeout``; past the bound it is refused (reset).
Waiting connections are served, oldest first, whenever a link frees its slot or the modem
becomes ready. Waiting is per profile: a profile at its ``max_links`` does not hold up another
profile while slots are free, and a newcomer never overtakes a waiter of its own profile.
"""

from collections import Counter, deque

from twisted.logger import Logger

from bridge.keepalive import KeepaliveTimings
from bridge.modem.link import Link, LinkSettings
from bridge.modem.pump import Pump


class _Waiting:
    __slots__ = ("stream", "profile", "timer")

    def __init__(self, stream, profile, timer) -> None:
        self.stream, self.profile, self.timer = stream, profile, timer


class Dispatcher:
    """Slots, the bulk pump and the links of one modem.

    :param clock: IReactorTime
    :param modem: the Modem (contract in MODEM-CONTRACT.md)
    :param window: ``ModemConfig.send_window``
    :param keepalive: the modem's ``keepalive_*`` timings, for every link
    """

    log = Logger()

    def __init__(self, clock, modem, window: int,
                 keepalive: KeepaliveTimings = KeepaliveTimings()) -> None:
        self.clock = clock
        self.modem = modem
        self.window = window
        self.keepalive = keepalive
        self.pump = Pump(modem.issue)
        self.links = set()
        self.served = 0
        self._active = Counter()  # profile name -> links held
        self._waiting = deque()
        modem.add_state_listener(self._modem_state)

    def arrive(self, stream, profile) -> None:
        """A local connection wants a module socket (``stream``: ``attach(link)``, ``refuse()``)."""
        queued = sum(1 for w in self._waiting if w.profile.name == profile.name)
        if not queued and self._admit(stream, profile):
            return
        if queued >= profile.queue:
            self.log.warn("[profile:{name}] refusing a connection: {n} already waiting for a "
                          "module socket", name=profile.name, n=queued)
            stream.refuse()
            return
        timer = self.clock.callLater(profile.queue_timeout, self._timed_out, stream)
        self._waiting.append(_Waiting(stream, profile, timer))
        self.log.info("[profile:{name}] connection waits for a module socket ({n} waiting)",
                      name=profile.name, n=len(self._waiting))

    def leave(self, stream) -> None:
        """A waiting local connection went away."""
        for waiting in list(self._waiting):
            if waiting.stream is stream:
                self._waiting.remove(waiting)
                waiting.timer.cancel()

    def serve_waiting(self) -> None:
        """Admit every waiter that can be served now, oldest first. Admission depends only on the
        profile and the free slots, so a waiter passed over blocks the rest of its profile too
        (FIFO per profile) while other profiles' waiters may still go."""
        for waiting in list(self._waiting):
            if self._admit(waiting.stream, waiting.profile):
                self._waiting.remove(waiting)
                waiting.timer.cancel()

    def _admit(self, stream, profile) -> bool:
        if not self.modem.ready or self._active[profile.name] >= profile.max_links:
            return False
        slot = self.modem.allocate_slot()
        if slot is None:
            return False
        settings = LinkSettings(window=self.window, linger=profile.linger,
                                keepalive=self.keepalive, probe=profile.probe)
        link = Link(self.clock, self.modem, self.pump, slot, profile.remote, stream.transport,
                    settings, lambda link: self._finished(link, profile))
        self._active[profile.name] += 1
        self.links.add(link)
        self.served += 1
        stream.attach(link)
        link.start()
        return True

    def _timed_out(self, stream) -> None:
        for waiting in list(self._waiting):
            if waiting.stream is stream:
                self._waiting.remove(waiting)
                self.log.warn("[profile:{name}] no module socket within {t:g} s; resetting the "
                              "connection", name=waiting.profile.name,
                              t=waiting.profile.queue_timeout)
                stream.refuse()

    def _finished(self, link, profile) -> None:
        self.links.discard(link)
        self._active[profile.name] -= 1
        self.serve_waiting()

    def _modem_state(self, state: str, reason: str) -> None:
        if state == "down":
            for link in list(self.links):
                link.modem_down(reason)
        elif state == "ready":
            self.serve_waiting()

    def stats(self) -> dict:
        """Links, waiting connections and the bytes the bridge holds for them (for tests/status)."""
        links = [link.stats() for link in self.links]
        return {"links": links, "waiting": len(self._waiting), "served": self.served,
                "buffered": sum(s["uplink_buffered"] + s["downlink_held"] for s in links),
                "pump_issued": self.pump.issued}
