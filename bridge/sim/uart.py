"""The module's UART: a paced duplex byte line between a port (the pty) and the dialect.

Both directions run at `baud / 10` bytes per second (0 = unpaced).  Output written by the
dialect is kept in order, so anything written in one `write()` call (a line, a whole payload
frame) is never interleaved with anything else.  Input is delivered at the line rate and the
port stops being read while input is held back, so a fast writer blocks like on a real UART.
The dialect sees an ordinary Twisted transport: it registers as a streaming producer to learn
when the output backlog is large, and calls pauseProducing()/resumeProducing() to hold input.
"""

from twisted.internet.interfaces import IPushProducer, ITransport
from twisted.logger import Logger
from zope.interface import implementer

from .pacing import Pacer, baud_to_bytes_per_second

TICK = 0.01  #: pacing granularity in seconds
INPUT_HOLD = 1024  #: stop reading the port while this many input bytes wait for the line


class _Address:
    """The UART has no network address; Twisted code may still ask."""

    def __repr__(self):
        return "<uart>"


@implementer(IPushProducer)
class _SinkGate:
    """Producer handed to the port: the port pauses it when its own write buffer is full."""

    def __init__(self, uart):
        self._uart = uart

    def pauseProducing(self):
        self._uart.port_full(True)

    def resumeProducing(self):
        self._uart.port_full(False)

    def stopProducing(self):
        self._uart.port_full(True)


@implementer(ITransport, IPushProducer)
class PacedUart:
    """Paced transport between a byte port and one protocol (the dialect).

    @param clock: IReactorTime.
    @param baud: line rate in baud, 0 = unpaced.
    @param high_water: output backlog (bytes) above which the registered producer is paused.
    """

    log = Logger()

    def __init__(self, clock, baud: int = 0, high_water: int = 4096):
        self._clock = clock
        rate = baud_to_bytes_per_second(baud)
        self._out_pacer = Pacer(rate)
        self._in_pacer = Pacer(rate)
        self._high = high_water
        self._low = high_water // 4
        self._out = bytearray()
        self._in = bytearray()
        self._out_timer = None
        self._in_timer = None
        self._sink = None
        self._sink_paused = False
        self._input_paused = False
        self._producer = None
        self._producer_paused = False
        self._muted_until = 0.0
        self._protocol = None
        self.rx_bytes = 0
        self.tx_bytes = 0
        self.gate = _SinkGate(self)

    # -- wiring -----------------------------------------------------------------------------

    def attach_port(self, port) -> None:
        """`port` needs write(bytes), and stopReading()/startReading() to hold input."""
        self._sink = port

    def connect(self, protocol) -> None:
        self._protocol = protocol
        protocol.makeConnection(self)

    # -- port side ----------------------------------------------------------------------------

    def receive(self, data: bytes) -> None:
        """Bytes arrived from the port (the host wrote them)."""
        if self.muted:
            return
        self.rx_bytes += len(data)
        if not self._in:
            self._in_pacer.restart(self._clock.seconds())
        self._in += data
        self._feed_input()

    def detach_port(self) -> None:
        """The port is closing: drop both backlogs and pending timers, nothing may touch it now."""
        self._sink = None
        self._in.clear()
        self._out.clear()
        for timer in (self._out_timer, self._in_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._out_timer = self._in_timer = None

    def port_full(self, full: bool) -> None:
        """The port's own write buffer filled up (or drained)."""
        self._sink_paused = full
        if not full:
            self._out_pacer.restart(self._clock.seconds())
            self._pump_output()

    @property
    def backlog(self) -> int:
        """Output bytes not yet handed to the port."""
        return len(self._out)

    # -- mute fault ---------------------------------------------------------------------------

    @property
    def muted(self) -> bool:
        return self._clock.seconds() < self._muted_until

    def mute(self, seconds: float) -> None:
        """Deaf and dumb for `seconds`: input is dropped, output is dropped."""
        self._muted_until = self._clock.seconds() + seconds
        self._in.clear()
        self._out.clear()
        self._check_producer()

    # -- ITransport for the dialect -------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if not data or self.muted:
            return
        if not self._out:
            self._out_pacer.restart(self._clock.seconds())
        self._out += data
        self._pump_output()

    def writeSequence(self, seq) -> None:
        self.write(b"".join(seq))

    def loseConnection(self) -> None:
        """The UART cannot be closed from the module side."""

    def getPeer(self):
        return _Address()

    def getHost(self):
        return _Address()

    def registerProducer(self, producer, streaming) -> None:
        self._producer = producer
        self._producer_paused = False

    def unregisterProducer(self) -> None:
        self._producer = None

    # -- input flow control requested by the dialect ---------------------------------------------

    def pauseProducing(self) -> None:
        self._input_paused = True
        if self._sink is not None:
            self._sink.stopReading()

    def resumeProducing(self) -> None:
        self._input_paused = False
        self._in_pacer.restart(self._clock.seconds())
        self._feed_input()

    def stopProducing(self) -> None:
        self.pauseProducing()

    # -- internals ------------------------------------------------------------------------------

    def _pump_output(self) -> None:
        """Send what the line allows now, then re-check the producer.

        The check runs on every write, also while a send timer is pending: most writes land
        between ticks, and only this keeps the backlog (what a `> ` prompt waits behind) bounded
        by high_water plus one write.
        """
        if self._out_timer is None or not self._out_timer.active():
            self._out_timer = None
            self._send_due()
        self._check_producer()

    def _send_due(self) -> None:
        now = self._clock.seconds()
        while self._out and not self._sink_paused and self._sink is not None:
            allowed = self._out_pacer.allowance(now, TICK)
            if allowed == 0:
                break
            chunk = bytes(self._out[:allowed])
            del self._out[:allowed]
            self._out_pacer.consume(len(chunk))
            self.tx_bytes += len(chunk)
            self._sink.write(chunk)
        if self._out and not self._sink_paused and self._sink is not None:
            self._out_timer = self._clock.callLater(
                self._out_pacer.ready_at(now) - now, self._pump_output
            )

    def _check_producer(self) -> None:
        if self._producer is None:
            return
        if not self._producer_paused and self.backlog > self._high:
            self._producer_paused = True
            self._producer.pauseProducing()
        elif self._producer_paused and self.backlog <= self._low:
            self._producer_paused = False
            self._producer.resumeProducing()

    def _feed_input(self) -> None:
        """Hand the module what the line allows now, then stop or restart reading the port.

        The check runs on every read, also while a pacing timer is pending: most reads land
        between ticks, and only this keeps the input taken ahead of the line at INPUT_HOLD (a
        module's UART takes bytes at the line rate, no faster)."""
        if self._in_timer is None or not self._in_timer.active():
            self._in_timer = None
            self._deliver_input()
        self._gate_reading()

    def _deliver_input(self) -> None:
        now = self._clock.seconds()
        while self._in and not self._input_paused and self._protocol is not None:
            allowed = self._in_pacer.allowance(now, TICK)
            if allowed == 0:
                break
            chunk = bytes(self._in[:allowed])
            del self._in[:allowed]
            self._in_pacer.consume(len(chunk))
            self._protocol.dataReceived(chunk)
        if self._in and not self._input_paused:
            self._in_timer = self._clock.callLater(
                self._in_pacer.ready_at(now) - now, self._feed_input
            )

    def _gate_reading(self) -> None:
        if self._sink is not None:
            if self._input_paused or len(self._in) >= INPUT_HOLD:
                self._sink.stopReading()
            else:
                self._sink.startReading()
