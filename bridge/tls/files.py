"""The PEM files and public-key pins a TLS profile or server names, read and checked by one code:
``check`` reports a file that cannot be read or parsed as a problem with its key, and the service
builds its TLS options from the very same reading."""

import base64
import hashlib
import os
import re
from dataclasses import dataclass
from typing import Tuple

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from OpenSSL import crypto


class TLSFileError(ValueError):
    """A file or pin that cannot be used; the message says why (without the file's contents)."""


@dataclass(frozen=True)
class Identity:
    """A certificate (with the chain that follows it in its file) and its private key."""

    key: crypto.PKey
    certificate: crypto.X509
    chain: Tuple[crypto.X509, ...]


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as error:
        raise TLSFileError(f"cannot read {path}: {error.strerror or error}") from None


def certificates(path: str) -> Tuple[x509.Certificate, ...]:
    """Every certificate of a PEM file, in order; at least one."""
    data = _read(path)
    try:
        found = tuple(x509.load_pem_x509_certificates(data))
    except ValueError:
        found = ()
    if not found:
        raise TLSFileError(f"{path} holds no PEM certificate")
    return found


def private_key(path: str) -> PrivateKeyTypes:
    """The unencrypted PEM private key of a file (checked on its own, so ``check`` can report a
    bad key and a bad certificate file together)."""
    try:
        return serialization.load_pem_private_key(_read(path), password=None)
    except TypeError:
        raise TLSFileError(f"{path} is encrypted: the daemon starts unattended, so the "
                           "key must be stored unencrypted (protect it with file permissions)"
                           ) from None
    except ValueError:
        raise TLSFileError(f"{path} holds no PEM private key") from None


def identity(cert_path: str, key_path: str) -> Identity:
    """A certificate file (leaf first, then its chain) and the unencrypted PEM key that fits it."""
    leaf, *chain = certificates(cert_path)
    key = private_key(key_path)
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if (key.public_key().public_bytes(serialization.Encoding.DER, public)
            != leaf.public_key().public_bytes(serialization.Encoding.DER, public)):
        raise TLSFileError(f"{key_path} is not the key of the first certificate in {cert_path}")
    return Identity(crypto.PKey.from_cryptography_key(key), crypto.X509.from_cryptography(leaf),
                    tuple(crypto.X509.from_cryptography(c) for c in chain))


def readable_by_others(path: str) -> bool:
    """A key file any local user can read (mode o+r)."""
    try:
        return bool(os.stat(path).st_mode & 0o004)
    except OSError:
        return False


# -- pins ---------------------------------------------------------------------------------------

_PIN = re.compile(r"^sha256//?([A-Za-z0-9+/]{43}=)$")


def parse_pins(text: str) -> Tuple[str, ...]:
    """``sha256//BASE64`` pins as curl's ``--pinnedpubkey`` writes them (``sha256/BASE64`` is
    taken too), separated by ``;``, ``,`` or blanks; each returned in curl's form."""
    pins = []
    for word in re.split(r"[;,\s]+", text.strip()):
        if not word:
            continue
        match = _PIN.match(word)
        if match is None or base64.b64encode(base64.b64decode(match.group(1))).decode() \
                != match.group(1):
            raise TLSFileError(f"{word!r} is not a sha256//BASE64 public-key pin (44 base64 "
                               "characters of a SHA-256 digest)")
        pins.append("sha256//" + match.group(1))
    if not pins:
        raise TLSFileError("no pin given")
    return tuple(dict.fromkeys(pins))


def public_key_pin(certificate: x509.Certificate) -> str:
    """The certificate's pin: SHA-256 of its DER SubjectPublicKeyInfo, base64, as curl writes
    it (``openssl x509 -pubkey | openssl pkey -pubin -outform der | openssl dgst -sha256
    -binary | base64``)."""
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256//" + base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")
