"""The `cellbridge` command: exit statuses, messages, delegation, and `run` as a real process."""

import os
import pathlib
import select
import signal
import socket
import subprocess
import sys
import types

import pytest
from twisted.application.service import MultiService, Service
from twisted.logger import capturedLogs

from bridge import __version__
from bridge.cli import main
from bridge.errors import SimLocked
from bridge.traffic import save_traffic_rings
from tests.e2e_bed import free_port

REPO = pathlib.Path(__file__).parent.parent
CLI = [sys.executable, "-m", "bridge.cli"]
ENV = dict(os.environ, PYTHONPATH=str(REPO))


def cellbridge(*args, env=ENV):
    return subprocess.run(CLI + list(args), capture_output=True, text=True, env=env, timeout=60)


def test_check_ok(tmp_path):
    result = cellbridge("check", "-c", str(REPO / "configs" / "sim.ini"))
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.endswith("sim.ini: OK (1 modem(s), 2 profile(s), 2 server(s))\n")


def test_check_bad_config_exits_78_with_one_line_per_problem(tmp_path):
    path = tmp_path / "bad.ini"
    path.write_text("[modem:main]\nprot = /dev/ttyUSB0\n")
    result = cellbridge("check", "-c", str(path))
    assert result.returncode == 78
    assert result.stderr.splitlines() == [
        f"{path}: [modem:main] prot: unknown key (did you mean 'port'?)",
        f"{path}: [modem:main] port: required key is missing"]
    assert result.stdout == ""


def test_check_missing_file_exits_78(tmp_path):
    result = cellbridge("check", "-c", str(tmp_path / "absent.ini"))
    assert (result.returncode, result.stderr) == (
        78, f"{tmp_path / 'absent.ini'}: cannot read the config file: No such file or directory\n")


def test_check_warns_about_sleep_without_dtr_but_passes(tmp_path):
    path = tmp_path / "sleepy.ini"
    path.write_text("[modem:main]\nport = sim\nsleep = yes\n[profile:p]\nlisten = tcp:1\n"
                    "remote = tcp:h:1\n")
    result = cellbridge("check", "-c", str(path))
    assert result.returncode == 0
    assert result.stderr == (f"{path}: [modem:main] sleep: warning: port = sim cannot drive the "
                             "DTR line (a pty or a TCP socket has none), so sleep control will "
                             "not work\n")


@pytest.mark.parametrize("args", [[], ["frobnicate"], ["check"], ["run"], ["check", "-x"]])
def test_bad_command_line_exits_2(args):
    result = cellbridge(*args)
    assert result.returncode == 2
    assert result.stderr.startswith("usage: cellbridge")
    assert "Traceback" not in result.stderr


def test_version_and_help():
    assert cellbridge("--version").stdout == f"cellbridge {__version__}\n"
    help_text = cellbridge("--help").stdout
    for command in ("run", "check", "sim", "probe", "78 bad config", "3 SIM locked"):
        assert command in help_text


@pytest.fixture
def fake_delegates(monkeypatch):
    """Stand-ins for bridge.sim.cli and bridge.modem.probe (other packages own the real ones)."""
    calls = []

    def install(name, main_function):
        module = types.ModuleType(name)
        module.main = main_function
        monkeypatch.setitem(sys.modules, name, module)

    install("bridge.sim.cli", lambda argv: calls.append(("sim", argv)) or 0)

    def probe(argv):
        calls.append(("probe", argv))
        raise SimLocked("SIM PIN rejected; not retrying (remembered in /var/lib/cellbridge)")

    install("bridge.modem.probe", probe)
    return calls


def test_sim_and_probe_get_their_arguments_verbatim(fake_delegates, capsys):
    assert main(["sim", "--baud", "115200", "--help"]) == 0
    assert main(["probe", "-c", "x.ini"]) == 3
    assert fake_delegates == [("sim", ["--baud", "115200", "--help"]), ("probe", ["-c", "x.ini"])]
    assert capsys.readouterr().err == (
        "cellbridge: SIM PIN rejected; not retrying (remembered in /var/lib/cellbridge)\n")


# `cellbridge run` as a real process. The modem and proxy packages are replaced by an inert modem
# service and an echo factory, so what is tested is this package's part: bind, READY, SIGTERM,
# exit statuses.
RUN_WITH_FAKE_PARTS = """
import sys
import bridge.service
from twisted.application.service import Service
from twisted.internet.protocol import Factory
from twisted.protocols.wire import Echo
import os
from bridge.at.dumps import DumpFiles
from bridge.at.ring import TrafficRing
from bridge.errors import SimLocked

class Parts:
    def modem_service(self, modem, root):
        if modem.apn == "locked-sim":
            root.reactor.callWhenRunning(root.fail, SimLocked("SIM PIN rejected"))
        service = Service()
        dumps = DumpFiles(os.path.join(root.config.general.state_dir, "dumps"), "modem-main")
        # what a Modem's ring holds after a PIN entry
        service.ring = TrafficRing(root.reactor, dumps=dumps)
        service.ring.add_secret(b"s3cret")
        service.ring.sent(b'AT+CPIN="4711"\\r')
        service.ring.received(b"OK")
        service.ring.sent(b'AT+QICSGP=1,"internet","user","s3cret"\\r')
        service.ring.received_payload(b"+RECEIVE: 0, 6", b"s3cret")
        return service

    def stream_factory(self, profile, modem_service, root):
        return Factory.forProtocol(Echo)

bridge.service.Components = Parts
from bridge.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture
def run_bridge(tmp_path):
    notify_path = str(tmp_path / "notify")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.settimeout(30)
    processes = []

    def start(port, apn="internet", state_dir=tmp_path / "state"):
        config = tmp_path / "run.ini"
        config.write_text(f"[cellbridge]\nstate_dir = {state_dir}\n"
                          f"[modem:main]\nport = sim\napn = {apn}\n"
                          f"[profile:echo]\nlisten = tcp:{port}\nremote = tcp:127.0.0.1:7\n")
        env = dict(ENV, NOTIFY_SOCKET=notify_path)
        env.pop("WATCHDOG_USEC", None)
        process = subprocess.Popen(
            [sys.executable, "-c", RUN_WITH_FAKE_PARTS, "run", "-c", str(config)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        processes.append(process)
        return process, notify

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=30)
    notify.close()


def test_run_binds_notifies_ready_and_stops_cleanly_on_sigterm(run_bridge):
    port = free_port()
    process, notify = run_bridge(port)
    assert notify.recv(4096) == b"READY=1\nSTATUS=listening: 1 listener(s)"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
        client.sendall(b"ping\r\n")
        echoed = b""
        while len(echoed) < 6 and (chunk := client.recv(100)):
            echoed += chunk
        assert echoed == b"ping\r\n"
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert notify.recv(4096) == b"STOPPING=1"


def test_run_exits_3_when_the_sim_is_locked(run_bridge):
    process, _ = run_bridge(free_port(), apn="locked-sim")
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 3
    assert "stopping: SIM PIN rejected" in stderr


def test_run_stops_with_a_clear_error_when_the_port_is_taken(run_bridge):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process, _ = run_bridge(port)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 1
    assert stderr.splitlines()[-1] == (f"cellbridge: [profile:echo] listen: Couldn't listen on "
                                       f"127.0.0.1:{port}: [Errno 98] Address already in use.")


def read_until(stream, marker: str, timeout: float = 30) -> str:
    """What ``stream`` (a pipe) gave until ``marker`` showed up; bounded by ``timeout``."""
    descriptor, got = stream.fileno(), b""
    while marker.encode() not in got:
        readable, _, _ = select.select([descriptor], [], [], timeout)
        chunk = os.read(descriptor, 65536) if readable else b""
        assert chunk, f"{marker!r} did not come; got {got!r}"
        got += chunk
    return got.decode()


def test_sigusr1_saves_every_modems_traffic_ring_to_a_file_without_secrets(run_bridge, tmp_path):
    process, notify = run_bridge(free_port())
    assert notify.recv(4096).startswith(b"READY=1")
    process.send_signal(signal.SIGUSR1)
    logged = read_until(process.stderr, ".log\n")
    (line,) = [line for line in logged.splitlines() if "SIGUSR1" in line]
    path = line.split("modem:main: SIGUSR1: AT traffic saved to ", 1)[1]
    assert pathlib.Path(path).parent == tmp_path / "state" / "dumps"
    saved = pathlib.Path(path).read_text()
    assert "> b'AT+CPIN=***\\r'" in saved and "< b'OK'" in saved and "+RECEIVE: 0, 6" in saved
    assert "4711" not in saved and "s3cret" not in saved
    assert "AT+CPIN" not in logged  # the log names the file, the ring is in it
    process.send_signal(signal.SIGTERM)  # and it keeps running until told to stop
    process.communicate(timeout=30)
    assert process.returncode == 0


def test_sigusr1_with_an_unwritable_state_dir_logs_the_newest_entries(run_bridge, tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    process, notify = run_bridge(free_port(), state_dir=blocker)
    assert notify.recv(4096).startswith(b"READY=1")
    process.send_signal(signal.SIGUSR1)
    logged = read_until(process.stderr, "+RECEIVE")
    assert f"cannot write AT traffic dumps to {blocker}/dumps" in logged
    assert "modem:main: SIGUSR1: last AT traffic:" in logged and "AT+CPIN=***" in logged
    assert "4711" not in logged and "s3cret" not in logged
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=30)
    assert process.returncode == 0


def test_ring_dump_covers_modems_only_and_says_when_a_port_never_opened():
    root = MultiService()
    for name, ring in (("modem:idle", None), ("profile:web", "not a modem's")):
        child = Service()
        child.setName(name)
        child.ring = ring
        child.setServiceParent(root)
    with capturedLogs() as events:
        save_traffic_rings(root)
    assert [event["log_format"].format(**event) for event in events] == [
        "modem:idle: no AT traffic yet (SIGUSR1)"]
