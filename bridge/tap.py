"""twistd glue: ``twistd -n --pidfile= cellbridge -c FILE`` builds the tree ``cellbridge run`` does.

The config is loaded in ``postOptions`` so that a bad file is a usage error: twistd prints the
problems (one line each, as ``cellbridge check`` does) and exits without a traceback.
"""

import os
import sys

from twisted.python import usage

from bridge.config import load_config
from bridge.errors import CellbridgeError, ConfigError, error_lines


class Options(usage.Options):
    synopsis = "-c FILE"
    longdesc = "Bridge local TCP/UDP ports through a Quectel M95-class GSM module."
    optParameters = [["config", "c", None, "the INI config, e.g. /etc/cellbridge/cellbridge.ini"]]

    def postOptions(self):
        if not self["config"]:
            raise usage.UsageError("--config FILE is required")
        try:
            self.cellbridge_config = load_config(self["config"])
        except ConfigError as error:
            raise usage.UsageError(str(error)) from None


def makeService(options, reactor=None):
    """The root service for twistd (which passes only ``options``; tests pass a fake reactor).
    Under twistd, SIGHUP reloads the config as under ``cellbridge run`` (twistd leaves it alone)."""
    from bridge.service import make_service
    from bridge.traffic import install_ring_dump

    if reactor is not None:  # tests
        root = make_service(options.cellbridge_config, reactor)
    else:
        from twisted.internet import reactor

        from bridge.reload import install_reload_signal
        sys.excepthook = report_expected_errors(sys.excepthook)
        root = make_service(options.cellbridge_config, reactor)
        install_reload_signal(reactor, root, os.path.abspath(options["config"]))  # twistd may chdir
    # Once running: by then twistd has taken SIGUSR1 if it rotates a --logfile with it.
    reactor.callWhenRunning(install_ring_dump, reactor, root, only_if_free=True)
    return root


def report_expected_errors(fallback):
    """An exception hook for the twistd process. twistd lets what ``privilegedStartService``
    raises (a listener that cannot bind) end the process as a traceback in the log; an expected
    failure gets the line ``cellbridge run`` prints instead, on the stderr twistd was started with
    (its own stderr is the log by then). The process still exits with status 1."""
    def hook(kind, error, traceback):
        if isinstance(error, CellbridgeError):
            print(error_lines(error), file=sys.__stderr__, flush=True)
        else:
            fallback(kind, error, traceback)
    return hook
