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


def test_the_python_binary_echo_of_the_readme_goes_through_a_bridge_on_the_simulator(tmp_path):
    echo_port, bridge_port = free_port(), free_port()
    echo_argv = [word.replace('("127.0.0.1", 8000)', f'("127.0.0.1", {echo_port})')
                 for word in python_one_liner("serve_forever")]
    client_argv = [word.replace('("127.0.0.1", 8080)', f'("127.0.0.1", {bridge_port})')
                   for word in python_one_liner("create_connection")]
    assert echo_argv != python_one_liner("serve_forever")  # the ports were found and swapped
    assert client_argv != python_one_liner("create_connection")
    assert "`100000 True`" in TRY_IT

    config = tmp_path / "try.ini"
    config.write_text(f"[cellbridge]\nstate_dir = {tmp_path}\n[modem:sim]\nport = sim\n"
                      "sim_args = --act-delay 0.05\n"
                      f"[profile:web]\nlisten = tcp:{bridge_port}\n"
                      f"remote = tcp:127.0.0.1:{echo_port}\n")
    notify_path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(notify_path)
        notify.settimeout(60)
        echo = subprocess.Popen([sys.executable, *echo_argv[1:]], stderr=subprocess.DEVNULL)
        bridge = subprocess.Popen([sys.executable, "-m", "bridge.cli", "run", "-c", str(config)],
                                  env=dict(ENV, NOTIFY_SOCKET=notify_path),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert notify.recv(4096).startswith(b"READY=1")  # the listener is bound
            wait_until_accepting(echo_port)
            client = subprocess.run([sys.executable, *client_argv[1:]], capture_output=True,
                                    text=True, timeout=60)
        finally:
            for process in (bridge, echo):
                process.terminate()
                process.wait(timeout=30)
    assert (client.returncode, client.stdout, client.stderr) == (0, "100000 True\n", "")


def wait_until_accepting(port: int, attempts: int = 300) -> None:
    """Until the echo listens (else the module's connect would fail); bounded, never a speed."""
    for _ in range(attempts):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")
