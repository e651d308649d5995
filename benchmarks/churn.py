"""Short connections one after another through the bridge, with and without linger (churn).

Each setting starts ``cellbridge run`` as its own process with ``port = sim`` (the built-in
simulator, unpaced: baud 0, radio unlimited) and one profile whose remote is a loopback echo
server in this process; the server echoes until EOF, then closes. One cycle: connect to the
bridge's local port, send 200 random bytes, read the 200-byte echo back completely and compare it
byte for byte, then end the connection in one of two ways:

close       a plain close(). The bridge sees a FIN like any other and cannot tell it from a
            half-close, so the module socket lingers, holding its index; the next cycle does not
            wait for it. With six indices in use, the next connection waits and a lingering
            socket idle for RECLAIM_IDLE (0.2 s) gives its index up: at most 6 / 0.2 = 30/s.
half-close  shutdown(SHUT_WR), then read until EOF (``nc -N``): the case linger exists for. The
            client waits for the bridge's EOF, which comes when the linger ends; a sequential
            client leaves nobody waiting for a socket, so nothing is reclaimed: at most
            1 / linger per second. Fewer cycles by default (--half-close-cycles).

Printed per setting and kind: connections/s, total time, per-cycle median / slowest, the
target (close with the default linger: >= 20/s), failed cycles by cause (every echo is checked;
a failed cycle still counts in the time, never as a success), and how the remote's connections
ended once the bridge settled.

Usage: python benchmarks/churn.py [--quick] [--cycles N] [--half-close-cycles N] [--trace]
(--trace: after each setting, the simulator's command log: gaps from AT+QICLOSE to the next
AT+QIOPEN on any index, i.e. how long a waiting connection waited for the module).
"""

import argparse
import os
import socket
import statistics
import tempfile
import threading
import time

from bridge_process import BridgeProcess, free_port, sim_stats
from streams import echo

PAYLOAD = 200
TARGET = 20.0  # connections/s, plain close with the default linger
CEILING = 30.0  # six sockets, each reclaimable after 0.2 s idle
CYCLE_TIMEOUT = 40.0  # one socket operation (> the profile's queue_timeout of 30 s)
DEFAULT_LINGER = 2.0


class EchoServer:
    """Loopback echo server: echoes until EOF, then closes; counts how its connections end."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.accepted = 0
        self.ends = {"eof": 0, "reset": 0}
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def open(self):
        with self.lock:
            return self.accepted - sum(self.ends.values())

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.accepted += 1
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    def _echo(self, conn):
        end = echo(conn)
        conn.close()
        with self.lock:
            self.ends[end] += 1

    def settle(self, limit):
        """Wait (at most ``limit`` s) until no connection is open; -> True when none is."""
        deadline = time.monotonic() + limit
        while self.open and time.monotonic() < deadline:
            time.sleep(0.05)
        return not self.open


class Bridge(BridgeProcess):
    """One ``cellbridge run`` process with one profile to the echo server."""

    def __init__(self, tmp, linger, echo):
        self.port = free_port()
        self.control = os.path.join(tmp, "sim.sock")
        linger_line = "" if linger is None else f"linger = {linger:g}\n"
        super().__init__(tmp, (
            f"[cellbridge]\nlog_level = info\nstate_dir = {tmp}\n"
            f"[modem:main]\nport = sim\napn = internet\n"
            f"sim_args = --act-delay 0.05 --control {self.control}\n"
            f"[profile:churn]\nlisten = tcp:{self.port}\n"
            f"remote = tcp:127.0.0.1:{echo.port}\n{linger_line}"), "churn.ini")

    def closes(self):
        """(lingering sockets closed early for a waiter, closed after the whole linger), from the
        info log."""
        log = list(self.log)
        early = sum("wanted by a waiting connection" in line for line in log)
        ended = sum("after the local EOF; closing" in line for line in log)
        return early, ended

    def sim_commands(self):
        """The simulator's command log (CLOCK_MONOTONIC stamps, same clock as ours)."""
        return sim_stats(self.control)["commands"]


def recv_exactly(sock, size):
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def cycle(port, kind):
    """One connect / 200-byte echo / close; -> None when it worked, else the cause."""
    payload = os.urandom(PAYLOAD)
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=CYCLE_TIMEOUT)
    except OSError as error:
        return f"connect: {type(error).__name__}"
    try:
        sock.sendall(payload)
        echo = recv_exactly(sock, PAYLOAD)
        if echo != payload:
            if len(echo) < PAYLOAD:
                return f"echo short ({len(echo)} of {PAYLOAD} bytes, then EOF)"
            return "echo differs"
        if kind == "half-close":
            sock.shutdown(socket.SHUT_WR)
            rest = sock.recv(4096)
            if rest:
                return f"{len(rest)} bytes after the echo instead of EOF"
        return None
    except socket.timeout:
        return f"timed out ({CYCLE_TIMEOUT:g} s)"
    except OSError as error:
        return type(error).__name__
    finally:
        sock.close()


class Result:
    def __init__(self, label, cycles):
        self.label, self.cycles = label, cycles
        self.times = []
        self.failures = {}
        self.total = 0.0
        self.remote = ""

    def line(self, target):
        rate = self.cycles / self.total
        ok = self.cycles - sum(self.failures.values())
        times = sorted(self.times)
        text = (f"  {self.label:<28} {rate:7.1f} conn/s  {self.cycles:3d} cycles in "
            f"{self.total:6.2f} s  (cycle median {statistics.median(times) * 1e3:4.0f} ms, "
            f"slowest {times[-1] * 1e3:5.0f} ms)  {ok}/{self.cycles} echoes ok")
        if target is not None:
            verdict = "ok" if rate >= target and not self.failures else "below target"
            if rate >= target and self.failures:
                verdict = "FAILED CYCLES"
            text += f"  target >= {target:g}/s: {verdict}"
        return text


def measure(bridge, echo, kind, cycles, linger):
    result = Result(kind, cycles)
    accepted, ends = echo.accepted, dict(echo.ends)
    start = time.monotonic()
    for _ in range(cycles):
        t0 = time.monotonic()
        failure = cycle(bridge.port, kind)
        result.times.append(time.monotonic() - t0)
        if failure is not None:
            result.failures[failure] = result.failures.get(failure, 0) + 1
    result.total = time.monotonic() - start
    settled = echo.settle(linger + 10)
    time.sleep(0.2)  # the bridge's last log lines
    ended = {end: echo.ends[end] - ends[end] for end in ends}
    result.remote = (f"remote: {echo.accepted - accepted} connections, "
                     f"{ended['eof']} ended with EOF, {ended['reset']} reset"
                     + ("" if settled else f", {echo.open} STILL OPEN"))
    return result


def trace(bridge, since):
    """Per AT+QIOPEN: time since the AT+QICLOSE before it (when one came since the last open)."""
    entries = [e for e in bridge.sim_commands() if e["t"] >= since]
    gaps, last_close = [], None
    opens = closes = 0
    for entry in entries:
        command = entry["cmd"].upper()
        if command.startswith("AT+QICLOSE"):
            closes += 1
            last_close = entry["t"]
        elif command.startswith("AT+QIOPEN"):
            opens += 1
            if last_close is not None:
                gaps.append(entry["t"] - last_close)
                last_close = None
    text = f"    sim: {opens} AT+QIOPEN, {closes} AT+QICLOSE"
    if gaps:
        gaps.sort()
        text += (f"; AT+QICLOSE -> next AT+QIOPEN: median {statistics.median(gaps) * 1e3:.1f} ms, "
                 f"max {gaps[-1] * 1e3:.1f} ms ({len(gaps)} opens after a close)")
    return text


def run_setting(label, linger, cycles, half_cycles, show_trace):
    effective = DEFAULT_LINGER if linger is None else linger
    print(f"{label}", flush=True)
    echo = EchoServer()
    with tempfile.TemporaryDirectory(prefix="cellbridge-churn-") as tmp:
        bridge = Bridge(tmp, linger, echo)
        try:
            for kind, count in (("close", cycles), ("half-close", half_cycles)):
                if not count:
                    continue
                before = bridge.closes()
                since = time.monotonic()
                result = measure(bridge, echo, kind, count, effective)
                early, full = (now - then for now, then in zip(bridge.closes(), before))
                target = TARGET if kind == "close" and linger is None else None
                text = result.line(target)
                if kind == "half-close" and effective > 0:
                    text += f"  (bound: 1 / linger = {1 / effective:g}/s)"
                print(text, flush=True)
                for cause, n in sorted(result.failures.items()):
                    print(f"    FAILED {n}x: {cause}")
                print(f"    {result.remote}; bridge: lingering sockets closed early for a "
                      f"waiting connection {early}, after the whole linger {full}", flush=True)
                if show_trace:
                    print(trace(bridge, since), flush=True)
        finally:
            bridge.stop()
            echo.sock.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=100, help="close cycles per setting")
    parser.add_argument("--half-close-cycles", type=int, default=None,
                        help="half-close cycles per setting (default 10, --quick 3; 0 = skip)")
    parser.add_argument("--quick", action="store_true", help="fewer cycles (rougher figures)")
    parser.add_argument("--trace", action="store_true",
                        help="also summarise the simulator's command log")
    args = parser.parse_args(argv)
    cycles = 25 if args.quick and args.cycles == 100 else args.cycles
    half = args.half_close_cycles
    if half is None:
        half = 3 if args.quick else 10
    print(f"churn: sequential connect / {PAYLOAD}-byte echo / close, unpaced simulator; target "
          f"with the default linger >= {TARGET:g}/s (6 sockets, {0.2:g} s idle: <= {CEILING:g}/s)",
          flush=True)
    run_setting(f"linger = {DEFAULT_LINGER:g} (default)", None, cycles, half, args.trace)
    run_setting("linger = 0", 0.0, cycles, half, args.trace)


if __name__ == "__main__":
    main()
