"""Redaction of secrets in AT traffic, so logs and dumps can be pasted into bug reports."""

import re
from typing import Iterable

MASK = b"***"

# AT+CPIN="1234"; AT+QICSGP=1,"apn","user","pwd"; AT+QIREGAPP="apn","user","pwd" (and their echo).
_PIN = re.compile(rb'(AT\+CPIN=)[^\r\n]*', re.IGNORECASE)
_CREDENTIALS = re.compile(
    rb'(AT\+(?:QICSGP=\d\s*,|QIREGAPP=)\s*"[^"\r\n]*"\s*,\s*)"[^"\r\n]*"(\s*,\s*)"[^"\r\n]*"',
    re.IGNORECASE)


def redact(text: bytes, secrets: Iterable[bytes] = ()) -> bytes:
    """``text`` with PIN and bearer credentials masked, and every registered secret too."""
    text = _PIN.sub(rb"\1" + MASK, text)
    text = _CREDENTIALS.sub(rb'\1"' + MASK + rb'"\2"' + MASK + rb'"', text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text
