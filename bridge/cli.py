"""The ``cellbridge`` command: run, check, sim, probe, status, trace, udev-rule.

Exit statuses (part of the user-facing contract, see bridge.errors): 0 success; 2 bad command
line; 78 bad config; 3 SIM locked or PIN rejected; 1 anything else. Expected errors are one
line on stderr, never a traceback.
"""

import argparse
import importlib
import sys

from bridge import __version__
from bridge.config import config_warnings, load_config
from bridge.errors import EXIT_OK, CellbridgeError, error_lines

EPILOG = """\
exit status: 0 success, 2 bad command line, 78 bad config (anything the file alone decides),
3 SIM locked or PIN rejected, 1 anything else (a busy port, a missing device ...).

The same service tree also runs under twistd:  twistd -n --pidfile= cellbridge -c FILE
"""

# Commands implemented by other packages: (module with main(argv) -> int, one-line help).
DELEGATED = {
    "sim": ("bridge.sim.cli", "run the built-in module simulator (see: cellbridge sim --help)"),
    "probe": ("bridge.modem.probe", "bring the module up and print what was found, or "
              "resolve a name through it (see: cellbridge probe --help)"),
    "status": ("bridge.control.status", "show the running daemon's modems, profiles and links "
               "(see: cellbridge status --help)"),
    "trace": ("bridge.control.trace", "stream the running daemon's AT traffic, redacted, until "
              "Ctrl-C (see: cellbridge trace --help)"),
    "udev-rule": ("bridge.udev", "print a udev rule that keeps ModemManager off the configured "
                  "modem ports (see: cellbridge udev-rule --help)"),
}


def command_run(args):
    """Run the bridge in the foreground until SIGTERM/SIGINT or a fatal error."""
    from twisted.internet import reactor

    from bridge.logs import start_logging
    from bridge.reload import install_reload_signal
    from bridge.service import make_service
    from bridge.traffic import install_ring_dump

    config = load_config(args.config)
    root = make_service(config, reactor)
    root.set_log_level = start_logging(config.general.log_level)
    install_ring_dump(reactor, root)
    install_reload_signal(reactor, root, args.config)
    root.privilegedStartService()
    root.startService()
    reactor.addSystemEventTrigger("before", "shutdown", root.stopService)
    reactor.run()
    return root.exit_status


def command_check(args):
    """Validate a config without touching the modem."""
    config = load_config(args.config)
    for warning in config_warnings(config):
        print(warning, file=sys.stderr)
    print(f"{args.config}: OK ({len(config.modems)} modem(s), {len(config.profiles)} "
          f"profile(s), {len(config.servers)} server(s))")
    return EXIT_OK


def command_delegated(name, argv):
    """``cellbridge sim|probe|status|trace``: the other package's ``main``, imported only when
    used."""
    module, _ = DELEGATED[name]
    status = importlib.import_module(module).main(argv)
    return EXIT_OK if status is None else status


def build_parser():
    parser = argparse.ArgumentParser(
        prog="cellbridge", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Bridge local TCP/UDP ports through a Quectel M95-class GSM module's own "
                    "TCP/IP stack, over one serial line.")
    parser.add_argument("--version", action="version", version=f"cellbridge {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, handler, summary in (
            ("run", command_run, "run the bridge in the foreground (SIGTERM stops it cleanly, "
                                 "SIGHUP reloads the config)"),
            ("check", command_check, "validate a config file: exit 0, or 78 with one line per "
                                     "problem on stderr")):
        command = commands.add_parser(name, help=summary, description=summary, epilog=EPILOG,
                                      formatter_class=argparse.RawDescriptionHelpFormatter)
        command.add_argument("-c", "--config", required=True, metavar="FILE",
                             help="the INI config, e.g. /etc/cellbridge/cellbridge.ini")
        command.set_defaults(handler=handler)
    for name, (_, summary) in DELEGATED.items():
        # Listed for --help only: main() hands everything after the name to the other package.
        commands.add_parser(name, help=summary, add_help=False)
    return parser


def main(argv=None):
    """Entry point of the ``cellbridge`` console script; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv and argv[0] in DELEGATED:
            return command_delegated(argv[0], argv[1:])
        args = build_parser().parse_args(argv)
        return args.handler(args)
    except CellbridgeError as error:
        print(error_lines(error), file=sys.stderr)
        return error.exit_status


if __name__ == "__main__":
    sys.exit(main())
