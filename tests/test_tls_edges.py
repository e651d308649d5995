"""Transcripts of TLS on module links at their edges: the close, the handshake and the splice,
on the real Modem of the modem harness (exact UART bytes) with a Twisted TLS peer. The first
test shows the bench carries a TLS link at all."""

import dataclasses
import inspect

import pytest
from OpenSSL import SSL
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.ssl import TLSVersion
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.python.failure import Failure

from bridge.tls.files import TLSFileError, parse_pins
from bridge.tls.link import HandshakeFailed
from bridge.tls.policy import ClientPolicy
from tests.modem_harness import OK
from tests.socket_bench import (CLOSED_0, PROFILE, PROMPT, QICLOSE_0, QIRD_0, QIRDI_0, QISACK_0,
                                SEND_OK, LinkBench, qird, sack)
from tests.test_server_transcripts import SERVER
from tests.test_server_transcripts import Bench as ServerBench
from tests.test_twisted_public_api import production_classes
from tests.test_tls_link import (NAME, PKI, TIMEOUT, client_link, outcome, pump, server_link,
                                 settle, twisted_server, written)

pytestmark = pytest.mark.filterwarnings("ignore:Passing pyOpenSSL:DeprecationWarning")

LINGER = 2.0
EMPTY_READ = b"\r\nOK\r\n"


class Remote:
    """Plays the module (pull mode) between socket 0 and a TLS peer ``peer`` (an End of
    tests.test_tls_link): its bytes are announced and read, the socket's sends reach it. On a
    server's socket (``server=True``) the reads and announcements name the server side and
    ``AT+QISRVC=2`` is answered."""

    def __init__(self, bench, peer, server=False):
        self.bench = bench
        self.peer = peer
        side = 2 if server else 1
        self.announce = b"+QIRDI: 0,%d,0\r\n" % side
        self.read = b"AT+QIRD=0,%d,0,1500\r" % side
        self.source = b"10.9.8.7:40000" if server else b"10.1.2.3:80"
        self.pending = b""  # the peer's bytes the module holds for the socket
        self.sent = 0

    def answer(self, chunk: bytes) -> bytes:
        if not chunk:
            return EMPTY_READ
        return b"\r\n+QIRD: %s,TCP,%d\r\n" % (self.source, len(chunk)) + chunk + b"\r\nOK\r\n"

    def converse(self) -> bytes:
        """Answer the socket's commands until the wire is quiet; returns a command it does not
        play (AT+QICLOSE, ...) or b""."""
        bench = self.bench
        while True:
            new = self.peer.sent()
            if new:
                if not self.pending:
                    bench.module(self.announce)
                self.pending += new
            command = bench.wire()
            if command.startswith(b"AT+QISEND=0,"):
                bench.module(PROMPT)
                payload = bench.wire()
                assert command == b"AT+QISEND=0,%d\r" % len(payload)
                self.sent += len(payload)
                bench.module(SEND_OK)
                self.peer.hear(payload)
            elif command == self.read:
                chunk, self.pending = self.pending[:1500], self.pending[1500:]
                bench.module(self.answer(chunk))
            elif command == QISACK_0:
                bench.module(sack(self.sent, self.sent))
            elif command == b"AT+QISRVC=2\r":
                bench.module(OK)
            elif command == b"" and not new:
                return b""
            elif command:
                return command


class TLSLinkBench(LinkBench):
    """A tls profile's local connection spliced to TLS on module socket 0, handshake done."""

    def __init__(self, tmp_path, pki, maximum=None, **profile):
        options = dict(tls=True, tls_ca=pki.ca_path, tls_hostname=NAME, linger=LINGER)
        options.update(profile)
        super().__init__(tmp_path, profile=dataclasses.replace(PROFILE, **options))
        self.server = twisted_server(pki.server_options(maximum=maximum))
        self.remote = Remote(self, self.server)
        assert self.remote.converse() == b""
        assert self.side.module is not None  # spliced: the handshake is done


@pytest.fixture
def pki(tmp_path):
    return PKI(tmp_path / "pki")


def warnings(events) -> list:
    return [formatEvent(e) for e in events if e["log_level"] >= LogLevel.warn]


def test_the_bench_carries_a_request_and_its_reply_over_tls(tmp_path, pki):
    s = TLSLinkBench(tmp_path, pki)
    s.local_data(b"request")
    assert s.remote.converse() == b""
    assert s.server.app.received == b"request"
    s.server.app.transport.write(b"reply")
    assert s.remote.converse() == b""
    assert s.local.value() == b"reply"


def test_a_local_connection_lost_while_the_tls_link_lingers_closes_it_without_a_dead_link(
        tmp_path, pki):
    """As on a plain link (LINGERING + loseConnection = AT+QICLOSE, ConnectionDone): the app sent
    its request and EOF, then went away (its RST when the reply reached it) while the link
    lingers. The TLS layer's close_notify is written to a socket that no longer takes writes."""
    s = TLSLinkBench(tmp_path, pki)
    s.local_data(b"request")
    s.side.readConnectionLost()
    assert s.remote.converse() == b""
    assert s.socket.transport.phase.value == "lingering"
    s.server.app.transport.write(b"reply")
    assert s.remote.converse() == b""
    with capturedLogs() as events:
        s.side.connectionLost(Failure(ConnectionLost("reset by the app")))
        command = s.remote.converse()
    assert warnings(events) == []
    assert s.modem.counters.get("link_dead", cause="late_write") == 0
    assert command == QICLOSE_0


def test_a_remote_close_while_the_last_words_go_out_is_still_a_clean_end(tmp_path, pki):
    """The reply was whole, the linger ended, and the server ends its side as well: its
    close_notify and FIN cross our close_notify's AT+QISEND. Nothing was lost either way (a plain
    link would have closed at the linger end), yet the app is reset."""
    s = TLSLinkBench(tmp_path, pki)
    s.local_data(b"request")
    s.side.readConnectionLost()
    s.server.app.transport.write(b"reply")
    assert s.remote.converse() == b""
    assert s.local.value() == b"reply"
    s.clock.advance(LINGER)
    command = s.wire()
    assert command.startswith(b"AT+QISEND=0,")  # our close_notify
    s.server.app.transport.loseConnection()  # the server's close_notify ...
    s.module(QIRDI_0)
    s.module(CLOSED_0)  # ... and its FIN, before the module's prompt
    s.module(PROMPT)
    s.wire()
    s.module(SEND_OK)
    assert s.local.disconnecting and not s.local.disconnected  # clean EOF, not a reset


def test_local_bytes_after_the_servers_close_notify_are_not_dropped_behind_a_clean_eof(
        tmp_path, pki):
    """A plain link resets an app whose bytes come after the remote's close (late_write, or 'no
    module socket to carry them'). Under TLS, between the server's close_notify and the socket's
    end (its acks are asked first), the TLS layer drops such bytes without a word, and the app
    then reads a clean EOF."""
    s = TLSLinkBench(tmp_path, pki)
    s.local_data(b"request")
    assert s.remote.converse() == b""
    s.server.app.transport.write(b"reply")
    s.server.app.transport.loseConnection()  # close_notify after the reply
    s.module(QIRDI_0)
    assert s.wire() == QIRD_0
    s.module(qird(s.server.sent()))
    assert s.local.value() == b"reply"
    assert s.wire() == QISACK_0  # the socket closes once "request" is known acked
    s.local_data(b"more of the request")  # the app was still writing
    s.module(sack(s.remote.sent, s.remote.sent))
    s.remote.converse()
    assert b"more of the request" not in s.server.app.received
    assert s.local.disconnected  # reset, as a plain link does; not a clean EOF


def test_a_tls12_server_renegotiating_while_the_link_lingers_is_answered_not_a_dead_link(
        tmp_path, pki):
    """After the local EOF the TLS stream is still open both ways (README: a local EOF does not
    end it), but the module socket takes no write while it lingers. A TLS 1.2 server that
    renegotiates on the request (a per-location client certificate, say) gets no answer: the
    client's answering ClientHello is a 'late write' and the link is declared dead."""
    s = TLSLinkBench(tmp_path, pki, maximum=TLSVersion.TLSv1_2)
    s.local_data(b"GET /private HTTP/1.0\r\n\r\n")
    s.side.readConnectionLost()
    assert s.remote.converse() == b""
    handle = s.server.handle()
    assert handle.renegotiate()
    try:
        handle.do_handshake()
    except SSL.WantReadError:
        pass
    hello_request = handle.bio_read(2 ** 15)
    assert hello_request[:1] == b"\x16"
    s.server.transport.write(hello_request)
    with capturedLogs() as events:
        command = s.remote.converse()
    assert warnings(events) == []
    assert s.modem.counters.get("link_dead", cause="late_write") == 0
    assert command == b"" and not s.local.disconnecting
    s.server.app.transport.write(b"HTTP/1.0 200 OK\r\n\r\n")
    assert s.remote.converse() == b""
    assert s.local.value() == b"HTTP/1.0 200 OK\r\n\r\n"


# -- a module-side tls server ----------------------------------------------------------------------

def tls_server_bench(tmp_path, pki):
    """The ``ssh`` server of the server transcripts with tls; its local service answers when
    the test says."""
    cert = pki.cert
    config = dataclasses.replace(
        SERVER, tls=True, tls_cert=written(pki.directory, "gw.crt", cert.cert_chain_pems[0]),
        tls_key=written(pki.directory, "gw.key", cert.private_key_pem))
    return ServerBench(tmp_path, config).listen()


def test_a_tls_clients_report_and_close_notify_read_with_its_finished_reach_the_local_service(
        tmp_path, pki):
    """A field device connects, sends one report and closes (TLS 1.3: its Finished, the report
    and close_notify leave together, and fit one AT+QIRD). Without TLS the socket is paused until
    the local service answers, so the report waits in the module. With TLS the read that ends
    the handshake carries the report and the close_notify too: the report waits in the splice's
    early buffer, the close_notify closes the socket, and that cancels the local connect: the
    report is dropped and the device is given a clean close."""
    bench = tls_server_bench(tmp_path, pki)
    device = client_link(ClientPolicy(NAME, pki.ca_path))
    device.app.transport.write(b"report")
    device.app.transport.loseConnection()  # sent once the handshake is done, with close_notify
    bench.module(b"\r\n0, REMOTE IP: 10.9.8.7\r\n")
    remote = Remote(bench, device, server=True)
    command = remote.converse()
    assert device.protocol.secured.called and bench.counter("server_refused", cause="tls") == 0
    assert len(bench.local.pending) == 1  # the local service was asked ...
    assert not bench.local.pending[0][1].called  # ... and is still wanted: the report waits
    assert command == b"AT+QICLOSE=0\r"  # the client is gone; its report is ours to hand on
    local = bench.local.answer()
    assert local.value() == b"report" and local.disconnecting  # then EOF


# -- why a handshake ended -------------------------------------------------------------------------

@pytest.mark.parametrize("lost, words", [
    (ConnectionDone(), "the remote closed the connection during the handshake"),
    (ConnectionLost("modem down: PDP context deactivated by the network (+PDP DEACT)"),
     "modem down: PDP context deactivated by the network (+PDP DEACT)"),
], ids=["remote_close", "modem_down"])
def test_a_handshake_cut_by_its_socket_names_the_sockets_reason(pki, lost, words):
    """link.py words a remote close during the handshake on its own, and a ConnectionLost carries
    the socket's cause (a modem down, a dead link). Neither reaches the line: Twisted's TLS layer
    reads its EOF first and hands the wrapped protocol its own 'lost in a non-clean fashion'."""
    client = client_link(ClientPolicy(NAME, pki.ca_path))
    secured = outcome(client.protocol.secured)
    assert client.sent()[:1] == b"\x16"  # the ClientHello; no answer yet
    client.protocol.connectionLost(Failure(lost))
    assert secured[0].check(HandshakeFailed)
    assert str(secured[0].value) == f"TLS handshake failed: {words}"


def test_a_handshake_that_failed_keeps_its_reason_while_its_alert_is_still_being_sent(pki):
    """A server link with tls_ca refuses a client without a certificate: OpenSSL's error, its
    alert handed to the socket, and the socket closes once the alert is acked. The handshake
    deadline is stopped only when the socket has closed: if it comes meanwhile (a slow ack, a
    failure late in the handshake) the line says 'no handshake within 30 s' instead of why."""
    clock = Clock()
    operators = PKI(pki.directory / "operators")
    server = server_link(pki.server_options(tls_ca=operators.ca_path), clock)
    client = client_link(ClientPolicy(NAME, pki.ca_path))
    secured = outcome(server.protocol.secured)
    pump(client, server)
    assert server.transport.disconnecting and not server.told  # the alert waits for its ack
    clock.advance(TIMEOUT)
    settle(server)
    assert str(secured[0].value) == "TLS handshake failed: peer did not return a certificate"


# -- public API ------------------------------------------------------------------------------------

def test_no_override_of_a_twisted_method_takes_or_passes_on_a_private_parameter():
    """A private parameter of a Twisted method (TLSMemoryBIOProtocol's ``_connectWrapped``) can
    go without a deprecation, and an override that declares it and passes it on positionally
    breaks then. The factory never passes it: TLSLink can take (factory, wrappedProtocol)."""
    offenders = [f"{cls.__module__}.{cls.__name__}.{name}({parameter})"
                 for cls in production_classes()
                 for name, value in vars(cls).items() if inspect.isfunction(value)
                 for base in cls.__mro__[1:]
                 if base.__module__.startswith("twisted.")
                 and inspect.isfunction(vars(base).get(name))
                 for parameter in inspect.signature(value).parameters
                 if parameter.startswith("_")
                 and parameter in inspect.signature(vars(base)[name]).parameters]
    assert offenders == []


# -- config ----------------------------------------------------------------------------------------

def test_a_pin_that_no_key_can_have_is_a_config_error():
    """A SHA-256 digest in base64 ends in one of 16 letters before its '=': a pin whose last
    letter is mistyped passes check and then refuses every server ('pin mismatch')."""
    with pytest.raises(TLSFileError):
        parse_pins("sha256//" + "A" * 42 + "B=")
