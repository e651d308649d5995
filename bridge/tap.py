"""twistd glue: ``twistd -n cellbridge -c FILE`` builds the same tree as ``cellbridge run``.

The config is loaded in ``postOptions`` so that a bad file is a usage error: twistd prints the
problems (one line each, as ``cellbridge check`` does) and exits without a traceback.
"""

import os

from twisted.python import usage

from bridge.config import load_config
from bridge.errors import ConfigError


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

    if reactor is not None:
        return make_service(options.cellbridge_config, reactor)
    from twisted.internet import reactor

    from bridge.reload import install_reload_signal
    root = make_service(options.cellbridge_config, reactor)
    install_reload_signal(reactor, root, os.path.abspath(options["config"]))  # twistd may chdir
    return root
