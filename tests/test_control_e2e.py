"""``cellbridge status`` and ``cellbridge trace`` against a daemon running as its own process on
the simulator (benchmarks/bridge_process.py), with ``control = unix:...``, started under umask
077 as the systemd unit starts it; the commands run as processes too, as an operator runs them."""

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading

import pytest

from benchmarks.bridge_process import ROOT, BridgeProcess, free_port, sim_config
from tests.sim_loopback import Peer

PIN = "4321"
CLI = [sys.executable, "-m", "bridge.cli"]
ENV = dict(os.environ, PYTHONPATH=ROOT)


class Daemon:
    def __init__(self, tmp):
        self.echo = Peer("echo")  # the remote every link reaches
        self.port = free_port()
        self.control = os.path.join(tmp, "control.sock")
        self.sim_control = os.path.join(tmp, "sim.sock")
        config = sim_config(tmp, f"--pin {PIN} --control {self.sim_control}",
                            {"echo": {"listen": f"tcp:{self.port}",
                                      "remote": f"tcp:127.0.0.1:{self.echo.port}"}},
                            modem=f"pin = {PIN}\n")
        config = config.replace("[cellbridge]\n", f"[cellbridge]\ncontrol = unix:{self.control}\n")
        self.config = os.path.join(tmp, "control.ini")
        umask = os.umask(0o077)  # the unit's UMask
        try:
            self.process = BridgeProcess(tmp, config, name="control.ini")
        finally:
            os.umask(umask)

    def stop(self):
        self.process.stop()
        self.echo.listener.close()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    running = Daemon(str(tmp_path_factory.mktemp("control")))
    yield running
    running.stop()


def cellbridge(*args):
    return subprocess.run(CLI + list(args), capture_output=True, text=True, env=ENV, timeout=60,
                          cwd=ROOT)


def echoed(app, data):
    app.sendall(data)
    back = b""
    while len(back) < len(data):
        chunk = app.recv(65536)
        assert chunk, "the link closed"
        back += chunk
    assert back == data


def status_json(daemon):
    result = cellbridge("status", "-c", daemon.config, "--json")
    assert (result.returncode, result.stderr) == (0, "")
    return json.loads(result.stdout)


def test_the_control_socket_is_0660_despite_umask_077(daemon):
    assert stat.S_ISSOCK(os.stat(daemon.control).st_mode)
    assert stat.S_IMODE(os.stat(daemon.control).st_mode) == 0o660


def test_status_shows_the_link_of_a_live_transfer_with_growing_byte_counts(daemon):
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=30) as app:
        echoed(app, bytes(range(256)) * 8)
        first = status_json(daemon)
        echoed(app, b"x" * 6000)
        second = status_json(daemon)
        human = cellbridge("status", "--control", f"unix:{daemon.control}")
        local = "127.0.0.1:%d" % app.getsockname()[1]
    [modem] = second["modems"]
    assert (modem["name"], modem["state"], modem["registration"]) == ("main", "ready", "home")
    assert modem["csq"] is not None and modem["local_ips"]["0"]
    [profile] = second["profiles"]
    assert (profile["name"], profile["listening"], profile["waiting"]) == ("echo", True, 0)
    [before], [after] = first["profiles"][0]["links"], profile["links"]
    remote = f"127.0.0.1:{daemon.echo.port}"
    assert (before["local"], before["remote"], before["sent"], before["received"]) == (
        local, remote, 2048, 2048)
    assert (after["local"], after["slot"], after["sent"], after["received"]) == (
        local, before["slot"], 2048 + 6000, 2048 + 6000)
    assert after["state"] == "connected" and after["age"] >= before["age"]
    assert human.returncode == 0, human.stderr
    [row] = [line for line in human.stdout.splitlines() if local in line]
    assert row.split()[-9:-3] == [str(after["slot"]), local, remote, "connected", "8048", "8048"]


def test_trace_prints_the_at_lines_of_a_new_connection_and_redacts_the_pin(daemon):
    trace = subprocess.Popen(CLI + ["trace", "-c", daemon.config], env=ENV, cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines, seen = [], threading.Condition()

    def read():
        for line in trace.stdout:
            with seen:
                lines.append(line)
                seen.notify_all()

    def wait_for(text):
        with seen:
            assert seen.wait_for(lambda: any(text in line for line in lines), timeout=30), (
                f"no trace line with {text!r} in:\n{''.join(lines)}")

    try:
        assert trace.stderr.readline() == "tracing main (Ctrl-C to stop)\n"
        threading.Thread(target=read, daemon=True).start()
        with socket.create_connection(("127.0.0.1", daemon.port), timeout=30) as app:
            echoed(app, b"hello")
        wait_for("AT+QIOPEN=")
        with socket.socket(socket.AF_UNIX) as sim:  # the module reboots: bring-up, PIN again
            sim.settimeout(30)
            sim.connect(daemon.sim_control)
            sim.sendall(b"reboot\n")
            assert sim.recv(100) == b"ok\n"
        wait_for("AT+CPIN=")
    finally:
        trace.send_signal(signal.SIGINT)
        _, stderr = trace.communicate(timeout=30)
    assert (trace.returncode, stderr) == (0, "")  # Ctrl-C: quiet, no traceback
    text = "".join(lines)
    assert all(line.startswith("main: ") for line in lines)
    assert PIN not in text
    assert "> b'AT+CPIN=***\\r'" in text
    assert "> b'[5 bytes 68656c6c6f]'" in text and "hello" not in text  # payload: length, hex


def test_status_without_a_running_daemon_exits_1_with_one_line(tmp_path):
    stale = socket.socket(socket.AF_UNIX)  # a socket file nobody listens on any more
    stale.bind(str(tmp_path / "control.sock"))
    stale.close()
    for target in ("control.sock", "missing.sock"):
        result = cellbridge("status", "--control", f"unix:{tmp_path / target}")
        assert result.returncode == 1 and result.stdout == ""
        assert result.stderr.count("\n") == 1 and "(is the daemon running?)" in result.stderr
    result = cellbridge("trace", "--control", str(tmp_path / "missing.sock"))
    assert result.returncode == 1 and result.stderr == (
        f"cellbridge: control socket {tmp_path / 'missing.sock'}: no such socket (is the daemon "
        "running?)\n")
