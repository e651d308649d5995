"""Opening a module socket: AT+QIDNSIP, AT+QIOPEN, then the wait for ``[n, ]CONNECT OK|FAIL``.

AT+QIDNSIP goes out before every open rather than being cached: it is one short command against
a connect that takes seconds, and a cache would have to be invalidated for every way the module
can lose the setting unseen (a reset, a QIDNSIP whose answer was lost). The QIDNSIP/QIOPEN pair
is one turn under a lock, or a concurrent open's QIDNSIP could slip in between.
"""

import ipaddress
from typing import Dict, Optional, Tuple

from twisted.internet import defer
from twisted.internet.defer import Deferred, fail, inlineCallbacks
from twisted.logger import Logger

from bridge.at import commands
from bridge.at.errors import ATEngineError
from bridge.errors import ConnectFailed, ModemDown

def is_dotted_ip(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True


class SocketOpener:
    """Opens sockets on ``modem``'s module. Uses of the modem: ``reactor``, ``name``,
    ``timeouts``, ``mux``, ``issue()`` (refused unless ready), ``protocol`` (the engine, for the
    clean-up after a failure) and ``query_stack()``.

    The modem hands every ConnectResult to ``connect_result()`` and fails the waits with
    ``fail_waiting()`` when the module is gone.
    """

    log = Logger()

    def __init__(self, modem) -> None:
        self.modem = modem
        self._waiters: Dict[int, Tuple[int, Deferred]] = {}  # index -> (its context, the wait)
        self._turn = defer.DeferredLock()

    def open(self, index: int, proto: str, host: str, port: int, context: int = 0) -> Deferred:
        """-> Deferred(None) once connected on PDP ``context``; ConnectFailed (the module's
        index is closed again), or ModemDown."""
        if index in self._waiters:
            return fail(ConnectFailed(f"socket {index} is already opening"))
        return self._open(index, proto, host, port, context)

    def connect_result(self, socket: int, event) -> bool:
        """Give ``CONNECT OK|FAIL`` to the open waiting for it; False if none was."""
        waiting = self._waiters.pop(socket, None)
        if waiting is None:
            return False
        waiting[1].callback(event)
        return True

    def fail_waiting(self, error: Exception, context: Optional[int] = None) -> None:
        """Fail every wait for a CONNECT result, or those of PDP ``context``."""
        failing = [index for index, (on, _) in self._waiters.items()
                   if context is None or on == context]
        waiters = [self._waiters.pop(index)[1] for index in failing]
        for waiter in waiters:
            waiter.errback(error)

    @inlineCallbacks
    def _open(self, index, proto, host, port, context):
        if not self.modem.mux:
            yield self._open_transparent(proto, host, port)
            return
        wire_index = index
        connected = Deferred()
        self._waiters[index] = (context, connected)
        try:
            try:
                accepted = yield self._turn.run(self._request, wire_index, proto, host, port,
                                                context)
            except ATEngineError as error:
                yield self._close_after_failure(wire_index, context, resync=True)
                raise ConnectFailed(f"AT+QIOPEN failed: {error}") from error
            if accepted.already:
                yield self._close_after_failure(wire_index, context)
                raise ConnectFailed(f"socket {index} was already connected on the module")
            result = yield connected.addTimeout(self.modem.timeouts.connect, self.modem.reactor)
            if not result.ok:
                yield self._close_after_failure(wire_index, context)
                raise ConnectFailed(f"{proto} {host}:{port}: CONNECT FAIL")
        except defer.TimeoutError:
            yield self._close_after_failure(wire_index, context)
            raise ConnectFailed(f"no CONNECT OK within {self.modem.timeouts.connect:g} s") from None
        finally:
            if self._waiters.get(index, (None, None))[1] is connected:
                del self._waiters[index]
            if not connected.called:
                connected.cancel()
            connected.addErrback(lambda _: None)  # e.g. ModemDown while QIOPEN was in flight

    @inlineCallbacks
    def _open_transparent(self, proto, host, port):
        """AT+QIOPEN stays on the wire until ``CONNECT`` (the UART is in data mode now, app
        note §4.1) or ``CONNECT FAIL``: one turn, no wait for an event."""
        try:
            result = yield self._turn.run(self._request, None, proto, host, port, 0)
        except ATEngineError as error:
            yield self._close_after_failure(None, 0, resync=True)
            raise ConnectFailed(f"AT+QIOPEN failed: {error}") from error
        if result.already:
            yield self._close_after_failure(None, 0)
            raise ConnectFailed("the module's link was already connected")
        if not result.ok:
            raise ConnectFailed(f"{proto} {host}:{port}: CONNECT FAIL")

    @inlineCallbacks
    def _request(self, wire_index, proto, host, port, context):
        """AT+QIDNSIP (1 for a host name, 0 for a dotted address), then AT+QIOPEN -> its OK
        (transparent mode: its outcome); both on ``context``'s stack (the foreground one, app
        note §7)."""
        t, on_context = self.modem.timeouts, self.modem.selection(context)
        try:
            yield self.modem.issue(
                commands.qidnsip(not is_dotted_ip(host), t.simple).addressing(on_context))
        except ATEngineError as error:
            raise ConnectFailed(f"AT+QIDNSIP failed: {error}") from error
        if self.modem.mux:
            open_ = commands.qiopen(proto, host, port, wire_index, t.qiopen)
        else:
            open_ = commands.qiopen_transparent(proto, host, port, t.qiopen + t.connect)
        result = yield self.modem.issue(open_.addressing(on_context))
        return result

    @inlineCallbacks
    def _close_after_failure(self, wire_index, context, resync: bool = False):
        """The index stays allocated on the module after a failed open: AT+QICLOSE=n (errors
        ignored); after an ERROR also ask the module for its stack state."""
        modem = self.modem
        if modem.protocol is None:
            return
        close = commands.qiclose(wire_index, modem.timeouts.qiclose)
        try:
            yield modem.protocol.issue(close.addressing(modem.selection(context, server=False)))
        except ATEngineError as error:
            self.log.info("{name}: close after a failed open: {error}", name=modem.name,
                          error=error)
        if resync and modem.protocol is not None:
            try:
                yield modem.query_stack(context)
            except (ATEngineError, ModemDown) as error:
                self.log.warn("{name}: stack state query failed: {error}", name=modem.name,
                              error=error)
