"""A ``cellbridge run`` process for the benchmarks: its config file, its log, readiness, stop.

The bridge runs as its own process (``port = sim`` starts the simulator as its child), so a
benchmark measures it from outside, as an application would see it.
"""

import json
import os
import socket
import subprocess
import sys
import threading

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sim_config(tmp, sim_args, profiles, receive="pull", window=5840, modem=""):
    """INI text for a bridge on the built-in simulator (``sim_args`` shape it) with ``profiles``,
    {name: {key: value}}; ``modem`` holds more lines for the modem's section."""
    text = (f"[cellbridge]\nlog_level = info\nstate_dir = {tmp}\n"
            f"[modem:main]\nport = sim\napn = internet\nreceive = {receive}\n"
            f"send_window = {window}\nsim_args = --act-delay 0.05 {sim_args}\n{modem}")
    for name, keys in profiles.items():
        text += f"[profile:{name}]\n" + "".join(f"{key} = {value}\n" for key, value in keys.items())
    return text


def sim_stats(control):
    """The ``stats`` of the simulator whose control socket is ``control`` (a bridge's ``port =
    sim`` child takes the last ``--control PATH`` of its sim_args)."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(control)
        sock.sendall(b"stats\n")
        answer = b""
        while not answer.endswith(b"\n"):
            data = sock.recv(1 << 20)
            if not data:
                break
            answer += data
    return json.loads(answer)


class BridgeProcess:
    """``cellbridge run -c TMP/NAME`` with ``config`` as the INI text; ready once the modem is
    (its "local IP" log line); ``log`` holds every line it printed."""

    def __init__(self, tmp, config, name="bench.ini"):
        path = os.path.join(tmp, name)
        with open(path, "w") as handle:
            handle.write(config)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bridge.cli", "run", "-c", path], cwd=ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": ROOT})
        self.ready = threading.Event()
        self.log = []
        threading.Thread(target=self._read_log, daemon=True).start()
        if not self.ready.wait(60):
            self.stop()
            raise SystemExit("bridge did not become ready:\n" + "".join(self.log[-20:]))

    def _read_log(self):
        for line in iter(self.process.stdout.readline, b""):
            text = line.decode(errors="replace")
            self.log.append(text)
            if ", local IP" in text:
                self.ready.set()

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
