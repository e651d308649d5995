"""systemd/cellbridge.service: the contract with the daemon, and systemd's own checks when present."""

import pathlib
import shutil
import subprocess

import pytest

from bridge import shutdown
from bridge.errors import EXIT_CONFIG, EXIT_SIM_LOCKED

UNIT = pathlib.Path(__file__).parent.parent / "systemd" / "cellbridge.service"


def unit_values(key):
    values = []
    for line in UNIT.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and name == key:
            values.append(value)
    return values


def test_unit_matches_the_daemon():
    assert unit_values("Type") == ["notify"]
    assert unit_values("ExecStart")[0].endswith(" run -c /etc/cellbridge/cellbridge.ini")
    assert unit_values("ExecReload") == ["/bin/kill -HUP $MAINPID"]  # SIGHUP reloads
    assert set(unit_values("RestartPreventExitStatus")[0].split()) == {
        str(EXIT_SIM_LOCKED), str(EXIT_CONFIG)}
    assert unit_values("StateDirectory") == ["cellbridge"]  # the default state_dir
    assert unit_values("DevicePolicy") == ["closed"]
    assert {"char-ttyUSB rw", "char-ttyACM rw"} <= set(unit_values("DeviceAllow"))
    assert "AF_UNIX" in unit_values("RestrictAddressFamilies")[0]  # NOTIFY_SOCKET
    for forbidden in ("MemoryDenyWriteExecute", "PrivateDevices", "PrivateUsers"):
        assert unit_values(forbidden) == []


def test_stop_timeout_covers_the_stop_budget():
    port_close = 1.0
    worst = shutdown.LINK_BUDGET + shutdown.RELEASE_BUDGET + shutdown.DEACT_BUDGET + port_close
    assert worst < int(unit_values("TimeoutStopSec")[0])


@pytest.fixture
def checkable_unit(tmp_path):
    """systemd-analyze verify fails on a missing ExecStart binary: point it at one that exists."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    text = UNIT.read_text().replace("ExecStart=/opt/cellbridge/bin/cellbridge", "ExecStart=/bin/true")
    path = tmp_path / "cellbridge.service"
    path.write_text(text)
    return path


def test_systemd_analyze_verify_is_silent(checkable_unit):
    # A misspelt key only prints a warning and exits 0, so any output is a failure.
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(checkable_unit)],
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_systemd_analyze_security_exposure_at_most_2(checkable_unit):
    result = subprocess.run(["systemd-analyze", "security", "--offline=true", "--threshold=20",
                             str(checkable_unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout[-500:]
