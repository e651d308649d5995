"""``cellbridge status``: ask the running daemon for its status snapshot and print it, in the
human form (:mod:`bridge.control.render`) or as JSON (``--json``, the fields README lists)."""

import argparse
import json

from bridge.control.client import ControlConnection, add_arguments, control_address
from bridge.control.render import render
from bridge.errors import EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cellbridge status", description="Show the running daemon's modems, profiles, "
        "servers and links (through its control socket). Exit 1 with one line on stderr when "
        "the daemon cannot be asked.")
    add_arguments(parser)
    parser.add_argument("--json", action="store_true",
                        help="print the snapshot as JSON (fields: README, Status and trace)")
    return parser


def main(argv) -> int:
    args = build_parser().parse_args(argv)
    connection = ControlConnection(control_address(args))
    try:
        connection.request("status")
        snapshot = connection.first_answer()
    finally:
        connection.close()
    print(json.dumps(snapshot, indent=2) if args.json else render(snapshot))
    return EXIT_OK
