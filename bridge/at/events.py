"""Typed events: URCs the module volunteers, plus the engine's own recovery notices.

URCs can arrive at any moment, even between a command and its final result (docs/at-dialect.md §8.1,
§12.4), so they are recognised by shape, whatever is in flight, and handed to listeners as
frozen dataclasses.  Parsing is tolerant about the comma spacing (docs/at-dialect.md §12.7).
"""

import re
from dataclasses import dataclass
from typing import Optional, Union

from bridge.at.framing import Payload
from bridge.at.redact import redact
from bridge.at.ring import repr_without_payload


@dataclass(frozen=True)
class ConnectResult:
    """``[n, ]CONNECT OK|FAIL``; ``already`` for ``ALREADY CONNECT``; ``transparent`` for a bare
    ``CONNECT`` (AT+QIMODE=1: the UART is now the socket)."""

    socket: Optional[int]
    ok: bool
    already: bool = False
    transparent: bool = False


@dataclass(frozen=True)
class Closed:
    """``[n, ]CLOSED``: the peer or the network closed the link (not our AT+QICLOSE)."""

    socket: Optional[int]


@dataclass(frozen=True)
class PdpDeact:
    """``+PDP DEACT``: the context is gone and every socket with it."""


@dataclass(frozen=True)
class Received:
    """Pushed data (AT+QINDI=0): ``+RECEIVE: n, len`` or ``IPD<len>:``; ``peer`` from RECV FROM."""

    socket: Optional[int]
    data: bytes
    peer: Optional[str] = None

    __repr__ = repr_without_payload


@dataclass(frozen=True)
class DataAvailable:
    """``+QIRDI: id,sc,sid[,num,len,tlen]``: data waits for AT+QIRD (AT+QINDI=1/2)."""

    context: int
    server: bool
    socket: int
    packets: Optional[int] = None
    length: Optional[int] = None
    total: Optional[int] = None


@dataclass(frozen=True)
class RemoteIp:
    """``[n, ]REMOTE IP: ip``: a client was accepted by a module-side server."""

    socket: Optional[int]
    ip: str


#: Boot URCs only a (re)starting module prints (``+CPIN``, ``Call Ready``, ``SMS Ready`` can also
#: follow other commands): every setting is back at its power-up value. ``boot in data mode``:
#: ``Call Ready`` or ``SMS Ready`` ended a transparent data stream (``bridge.at.datamode``), which
#: a module in data mode prints only after a restart.
RESTART_SIGNS = ("RDY", "CFUN", "boot in data mode")


@dataclass(frozen=True)
class Boot:
    """Boot and SIM URCs: kind is 'RDY', 'Call Ready', 'SMS Ready', 'CFUN' or 'CPIN'."""

    kind: str
    value: Optional[str] = None


@dataclass(frozen=True)
class Registration:
    """``+CREG:`` / ``+CGREG:`` with the registration stat (1 home, 5 roaming, ...)."""

    kind: str
    stat: int


@dataclass(frozen=True)
class ServerStarted:
    """``SERVER OK`` after AT+QISERVER (app note §3.2)."""


@dataclass(frozen=True)
class Unsolicited:
    """A line nobody claimed; kept so that nothing the module says is silently lost."""

    line: bytes

    def __repr__(self) -> str:
        """Redacted: a stray echo may carry the PIN or bearer credentials."""
        return f"Unsolicited(line={redact(self.line)!r})"


@dataclass(frozen=True)
class StreamCorrupt:
    """An AT+QISEND on ``socket`` timed out: its stream may have taken filler or resync bytes.

    Sent before any resync byte is written; the link must be aborted, never resumed."""

    socket: Optional[int]


@dataclass(frozen=True)
class Resynced:
    """End of a resync after an in-flight timeout; ``ok`` False means the module stayed silent."""

    ok: bool


@dataclass(frozen=True)
class DataModeEnded:
    """A transparent session left data mode: reason 'escaped' (our ``+++``) or 'closed'."""

    reason: str


Event = Union[ConnectResult, Closed, PdpDeact, Received, DataAvailable, RemoteIp, Boot,
              Registration, ServerStarted, Unsolicited, StreamCorrupt, Resynced, DataModeEnded]

_SOCKET = rb"(?:(\d)\s*,\s*)?"
_CONNECT = re.compile(_SOCKET + rb"CONNECT (OK|FAIL)")
_CLOSED = re.compile(_SOCKET + rb"CLOSED")
_REMOTE_IP = re.compile(_SOCKET + rb"REMOTE IP:\s*(\S+)")
_QIRDI = re.compile(rb"\+QIRDI:\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)"
                    rb"(?:\s*,\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+))?\s*")
_CFUN = re.compile(rb"\+CFUN:\s*(\d+)\s*")
_CPIN = re.compile(rb"\+CPIN:\s*(.+?)\s*")
_REG = re.compile(rb"\+(C|CG)REG:\s*(\d+)(?:\s*,\s*(\d+))?(?:\s*,.*)?")
_RECEIVE = re.compile(rb"\+RECEIVE:\s*(\d+)")
_RECV_FROM = re.compile(rb"RECV FROM:\s*(\S+)")
_FIXED = {
    b"+PDP DEACT": PdpDeact(),
    b"ALREADY CONNECT": ConnectResult(None, True, already=True),
    b"CONNECT": ConnectResult(None, True, transparent=True),
    b"SERVER OK": ServerStarted(),
    b"RDY": Boot("RDY"),
    b"Call Ready": Boot("Call Ready"),
    b"SMS Ready": Boot("SMS Ready"),
}


def _socket(group: Optional[bytes]) -> Optional[int]:
    return None if group is None else int(group)


def parse_urc(line: bytes) -> Optional[Event]:
    """The event for ``line`` if it is a known URC, else None (it may be a command's reply)."""
    line = line.strip()
    fixed = _FIXED.get(line)
    if fixed is not None:
        return fixed
    match = _CONNECT.fullmatch(line)
    if match:
        return ConnectResult(_socket(match.group(1)), match.group(2) == b"OK")
    match = _CLOSED.fullmatch(line)
    if match:
        return Closed(_socket(match.group(1)))
    match = _QIRDI.fullmatch(line)
    if match:
        context, sc, sid, *extra = (None if g is None else int(g) for g in match.groups())
        return DataAvailable(context, sc == 2, sid, *extra)
    match = _REMOTE_IP.fullmatch(line)
    if match:
        return RemoteIp(_socket(match.group(1)), match.group(2).decode("ascii", "replace"))
    match = _REG.fullmatch(line)
    if match:
        # URC form is "+CREG: <stat>[,lac,ci]"; a stray read form is "+CREG: <n>,<stat>".
        stat = match.group(3) if match.group(3) is not None else match.group(2)
        return Registration(match.group(1).decode() + "REG", int(stat))
    match = _CFUN.fullmatch(line) or _CPIN.fullmatch(line)
    if match:
        kind = "CFUN" if line.startswith(b"+CFUN") else "CPIN"
        return Boot(kind, match.group(1).decode("ascii", "replace"))
    return None


def received_from(frame: Payload) -> Optional[Received]:
    """The push event carried by a ``+RECEIVE``/``IPD`` payload (None for an AT+QIRD payload)."""
    peer = None
    for line in frame.peer_lines:
        match = _RECV_FROM.match(line)
        if match:
            peer = match.group(1).decode("ascii", "replace")
    match = _RECEIVE.match(frame.header)
    if match:
        return Received(int(match.group(1)), frame.data, peer)
    if frame.header.startswith(b"IPD"):
        return Received(None, frame.data, peer)
    return None
