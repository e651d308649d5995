"""`cellbridge probe` end to end: the real CLI in a subprocess against the simulator on a pty."""

import os
import pathlib
import subprocess
import sys

import pytest

from bridge import logs
from bridge.modem import probe as probe_module
from bridge.modem.probe import ResolveFailed, resolve_name
from tests.modem_harness import OK, ModemHarness

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
    def write(sim_args="", pin="", dns=""):
        path = tmp_path / "probe.ini"
        path.write_text(f"[cellbridge]\nstate_dir = {tmp_path / 'state'}\n"
                        f"[modem:m]\nport = sim\napn = internet\nsim_args = {sim_args}\n"
                        f"pin = {pin}\nregistration_timeout = 20\ndns = {dns}\n")
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


@pytest.mark.parametrize("name", ['evil"\rAT+CFUN=0', "a b", "", "x_y.example", "é.example"])
def test_probe_resolve_refuses_what_is_not_a_host_name(name, capsys):
    """Checked before anything is started: nothing the user types may end AT+QIDNSGIP="..."."""
    with pytest.raises(SystemExit) as exit:
        probe_module.main(["--port", "sim", "--resolve", name])
    assert exit.value.code == 2
    assert "argument --resolve: " in capsys.readouterr().err


def test_probe_resolves_names_through_the_simulated_module(config, tmp_path):
    """The simulator answers AT+QIDNSGIP from its --hosts file, then the system's resolver; the
    configured servers went out as AT+QIDNSCFG, or bring-up would have stopped at step 'dns'."""
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.9 example.test\n")
    result = probe("-c", config(f"--hosts {hosts}", dns="1.1.1.1 8.8.8.8"),
                   "--resolve", "example.test")
    assert (result.returncode, result.stdout, result.stderr) == (0, "127.0.0.9\n", "")
    result = probe("--port", "sim", "--resolve", "localhost")
    assert (result.returncode, result.stdout, result.stderr) == (0, "127.0.0.1\n", "")


def resolving(tmp_path, reply, wait=1.0):
    h = ModemHarness(tmp_path / "state").up()
    outcome = []
    resolve_name(h.modem, "www.example.com").addBoth(outcome.append)
    h.expect(b'AT+QIDNSGIP="www.example.com"', reply)
    h.clock.advance(wait)  # the module's silence ends the list of addresses
    return outcome


def test_resolve_returns_every_address_the_module_gives(tmp_path):
    outcome = resolving(tmp_path, OK + b"\r\n192.0.2.1\r\n\r\n192.0.2.2\r\n\r\n192.0.2.3\r\n")
    assert outcome == [("192.0.2.1", "192.0.2.2", "192.0.2.3")]


def test_resolve_error_after_ok_is_one_clear_failure(tmp_path, monkeypatch, capsys):
    (failure,) = resolving(tmp_path, OK + b"\r\nERROR\r\n")
    assert failure.check(ResolveFailed)
    monkeypatch.setattr(probe_module, "run", lambda *args: failure.raiseException())
    monkeypatch.setattr(logs, "start_logging", lambda level: None)  # global: other tests capture logs
    assert probe_module.main(["--port", "sim", "--resolve", "www.example.com"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == ("cellbridge probe: failed at step 'resolve': the module could not resolve "
                   "'www.example.com' (AT+QIDNSGIP=\"www.example.com\": ERROR)\n")


def test_resolve_without_an_answer_fails_at_the_dns_limit(tmp_path):
    (failure,) = resolving(tmp_path, OK, wait=15.0)
    assert failure.check(ResolveFailed)
    assert failure.value.why == ("the module could not resolve 'www.example.com' "
                                 "(AT+QIDNSGIP=\"www.example.com\": no answer after 15 s on the wire)")
