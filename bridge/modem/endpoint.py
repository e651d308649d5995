"""The modem as a Twisted client endpoint: "TCP to HOST:PORT through modem M".

``connect(factory)`` waits for one of the module's sockets (:class:`~bridge.modem.pool.SocketPool`),
opens it (AT+QIDNSIP, AT+QIOPEN, ``n, CONNECT OK``), and fires with the factory's protocol on a
:class:`~bridge.modem.socket.ModuleSocket`; it fails with a ``ConnectError`` naming the reason.
So Twisted's own tools work on it unchanged: ``connectProtocol``, ``wrapClientTLS``.

Cancelling while waiting for a socket leaves the queue. Cancelling while the module is opening
cannot stop the module: the open is let finish and its socket closed at once, so nothing stays
open on the module with nobody behind it.

The wait, the open and the cancel are :class:`ModuleOpening`'s, shared with the datagram sockets
(:class:`~bridge.modem.datagram.ModemDatagramEndpoint`): only the transport built on the opened
index differs.
"""

from typing import Callable, Optional

from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from bridge.at import commands
from bridge.modem.pool import SLOTS
from bridge.modem.session import TransparentSession
from bridge.modem.socket import ModuleAddress, ModuleSocket, SocketSettings


class ModuleEndpoint:
    """``proto`` to ``host``:``port`` through ``modem``'s own stack, on ``transport_type``
    sockets (built as ``transport_type(modem, slot, address, settings, context)``).

    :param group / limit: sockets held by ``group`` at once (a profile's ``max_links``)
    :param wait: seconds an open may wait for a free socket (None = no bound)
    :param context: the module's PDP context to open on (AT+QIFGCNT, app note §7)
    """

    proto = "TCP"
    transport_type: Callable = ModuleSocket

    def __init__(self, modem, host: str, port: int, settings, group: str = "",
                 limit: int = SLOTS, wait: Optional[float] = None, context: int = 0) -> None:
        self.modem = modem
        self.peer = ModuleAddress(self.proto, host, port)
        self.settings = settings
        self.group, self.limit, self.wait = group, limit, wait
        self.context = context

    def open(self, build_protocol: Callable) -> Deferred:
        """-> Deferred(protocol) once the socket is open and ``build_protocol(address)``'s
        protocol is connected to its transport."""
        return ModuleOpening(self, build_protocol).start()


@implementer(IStreamClientEndpoint)
class ModemEndpoint(ModuleEndpoint):
    """TCP to ``host``:``port`` through ``modem``'s own stack: a module socket, or on a
    transparent modem (AT+QIMODE=1) its one session.

    :param settings: the sockets' tuning (default: the modem's)
    :param context: the module's PDP context to connect on (AT+QIFGCNT, app note §7)
    """

    def __init__(self, modem, host: str, port: int, settings: Optional[SocketSettings] = None,
                 group: str = "", limit: int = SLOTS, wait: Optional[float] = None,
                 context: int = 0) -> None:
        super().__init__(modem, host, port, settings or modem.socket_settings(), group, limit,
                         wait, context)
        if not modem.mux:
            self.transport_type = TransparentSession

    def connect(self, factory) -> Deferred:
        return self.open(factory.buildProtocol)


class ModuleOpening:
    """One open: wait for a socket, open it, build the protocol and its transport."""

    log = Logger()

    def __init__(self, endpoint: ModuleEndpoint, build_protocol: Callable) -> None:
        self.endpoint = endpoint
        self.modem = endpoint.modem
        self.build_protocol = build_protocol
        self.result = Deferred(self._cancel)
        self._waiting: Optional[Deferred] = None
        self._cancelled = False

    def start(self) -> Deferred:
        endpoint = self.endpoint
        refusal = self.modem.roaming.refusal
        if refusal is not None:  # data held down for a long while: no point in waiting
            self.result.errback(ConnectError(string=refusal))
            return self.result
        waiting = self._waiting = self.modem.sockets.acquire(endpoint.group, endpoint.limit)
        if endpoint.wait is not None and not waiting.called:
            waiting.addTimeout(endpoint.wait, self.modem.reactor)
        waiting.addCallbacks(self._acquired, self._not_acquired)
        return self.result

    def _cancel(self, _) -> None:
        self._cancelled = True
        if self._waiting is not None:
            self._waiting.cancel()

    def _not_acquired(self, failure) -> None:
        self._waiting = None
        if failure.check(TimeoutError):
            self.result.errback(ConnectError(
                string=f"no module socket free within {self.endpoint.wait:g} s"))
        elif not failure.check(CancelledError):
            self.result.errback(failure)

    def _acquired(self, slot: int) -> None:
        self._waiting = None
        peer = self.endpoint.peer
        opening = self.modem.open_socket(slot, peer.type, peer.host, peer.port,
                                         self.endpoint.context)
        opening.addCallbacks(self._opened, self._open_failed, (slot,), errbackArgs=(slot,))

    def _open_failed(self, failure, slot: int) -> None:
        self.modem.sockets.release(slot)
        if not self._cancelled:
            self.result.errback(ConnectError(string=failure.getErrorMessage()))

    def _address(self, slot: int) -> ModuleAddress:
        peer = self.endpoint.peer
        return ModuleAddress(peer.type, peer.host, peer.port, self.modem.name, slot)

    def _transport(self, slot: int):
        return self.endpoint.transport_type(self.modem, slot, self._address(slot),
                                            self.endpoint.settings, self.endpoint.context)

    def _opened(self, _, slot: int) -> None:
        address = self._address(slot)
        if self._cancelled:
            self._close_unused(slot)
            return
        try:
            protocol = self.build_protocol(address)
        except Exception:
            self._close_unused(slot)
            self.result.errback()
            return
        if protocol is None:
            self._close_unused(slot)
            self.result.errback(ConnectError(string="the factory refused the connection"))
            return
        socket = self._transport(slot)
        try:
            socket.makeConnection(protocol)
        except Exception:
            failure = Failure()
            socket.abortConnection()
            self.result.errback(failure)
            return
        self.result.callback(protocol)

    def _close_unused(self, slot: int) -> None:
        if not self.modem.mux:  # in data mode now: the session's own close escapes first
            self._transport(slot).discard()
            return
        close = commands.qiclose(slot, timeout=self.modem.timeouts.qiclose)
        closing = self.modem.issue(
            close.addressing(self.modem.selection(self.endpoint.context, server=False)))
        closing.addErrback(lambda f: self.log.info("socket {slot}: close after a cancelled "
                                                   "connect: {why}", slot=slot,
                                                   why=f.getErrorMessage()))
        closing.addBoth(lambda _: self.modem.sockets.release(slot))
