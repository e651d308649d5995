"""Exceptions shared by every cellbridge component, and the exit status each one maps to.

The exit statuses are part of the user-facing contract: a systemd unit refuses to restart
into a SIM lock (3) or a broken config (78), so the status must say which of these happened.
"""

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2  # bad command line (argparse's own status)
EXIT_SIM_LOCKED = 3  # SIM locked or PIN rejected: restarting would burn the remaining tries
EXIT_CONFIG = 78  # EX_CONFIG from sysexits.h


class CellbridgeError(Exception):
    """An expected failure: reported as one line on stderr, never as a traceback."""

    exit_status = EXIT_FAILURE


class ConfigError(CellbridgeError):
    """The config file is missing or invalid.

    :param problems: one line per problem, each ``FILE: [section] key: what is wrong (got 'value')``.
    """

    exit_status = EXIT_CONFIG

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


def error_lines(error):
    """How an expected failure is reported on stderr: a config's problems as they are (each line
    names its file), anything else as one ``cellbridge: ...`` line."""
    return str(error) if isinstance(error, ConfigError) else f"cellbridge: {error}"


class SimLocked(CellbridgeError):
    """The SIM wants a PIN we do not have, rejected ours, or wants a PUK: never retry on our own."""

    exit_status = EXIT_SIM_LOCKED


class ModemDown(CellbridgeError):
    """The module is not usable right now (not brought up, PDP lost, port gone): retry later."""


class ConnectFailed(CellbridgeError):
    """The module could not open a socket (CONNECT FAIL, ERROR or no answer); ``reason`` says which."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason
