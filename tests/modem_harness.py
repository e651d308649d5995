"""Transcript harness for Modem tests (no tests here).

A Modem on a task.Clock (with an inline thread pool) whose port is a StringTransport. ``expect(command, reply)`` lets the clock
run call by call until the modem writes something, asserts it is exactly ``command + CR`` and feeds
``reply`` back; ``times`` records the clock time of every command written.
"""

from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from bridge.config import ModemConfig
from bridge.modem.modem import Modem

START = 1000.0
OK = b"\r\nOK\r\n"

IDENTITY = [
    (b"ATI", b"\r\nQuectel_Ltd\r\nQuectel_M95\r\nRevision: M95FAR02A08\r\n" + OK),
    (b"AT+GMR", b"\r\nRevision: M95FAR02A08\r\n" + OK),
    (b"AT+GSN", b"\r\n861234567890125\r\n" + OK),
]
SYNC = [(b"AT", OK), (b"ATE0", OK), (b"AT+CMEE=2", OK), (b"AT+QISDE=0", OK)]
SIM_READY = [(b"AT+CPIN?", b"\r\n+CPIN: READY\r\n" + OK)]
#: ICCID, IMSI and operator, right after registration (docs/at-dialect.md §13)
NETWORK_IDENTITY = [(b"AT+QCCID", b"\r\n89860012345678901234\r\n" + OK),
                    (b"AT+CIMI", b"\r\n001010123456789\r\n" + OK),
                    (b"AT+COPS?", b'\r\n+COPS: 0,0,"SIM NET"\r\n' + OK)]
REGISTERED = ([(b"AT+CREG?", b"\r\n+CREG: 0,1\r\n" + OK),
               (b"AT+CGREG?", b"\r\n+CGREG: 0,1\r\n" + OK)] + NETWORK_IDENTITY)
ATTACH = [(b"AT+CGATT=1", OK), (b"AT+QIMUX?", b"\r\n+QIMUX: 0\r\n" + OK),
          (b"AT+QISTAT", OK + b"\r\nSTATE: IP INITIAL\r\n"), (b"AT+QIDEACT", b"\r\nDEACT OK\r\n")]
BEARER = [(b"AT+QIFGCNT=0", OK), (b'AT+QICSGP=1,"internet","",""', OK),
          (b"AT+QIMODE=0", OK), (b"AT+QIMUX=1", OK), (b"AT+QINDI=1", OK)]
ACTIVATE = [(b"AT+QIREGAPP", OK), (b"AT+QIACT", OK), (b"AT+QILOCIP", b"\r\n10.0.0.2\r\n"),
            (b"AT+CSQ", b"\r\n+CSQ: 25,0\r\n" + OK)]
AFTER_SIM = REGISTERED + ATTACH + BEARER + ACTIVATE
PLAIN = SYNC + IDENTITY + SIM_READY + AFTER_SIM
#: PLAIN for ``receive = push``: AT+QINDI=0.
PUSH = [(b"AT+QINDI=0", reply) if command == b"AT+QINDI=1" else (command, reply)
        for command, reply in PLAIN]


def transparent_bearer(*data_mode, credentials=b'"",""'):
    """The bearer step of a transparent modem: QIMUX off before QIMODE on, then its data-mode
    settings (app note §4), then QINDI."""
    return ([(b"AT+QIFGCNT=0", OK), (b'AT+QICSGP=1,"internet",' + credentials, OK),
             (b"AT+QIMUX=0", OK), (b"AT+QIMODE=1", OK)]
            + [(command, OK) for command in data_mode] + [(b"AT+QINDI=0", OK)])


def transparent(*data_mode):
    """The whole bring-up of a transparent modem whose data-mode step writes ``data_mode``."""
    return (SYNC + IDENTITY + SIM_READY + REGISTERED + ATTACH + transparent_bearer(*data_mode)
            + ACTIVATE)


class InlineThreadsClock(Clock):
    """A task.Clock whose thread pool runs work inline: the PIN hash goes to the reactor's thread
    pool (deferToThreadPool), and a transcript must stay one deterministic thread."""

    def getThreadPool(self):
        return self

    def callInThreadWithCallback(self, on_result, function, *args, **kwargs):
        on_result(True, function(*args, **kwargs))

    def callFromThread(self, function, *args, **kwargs):
        function(*args, **kwargs)


class FakePort:
    """The port's pins as a test drives them: ``dtr`` records every DTR level set,
    ``dcd`` is what DCD reads (None: unreadable, as on a pty)."""

    description = "fake"

    def __init__(self, transport):
        self.transport = transport
        self.closed = False
        self.dtr = []
        self.dcd = None

    def set_dtr(self, asserted: bool) -> bool:
        self.dtr.append(asserted)
        return True

    def carrier(self):
        return self.dcd

    def close(self):
        self.closed = True
        self.transport.loseConnection()
        return succeed(None)


class ModemHarness:
    def __init__(self, state_dir, *, persistent=False, health_interval=30.0, **config):
        self.clock = InlineThreadsClock()
        self.clock.advance(START)
        options = dict(name="main", port="/dev/ttyFAKE", apn="internet")
        options.update(config)
        self.config = ModemConfig(**options)
        self.transport = StringTransport()
        self.fatal = []
        self.states = []
        self.times = []
        self.modem = Modem(self.clock, self.config, str(state_dir), on_fatal=self.fatal.append,
                           persistent=persistent, port_opener=self._open,
                           health_interval=health_interval)
        self.modem.add_state_listener(lambda state, reason: self.states.append((state, reason)))

    def _open(self, reactor, config, protocol):
        protocol.makeConnection(self.transport)
        self.port = FakePort(self.transport)
        return succeed(self.port)

    def start(self):
        self.modem.startService()
        return self

    def take(self, max_steps=1000) -> bytes:
        """Run the clock call by call until the modem writes; returns (and clears) the bytes."""
        for _ in range(max_steps):
            written = self.transport.value()
            if written:
                self.transport.clear()
                self.times.append(self.clock.seconds())
                return written
            calls = self.clock.getDelayedCalls()
            if not calls:
                return b""
            self.clock.advance(max(0.0, min(c.getTime() for c in calls) - self.clock.seconds()))
        raise AssertionError("the modem never wrote anything")

    def recv(self, data: bytes) -> None:
        self.modem.protocol.dataReceived(data)

    def written(self) -> bytes:
        """Bytes written to the module since the last call (the clock does not move)."""
        value = self.transport.value()
        self.transport.clear()
        return value

    def expect(self, command: bytes, reply: bytes = b"") -> None:
        assert self.take() == command + b"\r"
        if reply:
            self.recv(reply)

    def play(self, script) -> None:
        for command, reply in script:
            self.expect(command, reply)

    def up(self, script=PLAIN):
        """Start and run a whole bring-up; the modem must be ready afterwards."""
        self.start()
        self.play(script)
        assert self.modem.ready, self.fatal
        return self
