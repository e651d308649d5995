"""A Modem with the contract's API over a real ATProtocol on a StringTransport, for transcripts.

Only what links need: issue, sockets attach/detach, open_socket (QIOPEN + ``n, CONNECT OK``),
slots, receive mode, state listeners. The UART bytes are exact, so tests read like the wire.
"""

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from bridge.at import commands
from bridge.at.events import ConnectResult
from bridge.at.protocol import ATProtocol
from bridge.config import Remote
from bridge.errors import ConnectFailed
from bridge.modem.slots import SlotAllocator


class FakeModem:
    def __init__(self, clock=None, receive_mode="pull"):
        self.clock = clock or Clock()
        self.receive_mode = receive_mode
        self.context = 0
        self.ready = True
        self.uart = StringTransport()
        self.protocol = ATProtocol(self.clock)
        self.protocol.makeConnection(self.uart)
        self.protocol.add_listener(self._event)
        self.handlers = {}
        self.slots = SlotAllocator()
        self.state_listeners = []
        self._opening = {}

    # -- contract ---------------------------------------------------------------------------------

    def issue(self, command):
        return self.protocol.issue(command)

    def attach_socket(self, n, handler):
        self.handlers[n] = handler

    def detach_socket(self, n):
        self.handlers.pop(n, None)

    def allocate_slot(self):
        return self.slots.allocate() if self.ready else None

    def release_slot(self, n):
        self.slots.release(n)

    def add_state_listener(self, listener):
        self.state_listeners.append(listener)

    def open_socket(self, n, proto, host, port):
        self._opening[n] = opened = Deferred()
        self.issue(commands.qiopen(proto, host, port, n)).addErrback(
            lambda f: self._opening.pop(n).errback(ConnectFailed(f.getErrorMessage())))
        return opened

    def _event(self, event):
        n = getattr(event, "socket", None)
        if isinstance(event, ConnectResult) and n in self._opening:
            opened = self._opening.pop(n)
            if event.ok:
                opened.callback(None)
            else:
                opened.errback(ConnectFailed(f"{n}, CONNECT FAIL"))
        elif n in self.handlers:
            self.handlers[n].socket_event(event)

    # -- test helpers -----------------------------------------------------------------------------

    def module(self, data: bytes):
        """Bytes from the module."""
        self.protocol.dataReceived(data)

    def wire(self) -> bytes:
        """Bytes written to the module since the last call."""
        value = self.uart.value()
        self.uart.clear()
        return value

    def set_state(self, state, reason=""):
        self.ready = state == "ready"
        for listener in list(self.state_listeners):
            listener(state, reason)


REMOTE = Remote("TCP", "10.1.2.3", 80)
OPEN_0 = b'AT+QIOPEN=0,"TCP","10.1.2.3",80\r'
