"""Transparent mode (AT+QIMODE=1): one link, and the UART is its socket while in data mode.

The link lives from `CONNECT` until it closes; the UART is in data mode for stretches of it, left
by `+++` or a DTR drop, resumed by ATO (app note §4).  Uplink bytes wait in the module's
UART receive buffer (`uart_rx_buffer` bytes) and go out packetised per AT+QITCFG: a packet when
SendSz bytes are waiting (or the buffer is full), the rest after WaitTm x 200 ms without new input.  When the buffer is
full, flow control (RTS/CTS) stops the UART so the host's writes block; without flow control the
bytes that do not fit are lost and counted as overrun, as on a real UART.  What the buffer holds
when data mode ends by an escape still goes out while the UART takes commands.

`+++` leaves data mode when it is alone between two silences of `escape_guard` seconds and its
three '+' come within `escape_gap` of each other; otherwise the '+' are ordinary data.
"""

PLUS = ord("+")
RETRY = 0.05  #: seconds between attempts to hand a packet to a full send buffer


def _cancel(timer) -> None:
    if timer is not None and timer.active():
        timer.cancel()


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
        self.stop()
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

    def stop(self) -> None:
        _cancel(self._timer)
        self._timer = None


class Uplink:
    """The module's UART receive buffer for the link's socket `sock`, emptied in packets.

    @param module: the ModuleProtocol (settings, options, UART transport, overrun counter).
    @param sock: the link's SimSocket.
    """

    def __init__(self, module, sock):
        self.sock = sock
        self._module = module
        self._clock = module.reactor
        self._capacity = module.options.uart_rx_buffer
        self._flow_control = module.options.flow_control
        self._buffer = bytearray()
        self._due = 0  # bytes to send however few: the idle time passed, or data mode ended
        self._idle = None
        self._retry = None
        self._data_mode = False
        self._holding = False  # flow control: the UART is stopped

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def receive(self, data: bytes) -> None:
        """Bytes from the UART in data mode; what does not fit without flow control is lost."""
        room = len(data) if self._flow_control else max(0, self._capacity - len(self._buffer))
        if room < len(data):
            self._module.uart_overrun += len(data) - room
        self._buffer += data[:room]
        _cancel(self._idle)
        _, wait, _, _ = self._module.settings.tcfg
        self._idle = self._clock.callLater(wait * 0.2, self.flush)
        self._send()

    def flush(self) -> None:
        """Everything buffered goes out now, however short the last packet."""
        _cancel(self._idle)
        self._idle = None
        self._due = len(self._buffer)
        self._send()

    def data_mode(self, on: bool) -> None:
        """The UART enters (True) or leaves data mode; it is only ever stopped in data mode."""
        self._data_mode = on
        self._flow()

    def _send(self) -> None:
        if self._retry is not None:
            return  # the send buffer is full: the retry carries on
        size = self._module.settings.tcfg[2]
        while self._buffer and (len(self._buffer) >= min(size, self._capacity) or self._due):
            if self.sock.state != "CONNECTED":
                self._buffer.clear()  # the link is gone, and what waited for it
                self._due = 0
                break
            count = min(size, len(self._buffer))
            if not self.sock.send(bytes(self._buffer[:count])):
                self._retry = self._clock.callLater(RETRY, self._retried)
                break
            del self._buffer[:count]
            self._due = max(0, self._due - count)
        self._flow()

    def _retried(self) -> None:
        self._retry = None
        self._send()

    def _flow(self) -> None:
        """RTS/CTS: stop the UART when the buffer is full, start it again once half is free."""
        if not self._flow_control:
            return
        full = len(self._buffer) >= self._capacity
        hold = self._data_mode and (full or (self._holding and len(self._buffer) > self._capacity // 2))
        if hold == self._holding:
            return
        self._holding = hold
        if hold:
            self._module.transport.pauseProducing()
        else:
            self._module.transport.resumeProducing()

    def stop(self) -> None:
        """The link is gone: drop what waits, release the UART."""
        for timer in (self._idle, self._retry):
            _cancel(timer)
        self._idle = self._retry = None
        self._buffer.clear()
        self.data_mode(False)


class DataMode:
    """One stretch of data mode: UART input goes to the link's uplink, unless it is `+++`.

    @param module: the ModuleProtocol; `module.escape_data_mode("+++")` ends the stretch.
    @param uplink: the link's Uplink.
    """

    def __init__(self, module, uplink: Uplink):
        self.uplink = uplink
        self._escape = None
        if module.settings.tcfg[3]:
            self._escape = EscapeDetector(module.reactor, module.options.escape_guard,
                                          module.options.escape_gap, uplink.receive,
                                          lambda: module.escape_data_mode("+++"))
        uplink.data_mode(True)

    @property
    def sock(self):
        return self.uplink.sock

    def receive(self, data: bytes) -> None:
        if self._escape is not None:
            self._escape.receive(data)
        else:
            self.uplink.receive(data)

    def stop(self) -> None:
        if self._escape is not None:
            self._escape.stop()
        self.uplink.data_mode(False)
