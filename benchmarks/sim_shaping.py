"""Measure the simulator's link shaping against its settings.

Starts `python -m bridge.sim` with a given shaping, opens a transparent-mode (AT+QIMODE=1)
connection to a loopback peer, pushes bulk data each way and prints the measured rate next to
the configured one.  The rate is taken between the first and the last byte seen at the far end,
so start-up latency does not count.  Usage: python benchmarks/sim_shaping.py [--quick]
"""

import argparse
import os
import socket
import subprocess
import sys
import threading
import time

import serial

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Peer:
    """Loopback TCP peer: records arrival times of what it receives, can send a block."""

    def __init__(self):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.conn = None
        self.arrivals = []  # (time, bytes so far)
        self._ready = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        self.conn, _ = self.listener.accept()
        self._ready.set()
        total = 0
        while True:
            data = self.conn.recv(65536)
            if not data:
                return
            total += len(data)
            self.arrivals.append((time.monotonic(), total))

    def send(self, data: bytes):
        self._ready.wait(10)
        self.conn.sendall(data)


def rate(arrivals):
    """Bytes per second between the first and the last arrival (first chunk excluded)."""
    (t0, n0), (t1, n1) = arrivals[0], arrivals[-1]
    return (n1 - n0) / (t1 - t0) if t1 > t0 else float("inf")


def start_sim(args):
    proc = subprocess.Popen([sys.executable, "-m", "bridge.sim", "--act-delay", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT)
    device = proc.stdout.readline().decode().split(": ")[1].strip()
    return proc, device


def command(port, text, until):
    port.write(text.encode() + b"\r")
    got = b""
    end = time.monotonic() + 10
    while until not in got and time.monotonic() < end:
        got += port.read(256)
    if until not in got:
        raise RuntimeError(f"{text}: {got!r}")


def transparent_link(device, peer):
    """Data mode to `peer`; returns (serial port, seconds from QIOPEN to CONNECT)."""
    port = serial.Serial(device, 115200, timeout=0.01)
    for text in ("ATE0", "AT+QIMODE=1", "AT+QITCFG=3,1,1460,1"):
        command(port, text, b"OK\r\n")
    started = time.monotonic()
    command(port, f'AT+QIOPEN="TCP","127.0.0.1",{peer.port}', b"CONNECT\r\n")
    return port, time.monotonic() - started


def measure(sim_args, size):
    """Returns (uplink B/s at the peer, downlink B/s at the serial client, QIOPEN->CONNECT s)."""
    proc, device = start_sim(sim_args)
    try:
        peer = Peer()
        port, connect_time = transparent_link(device, peer)
        port.write(os.urandom(size))
        end = time.monotonic() + 120
        while (not peer.arrivals or peer.arrivals[-1][1] < size) and time.monotonic() < end:
            time.sleep(0.05)
        up = rate(peer.arrivals)
        peer.send(os.urandom(size))
        arrivals, total = [], 0
        while total < size and time.monotonic() < end:
            chunk = port.read(65536)
            if chunk:
                total += len(chunk)
                arrivals.append((time.monotonic(), total))
        down = rate(arrivals)
        port.close()
        return up, down, connect_time
    finally:
        proc.terminate()
        proc.wait(10)


def report(label, measured, wanted):
    error = (measured - wanted) / wanted * 100
    verdict = "ok" if abs(error) <= 10 else "OUT OF TOLERANCE"
    print(f"  {label:<28} set {wanted:>9.0f} B/s   measured {measured:>9.0f} B/s   {error:+6.1f} %  {verdict}")
    return abs(error) <= 10


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller transfers (less precise)")
    args = parser.parse_args(argv)
    scale = 1 if not args.quick else 0.4
    good = True

    baud = 115200
    print(f"UART pacing: --baud {baud} (10 bits/byte), radio unlimited")
    # Sizes are whole 1460-byte packets so no partial packet waits out QITCFG's idle timer.
    up, down, _ = measure(["--baud", str(baud)], 1460 * int(40 * scale))
    good &= report("host -> module (uplink)", up, baud / 10)
    good &= report("module -> host (downlink)", down, baud / 10)

    up_bps, down_bps, rtt = 64000, 96000, 400
    print(f"Radio: --up-bps {up_bps} --down-bps {down_bps} --rtt-ms {rtt}, UART unpaced")
    up, down, connect = measure(["--up-bps", str(up_bps), "--down-bps", str(down_bps), "--rtt-ms", str(rtt)],
                                1460 * int(55 * scale))
    good &= report("radio uplink", up, up_bps / 8)
    good &= report("radio downlink", down, down_bps / 8)
    print(f"  {'QIOPEN -> CONNECT (1 RTT)':<28} set {rtt / 1000:>9.3f} s     measured {connect:>9.3f} s")
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
