"""Plain-socket loopback peers and a plain-pyserial client for end-to-end simulator tests."""

import socket
import threading
import time

import serial

DEADLINE = 5.0


class Peer:
    """A TCP server on 127.0.0.1 in a thread: echo, collect, or stall (small buffer, no reads
    until :meth:`release`, then collect)."""

    def __init__(self, mode="echo"):
        self.mode = mode
        self.received = bytearray()
        self.conns = []
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        if mode == "stall":
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
        self.listener.listen(5)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.conns.append(conn)
            if self.mode != "stall":
                self._start_pump(conn)

    def _start_pump(self, conn):
        threading.Thread(target=self._pump, args=(conn,), daemon=True).start()

    def release(self):
        """A stalled peer starts reading (collecting) its connections."""
        self.mode = "collect"
        for conn in list(self.conns):
            self._start_pump(conn)

    def _pump(self, conn):
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            self.received += data
            if self.mode == "echo":
                conn.sendall(data)

    def wait_for(self, count, deadline=DEADLINE):
        end = time.monotonic() + deadline
        while len(self.received) < count and time.monotonic() < end:
            time.sleep(0.01)
        return bytes(self.received)

    def close(self):
        self.listener.close()
        for conn in self.conns:
            conn.close()


class Client:
    """The host side of the serial line, with nothing but pyserial.

    Bytes read but not yet consumed stay buffered; `history` keeps everything ever read, so a
    URC that arrived inside another command's response can still be waited for.
    """

    def __init__(self, device):
        self.port = serial.Serial(device, 115200, timeout=0.05)
        self._buf = bytearray()
        self.history = bytearray()

    def write(self, data: bytes):
        self.port.write(data)

    def _fill(self, end):
        if time.monotonic() > end:
            return False
        data = self.port.read(4096)
        self._buf += data
        self.history += data
        return True

    def read_until(self, marker: bytes, deadline=DEADLINE) -> bytes:
        """Consume and return everything up to and including `marker`."""
        end = time.monotonic() + deadline
        while marker not in self._buf:
            if not self._fill(end):
                raise AssertionError(f"timed out waiting for {marker!r}; got {bytes(self._buf)!r}")
        cut = self._buf.index(marker) + len(marker)
        out = bytes(self._buf[:cut])
        del self._buf[:cut]
        return out

    def read_exactly(self, count: int, deadline=DEADLINE) -> bytes:
        end = time.monotonic() + deadline
        while len(self._buf) < count and self._fill(end):
            pass
        out = bytes(self._buf[:count])
        del self._buf[:count]
        return out

    def wait_seen(self, marker: bytes, deadline=DEADLINE) -> None:
        """Wait until `marker` has been read at some point (consumed or not)."""
        end = time.monotonic() + deadline
        while marker not in self.history:
            if not self._fill(end):
                raise AssertionError(f"never saw {marker!r}")
        if marker in self._buf:
            del self._buf[:self._buf.index(marker) + len(marker)]

    def at(self, command: str, until: bytes = b"OK\r\n") -> bytes:
        self.write(command.encode() + b"\r")
        return self.read_until(until)

    def close(self):
        self.port.close()
