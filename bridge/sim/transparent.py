"""Transparent data mode (AT+QIMODE=1): the UART is the socket.

Uplink bytes are packetised per AT+QITCFG (send when SendSz bytes are waiting, or after WaitTm x
200 ms without new input).  While the socket's send buffer is full the UART input is paused, so
the host's writes block as with hardware flow control.  `+++` leaves data mode when it is alone
between two silences of `escape_guard` seconds and its three '+' come within `escape_gap` of
each other (app note section 4); otherwise the '+' are ordinary data.
"""

PLUS = ord("+")
RETRY = 0.05  #: seconds between attempts to hand a packet to a full send buffer


class EscapeDetector:
    """Finds a guarded `+++` in a byte stream; everything else is passed through.

    @param clock: IReactorTime.
    @param guard: silence required before and after the three '+'.
    @param gap: largest allowed gap between the '+'.
    @param data: called with bytes that are ordinary data.
    @param escaped: called when a valid escape sequence completed.
    """

    def __init__(self, clock, guard: float, gap: float, data, escaped):
        self._clock = clock
        self._guard = guard
        self._gap = gap
        self._data = data
        self._escaped = escaped
        self._last = clock.seconds()
        self._plus_at = None
        self._held = 0
        self._timer = None

    def receive(self, chunk: bytes) -> None:
        now = self._clock.seconds()
        self._cancel_timer()
        passthrough = bytearray()
        for byte in chunk:
            if self._held and byte == PLUS and self._held < 3 and now - self._plus_at <= self._gap:
                self._held += 1
                self._plus_at = now
            elif byte == PLUS and not self._held and not passthrough and now - self._last >= self._guard:
                self._held, self._plus_at = 1, now
            else:
                passthrough += b"+" * self._held + bytes([byte])
                self._held = 0
        self._last = now
        if passthrough:
            self._data(bytes(passthrough))
        if self._held == 3:
            self._timer = self._clock.callLater(self._guard, self._complete)
        elif self._held:
            self._timer = self._clock.callLater(self._gap, self._release)

    def _complete(self) -> None:
        self._timer = None
        self._held = 0
        self._last = self._clock.seconds()
        self._escaped()

    def _release(self) -> None:
        self._timer = None
        held, self._held = self._held, 0
        self._data(b"+" * held)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def stop(self) -> None:
        self._cancel_timer()


class DataMode:
    """One stretch of data mode on the UART for socket `sock`."""

    def __init__(self, module, sock):
        self._module = module
        self._sock = sock
        self._clock = module.reactor
        _, wait, size, esc = module.settings.tcfg
        self._wait = wait * 0.2
        self._size = size
        self._buffer = bytearray()
        self._timer = None
        self._stalled = False
        self._escape = None
        if esc:
            self._escape = EscapeDetector(module.reactor, module.options.escape_guard,
                                          module.options.escape_gap, self._uplink, self.escape)

    @property
    def sock(self):
        return self._sock

    def receive(self, data: bytes) -> None:
        if self._escape is not None:
            self._escape.receive(data)
        else:
            self._uplink(data)

    def _uplink(self, data: bytes) -> None:
        self._buffer += data
        self._cancel_timer()
        self._send_full_packets()
        if self._buffer and not self._stalled:
            self._timer = self._clock.callLater(self._wait, self._send_rest)

    def _send_full_packets(self) -> None:
        while len(self._buffer) >= self._size and not self._stalled:
            self._hand_over(self._size)

    def _send_rest(self) -> None:
        self._timer = None
        if self._buffer and not self._stalled:
            self._hand_over(len(self._buffer))

    def _hand_over(self, count: int) -> None:
        if self._sock.send(bytes(self._buffer[:count])):
            del self._buffer[:count]
            return
        self._stalled = True
        self._module.transport.pauseProducing()
        self._timer = self._clock.callLater(RETRY, self._retry)

    def _retry(self) -> None:
        self._timer = None
        self._stalled = False
        self._send_full_packets()
        if self._stalled:
            return
        self._module.transport.resumeProducing()
        if self._buffer:
            self._timer = self._clock.callLater(self._wait, self._send_rest)

    def escape(self, close: bool = False) -> None:
        """Back to command mode (socket stays up unless `close`), `OK`."""
        if self._buffer and not self._stalled:
            self._hand_over(len(self._buffer))
        module = self._module
        self.stop()
        module.data_mode = None
        if close:
            module.contexts[self._sock.cid].close(self._sock)
        module.r.ok()

    def stop(self) -> None:
        self._cancel_timer()
        if self._escape is not None:
            self._escape.stop()
        if self._stalled:
            self._module.transport.resumeProducing()
        self._stalled = False

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
