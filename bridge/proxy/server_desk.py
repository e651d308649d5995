"""The module-side servers of one modem: whose turn it is to listen, and whose an accepted socket
is.

``SERVER OK`` and ``n, REMOTE IP: ip`` (app note §3.2, §5.1) name no protocol, and a modem may
carry one tcp and one udp server (the module has one listening port of each, app note §3.4). So
listening goes one server at a time (AT+QILPORT, AT+QISERVER, ``SERVER OK``): the ``SERVER OK``
that comes is the one of the listen on the wire. An accepted socket is claimed in the socket pool
at once (no client link may take its index) and belongs to the modem's only server, or, with two,
to the one whose protocol the module names on that socket's AT+QISTATE line (docs/at-dialect.md
§4.7). What the socket receives meanwhile is held for it (push mode: a UDP peer's first datagram
follows its REMOTE IP at once). An answer that names neither server, or none: the socket is closed
on the server side. A client announced while the modem, or the context of every server, is down is
not taken: the recovery's AT+QIDEACT closes it. AT+QICLOSE without an index closes every listener
of the module (app note §3.4): servers that stop together send it once, since a second one would
find nothing to close and be answered ERROR.
"""

import weakref
from typing import Dict, Optional

from twisted.internet.defer import Deferred, DeferredLock, inlineCallbacks
from twisted.logger import Logger

from bridge.at import commands
from bridge.at.errors import ATEngineError
from bridge.at.events import ServerStarted
from bridge.errors import ModemDown

#: What an accepted socket may receive while AT+QISTATE says whose it is; more is dropped.
HELD_EVENTS = 64


class ServerDesk:
    """The servers of ``modem`` (each a :class:`~bridge.proxy.reverse.ModuleServer`); one desk
    per modem (:meth:`of`), the modem's only server listener."""

    log = Logger()
    _desks: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()

    @classmethod
    def of(cls, modem) -> "ServerDesk":
        desk = cls._desks.get(modem)
        if desk is None:
            desk = cls._desks[modem] = cls(modem)
        return desk

    def __init__(self, modem) -> None:
        self.modem = modem
        self.servers: list = []
        #: one listen on the wire at a time (see the module docstring)
        self.turns = DeferredLock()
        #: the server whose listen is on the wire: it gets the ``SERVER OK``
        self.on_wire = None
        #: the AT+QICLOSE without an index on its way, by context (see the module docstring)
        self._closing: Dict[int, Deferred] = {}
        modem.add_server_listener(self._server_event)

    def add(self, server) -> None:
        self.servers.append(server)
        self.servers.sort(key=lambda s: s.server.protocol)  # tcp first: it speaks for the desk

    def close_listeners(self, context: int) -> Optional[Deferred]:
        """AT+QICLOSE without an index on ``context``: every listener of the module closes (app
        note §3.4) -> its answer, or None if one is on its way already (it closes this one's)."""
        if context in self._closing:
            return None
        close = commands.qiclose(None, self.modem.timeouts.qiclose)
        closing = self._closing[context] = self.modem.issue(
            close.addressing(self.modem.selection(context, server=True)))
        closing.addBoth(self._listeners_closed, context)
        return closing

    def _listeners_closed(self, result, context: int):
        del self._closing[context]
        return result

    def _server_event(self, event) -> None:
        if isinstance(event, ServerStarted):
            if self.on_wire is not None:
                self.on_wire.server_started()
            return
        running = [server for server in self.servers if server.running]
        if not running:
            return
        index, ip = event.socket, event.ip
        if index is None and not self.modem.mux:
            index = 0  # a transparent modem's one session (app note §4.2)
        servers = [server for server in running if self.modem.context_ready(server.context)]
        if index is None:
            self.log.warn("[{label}] REMOTE IP {ip} without a socket index (single link): "
                          "ignored", label=running[0].label, ip=ip)
        elif not servers:
            self._left_to_recovery(running[0], index, ip)
        elif not self.modem.sockets.claim(index, servers[0].label):
            servers[0].refuse(index, ip, "index_taken", f"the module put it on socket {index}, "
                              "which a client link holds", claimed=False)
        elif len(servers) == 1:
            servers[0].admit(index, ip)
        else:
            self._settle(index, ip, servers)

    def _left_to_recovery(self, server, index: int, ip: str) -> None:
        """A client announced while the modem (or every server's context) is down: its socket
        would never hear of the "down" announced before it, nor of the recovery's AT+QIDEACT
        that takes it, and would keep its index and a ``max_clients`` place after the recovery.
        So it is not taken: no index claimed, nothing to close (the AT+QIDEACT closes it)."""
        where = "the modem" if not self.modem.ready else f"context {server.context}"
        server.modem.counters.incr("server_refused", server=server.server.name, cause="down")
        self.log.warn("[{label}] client {ip} on socket {index} announced while {where} is down: "
                      "left to the recovery", label=server.label, ip=ip, index=index,
                      where=where)

    @inlineCallbacks
    def _settle(self, index: int, ip: str, servers: list):
        """Ask AT+QISTATE (on each context the servers listen on) whose socket ``index`` is."""
        held = _Held()
        self.modem.attach_socket(index, held, servers[0].context)
        owners, named, failure = [], [], ""
        try:
            for context in sorted({server.context for server in servers}):
                report = yield self.modem.query_stack(context)
                proto = next((line.proto for line in report.sockets if line.socket == index), "")
                named.append(proto or "nothing")
                owners += [server for server in servers if server.context == context
                           and server.server.protocol.upper() == proto]
        except (ATEngineError, ModemDown) as error:
            failure = f"AT+QISTATE failed: {error}"
        if held.gone:
            self.log.info("[{label}] socket {index} ({ip}) went with the module before it was "
                          "known whose it is", label=servers[0].label, index=index, ip=ip)
            self.modem.detach_socket(index)
            self.modem.sockets.release(index)
            return
        if len(owners) == 1:
            handler = owners[0].admit(index, ip)
        else:
            why = failure or f"AT+QISTATE names {' and '.join(named)} on socket {index}"
            handler = servers[0].refuse(index, ip, "unknown_server",
                                        f"which server accepted it is not known ({why})")
        held.hand_on(handler, servers[0].label, index)


class _Held:
    """The handler of an accepted socket until it is known whose it is: keeps what arrives for
    the handler it gets then."""

    server = True  # a server-accepted socket: its +QIRDI names the server side

    def __init__(self) -> None:
        self.events: list = []
        self.dropped = 0
        self.gone = False

    def socket_event(self, event) -> None:
        if len(self.events) < HELD_EVENTS:
            self.events.append(event)
        else:
            self.dropped += 1

    def modem_down(self, reason: str) -> None:
        self.gone = True

    def hand_on(self, handler, label: str, index: int) -> None:
        for event in self.events:
            handler.socket_event(event)
        if self.dropped:
            ServerDesk.log.warn("[{label}] socket {index}: {n} events dropped while AT+QISTATE "
                                "was asked whose it is", label=label, index=index, n=self.dropped)
