"""`cellbridge probe`: bring the module up once and print what was found.

One ``name: value`` line each on stdout (model, firmware, imei, sim, registration, signal,
local_ip, state), exit 0; with ``--resolve NAME`` instead the addresses the module's own DNS
lookup (AT+QIDNSGIP) gives for NAME, one per line. On failure one line on stderr naming the
failing step, and the exit status of the error (3 for a locked SIM or rejected PIN, 1 otherwise).
No module socket is opened, so nothing is left open; the PDP context stays up (the next bring-up
deactivates it first).
"""

import argparse
import sys

from twisted.internet.defer import CancelledError, Deferred, inlineCallbacks
from twisted.python.failure import Failure

from bridge.at import commands
from bridge.at.errors import ATEngineError
from bridge.config import General, ModemConfig, load_config
from bridge.config_values import Invalid, at_text, host, serial_port
from bridge.errors import EXIT_OK, CellbridgeError, SimLocked
from bridge.modem.modem import Modem
from bridge.modem.transport import TransportError

FIELDS = ("model", "firmware", "imei", "sim", "registration", "signal", "local_ip", "state")


class ResolveFailed(CellbridgeError):
    """The module could not resolve the ``--resolve`` name (exit status 1)."""

    step = "resolve"

    def __init__(self, name: str, why: str) -> None:
        self.why = f"the module could not resolve {name!r} ({why})"
        super().__init__(self.why)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cellbridge probe",
        description="Bring the module up (SIM, registration, PDP context) and print what was "
                    "found, one 'name: value' line each; with --resolve NAME, the addresses the "
                    "module's DNS gives for NAME instead. Opens no socket.",
        epilog="exit status: 0 success, 2 bad command line, 78 bad config, 3 SIM locked or PIN "
               "rejected, 1 any other failure (the failing step is named on stderr).")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("-c", "--config", metavar="FILE", help="use a [modem:NAME] of this config")
    source.add_argument("--port", metavar="PORT",
                        help="device path, tcp:HOST:PORT or sim (instead of a config)")
    parser.add_argument("--modem", metavar="NAME",
                        help="which [modem:NAME] of the config (default: the only one)")
    parser.add_argument("--apn", default="", help="access point name (with --port)")
    parser.add_argument("--resolve", metavar="NAME", type=resolvable,
                        help="after bring-up, resolve NAME through the module's DNS "
                             "(AT+QIDNSGIP, with the modem's dns servers if set) and print its "
                             "addresses, one per line, instead of what was found")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log progress (registration wait, each step) to stderr")
    return parser


def resolvable(text: str) -> str:
    """A host name (or dotted address) that can go into AT+QIDNSGIP="..." unchanged."""
    try:
        return host(text)
    except Invalid as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def modem_from_args(args, parser):
    """-> (ModemConfig, state_dir); usage problems exit 2, config problems raise ConfigError."""
    if args.port is not None:
        if args.modem:
            parser.error("--modem needs -c/--config")
        try:
            port, apn = serial_port(args.port), at_text(args.apn)
        except Invalid as error:
            parser.error(f"--port/--apn: {error}")
        return ModemConfig(name="probe", port=port, apn=apn), General().state_dir
    if args.apn:
        parser.error("--apn goes with --port; with a config the modem's apn is used")
    config = load_config(args.config)
    names = sorted(config.modems)
    name = args.modem or (names[0] if len(names) == 1 else None)
    if name not in config.modems:
        parser.error(f"--modem: choose one of {', '.join(names)}")
    return config.modems[name], config.general.state_dir


def step_of(error: Exception) -> str:
    if hasattr(error, "step"):
        return error.step
    if isinstance(error, SimLocked):
        return "sim"
    if isinstance(error, TransportError):
        return "port"
    return "bring-up"


@inlineCallbacks
def probe(reactor, config, state_dir, resolve=None, **modem_options):
    """Bring the modem up, then read its stack state (or resolve ``resolve``), close the port
    -> the lines to print."""
    outcome = Deferred()

    def fatal(error):
        if not outcome.called:
            outcome.errback(error)

    modem = Modem(reactor, config, state_dir, on_fatal=fatal, persistent=False, **modem_options)
    modem.when_ready().addCallbacks(lambda _: outcome.called or outcome.callback(None),
                                    lambda failure: failure.trap(CancelledError))  # stopped
    modem.startService()
    try:
        yield outcome
        if resolve is not None:
            addresses = yield resolve_name(modem, resolve)
            return list(addresses)
        report = yield modem.query_stack()
    finally:
        yield modem.stopService()
    values = dict(modem.info, local_ip=modem.local_ip, state=report.state)
    return [f"{name}: {values.get(name, '')}" for name in FIELDS]


@inlineCallbacks
def resolve_name(modem, name: str):
    """AT+QIDNSGIP on a ready modem -> its addresses; ERROR or no answer -> ResolveFailed."""
    try:
        addresses = yield modem.issue(commands.qidnsgip(name, modem.timeouts.dns))
    except ATEngineError as error:
        raise ResolveFailed(name, str(error)) from error
    return addresses


def run(reactor, config, state_dir, resolve=None):
    """Run ``probe`` on a not-yet-running reactor; -> its lines, or raises its error."""
    results = []

    def finish(result):
        results.append(result)
        reactor.stop()

    reactor.callWhenRunning(lambda: probe(reactor, config, state_dir, resolve).addBoth(finish))
    reactor.run()
    result = results[0]
    if isinstance(result, Failure):
        result.raiseException()
    return result


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    config, state_dir = modem_from_args(args, parser)
    from twisted.internet import reactor

    from bridge.logs import start_logging

    start_logging("info" if args.verbose else "warn")
    try:
        lines = run(reactor, config, state_dir, args.resolve)
    except CellbridgeError as error:
        why = error.why if hasattr(error, "why") else str(error)
        print(f"cellbridge probe: failed at step '{step_of(error)}': {why}", file=sys.stderr)
        return error.exit_status
    for line in lines:
        print(line)
    return EXIT_OK
