"""The `python -m bridge.sim` process: device/link/control lines, control socket, clean exit."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from bridge.sim.cli import build_parser, options_from
from sim_loopback import Client

OK = b"\r\nOK\r\n"


@pytest.fixture
def sim_process(tmp_path):
    link, control = tmp_path / "modem", tmp_path / "control.sock"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge.sim", "--link", str(link), "--control", str(control),
         "--act-delay", "0", "--deact-delay", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=os.path.dirname(os.path.dirname(__file__)))
    lines = [proc.stdout.readline().decode().strip() for _ in range(3)]
    yield proc, lines, link, control
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


def control_call(path, line: str) -> str:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(path))
        s.sendall(line.encode() + b"\n")
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            answer += chunk
        return answer.decode().strip()


def test_prints_device_link_and_control_then_serves_the_link(sim_process):
    proc, lines, link, control = sim_process
    assert lines[0].startswith("device: /dev/pts/")
    assert lines[1:] == [f"link: {link}", f"control: {control}"]
    assert os.readlink(link) == lines[0].split(": ")[1]
    c = Client(str(link))
    # boot URCs may still be on their way if the port was opened that early: that is real too
    assert c.at("AT").endswith(b"AT\r" + OK)
    c.close()


def test_control_commands_answer_one_line(sim_process):
    proc, _, link, control = sim_process
    c = Client(str(link))
    c.at("ATE0")
    c.at("AT+QINDI=1")
    stats = json.loads(control_call(control, "stats"))
    assert stats["state"] == "IP INITIAL" and stats["indi"] == 1 and stats["boots"] == 1
    assert [e["cmd"] for e in stats["commands"]] == ["ATE0", "AT+QINDI=1"]
    assert control_call(control, "kill 3") == "error: no socket 3"
    assert control_call(control, "bogus").startswith("error: unknown command")
    assert control_call(control, "garbage 00ff41") == "ok"
    assert c.read_exactly(3) == b"\x00\xffA"
    assert control_call(control, "chaos 5") == "ok"
    assert control_call(control, "connectfail -") == "ok"
    assert control_call(control, "pdp-deact 1") == "ok"  # nothing was up: no URC
    assert control_call(control, "pdp-deact 2") == "error: no context 2"
    assert control_call(control, "dtr off") == "ok"  # not in data mode: nothing happens
    assert control_call(control, "dtr maybe").startswith("error")
    stats = json.loads(control_call(control, "stats"))
    assert not stats["dtr"] and not stats["data_mode"] and not stats["carrier"]
    assert control_call(control, "dtr on") == "ok"
    assert control_call(control, "mute 0.3") == "ok"
    c.write(b"AT\r")
    assert c.read_exactly(6, deadline=0.2) == b""  # muted: nothing comes back
    time.sleep(0.2)  # let the mute run out
    assert control_call(control, "reboot") == "ok"
    c.read_until(b"SMS Ready\r\n")
    assert json.loads(control_call(control, "stats"))["boots"] == 2
    c.close()


def test_sigterm_exits_zero_and_removes_link(sim_process):
    proc, _, link, _ = sim_process
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert not os.path.lexists(link)


def test_flow_control_and_uart_buffer_options():
    default = options_from(build_parser().parse_args([]))
    assert (default.flow_control, default.uart_rx_buffer) == (True, 4096)
    changed = options_from(build_parser().parse_args(["--no-flow-control", "--uart-rx-buffer", "512"]))
    assert (changed.flow_control, changed.uart_rx_buffer) == (False, 512)
