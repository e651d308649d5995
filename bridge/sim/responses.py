"""Result framing: ATV1 `\\r\\n<text>\\r\\n`, ATV0 numeric codes, +CME errors, chaos URCs.

Every call here is one write to the UART, so a line (or a whole payload frame handed to `frame`)
can never be split by anything else the module emits.
"""

NUMERIC = {"OK": b"0", "CONNECT": b"1", "RING": b"2", "NO CARRIER": b"3", "ERROR": b"4"}

CME_TEXT = {3: "operation not allowed", 4: "operation not supported", 10: "SIM not inserted",
            11: "SIM PIN required", 16: "incorrect password", 30: "no network service"}


class Responder:
    """Formats and writes everything the module says.

    @param write: callable taking bytes (the UART transport's write).
    @param settings: ModuleSettings (verbose / cmee are read at each call).
    @param chaos: returns a harmless URC text or None; consulted before each final result.
    """

    def __init__(self, write, settings, chaos=lambda: None):
        self._write = write
        self.settings = settings
        self.chaos = chaos

    def _line(self, text: str) -> bytes:
        data = text.encode("latin-1")
        if self.settings.verbose:
            return b"\r\n" + data + b"\r\n"
        return data + b"\r\n"

    def info(self, text: str) -> None:
        """An information line that belongs to the current command."""
        self._write(self._line(text))

    def urc(self, text: str) -> None:
        """An unsolicited result code."""
        self._write(self._line(text))

    def final(self, text: str) -> None:
        """A final (or delayed final) result; chaos may slip a URC in just before it."""
        extra = self.chaos()
        if extra:
            self.urc(extra)
        if not self.settings.verbose and text in NUMERIC:
            self._write(NUMERIC[text] + b"\r")
        else:
            self._write(self._line(text))

    def ok(self) -> None:
        self.final("OK")

    def error(self, cme: int = 0) -> None:
        """`ERROR`, or `+CME ERROR: n` / text when CMEE allows and a code is given."""
        if cme and self.settings.cmee == 1:
            self.final(f"+CME ERROR: {cme}")
        elif cme and self.settings.cmee == 2:
            self.final(f"+CME ERROR: {CME_TEXT.get(cme, 'unknown')}")
        else:
            self.final("ERROR")

    def raw(self, data: bytes) -> None:
        """Bytes exactly as given (prompt, echo, payload frames, garbage)."""
        if data:
            self._write(data)

    def frame(self, data: bytes) -> None:
        """A length-framed unit; chaos may only go before it, never inside."""
        extra = self.chaos()
        if extra:
            self.urc(extra)
        self._write(data)
