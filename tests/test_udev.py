"""`cellbridge udev-rule -c FILE`: one ID_MM_DEVICE_IGNORE rule per serial modem, matched by the
device's by-id symlink or kernel name, and the comments that say which, where and how."""

from tests.test_cli import cellbridge

BY_ID = "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0"


def test_one_rule_per_serial_modem_saying_how_it_matches(tmp_path):
    path = tmp_path / "fleet.ini"
    path.write_text(f"[modem:gw]\nport = {BY_ID}\n[modem:spare]\nport = /dev/ttyUSB1\n"
                    "[modem:lab]\nport = sim\n[modem:remote]\nport = tcp:192.0.2.1:2000\n"
                    "[profile:p]\nlisten = tcp:1\nremote = tcp:h:1\nmodem = gw\n")
    result = cellbridge("udev-rule", "-c", str(path))
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines() == [
        f"# /etc/udev/rules.d/77-cellbridge.rules, written by: cellbridge udev-rule -c {path}",
        "# ModemManager leaves these ttys alone (it would probe them with AT commands and",
        "# fight cellbridge for the port). Install and apply:",
        f"#   cellbridge udev-rule -c {path} | sudo tee /etc/udev/rules.d/77-cellbridge.rules",
        "#   sudo udevadm control --reload && sudo udevadm trigger --action=change "
        "--subsystem-match=tty",
        "# Check: udevadm info -q property -n DEVICE | grep ID_MM_DEVICE_IGNORE",
        f"# [modem:gw] port = {BY_ID}: matched by its by-id symlink, which udev makes from the "
        "adapter's vendor, model, serial number and interface: the rule follows the adapter to "
        "any USB socket",
        'SUBSYSTEM=="tty", SYMLINK=="serial/by-id/usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0", '
        'ENV{ID_MM_DEVICE_IGNORE}="1"',
        "# [modem:spare] port = /dev/ttyUSB1: matched by kernel name, which follows plug-in "
        "order (after a replug it may be another adapter); prefer the /dev/serial/by-id/ path "
        "(ls -l /dev/serial/by-id/)",
        'SUBSYSTEM=="tty", KERNEL=="ttyUSB1", ENV{ID_MM_DEVICE_IGNORE}="1"',
        "# [modem:lab] port = sim: skipped, not a local serial device ModemManager could probe",
        "# [modem:remote] port = tcp:192.0.2.1:2000: skipped, not a local serial device "
        "ModemManager could probe",
    ]


def test_a_path_udev_would_read_as_a_pattern_gets_no_rule(tmp_path):
    path = tmp_path / "odd.ini"
    path.write_text("[modem:m]\nport = /dev/serial/by-id/usb-x*\n")
    rules = cellbridge("udev-rule", "-c", str(path)).stdout
    assert "ENV{ID_MM_DEVICE_IGNORE}" not in rules
    assert "# [modem:m] port = /dev/serial/by-id/usb-x*: skipped, cannot be matched" in rules


def test_a_bad_config_is_refused_as_check_refuses_it(tmp_path):
    path = tmp_path / "bad.ini"
    path.write_text("[modem:m]\nport = ttyUSB0\n")
    result = cellbridge("udev-rule", "-c", str(path))
    assert (result.returncode, result.stdout) == (78, "")
    assert result.stderr == (f"{path}: [modem:m] port: expected a device path (/dev/...), "
                             "tcp:HOST:PORT or sim (got 'ttyUSB0')\n")


def test_listed_in_help_and_needs_a_config():
    assert "udev-rule" in cellbridge("--help").stdout
    result = cellbridge("udev-rule")
    assert result.returncode == 2
    assert result.stderr.startswith("usage: cellbridge udev-rule")
