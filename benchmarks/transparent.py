"""Goodput of a transparent session (``mode = transparent``) next to a raw relay's ceiling.

Both run the simulator with --baud 115200 (11 520 B/s each way at 10 bits per byte), radio
unlimited, to a loopback far end in this process, and move random bytes:

- echo: a local client sends while it reads the far end's echo, so both directions of the line
  are busy at once; goodput each way as a fraction of the line rate, and up + down as a multiple
  of it (targets: >= 0.98 each way, >= 1.9x together);
- upload: a local client sends to a sink, nothing comes back; goodput as a fraction of the line.

The bridge is ``cellbridge run`` as its own process, one ``[modem] mode = transparent`` with
keepalive at its defaults, one tcp profile. In data mode its keepalive (the AT+QISACK schedule)
starts on uplink bytes and ends on downlink bytes, so the upload pays a check every
keepalive_interval: escape (guard silence, ``+++``, guard silence, OK), AT+QISACK, ATO. The checks
are counted in the simulator's command log (its ``AT+QISACK`` and ``ATO`` entries, read through
its control socket: the bridge's ``port = sim`` child takes the last ``--control`` of sim_args).
The time the uplink stood still at a check: around the check's ATO, the stretch of slow arrivals
at the sink (gaps over twice the median), less the line time of the bytes that arrived in it.
A transfer that went wrong (bytes short, changed or extra, e.g. an escape the module took as
payload) is marked FAILED and its problems are printed with the bridge's first warnings.

The ceiling, "raw relay": the same simulator (same options, so the same paced UART and the same
AT+QITCFG packetisation) behind a relay process that says only ATE0, AT+QIMODE=1 and a transparent
AT+QIOPEN to the far end, and after its CONNECT copies bytes pty <-> local socket with no AT at
all: no keepalive, no payload guard, no escapes. Whatever the bridge gets below the relay is the
bridge's own cost; what the relay gets below the line is the simulator's (pacing, packets).

Goodput counts the bytes that arrived after the first arrival, over the time from the first to the
last arrival (benchmarks/streams.py). Transfers are whole AT+QITCFG packets (1460 bytes), so no
partial last packet waits packet_wait (0.4 s) in the module, an end effect, not a rate. Every
transfer also checks that exactly the bytes sent arrived: none missing, changed or extra.
Usage: python benchmarks/transparent.py [--quick]   (full: 360 packets, ~46 s per transfer, about
4 minutes in all; --quick: 90 packets, ~11 s per transfer)
"""

import argparse
import bisect
import multiprocessing
import os
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from bridge_process import ROOT, BridgeProcess, free_port, sim_config, sim_stats
from streams import UART_BYTES_PER_S, UART_SHAPING, echoed, listener, uplink

TARGETS = {"each way": 0.98, "aggregate": 1.9}
SIM_ARGS = f"--act-delay 0.05 {UART_SHAPING}"
#: AT+QITCFG SendSz, the bridge's and the simulator's default: transfers are whole packets.
PACKET = 1460
AT_TIMEOUT = 30.0
STALL = 20.0  #: seconds without an arrival after which a transfer is given up
TRAILING = 1.0  #: seconds to wait for bytes after the last one sent (there should be none)
WARNING = "#warn]"  #: marks the bridge's warning lines
WARNINGS_SHOWN = 4  #: of a failed transfer's line


class Bridge(BridgeProcess):
    """``cellbridge run``: one transparent modem on the simulator, one profile to ``remote``."""

    label = "bridge"

    def __init__(self, tmp, remote):
        self.port = free_port()
        self.control = os.path.join(tmp, "sim.ctl")
        super().__init__(tmp, sim_config(
            tmp, f"{UART_SHAPING} --control {self.control}",
            {"transparent": {"listen": f"tcp:{self.port}", "remote": f"tcp:127.0.0.1:{remote}"}},
            modem="mode = transparent\n"))


class RawRelay:
    """The simulator as its own process, and the relay process (``relay``) in front of it."""

    label = "raw relay"

    def __init__(self, tmp, remote):
        self.port = free_port()
        self.control = os.path.join(tmp, "sim.ctl")
        self.sim_log = os.path.join(tmp, "sim.log")
        with open(self.sim_log, "wb") as log:
            self.sim = subprocess.Popen(
                [sys.executable, "-m", "bridge.sim", *SIM_ARGS.split(), "--control", self.control,
                 "--exit-with-parent", str(os.getpid())],
                cwd=ROOT, stdout=subprocess.PIPE, stderr=log,
                env={**os.environ, "PYTHONPATH": ROOT})
        device = self.sim.stdout.readline().decode().partition("device: ")[2].strip()
        spawn = multiprocessing.get_context("spawn")
        ready = spawn.Event()
        self.relay = spawn.Process(target=relay, args=(device, self.port, remote, ready),
                                   daemon=True)
        self.relay.start()
        if not device or not ready.wait(30):
            self.stop()
            raise SystemExit("raw relay did not start:\n" + "".join(self.log[-20:]))

    @property
    def log(self):
        """The simulator's log lines (a failed transfer shows its warnings)."""
        with open(self.sim_log, errors="replace") as handle:
            return handle.readlines()

    def stop(self):
        self.relay.terminate()
        self.relay.join(10)
        self.sim.terminate()
        try:
            self.sim.wait(10)
        except subprocess.TimeoutExpired:
            self.sim.kill()


def relay(device, port, remote, ready):
    """The raw relay process: accept one local client on ``port``, put the module on ``device`` in
    data mode to ``remote``, then copy bytes both ways until the process is ended."""
    line = os.open(device, os.O_RDWR | os.O_NOCTTY)
    server = socket.create_server(("127.0.0.1", port))
    ready.set()
    client, _ = server.accept()
    client.sendall(open_data_mode(line, remote))
    threading.Thread(target=copy_to_line, args=(client, line), daemon=True).start()
    while data := os.read(line, 65536):
        client.sendall(data)


def open_data_mode(line, remote):
    """ATE0, AT+QIMODE=1, then AT+QIOPEN (again while it answers ERROR: the simulated network
    may still be attaching) until CONNECT; -> the data bytes that came right after it."""
    expect(line, b"ATE0\r", b"OK\r\n")
    expect(line, b"AT+QIMODE=1\r", b"OK\r\n")
    deadline = time.monotonic() + AT_TIMEOUT
    while True:
        seen = expect(line, f'AT+QIOPEN="TCP","127.0.0.1",{remote}\r'.encode(),
                      b"\r\nCONNECT\r\n", b"ERROR")
        if b"\r\nCONNECT\r\n" in seen:
            return seen.partition(b"\r\nCONNECT\r\n")[2]
        if time.monotonic() > deadline:
            raise SystemExit(f"raw relay: AT+QIOPEN keeps failing: {seen!r}")
        time.sleep(0.2)


def expect(line, command, *answers):
    """Write ``command``, read until one of ``answers`` (or FAIL) shows; -> what was read."""
    os.write(line, command)
    seen = b""
    deadline = time.monotonic() + AT_TIMEOUT
    while not any(answer in seen for answer in answers + (b"FAIL",)):
        if not select.select([line], [], [], max(0.0, deadline - time.monotonic()))[0]:
            raise SystemExit(f"raw relay: no answer to {command!r}: {seen!r}")
        seen += os.read(line, 4096)
    if b"FAIL" in seen:
        raise SystemExit(f"raw relay: {command!r} failed: {seen!r}")
    return seen


def copy_to_line(client, line):
    """The relay's uplink: what the client sends goes to the pty as it is."""
    while True:
        data = client.recv(65536)
        if not data:
            return
        while data:
            data = data[os.write(line, data):]


class Transfer:
    """One transfer through a line (Bridge or RawRelay): arrivals at the far end (``up``), back at
    the client (``down``, echo only), the simulator's command log, and what went wrong
    (``problems``: short, missing, changed or extra bytes, with the line's warnings)."""

    def __init__(self, kind, line_type, size):
        self.label = f"{kind} through the {line_type.label}"
        with tempfile.TemporaryDirectory(prefix="cellbridge-bench-") as tmp:
            far_end, accepted = listener(), []
            line = line_type(tmp, far_end.getsockname()[1])
            try:
                # The far end stays open until the end: its close would show in the relay's
                # stream as the module's CLOSED, bytes the client would count.
                kept = lambda conn: accepted.append(conn) or conn  # noqa: E731
                if kind == "echo":
                    self.up, self.down = echoed(line.port, far_end, size, kept)
                else:
                    self.up, self.down = uplink(line.port, far_end, size, kept), None
                arrived = [self.up] + ([self.down] if self.down else [])
                for each in arrived:
                    settle(each)
                self.problems = [problem for each, name in zip(arrived, ("far end", "client"))
                                 for problem in self._check(each, name, size)]
                if self.up.total >= size:
                    self._extra(self.up.total - size, trailing(accepted))
                self.commands = sim_stats(line.control)["commands"]
                warnings = [text.strip() for text in line.log if WARNING in text]
                if self.problems:
                    self.problems += warnings[:WARNINGS_SHOWN]
                if self.problems and len(warnings) > WARNINGS_SHOWN:
                    self.problems.append(f"... {len(warnings) - WARNINGS_SHOWN} more warnings")
                self.up.client.close()
            finally:
                line.stop()
                for sock in [far_end] + accepted:
                    sock.close()

    def _check(self, arrivals, name, size):
        if arrivals.total < size:
            yield (f"{arrivals.total} of {size} bytes reached the {name}"
                   + (f" ({arrivals.error})" if arrivals.error else ""))
        elif arrivals.total == size and arrivals.digest.digest() != self.up.sent:
            yield f"the bytes that reached the {name} are not the bytes sent"

    def _extra(self, over, after):
        if over or after:
            self.problems.append(f"{over + len(after)} bytes more than were sent reached the far "
                                 f"end; after the last payload byte: {after[:48]!r}")

    def goodput(self):
        """Bytes/s (up, down or 0)."""
        return rate(self.up), rate(self.down) if self.down else 0.0

    def checks(self):
        """Times of the ATO entries (one per keepalive check) up to the last arrival, and the
        number of AT+QISACK entries up to then."""
        if not self.up.points:
            return [], 0
        end = self.up.points[-1][0]
        done = [entry for entry in self.commands if entry["t"] <= end]
        return ([entry["t"] for entry in done if entry["cmd"] == "ATO"],
                sum(entry["cmd"].startswith("AT+QISACK") for entry in done))

    def stalls_at(self, times):
        """Line time the far end's arrivals lost around each of ``times``: over the run of slow
        gaps (more than twice the median gap) around it, the time beyond what the bytes that
        arrived in it needed at the line rate; -> (those, the median gap)."""
        stamps, counts = zip(*self.up.points)
        gaps = [b - a for a, b in zip(stamps, stamps[1:])]
        median = statistics.median(gaps)
        stalls = []
        for t in times:
            start = end = bisect.bisect(stamps, t)
            if not 0 < end < len(stamps):
                continue
            while start > 1 and gaps[start - 2] > 2 * median:
                start -= 1
            while end < len(gaps) and gaps[end] > 2 * median:
                end += 1
            stalls.append(stamps[end] - stamps[start - 1]
                          - (counts[end] - counts[start - 1]) / UART_BYTES_PER_S)
        return stalls, median


def rate(arrivals):
    """Goodput in bytes/s; NaN for a stream with fewer than two arrivals."""
    return arrivals.goodput() if len(arrivals.points) > 1 else float("nan")


def settle(arrivals):
    """Wait until ``arrivals`` is done, or nothing arrived for STALL seconds."""
    since = time.monotonic()
    while not arrivals.done.wait(1.0):
        last = arrivals.points[-1][0] if arrivals.points else since
        if time.monotonic() - last > STALL:
            return


def trailing(conns):
    """Bytes that reach the far end's ``conns`` within TRAILING seconds after the transfer."""
    time.sleep(TRAILING)
    extra = b""
    for conn in conns:
        conn.setblocking(False)
        try:
            while chunk := conn.recv(65536):
                extra += chunk
        except OSError:  # nothing more (BlockingIOError) or the connection is gone
            pass
    return extra


def row(label, bridge, ceiling, unit="", target=None, failed=False):
    """One table row: rates in B/s, shown against the line as a fraction or a multiple (``x``)."""
    def shown(rate):
        return f"{rate / UART_BYTES_PER_S:6.3f}{unit or ' '}"
    verdict = "" if target is None else (
        f"  >= {target:g} {'met' if bridge / UART_BYTES_PER_S >= target else 'NOT MET'}")
    print(f"  {label:<20}{bridge:11.0f} {shown(bridge)}{ceiling:11.0f} {shown(ceiling)}"
          f"{bridge / ceiling:13.3f}{verdict}{'  FAILED, see below' if failed else ''}",
          flush=True)


def keepalive_cost(upload):
    """What the keepalive checks during ``upload`` cost the uplink."""
    if len(upload.up.points) < 2:
        print("  no keepalive figures: the bridge's upload never got going")
        return
    resumes, sacks = upload.checks()
    stalls, median = upload.stalls_at(resumes)
    (t0, first), (t1, last) = upload.up.points[0], upload.up.points[-1]
    print(f"  keepalive checks during the bridge's upload: {len(resumes)} ATO, {sacks} AT+QISACK "
          f"in {t1 - t0:.1f} s (the simulator's command log)")
    if stalls:
        lost = (t1 - t0) - (last - first) / UART_BYTES_PER_S
        print(f"  uplink stood still at each check (slow arrivals at the sink around its ATO, "
              f"beyond their bytes' line time): {' '.join(f'{stall:.2f}' for stall in stalls)} s,"
              f" mean {statistics.mean(stalls):.2f} s (median gap between arrivals {median:.3f} s)")
        print(f"  line time lost per check over the whole upload (its time beyond bytes / line "
              f"rate, over the checks): {lost / len(stalls):.2f} s")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="90 packets (~11 s) per transfer "
                        "instead of 360 (~46 s)")
    args = parser.parse_args(argv)
    size = PACKET * (90 if args.quick else 360)
    print(f"transparent session, --baud 115200 (line {UART_BYTES_PER_S:.0f} B/s each way), radio "
          f"unlimited, keepalive defaults; {size} bytes ({size / UART_BYTES_PER_S:.0f} s of line) "
          "per transfer", flush=True)
    runs = {(kind, line_type): Transfer(kind, line_type, size)
            for kind in ("echo", "upload") for line_type in (Bridge, RawRelay)}
    print(f"  {'transfer':<20}{'bridge B/s':>11} {'of line':>7}{'relay B/s':>11} {'of line':>7}"
          f"{'bridge/relay':>13}  target")
    echo, upload = (runs["echo", Bridge], runs["echo", RawRelay]), (runs["upload", Bridge],
                                                                   runs["upload", RawRelay])
    failed = [any(each.problems for each in pair) for pair in (echo, upload)]
    (bridge_up, bridge_down), (relay_up, relay_down) = (each.goodput() for each in echo)
    row("echo: uplink", bridge_up, relay_up, target=TARGETS["each way"], failed=failed[0])
    row("echo: downlink", bridge_down, relay_down, target=TARGETS["each way"], failed=failed[0])
    row("echo: up + down", bridge_up + bridge_down, relay_up + relay_down, "x",
        TARGETS["aggregate"], failed[0])
    row("upload to a sink", upload[0].goodput()[0], upload[1].goodput()[0], failed=failed[1])
    print(f"  keepalive checks during the bridge's echo: {len(echo[0].checks()[0])} ATO")
    keepalive_cost(upload[0])
    for run in runs.values():
        for problem in run.problems:
            print(f"  {run.label}: {problem}")
    if not any(failed):
        print("  every transfer arrived intact, nothing more and nothing less")


if __name__ == "__main__":
    main()
