"""bridge.config on files a new user writes: a BOM, a non-UTF-8 byte, nothing to carry, secrets in
a file everyone can read; and ``check`` refusing, with 78, what ``run`` would refuse at start."""

import os

import pytest

from twisted.logger import capturedLogs, formatEvent

from bridge.config import NOTHING_CARRIED, ConfigError, config_warnings, load_config
from bridge.service import make_service
from tests.test_cli import cellbridge
from tests.test_plugin import FakeComponents, UDPMemoryReactor

PROFILE = "[profile:web]\nlisten = tcp:18080\nremote = tcp:127.0.0.1:8000\n"


def test_a_utf8_bom_is_accepted(tmp_path):
    path = tmp_path / "bom.ini"
    path.write_bytes(b"\xef\xbb\xbf[modem:main]\r\nport = sim\r\napn = internet\r\n")
    assert load_config(path).modems["main"].apn == "internet"


def test_a_byte_that_is_not_utf8_names_the_file_and_the_line(tmp_path):
    path = tmp_path / "latin1.ini"
    path.write_bytes(b"[modem:main]\nport = sim\n; Zugang f\xfcr Kunden\napn = internet\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.problems == [
        f"{path}: line 3: not UTF-8 text (byte 0xfc at column 11); save the file as UTF-8"]
    path.write_bytes(b"\xef\xbb\xbf[modem:main]\nport = sim\napn = \xe9\n")  # after a BOM
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.problems == [
        f"{path}: line 3: not UTF-8 text (byte 0xe9 at column 7); save the file as UTF-8"]


def test_check_warns_when_the_config_carries_nothing(tmp_path):
    path = tmp_path / "bare.ini"
    path.write_text("[modem:main]\nport = sim\n")
    result = cellbridge("check", "-c", str(path))
    assert (result.returncode, result.stderr) == (0, f"{path}: warning: {NOTHING_CARRIED}\n")
    path.write_text("[modem:main]\nport = sim\n" + PROFILE)
    assert cellbridge("check", "-c", str(path)).stderr == ""


def test_run_logs_the_warnings_check_prints_when_it_starts(tmp_path):
    path = tmp_path / "bare.ini"
    path.write_text("[modem:main]\nport = sim\n")
    root = make_service(load_config(path), UDPMemoryReactor(), FakeComponents(), environ={})
    with capturedLogs() as events:
        root.startService()
    root.stopService()
    assert f"{path}: warning: {NOTHING_CARRIED}" in [formatEvent(event) for event in events]


@pytest.mark.parametrize("mode, warned", [(0o644, True), (0o604, True), (0o640, False),
                                          (0o600, False)])
def test_secrets_in_a_file_every_user_can_read_are_warned_about(tmp_path, mode, warned):
    path = tmp_path / "secret.ini"
    path.write_text("[modem:main]\nport = sim\npin = 1234\npassword = s3cret\n" + PROFILE)
    os.chmod(path, mode)
    expected = [f"{path}: warning: every local user can read this file, and it holds secrets "
                "([modem:main] password, [modem:main] pin); chmod 600 it (or 640 with the "
                "service user's group, e.g. dialout, as the README's install step does)"]
    assert config_warnings(load_config(path)) == (expected if warned else [])


def test_a_readable_file_without_secrets_is_not_warned_about(tmp_path):
    path = tmp_path / "open.ini"
    path.write_text("[modem:main]\nport = sim\napn = internet\n" + PROFILE)
    os.chmod(path, 0o644)
    assert config_warnings(load_config(path)) == []


@pytest.mark.parametrize("line, problem", [
    ("sim_args = --baud 9600 --bogus", "[modem:main] sim_args: unrecognized arguments: --bogus "
                                       "(got '--baud 9600 --bogus')"),
    ("timeouts = qiact=2m", "[modem:main] timeouts: qiact: not a number (got 'qiact=2m')"),
])
def test_what_run_refuses_from_the_config_check_refuses_too_both_with_78(tmp_path, line, problem):
    """A bad sim_args used to pass check and then fail run with exit 1, which the unit's
    Restart=on-failure turns into a restart every few seconds forever."""
    path = tmp_path / "bad.ini"
    path.write_text(f"[cellbridge]\nstate_dir = {tmp_path}\n[modem:main]\nport = sim\n{line}\n"
                    + PROFILE)
    for command in ("check", "run"):
        result = cellbridge(command, "-c", str(path))
        assert (command, result.returncode, result.stderr) == (
            command, 78, f"{path}: {problem}\n")
