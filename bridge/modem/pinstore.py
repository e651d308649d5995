"""Memory of a refused SIM PIN, kept in the state directory across restarts.

A SIM locks itself (PUK) after three wrong PINs, and every module reset or daemon restart would
otherwise send the same wrong PIN again. So a rejection is written down, and that PIN is refused
locally until the configured PIN changes. An AT+CPIN= that got no answer at all is written down
too (UNCONFIRMED): the lost answer may have been a rejection, so retrying is a gamble with the
SIM's tries. Only a salted scrypt hash is stored, never the PIN.

scrypt is slow on purpose (tens of milliseconds), so it runs in the reactor's thread pool: on the
reactor thread it would stall the UART and every open link while it works.
"""

import hashlib
import hmac
import json
import os
from typing import Optional

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

#: scrypt cost: slow enough to make guessing a 4-8 digit PIN from the file expensive.
_SCRYPT = {"n": 2 ** 14, "r": 8, "p": 1}
#: Verdicts on a PIN that keep it from being sent again.
REJECTED = "rejected"  #: the SIM said no
UNCONFIRMED = "unconfirmed"  #: AT+CPIN= went out and its answer never came back


def pin_hash(pin: str, salt: bytes) -> bytes:
    return hashlib.scrypt(pin.encode("ascii"), salt=salt, dklen=32, **_SCRYPT)


class PinStore:
    """``refusal(pin)`` / ``remember(pin, verdict)`` (both -> Deferred) / ``forget()`` for one
    modem; ``reactor`` provides the thread pool for the hash."""

    log = Logger()

    def __init__(self, reactor, state_dir: str, modem_name: str) -> None:
        self.reactor = reactor
        self.path = os.path.join(state_dir, f"{modem_name}.rejected-pin")

    @inlineCallbacks
    def refusal(self, pin: str):
        """-> REJECTED or UNCONFIRMED if ``pin`` must not be sent, else None. An unreadable record
        counts as a rejection: guessing wrong here could cost the SIM one of its three tries."""
        record = self._load()
        if record is None:
            return None
        try:
            salt, digest = bytes.fromhex(record["salt"]), bytes.fromhex(record["hash"])
        except (KeyError, TypeError, ValueError, AttributeError):
            self.log.error("{path} is corrupt; refusing to send the PIN (delete the file after "
                           "checking the PIN)", path=self.path)
            return REJECTED
        candidate = yield self._hash(pin, salt)
        if not hmac.compare_digest(candidate, digest):
            return None
        return UNCONFIRMED if record.get("verdict") == UNCONFIRMED else REJECTED

    @inlineCallbacks
    def remember(self, pin: str, verdict: str = REJECTED):
        """Write the salted hash and the verdict atomically (mode 0600); a failure is logged,
        not raised, since the caller is already stopping on the refusal."""
        salt = os.urandom(16)
        digest = yield self._hash(pin, salt)
        record = json.dumps({"salt": salt.hex(), "hash": digest.hex(), "verdict": verdict})
        temporary = self.path + ".tmp"
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(record)
            os.replace(temporary, self.path)
        except OSError as error:
            self.log.error("cannot record the refused PIN in {path}: {error}; it may be sent "
                           "again after a restart", path=self.path, error=error)

    def forget(self) -> None:
        """The SIM accepted a PIN: any old rejection no longer matters."""
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass
        except OSError as error:
            self.log.warn("cannot remove {path}: {error}", path=self.path, error=error)

    def _hash(self, pin: str, salt: bytes) -> Deferred:
        return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), pin_hash, pin, salt)

    def _load(self) -> Optional[dict]:
        try:
            with open(self.path, encoding="ascii") as handle:
                return json.load(handle)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            self.log.error("cannot read {path}: {error}", path=self.path, error=error)
            return {}
