"""Goodput and CPU cost of the bridge's data path, through the simulator.

Each run starts ``cellbridge run`` as its own process with ``port = sim`` (so the simulator is a
separate child process and its CPU is not counted), bridges two profiles to loopback servers in
this process (a sink for uplink, a source for downlink), moves one bulk stream and prints:

(a) UART-bound: --baud 115200, radio unlimited; goodput / 11 520 B/s for uplink, downlink in push
    mode, downlink in pull mode, then uplink and downlink at once (pull, then push).
(b) radio-bound: 26.8 kbit/s up, 53.6 kbit/s down, RTT 700 ms; goodput / radio rate each way, and
    uplink with the stop-and-wait switch (send_window = 0) on the same link.
(c) CPU seconds of the bridge process per MB carried, unpaced (baud 0, radio unlimited).

Goodput counts the bytes that arrived after the first arrival, over the time from the first to the
last arrival at the far end, so connection set-up is not counted.
Usage: python benchmarks/throughput.py [--quick] [--only a|b|c]
"""

import argparse
import os
import tempfile

from bridge_process import BridgeProcess, free_port, sim_config
from streams import (RADIO_DOWN_BPS, RADIO_RTT_MS, RADIO_SHAPING, RADIO_UP_BPS, UART_BYTES_PER_S,
                     UART_SHAPING, await_streams, downlink, listener, uplink)

TARGETS = {"uplink": 0.97, "downlink push": 0.97, "downlink pull": 0.95, "radio": 0.90}


class Bridge(BridgeProcess):
    """One ``cellbridge run`` process with an uplink and a downlink profile."""

    def __init__(self, tmp, receive="pull", window=5840, sim_args=""):
        self.sink, self.source = listener(), listener()
        self.up_port, self.down_port = free_port(), free_port()
        super().__init__(tmp, sim_config(tmp, sim_args, {
            "up": {"listen": f"tcp:{self.up_port}",
                   "remote": f"tcp:127.0.0.1:{self.sink.getsockname()[1]}"},
            "down": {"listen": f"tcp:{self.down_port}",
                     "remote": f"tcp:127.0.0.1:{self.source.getsockname()[1]}"}},
            receive, window))

    def cpu_seconds(self):
        """utime + stime of the bridge process itself (the simulator child is not included)."""
        with open(f"/proc/{self.process.pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def uplink(self, size):
        """Start sending ``size`` bytes through the uplink profile; -> Arrivals at the sink."""
        return uplink(self.up_port, self.sink, size)

    def downlink(self, size):
        """Start a ``size``-byte stream from the source; -> Arrivals at the local client."""
        return downlink(self.down_port, self.source, size)


def run(receive="pull", window=5840, sim_args="", up=0, down=0):
    """Run one bridge process; -> (uplink Arrivals or None, downlink Arrivals or None, CPU s)."""
    with tempfile.TemporaryDirectory(prefix="cellbridge-bench-") as tmp:
        bridge = Bridge(tmp, receive, window, sim_args)
        try:
            cpu = bridge.cpu_seconds()
            streams = [bridge.uplink(up) if up else None, bridge.downlink(down) if down else None]
            await_streams(bridge, zip(streams, (up, down)))
            return streams[0], streams[1], bridge.cpu_seconds() - cpu
        finally:
            bridge.stop()


def line(label, rate, reference, target=None):
    ratio = rate / reference
    verdict = "" if target is None else ("  ok" if ratio >= target else f"  MISSED (< {target})")
    print(f"  {label:<34} {rate:9.0f} B/s  ratio {ratio:.3f}{verdict}", flush=True)


def uart_bound(scale):
    print(f"(a) UART-bound: --baud 115200, radio unlimited; ratio of {UART_BYTES_PER_S:.0f} B/s")
    baud = UART_SHAPING
    size = int(160 * 1024 * scale)
    up, _, _ = run("pull", sim_args=baud, up=size)
    line("uplink", up.goodput(), UART_BYTES_PER_S, TARGETS["uplink"])
    _, down, _ = run("push", sim_args=baud, down=size)
    line("downlink push", down.goodput(), UART_BYTES_PER_S, TARGETS["downlink push"])
    _, down, _ = run("pull", sim_args=baud, down=size)
    line("downlink pull", down.goodput(), UART_BYTES_PER_S, TARGETS["downlink pull"])
    for receive in ("pull", "push"):
        up, down, _ = run(receive, sim_args=baud, up=size, down=size)
        line(f"both at once ({receive}): uplink", up.goodput(), UART_BYTES_PER_S)
        line(f"both at once ({receive}): downlink", down.goodput(), UART_BYTES_PER_S)


def radio_bound(scale):
    print(f"(b) radio-bound: {RADIO_UP_BPS} bit/s up, {RADIO_DOWN_BPS} bit/s down, RTT "
          f"{RADIO_RTT_MS} ms, --baud 115200; ratio of the radio rate")
    shaping = RADIO_SHAPING
    up_rate, down_rate = RADIO_UP_BPS / 8, RADIO_DOWN_BPS / 8
    up, _, _ = run("pull", sim_args=shaping, up=int(80 * 1024 * scale))
    line("uplink (send_window 5840)", up.goodput(), up_rate, TARGETS["radio"])
    _, down, _ = run("pull", sim_args=shaping, down=int(160 * 1024 * scale))
    line("downlink pull", down.goodput(), down_rate, TARGETS["radio"])
    up, _, _ = run("pull", window=0, sim_args=shaping, up=int(24 * 1024 * scale))
    line("uplink stop-and-wait (send_window 0)", up.goodput(), up_rate)


def cpu_cost(scale):
    print("(c) CPU of the bridge process per MB carried, unpaced (baud 0, radio unlimited)")
    size = int(4 * 1024 * 1024 * scale)
    runs = (("uplink", "pull", size, 0), ("downlink pull", "pull", 0, size),
            ("downlink push", "push", 0, size))
    for label, receive, up, down in runs:
        _, _, cpu = run(receive, up=up, down=down)
        print(f"  {label:<34} {cpu / ((up + down) / 1e6):6.3f} CPU s/MB  "
              f"({(up + down) / 1e6:.1f} MB, {cpu:.2f} s)", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller transfers (rougher figures)")
    parser.add_argument("--only", choices="abc", help="run one part only")
    args = parser.parse_args(argv)
    scale = 0.25 if args.quick else 1.0
    for part, function in (("a", uart_bound), ("b", radio_bound), ("c", cpu_cost)):
        if args.only in (None, part):
            function(scale)


if __name__ == "__main__":
    main()
