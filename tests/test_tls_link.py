"""TLS link transcripts: a :class:`~bridge.tls.link.TLSLink` on a StringTransport with a
task.Clock, its peer a Twisted TLS protocol on another StringTransport; the tests move the bytes
between them by hand, so each one says which records crossed and when. Certificates are made per
test with trustme. The last parts run on the real Modem of the modem harness (exact UART bytes):
a protocol's last words at the end of a ModuleSocket's linger, and a TLS link on a ModuleSocket."""

import dataclasses
import datetime
from types import SimpleNamespace

import pytest
import trustme
from cryptography import x509
from OpenSSL import SSL
from twisted.internet.endpoints import connectProtocol
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import CertificateOptions, TLSVersion
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure

from bridge.modem.endpoint import ModemEndpoint
from bridge.tls import files
from bridge.tls.link import HandshakeFailed, SecureEndpoint, TLSLink, TLSLinkFactory
from bridge.tls.policy import ClientPolicy, server_policy
from tests.socket_bench import (CLOSED_0, PROMPT, QICLOSE_0, QISACK_0, SEND_OK, ModemBench,
                                sack)

# Twisted's CertificateOptions takes pyOpenSSL X509/PKey objects; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Passing pyOpenSSL:DeprecationWarning")

NAME = "example.com"
TIMEOUT = 30.0


class App(Protocol):
    """The application protocol a link wraps: what it heard, in order."""

    def __init__(self):
        self.events = []

    def dataReceived(self, data):
        self.events.append(data)

    def connectionLost(self, reason):
        self.events.append(reason)

    @property
    def received(self) -> bytes:
        return b"".join(e for e in self.events if isinstance(e, bytes))

    @property
    def reason(self):
        return next((e for e in self.events if isinstance(e, Failure)), None)


class End:
    """One end of an in-memory connection: ``protocol`` (a TLS layer) on a StringTransport;
    ``app`` is the protocol it wraps (kept: the layer lets go of it when the connection ends)."""

    def __init__(self, protocol):
        self.protocol = protocol
        self.app = protocol.app if isinstance(protocol, TLSLink) else protocol.wrappedProtocol
        self.transport = StringTransport()
        self.told = False
        protocol.makeConnection(self.transport)

    def sent(self) -> bytes:
        """What the layer wrote to its transport since the last call."""
        data = self.transport.value()
        self.transport.clear()
        return data

    def hear(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def lost(self, reason=ConnectionDone) -> None:
        """The transport tells the layer the connection is gone, as a real one does once the
        layer closed or aborted it (a StringTransport only records that it was asked)."""
        self.told = True
        self.protocol.connectionLost(Failure(reason()))

    def handle(self) -> SSL.Connection:
        return self.protocol.getHandle()


def pump(client: End, server: End) -> bytes:
    """Move bytes both ways until neither end writes; returns all the client wrote."""
    from_client = b""
    while True:
        up, down = client.sent(), b""
        if up:
            from_client += up
            server.hear(up)
        down = server.sent()
        if down:
            client.hear(down)
        if not up and not down:
            return from_client


def settle(*ends: End) -> None:
    """Every transport that was closed or aborted tells its layer."""
    for end in ends:
        if end.transport.disconnecting and not end.told:
            end.lost(ConnectionAborted if end.transport.disconnected else ConnectionDone)


def outcome(deferred) -> list:
    results = []
    deferred.addBoth(results.append)
    return results


# -- certificates and the two kinds of end ---------------------------------------------------------

def written(directory, name: str, blob) -> str:
    path = str(directory / name)
    blob.write_to_path(path)
    return path


def pin_of(cert: trustme.LeafCert) -> str:
    return files.public_key_pin(x509.load_pem_x509_certificate(cert.cert_chain_pems[0].bytes()))


class PKI:
    """A CA, its file, and a certificate it issued for NAME (made per test)."""

    def __init__(self, directory):
        directory.mkdir(exist_ok=True)
        self.directory = directory
        self.ca = trustme.CA()
        self.ca_path = written(directory, "ca.pem", self.ca.cert_pem)
        self.cert = self.ca.issue_cert(NAME)

    def server_options(self, cert=None, tls_ca=None, maximum=None):
        """``server_policy`` of a module-side server presenting ``cert`` (default: NAME's);
        ``maximum`` lowers the highest TLS version it speaks."""
        cert = cert or self.cert
        options = server_policy(SimpleNamespace(
            tls_cert=written(self.directory, "server.crt", cert.cert_chain_pems[0]),
            tls_key=written(self.directory, "server.key", cert.private_key_pem),
            tls_ca=tls_ca))
        if maximum is None:
            return options
        return CertificateOptions(
            privateKey=options.privateKey, certificate=options.certificate,
            verify=options.verify, caCerts=options.caCerts,
            requireCertificate=options.requireCertificate, lowerMaximumSecurityTo=maximum)

    def client_identity(self, cert) -> dict:
        return {"cert_path": written(self.directory, "client.crt", cert.cert_chain_pems[0]),
                "key_path": written(self.directory, "client.key", cert.private_key_pem)}


@pytest.fixture
def pki(tmp_path):
    return PKI(tmp_path)


def client_link(policy, clock=None) -> End:
    links = TLSLinkFactory(policy, True, Factory.forProtocol(App), TIMEOUT, clock or Clock())
    return End(links.buildProtocol(None))


class UnbufferedServer(TLSMemoryBIOFactory):
    """Twisted's TLS server without its write aggregation (which writes on the next reactor
    turn): what the server's app writes is on its transport at once."""

    protocol = TLSMemoryBIOProtocol


def twisted_server(options) -> End:
    """A plain Twisted TLS server: the peer a client link talks to."""
    return End(UnbufferedServer(options, False, Factory.forProtocol(App), Clock())
               .buildProtocol(None))


def connected(pki, maximum=None) -> tuple:
    """A client link to a Twisted server presenting NAME's certificate, handshake done."""
    client = client_link(ClientPolicy(NAME, pki.ca_path))
    server = twisted_server(pki.server_options(maximum=maximum))
    pump(client, server)
    assert client.protocol.secured.called
    if maximum is not None:
        assert client.handle().get_protocol_version_name() == "TLSv1.2"
    return client, server


#: The close tests run against a TLS 1.3 server and a TLS 1.2 one (which answers close_notify by
#: closing, and whose alerts are records of their own type).
VERSIONS = pytest.mark.parametrize("maximum", [None, TLSVersion.TLSv1_2], ids=["tls13", "tls12"])


# -- secured ---------------------------------------------------------------------------------------

def test_secured_fires_with_the_app_on_the_last_byte_of_the_servers_flight_and_no_sooner(pki):
    clock = Clock()
    client = client_link(ClientPolicy(NAME, pki.ca_path), clock)
    server = twisted_server(pki.server_options())
    secured = outcome(client.protocol.secured)
    hello = client.sent()
    assert hello[:1] == b"\x16" and secured == []  # a handshake record, the ClientHello, alone
    client.app.transport.write(b"early secret")
    assert client.sent() == b""  # held back until the handshake is done

    server.hear(hello)
    flight = server.sent()
    client.hear(flight[:-1])
    assert secured == [] and client.sent() == b""
    client.hear(flight[-1:])
    assert secured == [client.app]
    assert clock.getDelayedCalls() == []  # the handshake deadline is gone

    finished_and_payload = client.sent()
    assert b"early secret" not in finished_and_payload
    server.hear(finished_and_payload)
    assert server.app.received == b"early secret"


# -- handshake timeout -----------------------------------------------------------------------------

def test_a_peer_that_never_answers_fails_secured_at_exactly_the_timeout_and_aborts(pki):
    clock = Clock()
    client = client_link(ClientPolicy(NAME, pki.ca_path), clock)
    secured = outcome(client.protocol.secured)
    assert client.sent()[:1] == b"\x16"  # the ClientHello, never answered
    clock.advance(TIMEOUT - 0.001)
    assert secured == [] and not client.transport.disconnecting
    clock.advance(0.001)
    assert client.transport.disconnected  # aborted, not closed
    settle(client)
    assert secured[0].check(HandshakeFailed)
    assert str(secured[0].value) == "TLS handshake failed: no handshake within 30 s"
    assert client.app.reason.check(ConnectionLost) and client.app.received == b""  # not a clean end


# -- why a client link refuses its server ----------------------------------------------------------

def handshake(client: End, server: End) -> list:
    """Run the handshake to its end; the app writes at once, as if nothing could go wrong.
    Returns the outcome of ``secured``."""
    secured = outcome(client.protocol.secured)
    client.app.transport.write(b"payload")
    pump(client, server)
    settle(client, server)
    return secured


def refused(secured: list, server: End) -> str:
    """The refusal's message; the server got an alert and never a byte of payload."""
    assert len(secured) == 1 and secured[0].check(HandshakeFailed)
    assert server.app.received == b"" and server.app.reason.check(SSL.Error)
    return str(secured[0].value)


def test_a_server_certificate_from_an_unknown_ca_is_refused_as_such(pki):
    server = twisted_server(PKI(pki.directory / "other").server_options())
    secured = handshake(client_link(ClientPolicy(NAME, pki.ca_path)), server)
    assert refused(secured, server) == \
        "TLS handshake failed: unknown CA (the issuer's certificate is not trusted)"


def test_a_certificate_for_another_name_is_refused_as_a_name_mismatch(pki):
    server = twisted_server(pki.server_options(pki.ca.issue_cert("other.example")))
    secured = handshake(client_link(ClientPolicy(NAME, pki.ca_path)), server)
    assert refused(secured, server) == \
        "TLS handshake failed: name mismatch: the certificate is not for example.com"


def expired(pki, name=NAME) -> trustme.LeafCert:
    utc = datetime.timezone.utc
    return pki.ca.issue_cert(name, not_before=datetime.datetime(2020, 1, 1, tzinfo=utc),
                             not_after=datetime.datetime(2021, 1, 1, tzinfo=utc))


def test_an_expired_certificate_is_refused_as_expired(pki):
    server = twisted_server(pki.server_options(expired(pki)))
    secured = handshake(client_link(ClientPolicy(NAME, pki.ca_path)), server)
    assert refused(secured, server) == "TLS handshake failed: certificate has expired"


WRONG_PIN = "sha256//" + "A" * 43 + "="


def test_a_pin_mismatch_names_the_servers_actual_pin(pki):
    server = twisted_server(pki.server_options())
    secured = handshake(client_link(ClientPolicy(NAME, pins=(WRONG_PIN,))), server)
    assert refused(secured, server) == \
        f"TLS handshake failed: public key pin mismatch: the server's key is {pin_of(pki.cert)}"


def test_pin_only_trusts_the_pinned_key_even_expired_and_for_another_name(pki):
    cert = expired(pki, "other.example")
    server = twisted_server(pki.server_options(cert))
    client = client_link(ClientPolicy(NAME, pins=(WRONG_PIN, pin_of(cert))))
    secured = handshake(client, server)
    assert secured == [client.app] and server.app.received == b"payload"


def test_with_a_ca_and_a_pin_both_must_pass(pki):
    server = twisted_server(pki.server_options())
    secured = handshake(client_link(ClientPolicy(NAME, pki.ca_path, pins=(WRONG_PIN,))), server)
    assert refused(secured, server) == \
        f"TLS handshake failed: public key pin mismatch: the server's key is {pin_of(pki.cert)}"

    other = PKI(pki.directory / "other")  # the right pin, but a CA the client does not trust
    server = twisted_server(pki.server_options())
    secured = handshake(client_link(ClientPolicy(NAME, other.ca_path, pins=(pin_of(pki.cert),))),
                        server)
    assert refused(secured, server) == \
        "TLS handshake failed: unknown CA (the issuer's certificate is not trusted)"

    server = twisted_server(pki.server_options())
    client = client_link(ClientPolicy(NAME, pki.ca_path, pins=(pin_of(pki.cert),)))
    assert handshake(client, server) == [client.app]


# -- last words and how the stream ends ------------------------------------------------------------

@VERSIONS
def test_last_words_are_close_notify_handed_over_not_written(pki, maximum):
    client, server = connected(pki, maximum)
    words = client.protocol.lastWords()
    assert words != b"" and (maximum is None or words[:1] == b"\x15")  # 1.2: an alert record
    assert client.sent() == b"" and not client.transport.disconnecting  # the socket sends them
    server.hear(words)
    assert server.handle().get_shutdown() & SSL.RECEIVED_SHUTDOWN  # a clean TLS shutdown
    assert server.transport.disconnecting  # Twisted's answer: its close_notify, then close
    settle(server)
    assert server.app.reason.check(ConnectionDone)


@VERSIONS
@pytest.mark.parametrize("said_goodbye, heard", [(True, ConnectionDone), (False, ConnectionLost)],
                         ids=["after_last_words", "truncation"])
def test_the_transports_close_is_a_clean_end_only_after_a_close_notify(pki, maximum, said_goodbye,
                                                                        heard):
    """Without a close_notify from either side, the remote's close may have cut the stream."""
    client, server = connected(pki, maximum)
    server.app.transport.write(b"reply")
    pump(client, server)
    if said_goodbye:
        server.hear(client.protocol.lastWords())
    client.lost(ConnectionDone)  # the socket closed; no close_notify from the server was heard
    assert client.app.events == [b"reply", client.app.reason]
    assert client.app.reason.check(heard)


def test_last_words_before_the_handshake_are_none(pki):
    client = client_link(ClientPolicy(NAME, pki.ca_path))
    client.sent()
    assert client.protocol.lastWords() == b"" and client.sent() == b""


# -- the peer's close_notify -----------------------------------------------------------------------

@VERSIONS
def test_the_servers_close_notify_is_answered_only_as_last_words_and_the_app_gets_all_then_eof(
        pki, maximum):
    client, server = connected(pki, maximum)
    server.app.transport.write(b"the whole reply")
    server.app.transport.loseConnection()
    reply_and_close_notify = server.sent()
    client.hear(reply_and_close_notify)
    assert client.sent() == b""  # the answer is not written as payload ...
    assert client.transport.disconnecting and not client.transport.disconnected
    assert client.app.events == [b"the whole reply"]
    answer = client.protocol.lastWords()  # ... but handed to the socket as its farewell
    assert answer and client.protocol.lastWords() == b""  # once
    server.hear(answer)
    assert server.handle().get_shutdown() & SSL.SENT_SHUTDOWN  # the server's shutdown completes
    client.lost(ConnectionDone)
    assert client.sent() == b""
    assert client.app.events == [b"the whole reply", client.app.reason]
    assert client.app.reason.check(ConnectionDone)


# -- our close -------------------------------------------------------------------------------------

@VERSIONS
@pytest.mark.parametrize("with_producer", [True, False], ids=["producer", "no_producer"])
def test_lose_connection_sends_close_notify_and_closes_without_waiting_for_the_peers(
        pki, with_producer, maximum):
    client, server = connected(pki, maximum)
    client.app.transport.write(b"last request")
    if with_producer:
        local = StringTransport()  # the splice registers the local connection as producer
        client.protocol.registerProducer(local, True)
        client.protocol.loseConnection()
        server.hear(client.sent())  # the request only: the close waits for the producer
        assert not client.transport.disconnecting
        assert not server.handle().get_shutdown() & SSL.RECEIVED_SHUTDOWN
        client.protocol.unregisterProducer()
    else:
        client.protocol.loseConnection()
    server.hear(client.sent())
    assert server.app.received == b"last request"
    assert server.handle().get_shutdown() & SSL.RECEIVED_SHUTDOWN  # close_notify came too
    assert client.transport.disconnecting  # without waiting for the server's close_notify
    assert not client.transport.disconnected  # closed, not aborted: the socket sends it first
    client.lost(ConnectionDone)  # the server's own close_notify never reached us
    assert client.app.reason.check(ConnectionDone)


# -- client certificates ---------------------------------------------------------------------------

def server_link(options, clock=None) -> End:
    links = TLSLinkFactory(options, False, Factory.forProtocol(App), TIMEOUT, clock or Clock())
    return End(links.buildProtocol(None))


def test_a_server_link_with_tls_ca_refuses_a_client_without_a_certificate(pki):
    operators = PKI(pki.directory / "operators")
    server = server_link(pki.server_options(tls_ca=operators.ca_path))
    client = client_link(ClientPolicy(NAME, pki.ca_path))
    secured = outcome(server.protocol.secured)
    with capturedLogs() as events:
        client_secured = handshake(client, server)
    assert len(secured) == 1 and secured[0].check(HandshakeFailed)
    assert str(secured[0].value) == "TLS handshake failed: peer did not return a certificate"
    assert server.app.received == b""  # the local service never hears from it
    # TLS 1.3: the client's handshake was done before the server read its (empty) certificate;
    # the server's alert ends its link, and one line says why.
    assert client_secured == [client.app] and client.app.reason.check(SSL.Error)
    assert [formatEvent(e) for e in events if e["log_level"] is LogLevel.warn] == [
        "[tls] TLS with 192.168.1.1:54321 failed: tlsv13 alert certificate required"]


def test_a_server_link_with_tls_ca_accepts_a_client_with_a_certificate_from_that_ca(pki):
    operators = PKI(pki.directory / "operators")
    server = server_link(pki.server_options(tls_ca=operators.ca_path))
    client = client_link(ClientPolicy(
        NAME, pki.ca_path, **operators.client_identity(operators.ca.issue_cert("op1.example"))))
    secured = outcome(server.protocol.secured)
    assert handshake(client, server) == [client.app]
    assert secured == [server.app] and server.app.received == b"payload"
    assert not server.transport.disconnecting and not client.transport.disconnecting


def test_a_client_link_names_the_alert_of_a_tls12_server_that_wants_a_certificate(pki):
    operators = PKI(pki.directory / "operators")
    server = twisted_server(pki.server_options(tls_ca=operators.ca_path,
                                               maximum=TLSVersion.TLSv1_2))
    secured = handshake(client_link(ClientPolicy(NAME, pki.ca_path)), server)
    assert len(secured) == 1 and secured[0].check(HandshakeFailed)
    message = str(secured[0].value)  # OpenSSL's words: "sslv3 alert" before 3.0, "tls alert" since
    assert message.startswith("TLS handshake failed: ") and message.endswith(
        " alert handshake failure")
    assert server.app.received == b""


# -- last words on a module socket -----------------------------------------------------------------

LINGER = 2.0
#: Stands for a close_notify: the shape of a TLS 1.2 alert record (type 21, version, length 2,
#: level warning, description close_notify) as a protocol's last words.
WORDS = b"\x15\x03\x03\x00\x02\x01\x00"
CLOSE_OK_0 = b"\r\n0, CLOSE OK\r\n"


class Farewell(Protocol):
    """A protocol that ends its stream with bytes of its own, as TLSLink does."""

    def __init__(self, words: bytes):
        self.words = words
        self.asked = 0
        self.reason = None

    def lastWords(self) -> bytes:
        self.asked += 1
        return self.words

    def connectionLost(self, reason):
        self.reason = reason


def module_endpoint(bench, **options) -> ModemEndpoint:
    settings = dataclasses.replace(bench.modem.socket_settings(), linger=LINGER)
    return ModemEndpoint(bench.modem, "10.1.2.3", 80, settings, **options)


def farewell_on_socket_0(bench, words: bytes, **options) -> Farewell:
    protocol = Farewell(words)
    connectProtocol(module_endpoint(bench, **options), protocol)
    bench.connect_ok()
    return protocol


def farewell_then_close(bench, protocol, acked_before=0) -> None:
    """The words leave as one fixed-length AT+QISEND, are acked, then AT+QICLOSE=0: a clean
    close, heard only then."""
    assert bench.wire() == b"AT+QISEND=0,7\r"
    bench.module(PROMPT)
    assert bench.wire() == WORDS
    bench.module(SEND_OK)
    assert bench.wire() == QISACK_0 and protocol.reason is None  # acked before the close
    bench.module(sack(acked_before + 7, acked_before + 7))
    assert bench.wire() == QICLOSE_0 and protocol.reason.check(ConnectionDone)


def test_last_words_go_out_at_the_linger_end_in_one_fixed_length_send_acked_before_qiclose(
        tmp_path):
    bench = ModemBench(tmp_path)
    protocol = farewell_on_socket_0(bench, WORDS)
    protocol.transport.loseWriteConnection()  # nothing unsent, nothing unacked: lingers now
    bench.clock.advance(LINGER - 0.001)
    assert bench.wire() == b"" and protocol.asked == 0
    bench.clock.advance(0.001)
    assert protocol.asked == 1
    farewell_then_close(bench, protocol)
    bench.module(CLOSE_OK_0)
    assert bench.modem.slots_in_use == frozenset() and protocol.asked == 1


def test_a_lingering_socket_reclaimed_for_a_waiting_connection_says_its_last_words_first(
        tmp_path):
    bench = ModemBench(tmp_path)
    protocol = farewell_on_socket_0(bench, WORDS, limit=1)
    protocol.transport.loseWriteConnection()
    waiter = Protocol()
    connectProtocol(module_endpoint(bench, limit=1), waiter)
    assert bench.modem.sockets.waiting() == 1
    bench.clock.advance(0.1875)
    assert bench.wire() == b""
    bench.clock.advance(0.0125)  # idle for 0.2 s: given up well before the linger's end
    farewell_then_close(bench, protocol)
    bench.module(CLOSE_OK_0)
    bench.connect_ok(0)
    assert waiter.transport.slot == 0


def test_a_protocol_with_nothing_to_say_closes_right_at_the_linger_end(tmp_path):
    bench = ModemBench(tmp_path)
    protocol = farewell_on_socket_0(bench, b"")
    protocol.transport.loseWriteConnection()
    bench.clock.advance(LINGER - 0.001)
    assert bench.wire() == b""
    bench.clock.advance(0.001)
    assert bench.wire() == QICLOSE_0 and protocol.asked == 1
    assert protocol.reason.check(ConnectionDone)


def test_a_close_says_the_last_words_too_once_everything_written_is_acked(tmp_path):
    bench = ModemBench(tmp_path)
    protocol = farewell_on_socket_0(bench, WORDS)
    protocol.transport.write(b"payload")
    protocol.transport.loseConnection()
    assert bench.send_ok(1) == b"AT+QISEND=0,7\rpayload" + QISACK_0
    assert protocol.asked == 0  # not before the payload is acked
    bench.module(sack(7, 7))
    assert protocol.asked == 1
    farewell_then_close(bench, protocol, acked_before=7)


def test_a_remote_that_closes_during_the_farewell_loses_no_payload_the_close_stays_clean(
        tmp_path):
    """The remote hangs up right after its own goodbye: our answer cannot be delivered, but all
    that was written was acked before it, so the end is clean, not a dead link."""
    bench = ModemBench(tmp_path)
    protocol = farewell_on_socket_0(bench, WORDS)
    protocol.transport.loseConnection()
    assert bench.wire() == b"AT+QISEND=0,7\r"
    bench.module(PROMPT)
    assert bench.wire() == WORDS
    bench.module(CLOSED_0 + SEND_OK)
    assert QICLOSE_0 in bench.wire()
    assert protocol.reason.check(ConnectionDone)
    assert bench.modem.counters.get("link_dead", cause="unsent_at_remote_close") == 0


def test_a_farewell_that_is_never_acked_ends_cleanly_not_as_a_dead_link(tmp_path):
    bench = ModemBench(tmp_path)
    protocol = farewell_on_socket_0(bench, WORDS)
    protocol.transport.loseConnection()
    assert bench.send_ok(1) == b"AT+QISEND=0,7\r" + WORDS + QISACK_0
    wire = b""
    for _ in range(300):  # the module answers every check: nothing acked, for 30 s (ack_wait)
        bench.module(sack(7, 0))
        bench.clock.advance(0.1)
        wire = bench.wire()
        if wire == QICLOSE_0:
            break
        assert wire in (b"", QISACK_0)
    assert wire == QICLOSE_0 and bench.clock.seconds() >= 30.0
    assert protocol.reason.check(ConnectionDone)
    assert bench.modem.counters.get("link_dead", cause="acks_overdue") == 0


@VERSIONS
def test_after_our_close_notify_the_peers_answer_owes_nothing_last_words_are_none(pki, maximum):
    """The peer's close_notify that answers ours owes nothing: no second close_notify."""
    client, server = connected(pki, maximum)
    client.protocol.loseConnection()  # our close_notify, as payload
    server.hear(client.sent())
    client.hear(server.sent())  # the server's answering close_notify
    assert client.sent() == b""
    assert client.protocol.lastWords() == b""


def test_a_tls_link_closed_by_us_sends_one_close_notify_not_a_second_as_farewell(tmp_path, pki):
    """The same on a module socket (push mode): our close_notify, the server's answer pushed
    while we wait for the ack, then the ack: AT+QICLOSE, not a second AT+QISEND (one more send
    and ack round trip on the radio before the app hears its end)."""
    bench = ModemBench(tmp_path, receive="push")
    server = twisted_server(pki.server_options())
    endpoint = SecureEndpoint(module_endpoint(bench), ClientPolicy(NAME, pki.ca_path), TIMEOUT,
                              bench.clock)
    connected_apps = []
    endpoint.connect(Factory.forProtocol(App)).addBoth(connected_apps.append)
    bench.connect_ok()
    server.hear(uplink(bench))
    bench.module(pushed(server.sent()))
    app = connected_apps[0]
    app.transport.write(b"request")
    server.hear(uplink(bench))
    assert server.app.received == b"request"

    app.transport.loseConnection()  # close_notify goes out as payload
    command = bench.wire()
    bench.module(PROMPT)
    close_notify = bench.wire()
    assert command == b"AT+QISEND=0,%d\r" % len(close_notify)
    server.hear(close_notify)
    assert server.handle().get_shutdown() & SSL.RECEIVED_SHUTDOWN
    bench.module(SEND_OK)
    assert bench.wire() == QISACK_0
    bench.module(pushed(server.sent()))  # the server's answer arrives before the ack
    sent = app.transport.transport.stats()["sent"]
    bench.module(sack(sent, sent))
    assert bench.wire() == QICLOSE_0
    assert app.reason.check(ConnectionDone)


def test_modem_down_during_the_farewell_after_the_linger_end_is_a_clean_end(tmp_path):
    """Only the farewell is at stake when the modem goes down: the app, which got its whole
    reply and whose bytes were all acked, hears a clean end (the splice closes, not resets)."""
    bench = ModemBench(tmp_path)
    protocol = farewell_on_socket_0(bench, WORDS)
    protocol.transport.loseWriteConnection()
    bench.clock.advance(LINGER)
    assert bench.wire() == b"AT+QISEND=0,7\r" and protocol.asked == 1
    bench.module(PROMPT)
    assert bench.wire() == WORDS
    bench.module(SEND_OK)
    assert bench.wire() == QISACK_0
    bench.module(b"\r\n+PDP DEACT\r\n")  # the link dies with only the farewell at stake
    assert protocol.reason is not None
    assert protocol.reason.check(ConnectionDone), protocol.reason.getErrorMessage()


# -- a TLS link on a module socket -----------------------------------------------------------------

def uplink(bench) -> bytes:
    """Play the module for the AT+QISENDs on the wire, each checked to be fixed-length, until
    the wire is quiet; returns their payloads, as the remote receives them."""
    payloads = b""
    while (command := bench.wire()).startswith(b"AT+QISEND=0,"):
        bench.module(PROMPT)
        payload = bench.wire()
        assert command == b"AT+QISEND=0,%d\r" % len(payload)
        payloads += payload
        bench.module(SEND_OK)
    assert command == b""
    return payloads


def pushed(data: bytes) -> bytes:
    """The module pushing ``data`` from the remote (``receive = push``), a segment at a time."""
    segments = [data[at:at + 1460] for at in range(0, len(data), 1460)]
    return b"".join(b"\r\n+RECEIVE: 0, %d\r\n" % len(s) + s for s in segments)


def test_a_tls_link_on_a_module_socket_says_close_notify_at_the_linger_end(tmp_path, pki):
    bench = ModemBench(tmp_path, receive="push")
    server = twisted_server(pki.server_options())
    endpoint = SecureEndpoint(module_endpoint(bench), ClientPolicy(NAME, pki.ca_path), TIMEOUT,
                              bench.clock)
    connected = outcome(endpoint.connect(Factory.forProtocol(App)))
    bench.connect_ok()
    server.hear(uplink(bench))  # the ClientHello
    assert connected == []
    bench.module(pushed(server.sent()))
    app = connected[0]
    app.transport.write(b"request")
    server.hear(uplink(bench))  # the client's Finished, then the request
    assert server.app.received == b"request"

    app.transport.loseWriteConnection()  # the local EOF: nothing goes out but the ack check
    sent = app.transport.transport.stats()["sent"]
    assert bench.wire() == QISACK_0
    bench.module(sack(sent, sent))
    bench.clock.advance(LINGER / 2)
    server.app.transport.write(b"reply")
    bench.module(pushed(server.sent()))  # the reply still comes, and restarts the linger
    bench.clock.advance(LINGER - 0.001)
    assert bench.wire() == b"" and app.events == [b"reply"]
    bench.clock.advance(0.001)
    command = bench.wire()
    bench.module(PROMPT)
    close_notify = bench.wire()
    assert command == b"AT+QISEND=0,%d\r" % len(close_notify)  # one fixed-length send
    server.hear(close_notify)
    assert server.handle().get_shutdown() & SSL.RECEIVED_SHUTDOWN
    bench.module(SEND_OK)
    assert bench.wire() == QISACK_0 and app.reason is None  # acked before the close
    sent = app.transport.transport.stats()["sent"]
    bench.module(sack(sent, sent))
    assert bench.wire() == QICLOSE_0
    assert app.events == [b"reply", app.reason] and app.reason.check(ConnectionDone)
