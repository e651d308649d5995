"""``cellbridge udev-rule -c FILE``: a udev rule that keeps ModemManager off the configured modems.

ModemManager probes every new tty with AT commands and, if it takes the port for a modem, keeps
talking to it, which garbles the bridge's AT dialogue. It leaves alone a device whose udev
properties carry ``ID_MM_DEVICE_IGNORE=1``; this command writes that rule for each modem's ``port``.

A ``/dev/serial/by-id/...`` path is matched by that symlink (``SYMLINK==``): udev's own
60-serial rules make it from the adapter's vendor, model, serial number and interface, so the
rule follows the device to any USB socket, and 77 sorts after 60. A plain ``/dev/ttyUSB0`` is
matched by its kernel name, which follows plug-in order.
"""

import argparse
import re
import sys

from bridge.config import load_config

RULES_FILE = "/etc/udev/rules.d/77-cellbridge.rules"
RELOAD = ("sudo udevadm control --reload && "
          "sudo udevadm trigger --action=change --subsystem-match=tty")
_KERNEL_NAME = re.compile(r"^/dev/(tty[A-Za-z]*[0-9]+)$")
_UNSAFE = re.compile(r'["*?\[\]|\s]')  # udev match strings are globs; a quote would end one
_SYMLINKS = (  # (prefix, why a rule on it holds), first match wins
    ("/dev/serial/by-id/", "matched by its by-id symlink, which udev makes from the adapter's "
                           "vendor, model, serial number and interface: the rule follows the "
                           "adapter to any USB socket"),
    ("/dev/serial/by-path/", "matched by its by-path symlink: the rule holds for whatever is "
                             "plugged into that USB socket"),
    ("/dev/", "matched as a udev symlink, which only works if a rules file sorting before 77 "
              "makes it; else use the /dev/serial/by-id/ path (ls -l /dev/serial/by-id/)"),
)


def rule_lines(modem):
    """Comment lines, then the rule, for one ``[modem:NAME]``; only comments when it has none."""
    where = f"[modem:{modem.name}] port = {modem.port}"
    if modem.port == "sim" or modem.port.startswith("tcp:"):
        return [f"# {where}: skipped, not a local serial device ModemManager could probe"]
    if not modem.port.startswith("/dev/") or _UNSAFE.search(modem.port):
        return [f"# {where}: skipped, cannot be matched by a udev rule (not a /dev path, or it "
                "holds characters a udev match would read as a pattern)"]
    kernel = _KERNEL_NAME.match(modem.port)
    if kernel:
        match, how = f'KERNEL=="{kernel.group(1)}"', (
            "matched by kernel name, which follows plug-in order (after a replug it may be "
            "another adapter); prefer the /dev/serial/by-id/ path (ls -l /dev/serial/by-id/)")
    else:
        match = f'SYMLINK=="{modem.port[len("/dev/"):]}"'
        how = next(why for prefix, why in _SYMLINKS if modem.port.startswith(prefix))
    return [f"# {where}: {how}",
            f'SUBSYSTEM=="tty", {match}, ENV{{ID_MM_DEVICE_IGNORE}}="1"']


def rules(config, config_argument):
    """The whole rules file for ``config``, as text."""
    lines = [f"# {RULES_FILE}, written by: cellbridge udev-rule -c {config_argument}",
             "# ModemManager leaves these ttys alone (it would probe them with AT commands and",
             "# fight cellbridge for the port). Install and apply:",
             f"#   cellbridge udev-rule -c {config_argument} | sudo tee {RULES_FILE}",
             f"#   {RELOAD}",
             "# Check: udevadm info -q property -n DEVICE | grep ID_MM_DEVICE_IGNORE"]
    for modem in config.modems.values():
        lines += rule_lines(modem)
    return "\n".join(lines) + "\n"


def main(argv=None):
    """Print the rules for the config's modems; a bad config is the usual 78."""
    parser = argparse.ArgumentParser(
        prog="cellbridge udev-rule",
        description="Print a udev rule that stops ModemManager from probing the configured "
                    f"modem ports; install it as {RULES_FILE}.")
    parser.add_argument("-c", "--config", required=True, metavar="FILE",
                        help="the INI config, e.g. /etc/cellbridge/cellbridge.ini")
    args = parser.parse_args(argv)
    sys.stdout.write(rules(load_config(args.config), args.config))
    return 0
