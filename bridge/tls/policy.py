"""Who a TLS module link trusts, and how it says why it refused.

The client side is a connection creator of its own rather than Twisted's
``optionsForClientTLS``, for two reasons: a certificate pin (curl's ``--pinnedpubkey``) may be the
only trust a private server has, and a refusal must name its cause (expired, unknown CA, wrong
name, pin mismatch), where OpenSSL only says "certificate verify failed". It is the same checks
on the same public APIs: Twisted's ``CertificateOptions`` for the context (TLS 1.2 at least,
the system trust store or ``tls_ca``), service-identity for the name, each decision made in the
peer-verification callback so that a refused server gets an alert and never a byte of payload.
"""

import ipaddress
from typing import Optional, Tuple

from OpenSSL import SSL, crypto
from service_identity import VerificationError
from service_identity.cryptography import (verify_certificate_hostname,
                                           verify_certificate_ip_address)
from twisted.internet.interfaces import (IOpenSSLClientConnectionCreator,
                                         IOpenSSLServerConnectionCreator)
from twisted.internet.ssl import (Certificate, CertificateOptions, TLSVersion, platformTrust,
                                  trustRootFromCertificates)
from twisted.logger import Logger
from zope.interface import implementer

from bridge.tls import files
from bridge.tls.link import Connection

MINIMUM_VERSION = TLSVersion.TLSv1_2

#: OpenSSL's X509_V_ERR_* codes a server's chain commonly fails with, in words.
VERIFY_ERRORS = {
    2: "unknown CA (the issuer's certificate is not trusted)",
    9: "certificate is not yet valid",
    10: "certificate has expired",
    18: "unknown CA (a self-signed certificate)",
    19: "unknown CA (a self-signed certificate in the chain)",
    20: "unknown CA (the issuer's certificate is not trusted)",
    21: "unknown CA (cannot verify the first certificate)",
    23: "certificate has been revoked",
    24: "invalid CA certificate",
    26: "certificate is not for TLS servers",
}


def verify_error(code: int) -> str:
    return VERIFY_ERRORS.get(code, f"certificate verify error {code} (see `openssl verify`)")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _identity_options(cert_path: Optional[str], key_path: Optional[str]) -> dict:
    if not cert_path:
        return {}
    found = files.identity(cert_path, key_path)
    return {"privateKey": found.key, "certificate": found.certificate,
            "extraCertChain": list(found.chain)}


def _trusted(ca_path: str) -> list:
    return [Certificate(crypto.X509.from_cryptography(c)) for c in files.certificates(ca_path)]


@implementer(IOpenSSLClientConnectionCreator)
class ClientPolicy:
    """A profile's TLS client: verify ``hostname`` against the system trust store or
    ``ca_path``; or, with ``pins`` and no ``ca_path``, trust exactly the pinned public keys."""

    log = Logger()

    def __init__(self, hostname: str, ca_path: Optional[str] = None, pins: Tuple[str, ...] = (),
                 cert_path: Optional[str] = None, key_path: Optional[str] = None) -> None:
        self.hostname = hostname
        self.pins = tuple(pins)
        self.pin_only = bool(pins) and not ca_path
        options = _identity_options(cert_path, key_path)
        if self.pin_only:
            options["verify"] = False
        else:
            options["trustRoot"] = (trustRootFromCertificates(_trusted(ca_path)) if ca_path
                                    else platformTrust())
        self._options = CertificateOptions(raiseMinimumTo=MINIMUM_VERSION, **options)

    def clientConnectionForTLS(self, tls) -> SSL.Connection:
        connection = Connection(self._options.getContext(), None)
        if not _is_ip(self.hostname):
            connection.set_tlsext_host_name(self.hostname.encode("idna"))
        connection.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, self._verify)
        return connection

    def _verify(self, connection, certificate, code: int, depth: int, ok: int) -> bool:
        """OpenSSL's verdict on each certificate of the chain, then ours on the leaf. The first
        reason to refuse is kept on the link (``refusal``) for its log line."""
        link = connection.get_app_data()
        try:
            if self.pin_only:
                return depth != 0 or self._pinned(link, certificate)
            if not ok:
                link.refuse(verify_error(code))
                return False
            return depth != 0 or (self._named(link, certificate)
                                  and (not self.pins or self._pinned(link, certificate)))
        except Exception as error:  # an exception would be lost inside OpenSSL
            link.refuse(f"certificate check failed: {error}")
            return False

    def _named(self, link, certificate) -> bool:
        check = verify_certificate_ip_address if _is_ip(self.hostname) else \
            verify_certificate_hostname
        try:
            check(certificate.to_cryptography(), self.hostname)
        except VerificationError:
            link.refuse(f"name mismatch: the certificate is not for {self.hostname}")
            return False
        return True

    def _pinned(self, link, certificate) -> bool:
        pin = files.public_key_pin(certificate.to_cryptography())
        if pin in self.pins:
            return True
        link.refuse(f"public key pin mismatch: the server's key is {pin}")
        return False


def client_policy(profile) -> ClientPolicy:
    """The TLS client of ``[profile:NAME]``."""
    return ClientPolicy(profile.tls_hostname or profile.remote.host, profile.tls_ca,
                        profile.tls_pin, profile.tls_cert, profile.tls_key)


@implementer(IOpenSSLServerConnectionCreator)
class ServerPolicy:
    """A module-side server's TLS: Twisted's ``CertificateOptions`` for the context, on a
    :class:`~bridge.tls.link.Connection` (which keeps why a client's handshake failed)."""

    def __init__(self, options: CertificateOptions) -> None:
        self.options = options

    def serverConnectionForTLS(self, tls) -> SSL.Connection:
        return Connection(self.options.getContext(), None)


def server_policy(server) -> ServerPolicy:
    """The TLS server of ``[server:NAME]``: its certificate; with ``tls_ca``, clients must
    present a certificate signed by one of those CAs."""
    options = _identity_options(server.tls_cert, server.tls_key)
    if server.tls_ca:
        options.update(verify=True, requireCertificate=True,
                       caCerts=[c.original for c in _trusted(server.tls_ca)])
    return ServerPolicy(CertificateOptions(raiseMinimumTo=MINIMUM_VERSION, **options))
