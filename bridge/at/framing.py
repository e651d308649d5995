"""Sans-I/O framer: cuts the module's byte stream into lines, prompts and payloads.

One buffer carries everything the module says: CR/LF-framed lines, the ``> `` prompt that has no
line ending, and binary payloads whose length is announced in a header (docs/at-dialect.md §1,
§4.4, §4.8, §12.2-12.3).  Payloads are cut by length, never by line, so payload bytes that look
like ``OK`` or ``SEND OK`` stay data.  No Twisted here: the framer is pure bytes in, frames out,
so it can be tested (and property-tested) without a reactor.

Cost model (this is the data pump's hot path): every byte is appended to one ``bytearray`` once;
line ends are found with a compiled regex that resumes where the last search stopped, and payloads
are sliced out by length, so a 1500-byte payload arriving in 1-byte reads costs O(n) overall.

Modes the consumer switches *between* frames (``feed`` is lazy for that reason):
``expect`` (what the command on the wire may produce: its ``> `` prompt, its AT+QIRD length),
``expect_echo`` (skip our own payload echoed back when AT+QISDE=1) and ``set_data_mode``
(transparent sessions: everything is ``Data``).

Bad bytes must never wedge the stream: a header announcing more than the dialect carries is junk
(one bogus ``+RECEIVE: 0, 65000`` would otherwise eat the next 65000 bytes, every ``OK`` included),
and ``reset`` drops a half-cut payload when the consumer resynchronises.
"""

import re
from collections import deque
from dataclasses import dataclass
from typing import Iterator, Optional, Tuple, Union

from bridge.at.ring import repr_without_payload

#: Longest line we keep waiting for; longer unterminated input is junk (real lines are < 200 bytes).
MAX_LINE = 1024
#: Largest payload one header may announce: an AT+QIRD asks for at most 1500
#: (docs/at-dialect.md §4.8); pushed frames have no documented bound, and a UDP datagram on a
#: 1500-byte MTU carries up to 1472.
MAX_PAYLOAD = 1500

#: Data-mode tails that may be the module's own words once a transparent session ended (app
#: note §6.3): the link closed, the context lost, or (its boot URCs end so) the module restarted.
DATA_MODE_MARKERS = (b"\r\nCLOSED\r\n", b"\r\n+PDP DEACT\r\n", b"\r\nCall Ready\r\n",
                     b"\r\nSMS Ready\r\n")
#: What the module answers to a successful ``+++`` escape.
ESCAPE_OK_MARKER = b"\r\nOK\r\n"


@dataclass(frozen=True)
class Line:
    """One text line without its terminator (never empty)."""

    text: bytes


@dataclass(frozen=True)
class Prompt:
    """The ``> `` input prompt of AT+QISEND (no line ending follows it)."""


@dataclass(frozen=True)
class Payload:
    """A length-announced binary payload with the header that announced it.

    ``header`` is the ``+RECEIVE: n, len`` / ``+QIRD: ip:port,TCP,len`` line or the ``IPD<len>:``
    prefix; ``peer_lines`` are ``RECV FROM:``/``TO:`` lines that preceded it (AT+QISHOWRA/LA).
    """

    header: bytes
    data: bytes
    peer_lines: Tuple[bytes, ...] = ()

    __repr__ = repr_without_payload


@dataclass(frozen=True)
class Data:
    """Raw bytes of a transparent (data mode) session."""

    data: bytes

    __repr__ = repr_without_payload


@dataclass(frozen=True)
class Marker:
    """A data-mode tail that may be the module talking (``CLOSED``, ``OK``), held back undelivered."""

    text: bytes


@dataclass(frozen=True)
class Junk:
    """Bytes that fit no frame; the consumer logs them, nothing else."""

    data: bytes
    reason: str

    __repr__ = repr_without_payload


Frame = Union[Line, Prompt, Payload, Data, Marker, Junk]

_EOL = re.compile(rb"[\r\n]")
_RECEIVE = re.compile(rb"\+RECEIVE:\s*\d{1,2}\s*,\s*(\d+)\s*")
_QIRD = re.compile(rb"\+QIRD:\s*[^,]*,\s*(?:TCP|UDP)\s*,\s*(\d+)\s*")
_IPD = re.compile(rb"IPD(\d{1,5})(?:TCP|UDP)?:")
_IPD_PARTIAL = re.compile(rb"I(?:P(?:D(?:\d{1,5}(?:T(?:CP?)?|U(?:DP?)?)?)?)?)?")
_PEER_LINE = re.compile(rb"(?:RECV FROM:|TO:)")
#: URC prefixes seen glued after other output on the same line (docs/at-dialect.md §8.1).
_GLUED_URCS = (b"+QIRDI:",)
_CR, _LF, _SPACE, _GT = 0x0D, 0x0A, 0x20, 0x3E


class Framer:
    """Incremental framer for one direction (module -> host) of the UART."""

    def __init__(self, max_line: int = MAX_LINE, max_payload: int = MAX_PAYLOAD) -> None:
        self._max_line = max_line
        self._max_payload = max_payload
        self._buf = bytearray()
        self._pos = 0
        self._scan = 0  # buffer index up to which the current partial line has no terminator
        self._pending: deque = deque()  # frames already cut, not yet handed out
        self._swallow_lf = False  # the last line ended in CR: a following LF belongs to it
        self._prompt_expected = False  # an AT+QISEND line is written and waits for its '> '
        self._read_limit = max_payload  # largest +QIRD payload the read on the wire asked for
        self._need: Optional[int] = None  # payload bytes still to cut, when in payload state
        self._header = b""
        self._ipd_prefix_allowed = False  # +RECEIVE data may start with IPD<len>: (AT+QIHEAD=1)
        self._peer_lines: list = []
        self._echo = b""
        self._data_mode = False
        self._markers: Tuple[bytes, ...] = DATA_MODE_MARKERS
        self._marker_reported = False

    # -- consumer controls ------------------------------------------------------------------

    def feed(self, data: bytes) -> Iterator[Frame]:
        """Append ``data`` and return a lazy iterator over the frames now complete.

        Lazy so that the consumer can switch modes between two frames of the same read; exhaust
        the iterator before feeding again.
        """
        self._buf += data
        return self._frames()

    def expect(self, prompt: bool = False, read_length: Optional[int] = None) -> None:
        """Say what the command now on the wire may produce; ``expect()`` once it has ended.

        ``prompt``: an AT+QISEND line is written and waits for ``> ``; only then is ``> `` a prompt,
        so junk can never make the consumer write payload onto the module's command line (one
        prompt is cut, then the expectation is spent).  ``read_length``: what the AT+QIRD asked
        for; a ``+QIRD:`` header announcing more is junk.
        """
        self._prompt_expected = prompt
        self._read_limit = read_length or self._max_payload

    def reset(self) -> int:
        """Drop a half-cut payload and its peer lines (the consumer resynchronises).

        Returns how many bytes were dropped.  Complete frames and a partial text line stay: only a
        length-framed payload can swallow the module's answers to the resync.
        """
        dropped = sum(map(len, self._peer_lines))
        if self._need is not None:
            dropped += len(self._buf) - self._pos
            del self._buf[:]
            self._pos = self._scan = 0
            self._need = None
        self._peer_lines = []
        self._ipd_prefix_allowed = False
        self._echo = b""
        return dropped

    @property
    def mid_payload(self) -> bool:
        """A header has been cut and its payload has not fully arrived."""
        return self._need is not None

    def expect_echo(self, payload: bytes) -> None:
        """Skip ``payload`` if the module echoes it next (AT+QISDE=1); anything else cancels."""
        self._echo = bytes(payload)

    def set_data_mode(self, on: bool, markers: Tuple[bytes, ...] = DATA_MODE_MARKERS) -> None:
        """Switch transparent data mode; leaving it drops a held marker (the module's own words)."""
        if self._data_mode and not on:
            self._pos = len(self._buf)
            self._scan = self._pos
        self._data_mode = on
        self._markers = markers
        self._marker_reported = False

    @property
    def data_mode(self) -> bool:
        return self._data_mode

    @property
    def held(self) -> bytes:
        """Data-mode bytes held back because they may be the start of a marker."""
        return bytes(self._buf[self._pos:]) if self._data_mode else b""

    def release_held(self) -> bytes:
        """Give up holding: the held bytes were payload after all (the consumer delivers them)."""
        held = self.held
        self._pos = len(self._buf)
        self._scan = self._pos
        self._marker_reported = False
        return held

    # -- cutting ------------------------------------------------------------------------------

    def _frames(self) -> Iterator[Frame]:
        while True:
            frame = self._pending.popleft() if self._pending else self._next()
            if frame is None:
                break
            yield frame
        if self._pos:
            del self._buf[:self._pos]
            self._scan -= self._pos
            self._pos = 0

    def _next(self) -> Optional[Frame]:
        buf = self._buf
        while self._pos < len(buf):
            pos = self._pos
            if self._swallow_lf:
                self._swallow_lf = False
                if buf[pos] == _LF:
                    self._advance(pos + 1)
                    continue
            if self._data_mode:
                return self._next_data()
            if self._need is not None:
                return self._next_payload()
            if self._echo:
                if not self._skip_echo():
                    return None
                continue
            if self._prompt_expected and buf[pos] == _GT:
                if pos + 1 == len(buf):
                    return None  # the prompt's space (or the rest of a line) is still to come
                if buf[pos + 1] == _SPACE:
                    self._advance(pos + 2)
                    self._prompt_expected = False
                    return Prompt()
            if buf.startswith(b"IPD", pos) or len(buf) - pos < 3:
                frame = self._ipd_header(pos)
                if frame is not False:
                    return frame
            frame = self._next_line(pos)
            if frame is not False:
                return frame
        return None

    def _advance(self, pos: int) -> None:
        self._pos = pos
        if self._scan < pos:
            self._scan = pos

    def _next_line(self, pos: int):
        """Cut one line; returns a frame, None (need more bytes) or False (nothing to emit)."""
        buf = self._buf
        match = _EOL.search(buf, self._scan)
        if match is None:
            self._scan = len(buf)
            if len(buf) - pos > self._max_line:
                self._advance(len(buf))
                return Junk(bytes(buf[pos:]), "line too long")
            return None
        end = match.start()
        self._swallow_lf = buf[end] == _CR
        self._advance(end + 1)
        if end == pos:
            return False
        return self._classify(bytes(buf[pos:end]))

    def _classify(self, line: bytes):
        for urc in _GLUED_URCS:
            cut = line.find(urc, 1)
            if cut > 0:
                self._pending.append(Line(line[cut:]))
                line = line[:cut]
        if _PEER_LINE.match(line):
            self._peer_lines.append(line)
            return self._pending.popleft() if self._pending else False
        header = _RECEIVE.fullmatch(line) or _QIRD.fullmatch(line)
        if header:
            pushed = line.startswith(b"+RECEIVE")
            length, limit = int(header.group(1)), self._max_payload if pushed else self._read_limit
            if length > limit:
                self._pending.appendleft(_oversized(line, length, limit))
                return self._flush_peer_lines() if self._peer_lines else self._pending.popleft()
            self._start_payload(line, length, pushed)
            if self._need == 0:
                self._pending.appendleft(self._cut_payload())
            return self._pending.popleft() if self._pending else False
        if self._peer_lines:
            self._pending.appendleft(Line(line))
            return self._flush_peer_lines()
        return Line(line)

    def _flush_peer_lines(self) -> Line:
        """Peer lines not followed by a payload are plain lines after all."""
        lines, self._peer_lines = self._peer_lines, []
        self._pending.extendleft(Line(text) for text in reversed(lines[1:]))
        return Line(lines[0])

    def _start_payload(self, header: bytes, length: int, ipd_prefix_allowed: bool) -> None:
        self._need = length
        self._header = header
        self._ipd_prefix_allowed = ipd_prefix_allowed

    def _ipd_header(self, pos: int):
        """A single-link ``IPD<len>[TCP|UDP]:`` prefix: returns a frame, None (need more bytes)
        or False (no such prefix here)."""
        match = _IPD.match(self._buf, pos)
        if match is None:
            tail = self._buf[pos:pos + 12]
            could_be = bool(tail) and _IPD_PARTIAL.fullmatch(tail) is not None
            return None if could_be and b"\r" not in tail and b"\n" not in tail else False
        self._advance(match.end())
        header, length = bytes(match.group(0)), int(match.group(1))
        if length > self._max_payload:
            return _oversized(header, length, self._max_payload)
        self._start_payload(header, length, False)
        return self._next_payload()

    def _next_payload(self) -> Optional[Frame]:
        buf, pos = self._buf, self._pos
        if self._ipd_prefix_allowed:
            # AT+QIHEAD=1 puts IPD<len>[TCP|UDP]: between the +RECEIVE line and the data.
            expected = b"IPD%d" % self._need
            have = bytes(buf[pos:pos + len(expected) + 4])
            match = _IPD.match(have)
            if match and int(match.group(1)) == self._need:
                self._advance(pos + match.end())
            elif _IPD_PARTIAL.fullmatch(have) and expected.startswith(have[:len(expected)]):
                return None  # cannot tell the prefix from data yet
            self._ipd_prefix_allowed = False
        if len(buf) - self._pos < self._need:
            return None
        return self._cut_payload()

    def _cut_payload(self) -> Payload:
        start, end = self._pos, self._pos + self._need
        frame = Payload(self._header, bytes(self._buf[start:end]), tuple(self._peer_lines))
        self._advance(end)
        self._need = None
        self._peer_lines = []
        self._swallow_lf = False
        return frame

    def _skip_echo(self) -> bool:
        """Consume the expected payload echo; False means wait for more bytes."""
        buf, pos = self._buf, self._pos
        chunk = bytes(buf[pos:pos + len(self._echo)])
        if not self._echo.startswith(chunk):
            self._echo = b""  # no echo (AT+QISDE=0) or something else came first
            return True
        self._advance(pos + len(chunk))
        self._echo = self._echo[len(chunk):]
        return not self._echo

    def _next_data(self) -> Optional[Frame]:
        buf, pos = self._buf, self._pos
        hold = self._held_tail(len(buf) - pos)
        if hold < len(buf) - pos:
            end = len(buf) - hold
            self._advance(end)
            self._marker_reported = False
            return Data(bytes(buf[pos:end]))
        if not self._marker_reported and bytes(buf[pos:]) in self._markers:
            self._marker_reported = True
            return Marker(bytes(buf[pos:]).strip())
        return None

    def _held_tail(self, available: int) -> int:
        """Length of the longest buffer suffix that is (the start of) a data-mode marker."""
        buf = self._buf
        best = 0
        for marker in self._markers:
            for size in range(min(len(marker), available), best, -1):
                if buf.endswith(marker[:size]):
                    best = size
                    break
        return best


def _oversized(header: bytes, length: int, limit: int) -> Junk:
    return Junk(header, f"header announces {length} payload bytes, more than {limit}")
