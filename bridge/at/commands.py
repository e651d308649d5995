"""AT commands as small objects that know which lines are theirs and which end them.

Few commands of this dialect end in a plain ``OK`` (docs/at-dialect.md §12.1): AT+QIOPEN's OK comes
before its real outcome, AT+QISEND ends in ``SEND OK``, AT+QICLOSE in ``[n, ]CLOSE OK``,
AT+QIDEACT in ``DEACT OK``, AT+QILOCIP in a bare IP, AT+QISTAT puts OK *before* ``STATE:``.  Each
command therefore carries:

- ``own``: lines specifically its own, claimed *before* URC recognition (``+QISACK:``,
  ``1, CLOSE OK`` for AT+QICLOSE=1 but not ``3, CONNECT OK``);
- ``ends``: which of its own lines end it, and ``ok_ends``: whether a plain ``OK`` does;
- ``parse``: how its collected lines become a typed result.

The protocol drives them through ``claim``/``take``/``take_payload``; a command never does I/O.
Factories at the bottom build every command the modem layer needs; string arguments are checked
for characters that would break the command line.
"""

import re
from dataclasses import dataclass
from enum import IntEnum
from typing import Callable, List, Optional, Pattern, Tuple

from bridge.at.errors import ATError, CmeError, CmsError, CommandError, SendRefused
from bridge.at.events import parse_urc
from bridge.at.framing import Payload
from bridge.at.redact import redact

#: Largest fixed-length AT+QISEND payload (docs/at-dialect.md §4.4).
MAX_SEND = 1460
#: Largest AT+QIRD request (docs/at-dialect.md §4.8).
MAX_READ = 1500
#: The longest framing around an AT+QIRD's data (app note §5.3.2): header line before, OK after.
READ_FRAMING = len(b"\r\n+QIRD: 255.255.255.255:65535,TCP,1500\r\n" b"\r\nOK\r\n")
#: AT+QIDNSGIP's address lines have no terminator (docs/at-dialect.md §4.1): the answer is complete
#: once the module has sent nothing for this long after an address. Its lines come back to back.
ADDRESS_QUIET = 0.5


class Priority(IntEnum):
    """Queue classes: a close or keepalive query must not wait behind kilobytes of sends."""

    CONTROL = 0
    BULK = 1


@dataclass(frozen=True)
class Timeouts:
    """Per-command limits in seconds (docs/at-dialect.md §7); pass your own to the factories.

    ``send``, ``qird`` and ``prompt`` are base limits: the engine adds the time their bytes need at
    its baud (``Command.transfer_bytes``; for the prompt, what the module sends before it), so a
    slow line does not turn every full read or busy send into a timeout."""

    simple: float = 5.0
    pin: float = 10.0
    attach: float = 90.0
    regapp: float = 10.0
    qiact: float = 150.0
    qideact: float = 40.0
    qiopen: float = 10.0  # until OK only; the wait for CONNECT OK after it is ``connect``
    # AT+QIOPEN's OK to ``n, CONNECT OK|FAIL`` (docs/at-dialect.md §4.3: up to 75 s)
    connect: float = 75.0
    # The module's own delay before its ``> ``: the engine adds the line time of the command and of
    # every byte the module sends ahead of the prompt (pushed +RECEIVE data, URCs, the echo), the
    # UART backlog it queues behind.  10 s is the top of the drivers' range (docs/at-dialect.md
    # §7).  A prompt later still costs the link: the engine writes filler before its resync
    # (protocol._unwritten_payload_filler; README, "Dead links and recovery").
    prompt: float = 10.0
    send: float = 20.0
    qisack: float = 5.0
    qiclose: float = 10.0
    qird: float = 5.0
    dns: float = 15.0


DEFAULT_TIMEOUTS = Timeouts()


# -- typed results ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Reply:
    """Info lines of a command that ends in OK (ATI, AT+GMR, AT+QILPORT? ...)."""

    lines: Tuple[str, ...]


@dataclass(frozen=True)
class OpenAccepted:
    """AT+QIOPEN accepted; ``already`` for ``ALREADY CONNECT`` (link was up).  The outcome of the
    connect itself arrives later as a ``ConnectResult`` event."""

    already: bool


@dataclass(frozen=True)
class SendResult:
    """``SEND OK`` (queued in the module's window, not yet acked) or ``SEND FAIL`` (buffer full)."""

    ok: bool


@dataclass(frozen=True)
class SackResult:
    """``+QISACK: sent, acked, unacked`` byte counters."""

    sent: int
    acked: int
    unacked: int


@dataclass(frozen=True)
class ReadResult:
    """One AT+QIRD: ``data`` is empty (and peer/proto None) when the buffer was drained."""

    peer: Optional[str]
    proto: Optional[str]
    data: bytes


@dataclass(frozen=True)
class SocketState:
    """One ``+QISTATE: n,...`` line: the socket, its raw fields, and the last field (its state)."""

    socket: int
    fields: Tuple[str, ...]
    state: str

    @property
    def proto(self) -> str:
        """``TCP`` or ``UDP`` for a socket in use (a free one's field is empty)."""
        return self.fields[0] if len(self.fields) > 1 else ""


@dataclass(frozen=True)
class StackState:
    """``STATE: <state>`` (IP INITIAL ... PDP DEACT) plus per-socket lines in mux mode."""

    state: str
    sockets: Tuple[SocketState, ...] = ()


@dataclass(frozen=True)
class SignalQuality:
    """``+CSQ: rssi,ber`` (99 = unknown)."""

    rssi: int
    ber: int


@dataclass(frozen=True)
class RegistrationState:
    """Read form ``+CREG: n,stat`` / ``+CGREG: n,stat``."""

    mode: int
    stat: int


# -- the command object -----------------------------------------------------------------------

_OK = b"OK"
#: A command's name: ``AT`` then an extended (``+QISEND``) or basic (``E``, ``&D``) command.
_NAME = re.compile(rb"AT([+^$%#][A-Z0-9]+|&?[A-Z])?", re.IGNORECASE)
_CME = re.compile(rb"\+(CME|CMS) ERROR:\s*(.*)")


def _text(line: bytes) -> str:
    return line.decode("ascii", "replace")


#: The selecting settings (app note §7, §3.2): AT+QIFGCNT=<context>, AT+QISRVC=<1 client|2 server>.
FOREGROUND_CONTEXT = "+QIFGCNT"
SOCKET_SIDE = "+QISRVC"


@dataclass(frozen=True)
class Selection:
    """What a socket command addresses where the module keeps a choice for it: the foreground
    context (AT+QIFGCNT, app note §7) and client or server-accepted sockets (AT+QISRVC, app note
    §3.2, §3.4). The engine writes the selecting commands first when the module's choice is not
    known to match (``ATProtocol``); None = this command does not depend on it."""

    context: Optional[int] = None
    server: Optional[bool] = None

    def settings(self) -> Tuple[Tuple[str, int], ...]:
        """The (command name, value) pairs that must be in force, in the order to set them."""
        wanted = []
        if self.context is not None:
            wanted.append((FOREGROUND_CONTEXT, self.context))
        if self.server is not None:
            wanted.append((SOCKET_SIDE, 2 if self.server else 1))
        return tuple(wanted)


NO_SELECTION = Selection()


class Command:
    """One command on the wire: bytes to write, its own lines, its end, its typed result."""

    #: The module choices (:class:`Selection`) that must be in force before this command.
    selection: Selection = NO_SELECTION
    #: ``(name, value)`` of the selecting setting this command makes (AT+QIFGCNT=1), else None:
    #: the engine learns the module's choice from it.
    selects: Optional[Tuple[str, int]] = None

    #: The most payload bytes that cross the UART between this command's line and its final result
    #: (written after its prompt, or read back with their framing): the engine adds their line
    #: time at the configured baud to ``timeout``.
    transfer_bytes = 0

    def __init__(self, line: bytes, *, timeout: float, parse: Callable = None,
                 own: Optional[Pattern] = None, ends: Optional[Pattern] = None,
                 ok_ends: bool = True, collects_info: bool = False,
                 priority: Priority = Priority.CONTROL, enters_data_mode: bool = False,
                 quiet_end: Optional[float] = None) -> None:
        self.line = line
        self.timeout = timeout
        self.priority = priority
        self.own = own
        self.ends = ends
        self.ok_ends = ok_ends
        self.collects_info = collects_info
        #: Its bare ``CONNECT`` switches the UART to data mode (ATO, a transparent AT+QIOPEN);
        #: the protocol ignores a bare ``CONNECT`` that no such command (or server) explains.
        self.enters_data_mode = enters_data_mode
        #: A reply of own lines with no end line (AT+QIDNSGIP's addresses): once one has arrived,
        #: the module's silence for this many seconds completes it (the engine keeps the clock).
        self.quiet_end = quiet_end
        self._parse = parse or (lambda lines: Reply(tuple(_text(x) for x in lines)))
        self.lines: List[bytes] = []
        self.done = False
        self.result = None
        self.error: Optional[Exception] = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.text}>"

    def addressing(self, selection: Selection) -> "Command":
        """This command, to be written only once ``selection`` is in force."""
        self.selection = selection
        return self

    @property
    def text(self) -> str:
        """The command line with secrets masked, for logs and error messages."""
        return _text(redact(self.line))

    @property
    def name(self) -> str:
        """What the command is, never its arguments (``+QISEND``, ``E``, ``AT`` for a bare AT):
        a bounded label for counting commands."""
        match = _NAME.match(self.line)
        if match is None:
            return "?"
        return _text(match.group(1)).upper() if match.group(1) else "AT"

    def wire_bytes(self) -> bytes:
        return self.line + b"\r"

    def is_echo(self, line: bytes) -> bool:
        """ATE1: the module sends our own command line back first."""
        return line.strip(b" \t\x1b").upper() == self.line.upper()

    def claim(self, line: bytes) -> bool:
        """Routing step 1: take ``line`` if it is specifically this command's."""
        if self.own is None or not self.own.fullmatch(line):
            return False
        self.lines.append(line)
        if self.ends is not None and self.ends.fullmatch(line):
            self._finish()
        return True

    def take_payload(self, frame: Payload) -> bool:
        """A length-framed payload that belongs to this command (only AT+QIRD has one)."""
        return False

    def take(self, line: bytes) -> bool:
        """Routing step 3 (after URCs): generic finals, and free-form info lines if collected."""
        if line == _OK:
            if self.ok_ends:
                self._finish()
            return True
        error = self._error_for(line)
        if error is not None:
            self.fail(error)
            return True
        if self.collects_info:
            self.lines.append(line)
            return True
        return False

    def _error_for(self, line: bytes) -> Optional[CommandError]:
        if line == b"ERROR":
            return ATError(self.text, "ERROR")
        match = _CME.fullmatch(line)
        if match is None:
            return None
        detail = _text(match.group(2)).strip()
        code = int(detail) if detail.isdigit() else None
        kind = CmeError if match.group(1) == b"CME" else CmsError
        return kind(self.text, _text(line), code, detail)

    def went_quiet(self) -> None:
        """The module sent nothing for ``quiet_end`` after an own line: the reply is complete."""
        self._finish()

    def _finish(self) -> None:
        try:
            self.result = self._parse(self.lines)
        except (ValueError, IndexError) as exc:
            self.fail(ATError(self.text, f"unparsable reply {self.lines!r}: {exc}"))
            return
        self.done = True

    def fail(self, error: Exception) -> None:
        self.error = error
        self.done = True


class SendCommand(Command):
    """AT+QISEND with a fixed-length payload written only when the ``> `` prompt arrives."""

    def __init__(self, line: bytes, payload: bytes, socket: Optional[int], *, timeout: float,
                 prompt_timeout: float) -> None:
        super().__init__(line, timeout=timeout, own=_SEND_RESULT, ends=_SEND_RESULT,
                         ok_ends=False, priority=Priority.BULK,
                         parse=lambda lines: SendResult(lines[-1] == b"SEND OK"))
        self.payload = payload
        self.transfer_bytes = len(payload)
        self.socket = socket
        self.prompt_timeout = prompt_timeout
        self.prompted = False

    def _error_for(self, line: bytes) -> Optional[CommandError]:
        error = super()._error_for(line)
        if error is not None and not self.prompted:
            return SendRefused(self.text, error.line)
        return error


class ReadCommand(Command):
    """AT+QIRD: ``+QIRD: ip:port,PROTO,len`` + payload + OK, or a bare OK when drained."""

    def __init__(self, line: bytes, length: int, *, timeout: float) -> None:
        super().__init__(line, timeout=timeout, priority=Priority.BULK, parse=self._read_result)
        self.length = length  # the most bytes this read may return: a longer header is junk
        self.transfer_bytes = length + READ_FRAMING
        self._frame: Optional[Payload] = None

    def take_payload(self, frame: Payload) -> bool:
        if not frame.header.startswith(b"+QIRD:") or self._frame is not None:
            return False
        self._frame = frame
        return True

    def _read_result(self, lines) -> ReadResult:
        if self._frame is None:
            return ReadResult(None, None, b"")
        fields = _text(self._frame.header.split(b":", 1)[1]).split(",")
        return ReadResult(fields[0].strip(), fields[1].strip(), self._frame.data)


class StatusCommand(Command):
    """AT+QISTATE in mux mode: OK, ``STATE:``, six ``+QISTATE:`` lines, then (usually) OK.

    Only one driver reports the trailing OK (docs/at-dialect.md §4.7); with
    ``trailing_ok=False`` the sixth socket line ends it instead."""

    def __init__(self, line: bytes, *, timeout: float, trailing_ok: bool, slots: int = 6) -> None:
        super().__init__(line, timeout=timeout, own=_STATUS_LINE, ok_ends=False,
                         parse=_stack_state)
        self.trailing_ok = trailing_ok
        self.slots = slots

    def claim(self, line: bytes) -> bool:
        claimed = super().claim(line)
        if claimed:
            self.ok_ends = self.trailing_ok
            if not self.trailing_ok and len(self.lines) == self.slots + 1:
                self._finish()
        return claimed


# -- parsers ----------------------------------------------------------------------------------

_IP = re.compile(rb"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}")
#: One address per line, or several on one line (separated by blanks or commas): the app note's
#: example of AT+QIDNSGIP does not show which (docs/at-dialect.md §4.1), so both are taken.
_ADDRESSES = re.compile(_IP.pattern + rb"(?:(?:\s*,\s*|\s+)" + _IP.pattern + rb")*")
_SEND_RESULT = re.compile(rb"SEND (?:OK|FAIL)")
_STATUS_LINE = re.compile(rb"(?:STATE:|\+QISTATE:).*")
_NUMBERS = re.compile(rb"\d+")


def _numbers(line: bytes) -> List[int]:
    return [int(n) for n in _NUMBERS.findall(line.split(b":", 1)[1])]


def _last_text(lines) -> str:
    return _text(lines[-1])


def _value(lines) -> str:
    """``+CPIN: READY`` -> ``READY``."""
    return _text(lines[-1].split(b":", 1)[1]).strip()


def _stack_state(lines) -> StackState:
    state, sockets = "", []
    for line in lines:
        if line.startswith(b"STATE:"):
            state = _text(line[6:]).strip()
        else:
            fields = tuple(f.strip().strip('"') for f in _text(line.split(b":", 1)[1]).split(","))
            sockets.append(SocketState(int(fields[0]), fields[1:], fields[-1]))
    return StackState(state, tuple(sockets))


def _sack(lines) -> SackResult:
    return SackResult(*_numbers(lines[-1])[:3])


def _identifier(lines) -> str:
    (line,) = [x for x in lines if x.strip()]
    text = _text(line).strip()
    if text.startswith("+"):
        text = text.split(":", 1)[1]
    value = text.strip().strip('"')
    if not value.isalnum():
        raise ValueError(f"not an identifier: {value!r}")
    return value


def _operator(lines) -> Optional[str]:
    fields = _text(lines[-1]).split(":", 1)[1].split(",", 2)
    if len(fields) < 3:  # "+COPS: <mode>": no operator selected
        return None
    return fields[2].strip().strip('"') or None


def _signal(lines) -> SignalQuality:
    return SignalQuality(*_numbers(lines[-1])[:2])


def _registration(lines) -> RegistrationState:
    return RegistrationState(*_numbers(lines[-1])[:2])


def _no_result(lines) -> None:
    return None


def _addresses(lines) -> Tuple[str, ...]:
    return tuple(_text(address) for line in lines for address in _IP.findall(line))


# -- argument checks --------------------------------------------------------------------------

_UNSAFE = re.compile(r'["\x00-\x1f\x7f]')


def _quoted(value: str, what: str) -> bytes:
    """``"value"`` for the command line; quotes and control characters would break it."""
    if _UNSAFE.search(value):
        raise ValueError(f"{what} contains a quote or control character")
    return b'"' + value.encode("ascii") + b'"'


def _slot(socket: Optional[int]) -> bytes:
    """``n,`` prefix for mux-mode commands; empty for single-link mode (socket None)."""
    if socket is None:
        return b""
    if not 0 <= socket <= 5:
        raise ValueError(f"socket {socket} is not in 0..5")
    return b"%d" % socket


# -- factories: basic -------------------------------------------------------------------------

def basic(line: bytes, *, timeout: float = DEFAULT_TIMEOUTS.simple, collects_info: bool = False,
          own: Optional[bytes] = None, parse: Callable = None) -> Command:
    """Any OK-terminated command; ``own`` is the prefix of its info lines (e.g. ``+CSQ:``)."""
    pattern = re.compile(re.escape(own) + rb".*") if own else None
    return Command(line, timeout=timeout, own=pattern, collects_info=collects_info, parse=parse)


def at(timeout: float = DEFAULT_TIMEOUTS.simple) -> Command:
    return basic(b"AT", timeout=timeout)


def echo(on: bool, timeout: float = DEFAULT_TIMEOUTS.simple) -> Command:
    return basic(b"ATE%d" % on, timeout=timeout)


def cmee(mode: int, timeout: float = DEFAULT_TIMEOUTS.simple) -> Command:
    return basic(b"AT+CMEE=%d" % mode, timeout=timeout)


def setting(name: str, *values: int, timeout: float = DEFAULT_TIMEOUTS.simple) -> Command:
    """``AT+<name>=v1,v2`` with integer values (AT+QIMUX=1, AT+IFC=2,2, AT+QITCFG=3,2,512,1)."""
    if not re.fullmatch(r"[A-Z&+]+", name):
        raise ValueError(f"bad command name {name!r}")
    args = b",".join(b"%d" % v for v in values)
    return basic(b"AT" + name.encode() + b"=" + args, timeout=timeout)


def query(name: str, timeout: float = DEFAULT_TIMEOUTS.simple) -> Command:
    """``AT+<name>?`` read form; returns the ``+<name>:`` lines as a Reply."""
    if not re.fullmatch(r"\+[A-Z]+", name):
        raise ValueError(f"bad command name {name!r}")
    return basic(b"AT" + name.encode() + b"?", timeout=timeout, own=name.encode() + b":")


def info(line: bytes, timeout: float = DEFAULT_TIMEOUTS.simple) -> Command:
    """Commands answering with free-form lines: ATI, AT+GMR, AT+GSN, AT+QILPORT?."""
    return basic(line, timeout=timeout, collects_info=True)


def ati(timeout: float = DEFAULT_TIMEOUTS.simple) -> Command:
    return info(b"ATI", timeout)


def gmr(timeout: float = DEFAULT_TIMEOUTS.simple) -> Command:
    return info(b"AT+GMR", timeout)


def gsn(timeout: float = DEFAULT_TIMEOUTS.simple) -> Command:
    return info(b"AT+GSN", timeout)


def sim_identifier(line: bytes, timeout: float = DEFAULT_TIMEOUTS.simple) -> Command:
    """AT+QCCID, AT+CCID (ICCID) or AT+CIMI (IMSI) -> str: one info line, with or without a
    ``+QCCID:`` / ``+CCID:`` prefix, quoted or not (docs/at-dialect.md §13)."""
    return basic(line, timeout=timeout, collects_info=True, parse=_identifier)


def cops_query(timeout: float = DEFAULT_TIMEOUTS.simple) -> Command:
    """AT+COPS? -> the operator's name, or None when the answer names none (``+COPS: 0``)."""
    return basic(b"AT+COPS?", timeout=timeout, own=b"+COPS:", parse=_operator)


def cpin_query(timeout: float = DEFAULT_TIMEOUTS.pin) -> Command:
    """-> str such as 'READY', 'SIM PIN', 'SIM PUK'."""
    return basic(b"AT+CPIN?", timeout=timeout, own=b"+CPIN:", parse=_value)


def cpin(pin: str, timeout: float = DEFAULT_TIMEOUTS.pin) -> Command:
    """Enter the PIN (redacted in logs, errors and the traffic ring)."""
    if not pin.isdigit():
        raise ValueError("PIN must be digits")
    return basic(b"AT+CPIN=" + _quoted(pin, "PIN"), timeout=timeout)


def creg_query(timeout: float = DEFAULT_TIMEOUTS.simple) -> Command:
    """-> RegistrationState."""
    return basic(b"AT+CREG?", timeout=timeout, own=b"+CREG:", parse=_registration)


def cgreg_query(timeout: float = DEFAULT_TIMEOUTS.simple) -> Command:
    """-> RegistrationState."""
    return basic(b"AT+CGREG?", timeout=timeout, own=b"+CGREG:", parse=_registration)


def cgatt(attach: bool, timeout: float = DEFAULT_TIMEOUTS.attach) -> Command:
    return basic(b"AT+CGATT=%d" % attach, timeout=timeout)


def cgatt_query(timeout: float = DEFAULT_TIMEOUTS.simple) -> Command:
    """-> bool (attached)."""
    return basic(b"AT+CGATT?", timeout=timeout, own=b"+CGATT:",
                 parse=lambda lines: _numbers(lines[-1])[0] == 1)


def csq(timeout: float = DEFAULT_TIMEOUTS.simple) -> Command:
    """-> SignalQuality."""
    return basic(b"AT+CSQ", timeout=timeout, own=b"+CSQ:", parse=_signal)


def cfun(fun: int, reset: bool = False, timeout: float = DEFAULT_TIMEOUTS.attach) -> Command:
    return basic(b"AT+CFUN=%d" % fun + (b",1" if reset else b""), timeout=timeout)


# -- factories: bearer and modes --------------------------------------------------------------

def select(name: str, value: int, timeout: float = DEFAULT_TIMEOUTS.simple) -> Command:
    """A selecting setting (``FOREGROUND_CONTEXT`` or ``SOCKET_SIDE``) the engine keeps track of."""
    command = setting(name, value, timeout=timeout)
    command.selects = (name, value)
    return command


def qifgcnt(context: int = 0, timeout: float = DEFAULT_TIMEOUTS.simple) -> Command:
    return select(FOREGROUND_CONTEXT, context, timeout)


def qicsgp(apn: str, user: str = "", password: str = "", mode: int = 1,
           timeout: float = DEFAULT_TIMEOUTS.simple) -> Command:
    """Bearer APN and credentials (user and password are redacted everywhere)."""
    args = [_quoted(apn, "APN"), _quoted(user, "user"), _quoted(password, "password")]
    return basic(b"AT+QICSGP=%d," % mode + b",".join(args), timeout=timeout)


def qiregapp(timeout: float = DEFAULT_TIMEOUTS.regapp) -> Command:
    return basic(b"AT+QIREGAPP", timeout=timeout)


def qiact(timeout: float = DEFAULT_TIMEOUTS.qiact) -> Command:
    return basic(b"AT+QIACT", timeout=timeout)


def qilocip(timeout: float = DEFAULT_TIMEOUTS.simple) -> Command:
    """-> str: the bare IP line (no OK follows)."""
    return Command(b"AT+QILOCIP", timeout=timeout, own=_IP, ends=_IP, ok_ends=False,
                   parse=_last_text)


def qideact(timeout: float = DEFAULT_TIMEOUTS.qideact) -> Command:
    """-> None on ``DEACT OK`` (no OK follows)."""
    deact = re.compile(rb"DEACT OK")
    return Command(b"AT+QIDEACT", timeout=timeout, own=deact, ends=deact, ok_ends=False,
                   parse=_no_result)


def qimux(multi: bool, timeout: float = DEFAULT_TIMEOUTS.simple) -> Command:
    return setting("+QIMUX", multi, timeout=timeout)


def qimode(transparent: bool, timeout: float = DEFAULT_TIMEOUTS.simple) -> Command:
    return setting("+QIMODE", transparent, timeout=timeout)


def qindi(mode: int, timeout: float = DEFAULT_TIMEOUTS.simple) -> Command:
    return setting("+QINDI", mode, timeout=timeout)


#: AT+QITCFG's WaitTm counts units of this many seconds, 1 to 10 of them (app note §4).
PACKET_WAIT_UNIT = 0.2
PACKET_WAIT_UNITS = range(1, 11)
#: AT+QITCFG's SendSz: at most one radio packet's worth of bytes.
MAX_PACKET_SIZE = 1460
#: AT+QITCFG's NmRetry, kept at its power-up value: an internal process "which doesn't have an
#: obvious influence" (app note §4).
PACKET_RETRIES = 3


def qitcfg(packet_wait: float, packet_size: int, plus_escape: bool,
           timeout: float = DEFAULT_TIMEOUTS.simple) -> Command:
    """AT+QITCFG=3,<WaitTm>,<SendSz>,<esc> (app note §4): in transparent mode the module sends a
    radio packet once ``packet_size`` bytes wait, or ``packet_wait`` seconds after the last input;
    ``plus_escape`` lets a guarded ``+++`` leave data mode."""
    units = round(packet_wait / PACKET_WAIT_UNIT)
    if units not in PACKET_WAIT_UNITS or not 1 <= packet_size <= MAX_PACKET_SIZE:
        raise ValueError(f"bad packetisation {packet_wait} s / {packet_size} bytes")
    return setting("+QITCFG", PACKET_RETRIES, units, packet_size, plus_escape, timeout=timeout)


def dtr_mode(mode: int, timeout: float = DEFAULT_TIMEOUTS.simple) -> Command:
    """AT&D<mode>: 1 = DTR going from ON to OFF leaves data mode, the link kept (app note §4)."""
    return basic(b"AT&D%d" % mode, timeout=timeout)


def dcd_mode(mode: int, timeout: float = DEFAULT_TIMEOUTS.simple) -> Command:
    """AT&C<mode>: 1 = DCD follows the data link, low while it exists (app note §5.6.2)."""
    return basic(b"AT&C%d" % mode, timeout=timeout)


def qidnsip(hostname: bool, timeout: float = DEFAULT_TIMEOUTS.simple) -> Command:
    """1 before opening a host name, 0 before a dotted address."""
    return setting("+QIDNSIP", hostname, timeout=timeout)


def qisde(echo_payload: bool, timeout: float = DEFAULT_TIMEOUTS.simple) -> Command:
    return setting("+QISDE", echo_payload, timeout=timeout)


def qihead(on: bool, timeout: float = DEFAULT_TIMEOUTS.simple) -> Command:
    return setting("+QIHEAD", on, timeout=timeout)


def qisrvc(server: bool, timeout: float = DEFAULT_TIMEOUTS.simple) -> Command:
    """Select server-accepted (True) or client sockets for QISEND/QICLOSE/QISACK."""
    return select(SOCKET_SIDE, 2 if server else 1, timeout)


# -- factories: sockets -----------------------------------------------------------------------

def _qiopen_line(proto: str, host: str, port: int, socket: Optional[int]) -> bytes:
    if proto not in ("TCP", "UDP") or not 0 < port < 65536:
        raise ValueError(f"bad protocol/port {proto}/{port}")
    prefix = _slot(socket) + (b"," if socket is not None else b"")
    line = b"AT+QIOPEN=" + prefix + b'"%s",' % proto.encode() + _quoted(host, "host")
    return line + b",%d" % port


def qiopen(proto: str, host: str, port: int, socket: Optional[int] = None,
           timeout: float = DEFAULT_TIMEOUTS.qiopen) -> Command:
    """-> OpenAccepted on OK or ``ALREADY CONNECT``; the connect outcome is a later event."""
    already = re.compile(rb"ALREADY CONNECT")
    return Command(_qiopen_line(proto, host, port, socket), timeout=timeout, own=already,
                   ends=already, parse=lambda lines: OpenAccepted(bool(lines)))


def qiopen_transparent(proto: str, host: str, port: int,
                       timeout: float = DEFAULT_TIMEOUTS.qiopen + DEFAULT_TIMEOUTS.connect
                       ) -> Command:
    """Transparent mode (AT+QIMODE=1, app note §4.1): ``OK``, then ``CONNECT`` (the UART is now the
    socket), ``CONNECT FAIL`` or ``ALREADY CONNECT`` -> ConnectResult.

    It stays on the wire until that outcome: a command written after the ``OK`` could reach a
    module that has just switched to data mode and go to the remote as payload."""
    outcome = re.compile(rb"CONNECT(?: FAIL)?|ALREADY CONNECT")
    return Command(_qiopen_line(proto, host, port, None), timeout=timeout, own=outcome,
                   ends=outcome, ok_ends=False, parse=lambda lines: parse_urc(lines[-1]),
                   enters_data_mode=True)


def qisend(data: bytes, socket: Optional[int] = None, timeout: float = DEFAULT_TIMEOUTS.send,
           prompt_timeout: float = DEFAULT_TIMEOUTS.prompt) -> SendCommand:
    """Fixed-length send (so 0x1A/0x1B in data are plain bytes) -> SendResult."""
    if not 0 < len(data) <= MAX_SEND:
        raise ValueError(f"payload of {len(data)} bytes is not in 1..{MAX_SEND}")
    args = (_slot(socket) + b",") if socket is not None else b""
    return SendCommand(b"AT+QISEND=" + args + b"%d" % len(data), bytes(data), socket,
                       timeout=timeout, prompt_timeout=prompt_timeout)


def qisack(socket: Optional[int] = None, timeout: float = DEFAULT_TIMEOUTS.qisack) -> Command:
    """-> SackResult."""
    line = b"AT+QISACK" + (b"=" + _slot(socket) if socket is not None else b"")
    return basic(line, timeout=timeout, own=b"+QISACK:", parse=_sack)


def qiclose(socket: Optional[int] = None, timeout: float = DEFAULT_TIMEOUTS.qiclose) -> Command:
    """-> None on ``[n, ]CLOSE OK`` (this socket's only; no OK follows)."""
    if socket is None:
        line, close_ok = b"AT+QICLOSE", re.compile(rb"CLOSE OK")
    else:
        line = b"AT+QICLOSE=" + _slot(socket)
        close_ok = re.compile(rb"(?:%d\s*,\s*)?CLOSE OK" % socket)
    return Command(line, timeout=timeout, own=close_ok, ends=close_ok, ok_ends=False,
                   parse=_no_result)


def qistat(timeout: float = DEFAULT_TIMEOUTS.simple) -> Command:
    """Single-link status: OK first, then ``STATE: x`` ends it -> StackState."""
    state = re.compile(rb"STATE:.*")
    return Command(b"AT+QISTAT", timeout=timeout, own=state, ends=state, ok_ends=False,
                   parse=_stack_state)


def qistate(trailing_ok: bool = True, timeout: float = DEFAULT_TIMEOUTS.simple) -> StatusCommand:
    """Mux status with per-socket lines -> StackState."""
    return StatusCommand(b"AT+QISTATE", timeout=timeout, trailing_ok=trailing_ok)


def qidnsgip(host: str, timeout: float = DEFAULT_TIMEOUTS.dns) -> Command:
    """-> tuple of address strings. OK comes first, then one or more address lines with no end
    line (so the module's silence ends the answer), or ERROR (docs/at-dialect.md §4.1)."""
    return Command(b"AT+QIDNSGIP=" + _quoted(host, "host"), timeout=timeout, own=_ADDRESSES,
                   ok_ends=False, parse=_addresses, quiet_end=ADDRESS_QUIET)


def qidnscfg(servers: Tuple[str, ...], timeout: float = DEFAULT_TIMEOUTS.simple) -> Command:
    """The module's DNS servers, primary then optional secondary: ``AT+QIDNSCFG="a"[,"b"]``.
    Only dotted addresses go on the line (app note §8.2)."""
    if not 1 <= len(servers) <= 2 or not all(_IP.fullmatch(s.encode("ascii")) for s in servers):
        raise ValueError(f"DNS servers {servers!r} are not one or two dotted IPv4 addresses")
    return basic(b"AT+QIDNSCFG=" + b",".join(_quoted(s, "DNS server") for s in servers),
                 timeout=timeout)


def qird(length: int = MAX_READ, socket: int = 0, context: int = 0, server: bool = False,
         timeout: float = DEFAULT_TIMEOUTS.qird) -> ReadCommand:
    """-> ReadResult (empty data when drained)."""
    if not 0 < length <= MAX_READ:
        raise ValueError(f"read length {length} is not in 1..{MAX_READ}")
    line = b"AT+QIRD=%d,%d,%s,%d" % (context, 2 if server else 1, _slot(socket), length)
    return ReadCommand(line, length, timeout=timeout)


def qiserver(args: Tuple[int, ...] = (), timeout: float = DEFAULT_TIMEOUTS.simple) -> Command:
    """AT+QISERVER[=type,max]; fires on OK (``SERVER OK`` follows as an event)."""
    line = b"AT+QISERVER" + (b"=" + b",".join(b"%d" % a for a in args) if args else b"")
    return basic(line, timeout=timeout)


def qilport(proto: str, port: int, timeout: float = DEFAULT_TIMEOUTS.simple) -> Command:
    if proto not in ("TCP", "UDP") or not 0 < port < 65536:
        raise ValueError(f"bad protocol/port {proto}/{port}")
    return basic(b'AT+QILPORT="%s",%d' % (proto.encode(), port), timeout=timeout)


def ato(timeout: float = DEFAULT_TIMEOUTS.simple) -> Command:
    """Back to transparent data mode; ends on ``CONNECT`` (the protocol switches modes)."""
    connect = re.compile(rb"CONNECT")
    return Command(b"ATO", timeout=timeout, own=connect, ends=connect, ok_ends=False,
                   parse=_no_result, enters_data_mode=True)
