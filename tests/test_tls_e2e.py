"""TLS over module links, end to end: a real local TCP client -> a ``tls = yes`` profile's listener
-> TLS (:class:`~bridge.tls.link.TLSLink`) -> module socket -> pty -> simulator -> a real TLS
server on loopback (Twisted's ``ssl:`` server endpoint), and back; and a module-side
``[server:s] tls = yes`` reached by a real TLS client on the simulator's listener.

Certificates are made at test time with ``trustme``. Each test checks the warnings logged: none,
or exactly the line its failure must give (README "TLS over module links").
"""

import datetime
import re

import pytest
import pytest_twisted
import trustme
from twisted.internet import endpoints, protocol, reactor, ssl
from twisted.internet.error import ConnectionDone

from tests.e2e_bed import (Echo, ResetSeen, Source, connect, echo_works, ended, open_link,
                           reset_not_eof, salted, server, sha, troubles, until)
from tests.test_config_tls import pem, pin_of
from tests.test_endpoint_e2e import App, lost
from tests.test_keepalive_e2e import DEADLINE, KeepaliveBed, assert_schedule, dead_link_ends
from tests.test_server_e2e import ServerBed, start as start_server_bed
from tests.tls_bed import TLSBed, client_tls, identity_file, start, tls_remote

# Twisted's own TLS code still hands pyOpenSSL X509/PKey objects; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Passing pyOpenSSL:DeprecationWarning")

PAST = datetime.datetime(2020, 1, 1)


@pytest.fixture
def trouble():
    """The warnings and logged failures of the test (:func:`~tests.e2e_bed.troubles`)."""
    with troubles() as seen:
        yield seen


class PKI:
    """A CA the profile trusts, and the PEM files of the test under ``folder``."""

    def __init__(self, folder):
        self.folder = folder
        self.ca = trustme.CA()
        self.ca_file = pem(folder / "ca.pem", self.ca.cert_pem.bytes())

    def verified(self) -> str:
        """Profile keys that verify the remote (127.0.0.1) as ``localhost`` against the CA."""
        return f"tls_ca = {self.ca_file}\ntls_hostname = localhost\n"

    async def remote(self, app, cert=None, client_ca=None):
        """``app`` behind a TLS server presenting ``cert`` (by default the CA's certificate for
        localhost); with ``client_ca``, it wants a client certificate from that CA."""
        cert = cert or self.ca.issue_cert("localhost")
        return await tls_remote(app, identity_file(self.folder, "server", cert), client_ca)


@pytest.fixture
def pki(tmp_path):
    return PKI(tmp_path / "pki")


def refusal(bed, reason: str) -> str:
    return (f"[profile:p] connect to 127.0.0.1:{bed.remote.getHost().port} failed: TLS handshake "
            f"failed: {reason}; resetting the local connection")


def nothing_reached(remote, app_factory, payload: bytes):
    """Not a byte of ``payload`` reached the TLS server, encrypted or not."""
    assert all(not connection.received for connection in app_factory.connections)
    assert payload not in bytes(remote.raw)


# -- 1. a verified link carries bytes intact, as TLS ----------------------------------------------

@pytest.mark.parametrize("receive", ["pull", "push"])
@pytest_twisted.ensureDeferred
async def test_256_kib_echo_through_a_verified_link_is_tls_below_and_closes_with_close_notify(
        tmp_path, pki, trouble, receive):
    echo = server(Echo)
    remote = await pki.remote(echo)
    payload = salted(256 * 1024, seed=3)
    async with await start(tmp_path, remote, pki.verified(), receive=receive) as bed:
        client = await connect(bed.port, ResetSeen())
        client.transport.write(payload)
        await until(lambda: len(client.received) >= len(payload), what="the echo")
        assert sha(echo.connections[0].received) == sha(payload)  # decrypted by the server
        assert sha(client.received) == sha(payload)
        raw = bytes(remote.raw)  # what the server's TCP received: TLS records, no plaintext
        assert raw[:1] == b"\x16" and len(raw) > len(payload)
        assert all(payload[i:i + 64] not in raw for i in range(0, len(payload), 4096))
        [link] = bed.admission.stats()["links"]  # a TLS link answers as a module socket does
        assert link["slot"] == 0 and link["tls"] and link["received"] > len(payload)
        # The local client closes: close_notify reaches the server (a bare FIN would be a
        # truncation there, not ConnectionDone), then the module socket closes.
        client.transport.loseConnection()
        await until(lambda: echo.connections[0].reason is not None, what="the server's close")
        assert echo.connections[0].reason.check(ConnectionDone), echo.connections[0].reason
        await until(bed.idle, what="the module socket to be freed")
    assert trouble == []


# -- 2. refusals: a reset and one line naming why --------------------------------------------------

def unknown_ca(pki):
    return trustme.CA().issue_cert("localhost"), "", \
        "unknown CA (the issuer's certificate is not trusted)"


def wrong_name(pki):
    return pki.ca.issue_cert("other.example"), "", \
        "name mismatch: the certificate is not for localhost"


def expired(pki):
    return pki.ca.issue_cert("localhost", not_after=PAST), "", "certificate has expired"


def pin_mismatch(pki):
    cert = pki.ca.issue_cert("localhost")
    return cert, f"tls_pin = {pin_of(pki.ca.issue_cert('localhost'))}\n", \
        f"public key pin mismatch: the server's key is {pin_of(cert)}"


@pytest.mark.parametrize("case", [unknown_ca, wrong_name, expired, pin_mismatch])
@pytest_twisted.ensureDeferred
async def test_a_refused_server_resets_the_local_connection_and_gets_no_payload(
        tmp_path, pki, trouble, case):
    cert, keys, reason = case(pki)
    echo = server(Echo)
    remote = await pki.remote(echo, cert)
    payload = b"secret sent before the handshake"
    async with await start(tmp_path, remote, pki.verified() + keys) as bed:
        client = await connect(bed.port, ResetSeen())
        client.transport.write(payload)
        await reset_not_eof(client)
        assert client.received == b""
        assert remote.raw[:1] == b"\x16"  # a handshake went through the module ...
        nothing_reached(remote, echo, payload)  # ... and nothing fell back to plaintext
        await until(bed.idle, what="the module socket to be freed")
        assert trouble == [refusal(bed, reason)]


# -- 3. a pin alone ----------------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_a_pin_alone_trusts_an_expired_certificate_for_another_name_from_an_unknown_ca(
        tmp_path, pki, trouble):
    cert = trustme.CA().issue_cert("other.example", not_after=PAST)
    echo = server(Echo)
    remote = await pki.remote(echo, cert)
    payload = salted(16 * 1024, seed=5)
    async with await start(tmp_path, remote, f"tls_pin = {pin_of(cert)}\n") as bed:
        await echo_works(bed, payload)
    assert sha(echo.connections[0].received) == sha(payload)
    assert trouble == []


# -- 4. mutual TLS -----------------------------------------------------------------------------

class CertifiedEcho(Echo):
    """Echoes, and keeps the certificate the client presented."""

    def dataReceived(self, data):
        self.peer = ssl.Certificate(self.transport.getPeerCertificate())
        super().dataReceived(data)


@pytest_twisted.ensureDeferred
async def test_a_server_that_wants_a_client_certificate_accepts_tls_cert_and_key(
        tmp_path, pki, trouble):
    clients = trustme.CA()
    mine = clients.issue_cert("meter-17")
    echo = server(CertifiedEcho)
    remote = await pki.remote(echo, client_ca=clients)
    identity = identity_file(pki.folder, "meter", mine)
    keys = f"tls_cert = {identity}\ntls_key = {identity}\n"
    async with await start(tmp_path, remote, pki.verified() + keys) as bed:
        await echo_works(bed, b"metered")
    presented = ssl.Certificate.loadPEM(mine.cert_chain_pems[0].bytes())
    assert echo.connections[0].peer.digest() == presented.digest()
    assert echo.connections[0].received == b"metered"
    assert trouble == []


@pytest_twisted.ensureDeferred
async def test_a_server_that_wants_a_client_certificate_refuses_a_profile_without_one(
        tmp_path, pki, trouble):
    echo = server(Echo)
    remote = await pki.remote(echo, client_ca=trustme.CA())
    payload = b"no certificate, no service"
    async with await start(tmp_path, remote, pki.verified()) as bed:
        client = await connect(bed.port, ResetSeen())
        client.transport.write(payload)
        await reset_not_eof(client)
        assert client.received == b""
        nothing_reached(remote, echo, payload)
        await until(bed.idle, what="the module socket to be freed")
        # TLS 1.3: our handshake is done when the server reads our (empty) Certificate and sends
        # its alert, so the link was spliced: the TLS layer names the alert.
        assert trouble == [f"[profile:p] TLS with 127.0.0.1:{bed.remote.getHost().port} failed: "
                           "tlsv13 alert certificate required"]


# -- 5. the handshake's deadline ---------------------------------------------------------------

class Mute(protocol.Protocol):
    """Accepts the connection and never says a word."""

    def connectionMade(self):
        self.factory.connections.append(self)


@pytest_twisted.ensureDeferred
async def test_a_remote_that_never_answers_the_handshake_is_given_up_after_tls_timeout(
        tmp_path, trouble):
    mute = server(Mute)
    async with await start(tmp_path, mute, "tls_timeout = 1\n") as bed:
        client = await connect(bed.port, ResetSeen())
        client.transport.write(b"hello?")
        await until(lambda: mute.connections, what="the TCP connect")
        await reset_not_eof(client)
        await until(bed.idle, what="the module socket to be freed")
        assert trouble == [refusal(bed, "no handshake within 1 s")]


# -- 6. close semantics ------------------------------------------------------------------------

REQUEST = b"GET /readings HTTP/1.0\r\n\r\n"
REPLY = salted(32 * 1024, seed=8)


class SlowAnswer(Echo):
    """Answers a request after a pause, and leaves the closing to the client."""

    def dataReceived(self, data):
        self.received += data
        if self.received.endswith(b"\r\n\r\n"):
            reactor.callLater(0.3, self.transport.write, REPLY)


@pytest_twisted.ensureDeferred
async def test_a_local_eof_leaves_the_tls_stream_open_for_the_reply_then_close_notify_ends_it(
        tmp_path, pki, trouble):
    answer = server(SlowAnswer)
    remote = await pki.remote(answer)
    async with await start(tmp_path, remote, pki.verified(), linger=1.0) as bed:
        client = await connect(bed.port, ResetSeen())
        client.transport.write(REQUEST)
        client.transport.loseWriteConnection()
        assert sha(await ended(client, "the reply and EOF")) == sha(REPLY)
        assert client.reason.check(ConnectionDone), client.reason
        await until(lambda: answer.connections[0].reason is not None, what="the server's close")
        assert answer.connections[0].received == REQUEST
        assert answer.connections[0].reason.check(ConnectionDone), answer.connections[0].reason
        await until(bed.idle, what="the module socket to be freed")
    assert trouble == []


@pytest_twisted.ensureDeferred
async def test_the_servers_close_notify_gives_the_local_client_every_byte_then_eof(
        tmp_path, pki, trouble):
    payload = salted(64 * 1024, seed=6)
    remote = await pki.remote(server(Source, payload))
    async with await start(tmp_path, remote, pki.verified()) as bed:
        client = await connect(bed.port, ResetSeen())
        assert sha(await ended(client, "every byte and EOF")) == sha(payload)
        assert client.reason.check(ConnectionDone), client.reason
        await until(bed.idle, what="the module socket to be freed")
    assert trouble == []


class CutOff(protocol.Protocol):
    """Sends ``factory.payload``, then its TCP connection closes without close_notify."""

    def connectionMade(self):
        self.transport.write(self.factory.payload)
        reactor.callLater(0.3, self.transport.transport.loseConnection)


@pytest_twisted.ensureDeferred
async def test_a_server_that_closes_without_close_notify_resets_the_local_client(
        tmp_path, pki, trouble):
    remote = await pki.remote(server(CutOff, b"the start of a longer answer"))
    async with await start(tmp_path, remote, pki.verified()) as bed:
        client = await connect(bed.port, ResetSeen())
        await reset_not_eof(client)  # a truncation is not a clean end
        await until(bed.idle, what="the module socket to be freed")
    assert trouble == []


# -- 7. a module-side TLS server ---------------------------------------------------------------

class TLSServerBed(ServerBed):
    """``[server:s]`` with ``tls = yes``, presenting a certificate for localhost from ``ca``."""

    def __init__(self, *args):
        super().__init__(*args)
        self.ca = trustme.CA()

    @property
    def profile_keys(self):
        identity = identity_file(self.tmp_path, "gateway", self.ca.issue_cert("localhost"))
        return super().profile_keys + f"tls = yes\ntls_cert = {identity}\ntls_key = {identity}\n"


@pytest_twisted.ensureDeferred
async def test_a_module_side_tls_server_echoes_64_kib_to_a_verifying_tls_client(tmp_path,
                                                                                trouble):
    payload = salted(64 * 1024, seed=13)
    async with await start_server_bed(tmp_path, TLSServerBed) as bed:
        endpoint = endpoints.wrapClientTLS(
            client_tls(bed.ca),
            endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", bed.server_port))
        app = await endpoints.connectProtocol(endpoint, App())
        app.transport.write(payload)
        await until(lambda: len(app.received) >= len(payload), what="the echo")
        assert app.handshake_done  # the client verified the gateway's certificate
        assert sha(app.received) == sha(payload)
        service = bed.remote_factory.connections[0]
        assert sha(service.received) == sha(payload)  # plaintext to the local service
        # The local service ends the stream: after the linger, the gateway's close_notify.
        service.transport.loseConnection()
        reason = await lost(app, "the gateway's close")
        assert reason.check(ConnectionDone), reason
        await until(lambda: not bed.service.clients and not bed.slots_in_use(),
                    what="the server socket to be closed and freed")
    assert trouble == []


@pytest_twisted.ensureDeferred
async def test_a_module_side_tls_client_that_closes_first_gets_the_gateways_close_notify(
        tmp_path, trouble):
    """Twisted's TLS client (as Python's ``ssl`` unwrap) sends close_notify and waits for the
    answer before it closes: the gateway answers, as the module socket's farewell."""
    async with await start_server_bed(tmp_path, TLSServerBed) as bed:
        endpoint = endpoints.wrapClientTLS(
            client_tls(bed.ca),
            endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", bed.server_port))
        app = await endpoints.connectProtocol(endpoint, App())
        app.transport.write(b"ping")
        await until(lambda: app.received == b"ping", what="the echo")
        app.transport.loseConnection()
        reason = await lost(app, "the close")
        assert reason.check(ConnectionDone), reason  # ConnectionLost without the answer
        await until(lambda: not bed.service.clients and not bed.slots_in_use(),
                    what="the server socket to be closed and freed")
    assert trouble == []


@pytest_twisted.ensureDeferred
async def test_a_module_side_tls_server_refuses_a_plaintext_client(tmp_path, trouble):
    async with await start_server_bed(tmp_path, TLSServerBed) as bed:
        client = await connect(bed.server_port, ResetSeen())
        client.transport.write(b"GET / HTTP/1.0\r\n\r\n")
        assert await ended(client, "the plaintext client to be closed") == b""
        assert bed.modem.counters.get("server_refused", server="s", cause="tls") == 1
        assert not bed.remote_factory.connections  # the local service never saw it
        await until(lambda: not bed.service.clients and not bed.slots_in_use(),
                    what="the server socket to be closed and freed")
    assert trouble == ["[server:s] client 127.0.0.1 on socket 0: TLS handshake failed: http "
                       "request; closing the client"]


# -- 8. a dead link under TLS ------------------------------------------------------------------

class TLSKeepaliveBed(TLSBed, KeepaliveBed):
    """Short keepalive settings (tests/test_keepalive_e2e.py) in front of a TLS server."""


@pytest_twisted.ensureDeferred
async def test_a_silently_dead_tls_link_is_found_by_the_qisack_scheme_and_reset(
        tmp_path, pki, trouble):
    echo = server(Echo)
    remote = await pki.remote(echo)
    async with await start(tmp_path, remote, pki.verified(), bed=TLSKeepaliveBed) as bed:
        doomed = await open_link(bed)
        await until(lambda: bed.acks_settled(0), what="the first schedule to end")
        bed.sim.kill(0)
        doomed.transport.write(b"lost in flight")
        await dead_link_ends(bed, doomed, DEADLINE)
        assert_schedule(bed, 0, bed.last_send(0))
        assert bed.modem.counters.get("link_dead", cause="no_ack_progress") == 1
        assert echo.connections[0].received == b"before"
        await echo_works(bed, b"next")
        port = bed.remote.getHost().port
    # The unacked bytes are one TLS 1.3 record: 14 bytes of payload + 22 of header, type and tag.
    assert len(trouble) == 1 and re.fullmatch(
        rf"socket 0 to 127\.0\.0\.1:{port} is dead: no ack progress for [0-9.]+ s "
        r"\(36 bytes unacked\)", trouble[0]), trouble
