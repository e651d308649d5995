"""A Modem with the contract's API over a real ATProtocol on a StringTransport, for transcripts.

Only what links need: issue, sockets attach/detach, open_socket (QIOPEN + ``n, CONNECT OK``),
query_stack (AT+QISTATE), counters, slots, receive mode, state listeners. The UART bytes are
exact, so tests read like the wire.
"""

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from bridge.at import commands
from bridge.at.events import ConnectResult
from bridge.at.protocol import ATProtocol
from bridge.config import Remote
from bridge.counters import Counters
from bridge.errors import ConnectFailed
from bridge.modem.link import Link, LinkSettings
from bridge.modem.pump import Pump
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
        self.counters = Counters()
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

    def query_stack(self):
        return self.issue(commands.qistate())

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


def open_command(remote, n=0) -> bytes:
    return b'AT+QIOPEN=%d,"%s","%s",%d\r' % (n, remote.proto.encode(), remote.host.encode(),
                                              remote.port)


REMOTE = Remote("TCP", "10.1.2.3", 80)
OPEN_0 = open_command(REMOTE)


PROMPT = b"\r\n> "
SEND_OK = b"\r\nSEND OK\r\n"
QISACK_0 = b"AT+QISACK=0\r"
QIRD_0 = b"AT+QIRD=0,1,0,1500\r"
QICLOSE_0 = b"AT+QICLOSE=0\r"


def sack(sent, acked) -> bytes:
    """The module's AT+QISACK answer: sent, acked, unacked."""
    return b"\r\n+QISACK: %d, %d, %d\r\n\r\nOK\r\n" % (sent, acked, sent - acked)


def qird(data: bytes) -> bytes:
    """The module's AT+QIRD answer carrying ``data`` from the REMOTE."""
    return b"\r\n+QIRD: 10.1.2.3:80,TCP,%d\r\n" % len(data) + data + b"\r\nOK\r\n"


class LinkBench:
    """One link on slot 0 of a FakeModem, opened (unless ``open_it=False``), wire cleared."""

    def __init__(self, receive_mode="pull", open_it=True, remote=REMOTE, **settings):
        self.modem = FakeModem(receive_mode=receive_mode)
        self.clock = self.modem.clock
        self.pump = Pump(self.modem.issue)
        self.local = StringTransport()
        self.finished = []
        slot = self.modem.allocate_slot()
        self.link = Link(self.clock, self.modem, self.pump, slot, remote, self.local,
                         LinkSettings(**settings), self.finished.append)
        self.link.start()
        if open_it:
            assert self.modem.wire() == open_command(remote)
            self.modem.module(b"\r\nOK\r\n\r\n0, CONNECT OK\r\n")

    def send_ok(self, count=1):
        """Answer ``count`` AT+QISENDs; returns the wire bytes (commands + payloads)."""
        wire = b""
        for _ in range(count):
            wire += self.modem.wire()
            self.modem.module(PROMPT)
            wire += self.modem.wire()
            self.modem.module(SEND_OK)
        return wire + self.modem.wire()
