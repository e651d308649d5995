"""The bytes typed after the `> ` prompt of AT+QISEND.

Fixed length (`AT+QISEND=<len>` / `=<n>,<len>`): exactly len bytes, 0x1A and 0x1B are data.
Variable length: Ctrl-Z (0x1A) sends, ESC (0x1B) cancels, bytes beyond 1460 are dropped
(app note 5.2.2.1).  AT+QIAUTOS=1,<t> sends whatever was typed when the timer expires.
Payload echo follows AT+QISDE.
"""

CTRL_Z, ESC = 0x1A, 0x1B
MAX_PAYLOAD = 1460


class PayloadInput:
    """Collects one QISEND payload for `sock`; `length` None means variable length."""

    def __init__(self, module, sock, length):
        self._module = module
        self._sock = sock
        self._length = length
        self._data = bytearray()
        self._timer = None
        mode, seconds = module.settings.autos
        if mode == 1 and seconds > 0:
            self._timer = module.reactor.callLater(seconds, self._timed_out)

    def receive(self, data: bytes) -> int:
        """Take payload bytes; return how many were consumed (the rest is command input)."""
        if self._length is not None:
            used = min(len(data), self._length - len(self._data))
            self._take(data[:used])
            if len(self._data) == self._length:
                self._finish()
            return used
        for pos, byte in enumerate(data):
            if byte == CTRL_Z:
                self._take(data[:pos])
                self._finish()
                return pos + 1
            if byte == ESC:
                self._take(data[:pos])
                self._end()
                self._module.r.ok()
                return pos + 1
        self._take(data)
        return len(data)

    def _take(self, chunk: bytes) -> None:
        if self._module.settings.sde:
            self._module.r.raw(chunk)
        room = MAX_PAYLOAD - len(self._data)
        self._data += chunk[:max(0, room)]

    def _timed_out(self) -> None:
        self._timer = None
        if not self._data:
            self._end()
            self._module.r.final("SEND FAIL")
            return
        self._finish()

    def _finish(self) -> None:
        self._end()
        module, sock = self._module, self._sock
        if sock.state != "CONNECTED":  # closed while the payload was being typed
            module.r.error()
            return
        accepted = sock.send(bytes(self._data))
        if module.settings.prompt in (2, 3) and accepted:
            return
        module.r.final("SEND OK" if accepted else "SEND FAIL")

    def _end(self) -> None:
        self.cancel()
        self._module.payload_done()

    def cancel(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

