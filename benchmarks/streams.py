"""Bulk streams through a benchmark bridge: the line rates the benchmarks shape the simulator to,
loopback far ends in the benchmark's own process, and when the bytes arrived there.

Goodput counts the bytes that arrived after the first arrival, over the time from the first to the
last arrival, so connection set-up (and a TLS handshake) is not counted.
"""

import hashlib
import os
import socket
import threading
import time

UART_BYTES_PER_S = 115200 / 10
UART_SHAPING = "--baud 115200"
RADIO_UP_BPS, RADIO_DOWN_BPS, RADIO_RTT_MS = 26800, 53600, 700
RADIO_SHAPING = (f"--baud 115200 --up-bps {RADIO_UP_BPS} --down-bps {RADIO_DOWN_BPS} "
                 f"--rtt-ms {RADIO_RTT_MS}")
TIMEOUT = 600.0


class Arrivals:
    """Byte arrivals at one far end: (monotonic time, bytes so far), and the SHA-256 of what
    arrived (``digest``)."""

    def __init__(self):
        self.points = []
        self.total = 0
        self.digest = hashlib.sha256()
        self.error = None
        self.done = threading.Event()

    def add(self, data, expected):
        self.digest.update(data)
        self.total += len(data)
        self.points.append((time.monotonic(), self.total))
        if self.total >= expected:
            self.done.set()

    def goodput(self):
        (t0, first), (t1, last) = self.points[0], self.points[-1]
        return (last - first) / (t1 - t0) if t1 > t0 else float("nan")


def listener():
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(4)
    return sock


def receive_into(conn, arrivals, expected, echo=False):
    """Read ``conn`` (anything with ``recv``, and ``sendall`` to ``echo`` each read back) into
    ``arrivals`` until ``expected`` bytes came."""
    try:
        while arrivals.total < expected:
            data = conn.recv(65536)
            if not data:
                break
            arrivals.add(data, expected)
            if echo:
                conn.sendall(data)
    except OSError as error:
        arrivals.error = error
    finally:
        arrivals.done.set()


def serve_once(sock, handler):
    def run():
        conn, _ = sock.accept()
        handler(conn)
    threading.Thread(target=run, daemon=True).start()


def echo(stream):
    """Echo ``stream`` (anything with ``recv`` and ``sendall``) until it ends; -> how it ended,
    "eof" or "reset"."""
    try:
        while True:
            data = stream.recv(65536)
            if not data:
                return "eof"
            stream.sendall(data)
    except OSError:
        return "reset"


def plain(conn):
    return conn


def uplink(port, far_end, size, accept=plain, echo=False):
    """Start sending ``size`` random bytes to the bridge's local ``port``; -> the Arrivals of the
    next connection ``far_end`` accepts, read through ``accept(conn)`` (e.g. a TLS handshake) and
    sent back with ``echo``; its ``client`` is the local socket, its ``sent`` the SHA-256 of the
    bytes sent."""
    arrivals = Arrivals()
    payload = os.urandom(size)
    arrivals.sent = hashlib.sha256(payload).digest()
    serve_once(far_end, lambda conn: receive_into(accept(conn), arrivals, size, echo))
    client = socket.create_connection(("127.0.0.1", port))

    def send():
        try:
            client.sendall(payload)
        except OSError as error:  # reset by the bridge: nothing more will arrive
            arrivals.error = error
            arrivals.done.set()
    threading.Thread(target=send, daemon=True).start()
    arrivals.client = client
    return arrivals


def echoed(port, far_end, size, accept=plain):
    """Start sending ``size`` random bytes to the bridge's local ``port``, echoed back by the next
    connection ``far_end`` accepts (through ``accept(conn)``); -> (Arrivals there, Arrivals back
    at the local client)."""
    there, back = uplink(port, far_end, size, accept, echo=True), Arrivals()
    threading.Thread(target=receive_into, args=(there.client, back, size), daemon=True).start()
    return there, back


def downlink(port, far_end, size, accept=plain):
    """Start a ``size``-byte stream from the next connection ``far_end`` accepts, written through
    ``accept(conn)``; -> the Arrivals at a local client of the bridge's ``port`` (its
    ``client``)."""
    arrivals = Arrivals()
    serve_once(far_end, lambda conn: accept(conn).sendall(os.urandom(size)))
    client = socket.create_connection(("127.0.0.1", port))
    threading.Thread(target=receive_into, args=(client, arrivals, size), daemon=True).start()
    arrivals.client = client
    return arrivals


def await_streams(bridge, streams):
    """Wait for each (Arrivals or None, expected size); exit naming the bridge's last log lines
    if one times out or ends short."""
    for stream, size in streams:
        if stream is None:
            continue
        if not stream.done.wait(TIMEOUT):
            raise SystemExit("timed out:\n" + "".join(bridge.log[-20:]))
        if stream.total != size:
            raise SystemExit(f"{stream.total} of {size} bytes arrived ({stream.error})\n"
                             + "".join(bridge.log[-20:]))
