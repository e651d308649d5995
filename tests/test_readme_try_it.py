"""The README's "Try it" section as a new user runs it: the bridge is started once (by the quick
start), and its Python-only binary echo, copied from the README, works against a bridge running
on the simulator. Only the two fixed ports are swapped for free ones."""

import re
import shlex
import socket
import subprocess
import sys
import time

from tests.test_cli import ENV, REPO
from tests.e2e_bed import free_port

README = (REPO / "README.md").read_text(encoding="utf-8")
TRY_IT = README.split("## Try it", 1)[1].split("\n## ", 1)[0]
QUICK_START = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
RUN = "cellbridge run -c configs/sim.ini"


def python_one_liner(marker: str) -> list:
    """The argv of the ``python3 -c '...'`` line of the Try it section that contains ``marker``."""
    [line] = [line for line in TRY_IT.splitlines()
              if line.startswith("python3 -c '") and marker in line]
    return shlex.split(line)


def test_the_bridge_is_started_by_the_quick_start_only():
    assert RUN in QUICK_START
    commands = [line for block in re.findall(r"```sh\n(.*?)```", TRY_IT, re.S)
                for line in block.splitlines()]
    assert commands and not any(RUN in line for line in commands)


def with_port(argv: list, readme_port: int, port: int) -> list:
    """``argv`` with the README's ``("127.0.0.1", readme_port)`` made ``port``; it must be there."""
    readme, ours = f'("127.0.0.1", {readme_port})', f'("127.0.0.1", {port})'
    assert any(readme in word for word in argv), argv
    return [word.replace(readme, ours) for word in argv]


def through_a_bridge(tmp_path, kind: str, echo: tuple, client: tuple):
    """Runs the README's echo (the remote) and a bridge on the simulator whose one ``kind``
    profile leads to it, then the README's client; returns the client's finished process.
    ``echo`` and ``client`` are (README line marker, port in the README)."""
    echo_port, bridge_port = free_port(), free_port()
    echo_argv = with_port(python_one_liner(echo[0]), echo[1], echo_port)
    client_argv = with_port(python_one_liner(client[0]), client[1], bridge_port)
    config = tmp_path / "try.ini"
    config.write_text(f"[cellbridge]\nstate_dir = {tmp_path}\n[modem:sim]\nport = sim\n"
                      f"sim_args = --act-delay 0.05\n[profile:try]\nlisten = {kind}:{bridge_port}\n"
                      f"remote = {kind}:127.0.0.1:{echo_port}\n")
    notify_path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(notify_path)
        notify.settimeout(60)
        remote = subprocess.Popen([sys.executable, *echo_argv[1:]], stderr=subprocess.DEVNULL)
        bridge = subprocess.Popen([sys.executable, "-m", "bridge.cli", "run", "-c", str(config)],
                                  env=dict(ENV, NOTIFY_SOCKET=notify_path),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert notify.recv(4096).startswith(b"READY=1")  # the listener is bound
            wait_until_bound(kind, echo_port)
            return subprocess.run([sys.executable, *client_argv[1:]], capture_output=True,
                                  text=True, timeout=60)
        finally:
            for process in (bridge, remote):
                process.terminate()
                process.wait(timeout=30)


def test_the_python_binary_echo_of_the_readme_goes_through_a_bridge_on_the_simulator(tmp_path):
    client = through_a_bridge(tmp_path, "tcp", ("serve_forever", 8000),
                              ("create_connection", 8080))
    assert "`100000 True`" in TRY_IT
    assert (client.returncode, client.stdout, client.stderr) == (0, "100000 True\n", "")


def test_the_python_udp_echo_of_the_readme_goes_through_a_bridge_on_the_simulator(tmp_path):
    client = through_a_bridge(tmp_path, "udp", ("recvfrom", 5300), ('sendto(b"hello"', 5353))
    assert (client.returncode, client.stdout, client.stderr) == (0, "hello\n", "")


def wait_until_bound(kind: str, port: int, attempts: int = 300) -> None:
    """Until the echo has its port (else the module's connection or datagram would find none);
    bounded, never a speed. A udp port is bound once we cannot bind it ourselves."""
    for _ in range(attempts):
        try:
            if kind == "tcp":
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.bind(("127.0.0.1", port))
        except OSError:
            if kind == "udp":
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing has {kind} port {port}")
