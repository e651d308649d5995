"""End-to-end pieces for TLS: a tap on the raw bytes below TLS, a real TLS server on loopback
(Twisted's ``ssl:`` server endpoint) for the bed's remote, and the bed with a TLS profile.
Certificates are made at test time with ``trustme`` and written as PEM files under tmp_path."""

from twisted.internet import endpoints, reactor, ssl
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.protocols.portforward import ProxyFactory

from tests.e2e_bed import Bed, within
from tests.test_config_tls import pem


class _Tapped(ProtocolWrapper):
    def dataReceived(self, data):
        self.factory.raw += data
        super().dataReceived(data)


class RawTap(WrappingFactory):
    """Records every byte the server's TCP connection received, below the TLS layer."""

    protocol = _Tapped

    def __init__(self, wrapped):
        super().__init__(wrapped)
        self.raw = bytearray()


def client_tls(ca, hostname="localhost"):
    return ssl.optionsForClientTLS(hostname, trustRoot=ssl.Certificate.loadPEM(ca.cert_pem.bytes()))


def identity_file(folder, name: str, cert) -> str:
    """A trustme LeafCert's key and chain in one PEM file, ``folder/name.pem`` (the form both
    ``ssl:``'s ``privateKey`` and the bridge's ``tls_cert``/``tls_key`` take)."""
    return pem(folder / f"{name}.pem", cert.private_key_and_cert_chain_pem.bytes())


class TLSRemote(RawTap):
    """The bed's remote factory for a TLS server: a relay to ``port`` that records the raw bytes
    on their way to it (``raw``)."""

    def __init__(self, port):
        super().__init__(ProxyFactory("127.0.0.1", port.getHost().port))
        self.tls = port


async def tls_remote(app, identity: str, client_ca=None) -> TLSRemote:
    """``app`` behind a TLS server on loopback presenting ``identity`` (an :func:`identity_file`);
    with ``client_ca`` (a trustme CA), it requires a client certificate that CA signed."""
    if client_ca is None:
        endpoint = endpoints.serverFromString(
            reactor, f"ssl:0:interface=127.0.0.1:privateKey={identity}")
    else:
        with open(identity, "rb") as handle:
            mine = ssl.PrivateCertificate.loadPEM(handle.read())
        options = mine.options(ssl.Certificate.loadPEM(client_ca.cert_pem.bytes()))
        endpoint = endpoints.SSL4ServerEndpoint(reactor, 0, options, interface="127.0.0.1")
    return TLSRemote(await endpoint.listen(app))


class TLSBed(Bed):
    """The bed in front of a :class:`TLSRemote` (or any remote: ``tls`` is the profile's)."""

    async def stop(self):
        try:
            await super().stop()
        finally:
            tls = getattr(self.remote_factory, "tls", None)
            if tls is not None:
                await within(tls.stopListening(), "the TLS server to stop")


async def start(tmp_path, remote, keys: str, bed=TLSBed, **options):
    """``bed`` with a ``tls = yes`` profile (plus ``keys``) in front of ``remote``."""
    configured = type(bed.__name__, (bed,), {"profile_keys": "tls = yes\n" + keys})
    return await configured.start(tmp_path, remote, **options)
