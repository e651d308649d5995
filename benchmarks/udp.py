"""UDP through the bridge: goodput of one session, and a loss account under a sender faster than
the line.

``cellbridge run`` runs as its own process with ``port = sim`` and ``--baud 115200`` (UART-bound,
radio unlimited); the local application and the remote are plain UDP sockets in this process.

(a) Goodput of ONE session, 1000-byte datagrams, each direction on its own, as a ratio of the line
    rate (115200 baud = 11 520 B/s at 10 bits per byte). The sender keeps a few datagrams in
    flight (it sends when an earlier one has arrived), so the line stays busy and nothing is
    dropped; goodput counts the bytes after the first arrival over the time from the first to the
    last arrival.
(b) Loss account: a sender at twice the line rate, then one with no pacing at all, each uplink
    then downlink, into a session that is already open. What was sent minus what
    arrived must equal the drops: the bridge's by cause (from its session-end log line), the
    kernel's socket drops (``/proc/net/udp``'s ``drops`` column, before and after, for every
    socket that receives on the way) and, downlink, the simulated module's (its receive buffer,
    from the simulator's control socket ``stats``).

Usage: python benchmarks/udp.py [--quick]
"""

import argparse
import os
import re
import socket
import tempfile
import threading
import time

from bridge_process import BridgeProcess, free_port, sim_stats

UART_BYTES_PER_S = 115200 / 10
SIZE = 1000
IN_FLIGHT = 5  # datagrams in flight: below both the bridge's and the simulated module's buffers
TARGET = 0.90
QUIET = 1.5  # seconds without an arrival that end a phase
IDLE = 3.0  # udp_idle of the loss profile: its session ends (and logs its drops) soon after


class Receiver:
    """A UDP socket that counts arrivals in a thread: (monotonic time, bytes so far)."""

    def __init__(self, sock):
        self.sock = sock
        self.points = []
        self.count = 0
        self.peer = None
        self.bad = 0  # datagrams of the wrong size: a split or a merge would show here
        self.changed = threading.Condition()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        total = 0
        while True:
            try:
                data, peer = self.sock.recvfrom(65535)
            except OSError:
                return
            with self.changed:
                self.peer = peer
                if len(data) not in (SIZE, 5):
                    self.bad += 1
                total += len(data)
                self.count += 1
                self.points.append((time.monotonic(), total))
                self.changed.notify_all()

    def wait(self, predicate, timeout=60.0):
        with self.changed:
            if not self.changed.wait_for(lambda: predicate(self), timeout):
                raise SystemExit("timed out waiting for datagrams")

    def quiet(self):
        """Wait until nothing arrived for QUIET seconds."""
        while True:
            last = self.points[-1][0] if self.points else time.monotonic()
            if time.monotonic() - last >= QUIET:
                return
            time.sleep(0.1)

    def goodput(self, first_point):
        (t0, first), (t1, last) = self.points[first_point], self.points[-1]
        return (last - first) / (t1 - t0)


def udp_socket():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def kernel_drops():
    """{(local port, remote port): drops} of every IPv4 UDP socket (/proc/net/udp)."""
    drops = {}
    with open("/proc/net/udp") as table:
        next(table)
        for row in table:
            fields = row.split()
            local, remote = (int(address.split(":")[1], 16) for address in fields[1:3])
            drops[(local, remote)] = drops.get((local, remote), 0) + int(fields[-1])
    return drops


def drops_of(before, after, local=(), remote=()):
    """The drops added since ``before`` on sockets bound to a ``local`` port or connected to a
    ``remote`` one (a socket that appeared meanwhile counts from 0)."""
    return sum(count - before.get(key, 0) for key, count in after.items()
               if key[0] in local or key[1] in remote)


class Bridge(BridgeProcess):
    def __init__(self, tmp, remote_port):
        self.control = os.path.join(tmp, "sim.ctl")
        self.ports = {"goodput": free_port(), "loss": free_port()}
        super().__init__(tmp, (
            "[cellbridge]\nlog_level = info\nstate_dir = state\n"
            f"[modem:sim]\nport = sim\napn = internet\n"
            f"sim_args = --act-delay 0.05 --baud 115200 --control {self.control}\n"
            f"[profile:goodput]\nlisten = udp:{self.ports['goodput']}\n"
            f"remote = udp:127.0.0.1:{remote_port}\n"
            f"[profile:loss]\nlisten = udp:{self.ports['loss']}\n"
            f"remote = udp:127.0.0.1:{remote_port}\nudp_idle = {IDLE:g}\n"))

    def module_drops(self):
        """Datagrams the simulated module dropped, over its open sockets."""
        return sum(s.get("dropped", 0) for s in sim_stats(self.control)["sockets"].values())

    def session_drops(self, source_port, timeout=30.0):
        """Drops by cause from the session-end line of the session from ``source_port``."""
        pattern = re.compile(rf"udp session from 127\.0\.0\.1:{source_port} ended .*dropped: (.*)")
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for line in self.log:
                match = pattern.search(line)
                if match:
                    text = match.group(1).strip()
                    items = [] if text == "none" else text.split(", ")
                    return {cause: int(n) for cause, n in (item.split("=") for item in items)}
            time.sleep(0.1)
        raise SystemExit(f"no session-end line for source port {source_port}")


def closed_loop(send, receiver, count):
    """Send ``count`` datagrams keeping at most IN_FLIGHT in flight; wait for the last."""
    start = receiver.count
    for n in range(count):
        receiver.wait(lambda r: n - (r.count - start) < IN_FLIGHT)
        send(bytes([n % 256]) * SIZE)
    receiver.wait(lambda r: r.count - start >= count)
    return start


def goodput(bridge, remote, count):
    print(f"(a) goodput of one session, {SIZE}-byte datagrams, --baud 115200; ratio of "
          f"{UART_BYTES_PER_S:.0f} B/s (target >= {TARGET})")
    app = udp_socket()
    local = Receiver(app)
    bridge_address = ("127.0.0.1", bridge.ports["goodput"])
    first = closed_loop(lambda d: app.sendto(d, bridge_address), remote, count)
    report("uplink", remote.goodput(first + 1))
    first = closed_loop(lambda d: remote.sock.sendto(d, remote.peer), local, count)
    report("downlink (push)", local.goodput(first + 1))
    bad = remote.bad + local.bad
    print(f"  datagrams of the wrong size: {bad}")
    app.close()


def report(label, rate):
    ratio = rate / UART_BYTES_PER_S
    verdict = "ok" if ratio >= TARGET else "BELOW TARGET"
    print(f"  {label:<18} {rate:8.0f} B/s  ratio {ratio:.3f}  {verdict}", flush=True)


def account(label, sent, arrived, terms):
    lost = sent - arrived
    print(f"  {label}: sent {sent}, arrived {arrived}, lost {lost}")
    for name, value in terms:
        print(f"    {name:<44} {value:6d}")
    total = sum(value for _, value in terms)
    print(f"    {'sum of the drops':<44} {total:6d}  "
          f"{'balances' if total == lost else 'DOES NOT BALANCE'}", flush=True)


def blast(send, count, rate):
    """``count`` datagrams at ``rate`` B/s (None: as fast as the socket takes them)."""
    began = time.monotonic()
    for n in range(count):
        if rate is not None:
            delay = began + n * SIZE / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        send(bytes([n % 256]) * SIZE)


def loss_account(bridge, remote, count, rate):
    pace = "without pacing" if rate is None else f"at {rate / UART_BYTES_PER_S:g}x the line rate"
    print(f"(b) loss account: {count} datagrams of {SIZE} bytes, sent {pace}, into a session that "
          "is already open")
    bridge_port, remote_port = bridge.ports["loss"], remote.sock.getsockname()[1]

    # Uplink: app -> bridge's port -> module -> remote.
    app = udp_socket()
    heard = remote.count
    app.sendto(b"hello", ("127.0.0.1", bridge_port))  # opens the session (not counted)
    remote.wait(lambda r: r.count > heard)
    start, before = remote.count, kernel_drops()
    blast(lambda d: app.sendto(d, ("127.0.0.1", bridge_port)), count, rate)
    remote.quiet()
    after = kernel_drops()
    drops = bridge.session_drops(app.getsockname()[1])
    account("uplink", count, remote.count - start,
            [(f"bridge: {cause}", n) for cause, n in sorted(drops.items())]
            + [("kernel: the bridge's port", drops_of(before, after, local=[bridge_port])),
               ("kernel: the remote's socket", drops_of(before, after, local=[remote_port]))])
    app.close()

    # Downlink: remote -> module's socket -> bridge -> app.
    app = udp_socket()
    local = Receiver(app)
    heard = remote.count
    app.sendto(b"hello", ("127.0.0.1", bridge_port))  # opens the session; the remote learns
    remote.wait(lambda r: r.count > heard)  # the module socket's address from it
    module_port = remote.peer[1]
    before, module_before = kernel_drops(), bridge.module_drops()
    blast(lambda d: remote.sock.sendto(d, remote.peer), count, rate)
    local.quiet()
    after, module_after = kernel_drops(), bridge.module_drops()
    drops = bridge.session_drops(app.getsockname()[1])
    account("downlink", count, local.count,
            [(f"bridge: {cause}", n) for cause, n in sorted(drops.items())]
            + [("module (simulator): receive buffer full", module_after - module_before),
               ("kernel: the module's host socket", drops_of(before, after, local=[module_port])),
               ("kernel: the app's socket", drops_of(before, after,
                                                     local=[app.getsockname()[1]]))])
    app.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer datagrams")
    args = parser.parse_args(argv)
    count = 60 if args.quick else 250
    remote = Receiver(udp_socket())
    with tempfile.TemporaryDirectory() as tmp:
        bridge = Bridge(tmp, remote.sock.getsockname()[1])
        try:
            goodput(bridge, remote, count)
            loss_account(bridge, remote, count, 2 * UART_BYTES_PER_S)
            loss_account(bridge, remote, count * 4, None)
        finally:
            bridge.stop()


if __name__ == "__main__":
    main()
