"""`cellbridge probe` end to end: the real CLI in a subprocess against the simulator on a pty."""

import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).parent.parent
ENV = dict(os.environ, PYTHONPATH=str(REPO))
FOUND = {"model": "Quectel_Ltd Quectel_M95", "firmware": "M95FAR02A08", "imei": "861234567890125",
         "sim": "READY", "registration": "home", "signal": "-63 dBm (CSQ 25,0)",
         "state": "IP STATUS"}


def probe(*args):
    return subprocess.run([sys.executable, "-m", "bridge.cli", "probe", *args],
                          capture_output=True, text=True, env=ENV, timeout=90)


def found(stdout):
    lines = dict(line.split(": ", 1) for line in stdout.splitlines())
    assert lines.pop("local_ip").count(".") == 3
    return lines


@pytest.fixture
def config(tmp_path):
    def write(sim_args="", pin=""):
        path = tmp_path / "probe.ini"
        path.write_text(f"[cellbridge]\nstate_dir = {tmp_path / 'state'}\n"
                        f"[modem:m]\nport = sim\napn = internet\nsim_args = {sim_args}\n"
                        f"pin = {pin}\nregistration_timeout = 20\n")
        return str(path)
    return write


def test_probe_plain_simulator():
    result = probe("--port", "sim", "--apn", "internet")
    assert (result.returncode, result.stderr) == (0, "")
    assert found(result.stdout) == FOUND


def test_probe_enters_a_required_pin(config):
    result = probe("-c", config("--pin 2468", pin="2468"))
    assert result.returncode == 0, result.stderr
    assert found(result.stdout) == FOUND


def test_probe_wrong_pin_exits_3_and_is_not_retried(config, tmp_path):
    path = config("--pin 2468", pin="1111")
    first = probe("-c", path)
    assert first.returncode == 3
    assert "failed at step 'sim': the SIM rejected the configured PIN" in first.stderr
    assert (tmp_path / "state" / "m.rejected-pin").exists()
    second = probe("-c", path)
    assert second.returncode == 3
    assert "this PIN was rejected before" in second.stderr
    assert first.stdout == second.stdout == ""


def test_probe_waits_for_a_delayed_registration_and_logs_progress(config):
    result = probe("-v", "-c", config("--register-delay 2"))
    assert result.returncode == 0, result.stderr
    assert found(result.stdout) == FOUND
    assert "registration: waiting, CREG 2 (searching)" in result.stderr


def test_probe_names_the_step_when_registration_is_denied(config):
    result = probe("-c", config("--register-deny"))
    assert result.returncode == 1
    assert result.stderr.startswith("cellbridge probe: failed at step 'registration': "
                                    "registration denied by the network")


def test_probe_is_unmoved_by_chaos_urcs(config):
    result = probe("-c", config("--chaos 7"))
    assert result.returncode == 0, result.stderr
    assert found(result.stdout) == FOUND


def test_probe_names_the_port_step_for_a_missing_device(tmp_path):
    result = probe("--port", str(tmp_path / "ttyNONE"))
    assert result.returncode == 1
    assert result.stderr.strip() == (f"cellbridge probe: failed at step 'port': "
                                     f"{tmp_path / 'ttyNONE'}: no such device (is the modem "
                                     "plugged in? prefer /dev/serial/by-id/...)")


def test_probe_usage_errors_exit_2():
    assert probe().returncode == 2
    assert probe("--port", "sim", "--apn", 'a"b').returncode == 2
