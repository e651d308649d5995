"""What the forwarding of every module-side server's client shares, tcp or udp
(:mod:`bridge.proxy.reverse`, :mod:`bridge.proxy.reverse_datagram`): its place among the server's
clients, its module-side address, one log line at its start and one at its end, and the count of
a local service it cannot reach."""

from twisted.logger import Logger

from bridge.modem.socket import ModuleAddress


class Forwarding:
    """One accepted module-side client (``ip`` on socket ``index``) of ``server``, a
    :class:`~bridge.proxy.reverse.ModuleServer`. Subclasses carry its bytes and ``close()`` it."""

    log = Logger()

    def __init__(self, server, index: int, ip: str) -> None:
        self.server = server
        self.name = server.server.name
        self.index = index
        self.ip = ip
        modem = server.modem
        # REMOTE IP names no port (app note §5.1).
        self.peer = ModuleAddress(server.server.protocol.upper(), ip, 0, modem.name, index)
        server.clients[index] = self

    def close(self) -> None:
        """End it now (the server stops)."""
        raise NotImplementedError

    def forwarded(self) -> None:
        self.log.info("[{label}] client {ip} on socket {index} forwarded to {forward}",
                      label=self.server.label, ip=self.ip, index=self.index,
                      forward=self.server.server.forward)

    def unreachable(self, why: str) -> None:
        """The local service cannot be reached for this client: counted and logged (the caller
        closes the client)."""
        self.server.modem.counters.incr("server_refused", server=self.name, cause="forward")
        self.log.warn("[{label}] {forward} failed for client {ip} on socket {index}: {why}; "
                      "closing the client", label=self.server.label,
                      forward=self.server.server.forward, ip=self.ip, index=self.index, why=why)

    def finished(self, summary: str) -> None:
        """It ended: one log line, and the server forgets it."""
        self.log.info("[{label}] client {ip} on socket {index} closed: {summary}",
                      label=self.server.label, ip=self.ip, index=self.index, summary=summary)
        self.server.ended(self)
