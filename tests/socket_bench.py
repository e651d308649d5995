"""Transcript bench for module sockets: the real Modem (brought up by the modem harness) on a
StringTransport and task.Clock, a tcp profile's Admission, and local connections on
StringTransports; a transparent modem's sessions opened through its endpoint. The UART bytes
are exact, so tests read like the wire. No tests here."""

import dataclasses

from twisted.internet.endpoints import connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.testing import StringTransport

from bridge.config import Listen, ProfileConfig, Remote
from bridge.modem.endpoint import ModemEndpoint
from bridge.proxy.admission import Admission
from tests.modem_harness import OK, PLAIN, PUSH, ModemHarness, transparent

REMOTE = Remote("TCP", "10.1.2.3", 80)
PROFILE = ProfileConfig("web", Listen("tcp", "tcp:0:interface=127.0.0.1", 0, "127.0.0.1"), REMOTE,
                        modem="main")

PROMPT = b"\r\n> "
SEND_OK = b"\r\nSEND OK\r\n"
QIRDI_0 = b"+QIRDI: 0,1,0\r\n"
CLOSED_0 = b"\r\n0, CLOSED\r\n"
QISACK_0 = b"AT+QISACK=0\r"
QIRD_0 = b"AT+QIRD=0,1,0,1500\r"
QICLOSE_0 = b"AT+QICLOSE=0\r"
#: The modem's answers to a re-activation after +PDP DEACT.
REACTIVATE = [(b"AT+QIDEACT", b"\r\nDEACT OK\r\n"), (b"AT+QIREGAPP", OK), (b"AT+QIACT", OK),
              (b"AT+QILOCIP", b"\r\n10.0.0.3\r\n")]


#: The power-up packetisation a transparent modem's bring-up writes (+++ on).
PACKETISATION = b"AT+QITCFG=3,2,1460,1"
#: A transparent AT+QIOPEN to REMOTE, and the module's answer that puts the UART in data mode.
QIOPEN_TRANSPARENT = b'AT+QIOPEN="TCP","10.1.2.3",80\r'
CONNECT = b"\r\nCONNECT\r\n"


class Recorder(Protocol):
    """A client protocol that keeps what it received and why its connection ended."""

    def __init__(self):
        self.received = b""
        self.reason = None

    def dataReceived(self, data):
        self.received += data

    def connectionLost(self, reason=None):
        self.reason = reason


def outcome(deferred):
    results = []
    deferred.addBoth(results.append)
    return results


def open_command(n=0, remote=REMOTE) -> bytes:
    """AT+QIDNSIP (a dotted address) and AT+QIOPEN, as the modem writes them before OK."""
    return b'AT+QIOPEN=%d,"%s","%s",%d\r' % (n, remote.proto.encode(), remote.host.encode(),
                                              remote.port)


def sack(sent, acked) -> bytes:
    """The module's AT+QISACK answer: sent, acked, unacked."""
    return b"\r\n+QISACK: %d, %d, %d\r\n\r\nOK\r\n" % (sent, acked, sent - acked)


def qird(data: bytes) -> bytes:
    """The module's AT+QIRD answer carrying ``data`` from the REMOTE."""
    return b"\r\n+QIRD: 10.1.2.3:80,TCP,%d\r\n" % len(data) + data + b"\r\nOK\r\n"


class ModemBench:
    """A ready modem whose clock moves only when a test moves it."""

    def __init__(self, tmp_path, receive="pull", script=None, **config):
        if script is None:
            script = PLAIN if receive == "pull" else PUSH
        self.harness = ModemHarness(tmp_path / "state", health_interval=1e9, receive=receive,
                                    **config).up(script)
        self.modem = self.harness.modem
        self.clock = self.harness.clock
        self.wire()

    def wire(self) -> bytes:
        """Bytes written to the module since the last call (the clock does not move)."""
        return self.harness.written()

    def module(self, data: bytes) -> None:
        """Bytes from the module."""
        self.harness.recv(data)

    def play(self, script) -> None:
        """Expect each (command, reply) of ``script`` in turn, running the clock between."""
        self.harness.play(script)

    def connect_ok(self, n=0, remote=REMOTE) -> None:
        """Play the open of socket ``n``: AT+QIDNSIP=0, AT+QIOPEN, ``n, CONNECT OK``."""
        assert self.wire() == b"AT+QIDNSIP=0\r"
        self.module(OK)
        assert self.wire() == open_command(n, remote)
        self.module(OK + b"\r\n%d, CONNECT OK\r\n" % n)

    def send_ok(self, count=1) -> bytes:
        """Answer ``count`` AT+QISENDs; returns the wire bytes (commands + payloads)."""
        wire = b""
        for _ in range(count):
            wire += self.wire()
            self.module(PROMPT)
            wire += self.wire()
            self.module(SEND_OK)
        return wire + self.wire()


class LinkBench(ModemBench):
    """One local connection of a tcp profile spliced to module socket 0 (opened unless
    ``open_it=False``). ``local`` is the local connection's StringTransport, ``socket`` the
    ModuleSocket, ``side`` the LocalSide protocol."""

    def __init__(self, tmp_path, receive="pull", open_it=True, profile=PROFILE, settings=None,
                 **config):
        super().__init__(tmp_path, receive, **config)
        self.admission = Admission(profile, self.modem)
        if settings:
            self.admission.endpoint.settings = dataclasses.replace(
                self.admission.endpoint.settings, **settings)
        self.side, self.local = self.accept()
        if open_it:
            self.connect_ok()

    def accept(self):
        side = self.admission.buildProtocol(None)
        local = StringTransport()
        side.makeConnection(local)
        return side, local

    @property
    def socket(self):
        return self.side.module.transport if self.side.module else None

    def local_data(self, data: bytes) -> None:
        self.side.dataReceived(data)


#: Time for the bring-up's commands to have left the UART at 115200 baud.
LINE_SETTLED = 1.0


class SessionBench(ModemBench):
    """A ready transparent modem (AT+QIMODE=1, ``data_mode`` the bring-up's data-mode step)
    whose sessions are opened through its ModemEndpoint by a Recorder."""

    def __init__(self, tmp_path, data_mode=(PACKETISATION,), **config):
        super().__init__(tmp_path, receive="push", script=transparent(*data_mode),
                         mode="transparent", **config)

    def open(self):
        """Ask for a session; returns the Recorder and the list its connect outcome lands in."""
        protocol = Recorder()
        endpoint = ModemEndpoint(self.modem, REMOTE.host, REMOTE.port)
        return protocol, outcome(connectProtocol(endpoint, protocol))

    def connect(self, then: bytes = b"", settle: bool = True) -> None:
        """Play a transparent open: AT+QIDNSIP=0, AT+QIOPEN, OK and CONNECT (and ``then``, the
        first bytes of the remote in the same read); ``settle``: then let the line carry the
        commands out (``LINE_SETTLED``)."""
        assert self.wire() == b"AT+QIDNSIP=0\r"
        self.module(OK)
        assert self.wire() == QIOPEN_TRANSPARENT
        self.module(OK + CONNECT + then)
        # The bring-up and the open went out at one clock instant; on a real line they take
        # their line time at the baud rate, and an escape waits for them (bridge.at.datamode).
        if settle:
            self.clock.advance(LINE_SETTLED)

    def connected(self) -> Recorder:
        """A session in data mode, its protocol connected."""
        protocol, result = self.open()
        self.connect()
        assert result == [protocol]
        return protocol
