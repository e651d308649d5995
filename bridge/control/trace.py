"""``cellbridge trace``: print the running daemon's AT traffic as it happens, each line prefixed
with its modem's name, redacted exactly like the traffic ring (no PIN, no password, payload as
length and hex prefix), until Ctrl-C (exit 0)."""

import argparse
import os
import sys

from bridge.control.client import (ControlConnection, ControlUnavailable, add_arguments,
                                   control_address)
from bridge.errors import EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cellbridge trace", description="Stream the running daemon's AT traffic, redacted, "
        "until Ctrl-C (through its control socket).")
    add_arguments(parser)
    return parser


def main(argv) -> int:
    args = build_parser().parse_args(argv)
    try:
        follow(ControlConnection(control_address(args)))
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:  # e.g. piped into head: whoever read it has seen enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error at exit
        return EXIT_OK
    raise ControlUnavailable("the daemon closed the trace (it stopped?)")


def follow(connection: ControlConnection) -> None:
    """Print every entry until the daemon closes the connection."""
    try:
        connection.request("trace")
        answers = connection.answers()
        modems = next(answers, {}).get("trace", [])
        connection.sock.settimeout(None)  # entries come when the module talks
        print(f"tracing {', '.join(modems) or 'no modem'} (Ctrl-C to stop)", file=sys.stderr,
              flush=True)
        for answer in answers:
            if "dropped" in answer:
                print(f"... {answer['dropped']} entries dropped: this end read slower than the "
                      "module talked", file=sys.stderr, flush=True)
            else:
                print(f"{answer['modem']}: {answer['entry']}", flush=True)
    finally:
        connection.close()
