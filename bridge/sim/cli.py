"""`cellbridge sim` / `python -m bridge.sim`: run the simulator until SIGTERM or SIGINT."""

import argparse
import sys

from .lifeline import exit_with_parent
from .options import SimOptions


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cellbridge sim",
        description="Quectel M95-dialect GSM module simulator on a pty, with a real TCP/IP stack "
                    "on loopback, link shaping and fault injection.")
    p.add_argument("--link", metavar="PATH", help="symlink to the pty slave (a stale link is replaced)")
    p.add_argument("--baud", type=int, default=0, help="UART pacing, both directions, 10 bits/byte; 0 = unpaced (default)")
    p.add_argument("--up-bps", type=int, default=0, help="radio uplink rate in bit/s; 0 = unlimited")
    p.add_argument("--down-bps", type=int, default=0, help="radio downlink rate in bit/s; 0 = unlimited")
    p.add_argument("--rtt-ms", type=int, default=0, help="radio round-trip time in ms (RTT/2 each way)")
    p.add_argument("--hosts", metavar="FILE", help='"IP name" lines for DNS, consulted before the system resolver')
    p.add_argument("--control", metavar="PATH", help="unix socket for control commands (see README)")
    p.add_argument("--chaos", metavar="SEED", type=int, help="seeded harmless URCs before final results")
    p.add_argument("--pin", help="the SIM requires this PIN (AT+CPIN)")
    p.add_argument("--register-delay", type=float, default=0.0, metavar="SECONDS",
                   help="time from SIM ready until CREG/CGREG report registered")
    p.add_argument("--register-deny", action="store_true", help="registration denied (stat 3)")
    p.add_argument("--roaming", action="store_true",
                   help="registered as roaming (stat 5); control 'roaming on|off' changes it")
    p.add_argument("--act-delay", type=float, default=0.5, metavar="SECONDS", help="AT+QIACT duration")
    p.add_argument("--deact-delay", type=float, default=0.2, metavar="SECONDS", help="AT+QIDEACT duration")
    p.add_argument("--dns-delay", type=float, default=0.05, metavar="SECONDS", help="name lookup duration")
    p.add_argument("--connect-timeout", type=float, default=75.0, metavar="SECONDS",
                   help="QIOPEN gives up with CONNECT FAIL after this")
    p.add_argument("--escape-guard", type=float, default=0.5, metavar="SECONDS",
                   help="silence required before and after +++ (app note: 500 ms)")
    p.add_argument("--send-buffer", type=int, default=7300, metavar="BYTES",
                   help="per-socket unacked bytes before SEND FAIL")
    p.add_argument("--rx-buffer", type=int, default=7300, metavar="BYTES",
                   help="per-socket receive buffer; the remote sender is slowed when it is full")
    p.add_argument("--uart-rx-buffer", type=int, default=4096, metavar="BYTES",
                   help="transparent-mode bytes from the host the module holds for the radio")
    p.add_argument("--no-flow-control", dest="flow_control", action="store_false",
                   help="no RTS/CTS: a full UART buffer loses bytes (overrun) instead of "
                        "blocking the host's writes")
    p.add_argument("--exit-with-parent", type=int, metavar="PID",
                   help="stop when process PID, which started this one, ends, even by SIGKILL "
                        "(Linux); cellbridge passes its own PID for port = sim")
    return p


def options_from(args) -> SimOptions:
    return SimOptions(
        baud=args.baud, up_bps=args.up_bps, down_bps=args.down_bps, rtt_ms=args.rtt_ms,
        hosts_file=args.hosts, chaos_seed=args.chaos, pin=args.pin,
        register_delay=args.register_delay, register_deny=args.register_deny, roaming=args.roaming,
        act_delay=args.act_delay, deact_delay=args.deact_delay, dns_delay=args.dns_delay,
        connect_timeout=args.connect_timeout, escape_guard=args.escape_guard,
        send_buffer=args.send_buffer, rx_buffer=args.rx_buffer,
        uart_rx_buffer=args.uart_rx_buffer, flow_control=args.flow_control)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.exit_with_parent is not None and not exit_with_parent(args.exit_with_parent):
        print(f"cellbridge sim: process {args.exit_with_parent}, which started this one, is gone",
              file=sys.stderr)
        return 0
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from .simulator import Simulator

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    sim = Simulator(reactor, options_from(args), link=args.link, control=args.control)
    sim.start()
    reactor.addSystemEventTrigger("before", "shutdown", sim.stop)
    # Announced once the reactor runs: its SIGTERM handler is in place, so whoever reads these
    # lines may stop us at once and still get a clean exit.
    reactor.callWhenRunning(announce, sim, args)
    reactor.run()
    return 0


def announce(sim, args) -> None:
    print(f"device: {sim.device}")
    if args.link:
        print(f"link: {args.link}")
    if args.control:
        print(f"control: {args.control}")
    sys.stdout.flush()
