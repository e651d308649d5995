"""The log of a real ``cellbridge run`` on the simulator: at info, one line says what listens
where and Twisted's port and factory lines are gone; at debug, every AT line is there, redacted."""

import re
import socket
import socketserver
import threading
import time

import pytest

from benchmarks.bridge_process import BridgeProcess, sim_config
from tests.e2e_bed import free_port

TWISTED_NOISE = re.compile(r"starting on|Port \S+ Closed|Starting factory|Stopping factory|"
                           r"Starting protocol|Stopping protocol")


class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while data := self.request.recv(4096):
            self.request.sendall(data)


@pytest.fixture
def echo_port():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def run_bridge(tmp_path, echo_port, level, sim_args="", modem=""):
    """A bridge at ``level`` whose profile ``echo`` reaches ``echo_port``: one connection made
    and closed through it, then SIGTERM -> every line it logged."""
    listen = free_port()
    config = sim_config(tmp_path, sim_args, {"echo": {"listen": f"tcp:{listen}",
                                                 "remote": f"tcp:127.0.0.1:{echo_port}"}},
                        modem=modem).replace("log_level = info", f"log_level = {level}")
    bridge = BridgeProcess(str(tmp_path), config)
    try:
        with socket.create_connection(("127.0.0.1", listen), timeout=30) as client:
            client.sendall(b"ping")
            assert client.recv(4) == b"ping"
            client.shutdown(socket.SHUT_WR)
            assert client.recv(4) == b""  # the link closed its way through the module
    finally:
        bridge.stop()
    deadline = time.monotonic() + 30
    while not any("Main loop terminated" in line for line in bridge.log):
        assert time.monotonic() < deadline, "".join(bridge.log[-20:])
        time.sleep(0.05)
    return bridge.log, listen


def test_at_info_no_twisted_port_lines_and_one_line_says_where_it_listens(tmp_path, echo_port):
    log, listen = run_bridge(tmp_path, echo_port, "info")
    assert [line for line in log if TWISTED_NOISE.search(line)] == []
    assert [line.split("] ", 1)[1] for line in log if "listening" in line] == [
        f"listening: 1 listener(s): [profile:echo] tcp:{listen}:interface=127.0.0.1\n"]
    assert [line for line in log if "bridge.traffic" in line] == []  # the AT lines are debug's
    assert any("modem:main: ready, local IP" in line for line in log)  # "ready": the modem's


def test_at_debug_every_at_line_is_logged_redacted(tmp_path, echo_port):
    log, _ = run_bridge(tmp_path, echo_port, "debug", sim_args="--pin 4711", modem="pin = 4711\n")
    traffic = [line.split("[bridge.traffic#debug] ", 1)[1] for line in log
               if "[bridge.traffic#debug] " in line]
    entry = re.compile(r"modem:main: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d{4} [<>] b'.*'\n")
    assert traffic and all(entry.fullmatch(line) for line in traffic)
    assert any(line.endswith("> b'AT+CPIN=***\\r'\n") for line in traffic)
    assert any("> b'AT+QIOPEN=" in line for line in traffic)
    assert any("> b'[4 bytes 70696e67]'" in line for line in traffic)  # payload: length + hex
    assert not any("4711" in line for line in log)
