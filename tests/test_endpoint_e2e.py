"""End to end through the simulator: ``ModemEndpoint`` as an ordinary Twisted client endpoint.

The bed supplies a ready ``Modem``; each test builds ``ModemEndpoint(bed.modem, "127.0.0.1",
port)`` itself and drives it with Twisted's own tools (``connectProtocol``, ``wrapClientTLS``)
against real loopback servers. Certificates are made at test time with ``trustme``.
"""

import socket

import pytest
import pytest_twisted
import trustme
from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import defer, endpoints, protocol, ssl
from twisted.internet.error import ConnectError, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IHandshakeListener, ISSLTransport
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

from bridge.modem.endpoint import ModemEndpoint
from bridge.modem.socket import ModuleSocket
from tests.e2e_bed import Bed, Echo, Source, salted, server, sha, troubles, until, within
from tests.tls_bed import RawTap, client_tls

# Twisted's own TLS code still hands pyOpenSSL X509/PKey objects; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Passing pyOpenSSL:DeprecationWarning")


@pytest.fixture(autouse=True)
def nothing_went_wrong_inside():
    """Fail a test in which an exception was logged instead of raised (e.g. a protocol that
    crashed inside a callback the pump caught) or a warning was logged (e.g. a socket declared
    dead, a write refused): the bytes and reasons a test checks can look right while the
    transport broke the protocol underneath."""
    with troubles() as seen:
        yield
    assert not seen, "\n".join(seen)


# -- the TLS server: Echo behind TLS, with a tap on the raw TCP bytes beneath it -------------

def tls_server(cert, app_factory) -> RawTap:
    """``app_factory`` behind a TLS server presenting ``cert`` (a trustme LeafCert)."""
    options = ssl.PrivateCertificate.loadPEM(cert.private_key_and_cert_chain_pem.bytes()).options()
    return RawTap(TLSMemoryBIOFactory(options, False, app_factory))


# -- the client --------------------------------------------------------------------------------

@implementer(IHandshakeListener)
class App(protocol.Protocol):
    """Collects what arrives; ``closed`` fires when the connection ends, ``reason`` says how."""

    def __init__(self):
        self.received = bytearray()
        self.closed = defer.Deferred()
        self.reason = None
        self.handshake_done = False

    def handshakeCompleted(self):
        self.handshake_done = True

    def dataReceived(self, data):
        self.received += data

    def connectionLost(self, reason):
        self.reason = reason
        self.received_before_loss = bytes(self.received)
        self.closed.callback(None)


async def lost(app, what):
    """The reason ``app``'s connection ended (bounded wait)."""
    await within(app.closed, what)
    return app.reason


def module_socket(app) -> ModuleSocket:
    """The ModuleSocket under ``app`` (directly, or under a TLS layer)."""
    transport = app.transport
    while not isinstance(transport, ModuleSocket):
        transport = transport.transport
    return transport


def refusing_port() -> socket.socket:
    """A bound loopback socket that never listens: connects to its port are refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


# -- 1. wrapClientTLS through the module -------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_wrap_client_tls_carries_salted_bytes_through_a_real_tls_handshake(tmp_path):
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    echo = server(Echo)
    tap = tls_server(cert, echo)
    payload = salted(64 * 1024, seed=11)
    async with await Bed.start(tmp_path, tap) as bed:
        endpoint = endpoints.wrapClientTLS(
            client_tls(ca), ModemEndpoint(bed.modem, "127.0.0.1", bed.remote.getHost().port))
        app = await within(endpoints.connectProtocol(endpoint, App()), "the TLS connect")
        assert isinstance(module_socket(app), ModuleSocket)  # really through the module
        app.transport.write(payload)
        await until(lambda: len(app.received) >= len(payload), what="the TLS echo")
        assert app.handshake_done
        assert sha(echo.connections[0].received) == sha(payload)  # uplink intact, decrypted
        assert sha(app.received) == sha(payload)  # downlink intact, decrypted
        # The server's Echo sat on a TLS transport, and what crossed the module was TLS, not the
        # plaintext: it starts with a handshake record and holds no run of the payload.
        assert ISSLTransport.providedBy(echo.connections[0].transport)
        raw = bytes(tap.raw)
        assert raw[:1] == b"\x16" and raw[1:2] == b"\x03"  # TLS handshake record
        assert len(raw) > len(payload)
        assert all(payload[i:i + 64] not in raw for i in range(0, len(payload), 4096))
        # The client verified the very certificate the server presented.
        peer = ssl.Certificate(app.transport.getPeerCertificate())
        assert peer.digest() == ssl.Certificate.loadPEM(cert.cert_chain_pems[0].bytes()).digest()
        slot = module_socket(app).slot
        assert bed.slots_in_use() == frozenset({slot})
        app.transport.loseConnection()  # close_notify both ways, then the module socket closes
        reason = await lost(app, "the TLS connection to end")
        assert reason.check(ConnectionDone), reason
        await until(lambda: not bed.slots_in_use(), what="the module socket to be freed")


@pytest.mark.parametrize("wrong, error, text", [
    ("another name", VerificationError, "localhost"),  # trusted CA, name checked and refused
    ("an untrusted CA", SSL.Error, "certificate verify failed"),
])
@pytest_twisted.ensureDeferred
async def test_wrap_client_tls_refuses_a_bad_certificate_with_no_plaintext_sent(tmp_path, wrong,
                                                                                 error, text):
    ca = trustme.CA()
    if wrong == "another name":
        cert = ca.issue_cert("other.example")
    else:
        cert = trustme.CA().issue_cert("localhost")
    echo = server(Echo)
    tap = tls_server(cert, echo)
    async with await Bed.start(tmp_path, tap) as bed:
        endpoint = endpoints.wrapClientTLS(
            client_tls(ca), ModemEndpoint(bed.modem, "127.0.0.1", bed.remote.getHost().port))
        app = await within(endpoints.connectProtocol(endpoint, App()), "the TCP connect")
        secret = b"secret before the handshake"
        app.transport.write(secret)  # held by the TLS layer until the handshake succeeds
        reason = await lost(app, "the verification failure")
        assert reason.check(error) and text in str(reason.value), reason
        assert not app.handshake_done and app.received == b""
        assert tap.raw[:1] == b"\x16"  # a handshake was attempted through the module ...
        assert secret not in bytes(tap.raw)  # ... and nothing fell back to plaintext
        assert all(not connection.received for connection in echo.connections)
        await until(lambda: not bed.slots_in_use(), what="the module socket to be freed")


@pytest_twisted.ensureDeferred
async def test_wrap_client_tls_closed_before_the_handshake_aborts_cleanly(tmp_path):
    """TLSMemoryBIOProtocol.loseConnection before the handshake calls abortConnection on the
    module socket and then still uses its TLS state: connectionLost must come afterwards."""
    ca = trustme.CA()
    echo = server(Echo)
    tap = tls_server(ca.issue_cert("localhost"), echo)
    async with await Bed.start(tmp_path, tap) as bed:
        endpoint = endpoints.wrapClientTLS(
            client_tls(ca), ModemEndpoint(bed.modem, "127.0.0.1", bed.remote.getHost().port))
        app = await within(endpoints.connectProtocol(endpoint, App()), "the TCP connect")
        assert not app.handshake_done  # the ClientHello has only just left
        app.transport.loseConnection()  # raises if connectionLost came from inside the call
        assert app.reason is None  # not from inside the call, as with Twisted's TCP
        reason = await lost(app, "the abort")
        assert reason.check(ConnectionLost) and not reason.check(ConnectionDone), reason  # as TCP
        assert not app.handshake_done and app.received == b""
        await until(lambda: not bed.slots_in_use(), what="the module socket to be freed")


# -- 2. connectProtocol on the endpoint ----------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_connect_protocol_echo_then_lose_connection_is_connection_done(tmp_path):
    echo = server(Echo)
    async with await Bed.start(tmp_path, echo) as bed:
        port = bed.remote.getHost().port
        endpoint = ModemEndpoint(bed.modem, "127.0.0.1", port)
        app = await within(endpoints.connectProtocol(endpoint, App()), "the connect")
        assert isinstance(app.transport, ModuleSocket)
        assert (app.transport.getPeer().host, app.transport.getPeer().port) == ("127.0.0.1", port)
        slot = app.transport.getHost().slot
        assert bed.slots_in_use() == frozenset({slot})
        payload = salted(20000, seed=5)
        app.transport.write(payload)
        await until(lambda: len(app.received) >= len(payload), what="the echo")
        assert sha(app.received) == sha(payload)
        app.transport.loseConnection()
        reason = await lost(app, "connectionLost after loseConnection")
        assert reason.check(ConnectionDone), reason
        await until(lambda: not bed.slots_in_use(), what="the module socket to be freed")
        await until(bed.idle, what="the module to hold no socket")
        commands = [entry["cmd"] for entry in bed.sim.stats()["commands"]]
        assert f"AT+QICLOSE={slot}" in commands


# -- 3. ConnectError ---------------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_connect_to_a_closed_port_fails_with_connect_error_and_frees_the_index(tmp_path):
    async with await Bed.start(tmp_path, server(Echo)) as bed:
        closed = refusing_port()
        try:
            endpoint = ModemEndpoint(bed.modem, "127.0.0.1", closed.getsockname()[1])
            app = App()
            with pytest.raises(ConnectError, match="CONNECT FAIL"):
                await within(endpoints.connectProtocol(endpoint, app), "CONNECT FAIL")
        finally:
            closed.close()
        assert app.transport is None  # never connected
        await until(lambda: not bed.slots_in_use(), what="the index to be freed")
        await until(bed.idle, what="the module to hold no socket")
        # The freed index is usable: the next connect works.
        again = await within(endpoints.connectProtocol(
            ModemEndpoint(bed.modem, "127.0.0.1", bed.remote.getHost().port), App()),
            "a later connect")
        again.transport.write(b"works")
        await until(lambda: again.received == b"works", what="the later echo")
        again.transport.loseConnection()
        assert (await lost(again, "the later close")).check(ConnectionDone)
        await until(lambda: not bed.slots_in_use(), what="the later socket to be freed")


# -- 4. remote close ---------------------------------------------------------------------------

@pytest.mark.parametrize("receive", ["pull", "push"])
@pytest_twisted.ensureDeferred
async def test_remote_close_delivers_every_byte_then_connection_done(tmp_path, receive):
    payload = salted(50000, seed=9)
    async with await Bed.start(tmp_path, server(Source, payload), receive=receive) as bed:
        endpoint = ModemEndpoint(bed.modem, "127.0.0.1", bed.remote.getHost().port)
        app = await within(endpoints.connectProtocol(endpoint, App()), "the connect")
        reason = await lost(app, "connectionLost after the remote close")
        assert reason.check(ConnectionDone), reason
        # Every byte came before connectionLost, and none after it.
        assert sha(app.received_before_loss) == sha(payload) == sha(app.received)
        await until(lambda: not bed.slots_in_use(), what="the module socket to be freed")
