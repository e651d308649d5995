"""Honest delivery accounting for AT+QISACK.

Bytes count as acknowledged only once the peer's kernel has them: we write straight into the
kernel send queue (no user-space buffer in between) and subtract what SIOCOUTQ says is still
queued (unsent or unacknowledged).  The module only learns of an ACK one way-delay (RTT/2) after
the delivery, so samples are kept and an ack becomes visible `ack_delay` seconds after it was
measured.  Visibility is judged lazily, at the moment somebody asks: a downlink item measured at
the same instant as an ack (and shaped by the same delay) can therefore never reach the module
before that ack is visible.
"""

import array
import fcntl
import termios
from collections import deque


def kernel_unsent(sock) -> int:
    """SIOCOUTQ (== TIOCOUTQ on Linux): bytes in the socket's send queue not yet ACKed."""
    buf = array.array("i", [0])
    fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, buf, True)
    return buf[0]


class KernelWire:
    """Write side of a connected TCP socket that bypasses Twisted's write buffer."""

    def __init__(self, sock):
        self._sock = sock

    def send(self, data: bytes) -> int:
        """Queue as much as the kernel takes now; return the count taken."""
        try:
            return self._sock.send(data)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError:
            return 0

    def unsent(self) -> int:
        try:
            return kernel_unsent(self._sock)
        except (OSError, ValueError):  # ValueError: socket already closed (fileno -1)
            return 0


class DeliveryMeter:
    """Delivered-byte counter with acks visible `ack_delay` seconds after delivery.

    @param clock: IReactorTime.
    @param ack_delay: one-way delay of the ACK back to the module (RTT/2).
    """

    def __init__(self, clock, ack_delay: float):
        self._clock = clock
        self._delay = ack_delay
        self._samples = deque()  # (visible at, delivered), both non-decreasing
        self._visible = 0
        self.handed = 0  #: bytes accepted by the kernel

    def sample(self, unsent: int) -> None:
        """Record what the kernel says is still queued, now."""
        delivered = max(0, self.handed - unsent)
        last = self._samples[-1][1] if self._samples else self._visible
        if delivered > last:
            self._samples.append((self._clock.seconds() + self._delay, delivered))

    def acked(self) -> int:
        """Bytes whose delivery the module has heard of by now."""
        now = self._clock.seconds()
        while self._samples and self._samples[0][0] <= now + 1e-9:
            self._visible = self._samples.popleft()[1]
        return self._visible

    @property
    def settled(self) -> bool:
        """True when everything handed over is delivered and visible."""
        return not self._samples and self._visible >= self.handed
