"""Link accounting: what each link carried, for how long, and why it ended.

A spliced link (:mod:`bridge.proxy.splice`) counts its bytes on a :class:`Link` (one int add per
chunk, nothing else on the hot path). Its profile's or server's :class:`Ledger` holds the open
links and, when one ends, adds its bytes and its close cause to the modem's counters and logs one
line. What the links of a profile carried so far is the counters' total plus the open links'
(:meth:`Ledger.carried`): metrics and status read it when asked, nothing is kept twice.

Directions are the module's: ``uplink`` goes out through the module (from the local app of a
profile, or from the local service of a module-side server), ``downlink`` comes in from it.
"""

import os

from twisted.internet.address import UNIXAddress
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.logger import Logger

from bridge.modem.socket import SocketLost

#: Why a link ended (the ``cause`` label of ``link_closed``).
REMOTE = "remote"  #: the remote end closed cleanly
LOCAL = "local"  #: the local side closed (or half-closed) first, or the bridge ended it
DEAD = "dead"  #: the module socket failed: bytes may be lost
MODEM_DOWN = "modem_down"  #: the modem (or the link's PDP context) went down
CONNECT_FAILED = "connect_failed"  #: the connection to the far end could not be made
QUEUE_FULL = "queue_full"  #: refused: too many connections already waited for a module socket
IDLE = "idle"  #: a udp server's peer, silent both ways for ``udp_idle``
DIRECTIONS = ("uplink", "downlink")

#: The counter series of each kind of ledger: (links closed by cause, bytes by direction).
SERIES = {"profile": ("link_closed", "link_bytes"),
          "server": ("server_link_closed", "server_link_bytes")}


def close_cause(reason, local_first: bool) -> str:
    """The cause of a link whose module side ended with ``reason`` (a Failure or None);
    ``local_first``: the local side closed or half-closed, or the bridge ended the link, before
    the remote closed."""
    if reason is not None and reason.check(SocketLost):
        return MODEM_DOWN if reason.value.cause == "modem_down" else DEAD
    if local_first or (reason is not None and reason.check(ConnectionAborted)):
        return LOCAL
    if reason is None or reason.check(ConnectionDone):
        return REMOTE
    return DEAD


def address_text(address) -> str:
    """``host:port`` of an IP (or module) address, the path of a unix one (``unix`` for the
    client end of a unix socket, which has no name)."""
    host = getattr(address, "host", None)
    if host is not None:
        return f"{host}:{address.port}"
    if isinstance(address, UNIXAddress):
        return "unix" if address.name is None else os.fsdecode(address.name)
    return str(address)


class Link:
    """One link's tally: bytes each way, and once opened, when and who connected it. (Anything
    with these attributes can be a ledger's link: a udp server's peer reads its socket's.)"""

    __slots__ = ("uplink", "downlink", "opened", "client", "remote", "cause")

    def __init__(self) -> None:
        self.uplink = 0
        self.downlink = 0
        self.opened = None  # clock time once spliced
        self.client = ""
        self.remote = ""  # the ledger's when opened (a reload may retarget the ledger later)
        self.cause = None  # once closed


class Ledger:
    """The links of one profile or server (``kind`` "profile" or "server", its ``name``) to
    ``remote`` (its far end, as the close line names it), counted in ``counters`` (the modem's
    :class:`~bridge.counters.Counters`) with ``clock``'s time."""

    log = Logger()

    def __init__(self, counters, clock, kind: str, name: str, remote: str) -> None:
        self.counters = counters
        self.clock = clock
        self.remote = remote
        self.title = f"{kind}:{name}"
        self.labels = {kind: name}
        self.closed_series, self.bytes_series = SERIES[kind]
        self.open = set()

    def opened(self, link: Link, client: str) -> None:
        """``link`` starts carrying; ``client`` connected it (a local app, a module-side
        client)."""
        link.opened = self.clock.seconds()
        link.client = client
        link.remote = self.remote
        self.open.add(link)

    def closed(self, link: Link, cause: str, log: bool = True) -> None:
        """``link`` ended (again: ignored): its bytes and ``cause`` are counted; an opened link
        gets its one log line (unless its owner logs its own: ``log=False``)."""
        if link.cause is not None:
            return
        link.cause = cause
        self.counters.incr(self.closed_series, cause=cause, **self.labels)
        for direction in DIRECTIONS:
            carried = getattr(link, direction)
            if carried:
                self.counters.incr(self.bytes_series, carried, direction=direction,
                                   **self.labels)
        if link not in self.open:
            return  # it never carried (the cause's own code logged why)
        self.open.discard(link)
        if log:
            self.log.info("[{title}] link {client} -> {remote} closed ({cause}) after "
                          "{duration:.1f} s: {up} bytes up, {down} bytes down", title=self.title,
                          client=link.client, remote=link.remote, cause=cause,
                          duration=self.clock.seconds() - link.opened, up=link.uplink,
                          down=link.downlink)

    def carried(self) -> dict:
        """Bytes by direction: closed links' (the counters) plus the open links' so far."""
        links = list(self.open)
        return {direction: self.counters.get(self.bytes_series, direction=direction,
                                             **self.labels)
                + sum(getattr(link, direction) for link in links)
                for direction in DIRECTIONS}
