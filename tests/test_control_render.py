"""``cellbridge status``'s human form of a snapshot, and where the client connects; the status
of a running service tree end to end through the in-process bed (tests/e2e_bed.py)."""

import socket
from types import SimpleNamespace

import pytest
import pytest_twisted

from bridge.control.client import ControlConnection, ControlUnavailable, control_address
from bridge.control.render import duration, render
from bridge.control.snapshot import status_snapshot
from tests.e2e_bed import Bed, Echo, server

MODEM = {
    "name": "main", "port": "/dev/ttyUSB0", "state": "ready", "state_reason": "local IP 10.0.0.5",
    "state_since": "2026-12-05T04:40:01.123+0000", "state_seconds": 3725.0, "recovering": None,
    "model": "Quectel_Ltd Quectel_M95", "firmware": "M95FAR02A08", "imei": "861234567890125",
    "iccid": "89490200001234567890", "imsi": None, "operator": "Telekom.de",
    "registration": "roaming", "signal_dbm": -71, "csq": 21, "local_ips": {"0": "10.0.0.5"},
    "last_recovery": {"cause": "context lost: +PDP DEACT",
                      "started": "2026-12-05T04:39:50.000+0000",
                      "recovered": "2026-12-05T04:40:01.123+0000", "seconds": 11.1},
    "data_sent": 1200, "data_received": 34000,
    "counters": [{"name": "at_command", "labels": {"command": "+CSQ", "result": "ok"}, "value": 9},
                 {"name": "at_command", "labels": {"command": "+CSQ", "result": "timeout"},
                  "value": 1},
                 {"name": "at_command", "labels": {"command": "+QIACT", "result": "ok"},
                  "value": 2},
                 {"name": "pdp_lost", "labels": {}, "value": 1},
                 {"name": "recovered", "labels": {"step": "reactivate"}, "value": 1}]}
PROFILE = {
    "name": "web", "modem": "main", "protocol": "tcp", "listen": "tcp:8080:interface=127.0.0.1",
    "listening": True, "remote": "example.com:80", "waiting": 2,
    "links": [{"slot": 0, "local": "127.0.0.1:50514", "remote": "example.com:80",
               "state": "connected", "sent": 1200, "received": 34000, "unacked": 0, "age": 75.0,
               "idle": 0.4},
              {"slot": None, "local": "127.0.0.1:50600", "remote": "example.com:80",
               "state": "reopening", "sent": 0, "received": 0, "unacked": 0, "age": 3.0,
               "idle": 2.0}]}
SERVER = {"name": "ssh", "modem": "main", "protocol": "tcp", "port": 2222,
          "forward": "tcp:127.0.0.1:22", "listening": False, "links": []}


def test_the_human_form_is_aligned_blocks_like_mmcli():
    text = render({"version": 1, "modems": [MODEM], "profiles": [PROFILE], "servers": [SERVER]})
    rule = "  " + "-" * 64
    assert text.splitlines() == [
        rule,
        "  modem main  |         state: ready, for 1h02m (local IP 10.0.0.5)",
        "              |         since: 2026-12-05T04:40:01.123+0000",
        "              |          port: /dev/ttyUSB0",
        "              |         model: Quectel_Ltd Quectel_M95",
        "              |      firmware: M95FAR02A08",
        "              |          IMEI: 861234567890125",
        "              |         ICCID: 89490200001234567890",
        "              |          IMSI: --",
        "              |  registration: roaming",
        "              |      operator: Telekom.de",
        "              |        signal: -71 dBm (CSQ 21)",
        "              |      local IP: 10.0.0.5 (context 0)",
        "              | last recovery: context lost: +PDP DEACT, at 2026-12-05T04:39:50.000+0000, "
        "back after 11.1s",
        "              |     data used: 1200 bytes sent, 34000 received",
        "              |   AT commands: 11 ok, 1 timeout",
        "              |      counters: pdp_lost 1",
        "              |                recovered{step=reactivate} 1",
        rule,
        "  profile web |        listen: tcp:8080:interface=127.0.0.1 (listening)",
        "              |        remote: example.com:80",
        "              |         modem: main",
        "              |       waiting: 2",
        "              |         links: slot  local            remote          state      sent  "
        "received  unacked  age    idle",
        "              |                0     127.0.0.1:50514  example.com:80  connected  1200  "
        "34000     0        1m15s  0.4s",
        "              |                --    127.0.0.1:50600  example.com:80  reopening  0     "
        "0         0        3.0s   2.0s",
        rule,
        "  server ssh  |   module port: tcp 2222 (not listening)",
        "              |       forward: tcp:127.0.0.1:22",
        "              |         modem: main",
        "              |         links: none",
        rule]


def test_a_modem_not_up_yet_shows_what_is_unknown_as_dashes():
    modem = {**MODEM, "state": "starting", "state_reason": "", "recovering": "bring-up",
             "state_seconds": 4.0, "model": None, "csq": None, "signal_dbm": None,
             "local_ips": {}, "last_recovery": None, "counters": []}
    lines = render({"modems": [modem], "profiles": [], "servers": []}).splitlines()
    assert "  modem main |         state: starting, for 4.0s; running: bring-up" in lines
    assert "             |         model: --" in lines
    assert "             |        signal: --" in lines
    assert "             |      local IP: --" in lines
    assert "             | last recovery: none" in lines
    assert "             |   AT commands: none" in lines
    assert "             |      counters: none" in lines


@pytest_twisted.ensureDeferred
async def test_the_human_status_of_a_fresh_daemon_is_short(tmp_path):
    """Every AT command the bring-up sent is an ``at_command{command,result}`` series (for
    /metrics and --json); the human form sums them into one ``AT commands`` line, so a modem
    that has done nothing yet is a short block, like ``mmcli -m 0``."""
    async with await Bed.start(tmp_path, server(Echo)) as bed:
        text = render(status_snapshot(bed.root))
        block = text.split("  profile p")[0].splitlines()
        assert len(block) <= 20, f"the modem block is {len(block)} lines:\n" + "\n".join(block)
        [at_commands] = [line for line in block if "AT commands:" in line]
        assert at_commands.endswith(" ok") and "at_command{" not in text


@pytest_twisted.ensureDeferred
async def test_status_shows_a_udp_listen_with_the_interface_it_is_bound_to(tmp_path):
    """A udp profile without ``interface=`` is bound to 127.0.0.1; its listen in status says so,
    as a tcp profile's does (a bare ``udp:PORT`` would read as every interface)."""
    class WithUdp(Bed):
        profile_keys = "[profile:u]\nlisten = udp:0\nremote = udp:127.0.0.1:9\n"

        def bound_port(self, listener):
            if not hasattr(listener, "endpoint"):  # a udp listener
                return lambda: None
            return super().bound_port(listener)

    async with await WithUdp.start(tmp_path, server(Echo), receive="push") as bed:
        profiles = {p["name"]: p for p in status_snapshot(bed.root)["profiles"]}
        assert profiles["p"]["listen"].endswith(":interface=127.0.0.1")
        assert profiles["u"]["listen"] == "udp:0:interface=127.0.0.1"


def test_durations_are_short():
    assert [duration(s) for s in (None, 0.04, 59.94, 60, 3599, 3600, 86399, 90000)] == [
        "--", "0.0s", "59.9s", "1m00s", "59m59s", "1h00m", "23h59m", "1d01h"]


def args(control=None, config="/nonexistent.ini"):
    return SimpleNamespace(control=control, config=config)


def test_the_control_endpoint_is_reached_as_the_config_names_it(tmp_path):
    assert control_address(args("unix:/run/cellbridge/control.sock")) == (
        socket.AF_UNIX, "/run/cellbridge/control.sock", "/run/cellbridge/control.sock")
    assert control_address(args("unix:address=/tmp/a\\:b.sock:mode=600")).address == (
        "/tmp/a:b.sock")
    assert control_address(args("/run/x.sock")).address == "/run/x.sock"
    assert control_address(args("tcp:7070")).address == ("127.0.0.1", 7070)
    assert control_address(args("tcp:port=7070:interface=10.0.0.1")).address == ("10.0.0.1", 7070)
    assert control_address(args("tcp6:7070")) == (socket.AF_INET6, ("::1", 7070), "[::1]:7070")
    config = tmp_path / "c.ini"
    config.write_text("[cellbridge]\ncontrol = unix:/run/c.sock\n[modem:m]\nport = sim\n")
    assert control_address(args(config=str(config))).address == "/run/c.sock"


def test_no_way_to_the_control_socket_is_one_line(tmp_path):
    with pytest.raises(ControlUnavailable, match=r"^cannot reach a systemd: control endpoint from "
                                                 r"here; give --control unix:PATH"):
        control_address(args("systemd:domain=INET:index=0"))
    config = tmp_path / "c.ini"
    config.write_text("[modem:m]\nport = sim\n")
    with pytest.raises(ControlUnavailable, match=r"\[cellbridge\] control is empty"):
        control_address(args(config=str(config)))
    with pytest.raises(ControlUnavailable) as raised:
        control_address(args(config=str(tmp_path / "missing.ini")))
    assert "\n" not in str(raised.value) and "--control" in str(raised.value)


def test_a_socket_the_user_may_not_open_says_how_to_get_access(monkeypatch):
    def refuse(self, address):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    with pytest.raises(ControlUnavailable) as raised:
        ControlConnection(control_address(args("unix:/run/cellbridge/control.sock")))
    assert str(raised.value) == ("control socket /run/cellbridge/control.sock: permission denied "
                                 "(it is mode 0660: join its group, see README, Status and trace)")
