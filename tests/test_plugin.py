"""The twistd plugin and the service tree it shares with `cellbridge run` (bridge.tap, bridge.service)."""

import importlib.metadata
import os
import pathlib
import signal
import subprocess
import sys

import pytest
from twisted.application.service import IServiceMaker, Service
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, RaisingMemoryReactor
from twisted.plugin import IPlugin, getPlugins
from twisted.python import usage
from zope.interface.verify import verifyObject

import bridge.service
from bridge import tap
from bridge.config import load_config
from bridge.errors import CellbridgeError, SimLocked
from bridge.service import make_service

REPO = pathlib.Path(__file__).parent.parent

CONFIG = """
[modem:main]
port = sim
[profile:web]
listen = tcp:8080
remote = tcp:127.0.0.1:8000
[profile:lan]
listen = tcp:8081:interface=0.0.0.0
remote = tcp:127.0.0.1:8001
[profile:dns]
listen = udp:5353
remote = udp:127.0.0.1:53
[server:ssh]
port = 2020
forward = tcp:127.0.0.1:22
"""


class UDPMemoryReactor(MemoryReactorClock):
    """MemoryReactorClock has no listenUDP; record the calls like listenTCP does."""

    def __init__(self):
        super().__init__()
        self.udpServers = []

    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
        self.udpServers.append((port, protocol, interface, maxPacketSize))
        return object()


class FakeComponents:
    """Stands in for the modem and proxy packages; records what the tree asked for."""

    def __init__(self):
        self.calls = []

    def modem_service(self, modem, root):
        self.calls.append(("modem", modem.name))
        return Service()

    def stream_factory(self, profile, modem_service, root):
        self.calls.append(("stream", profile.name, modem_service.name))
        return Factory.forProtocol(Protocol)

    def datagram_protocol(self, profile, modem_service, root):
        self.calls.append(("datagram", profile.name, modem_service.name))
        return DatagramProtocol()

    def server_service(self, server, modem_service, root):
        self.calls.append(("server", server.name, modem_service.name))
        return Service()


@pytest.fixture
def config_path(tmp_path):
    path = tmp_path / "cellbridge.ini"
    path.write_text(CONFIG)
    return str(path)


def test_plugin_is_discovered():
    makers = {maker.tapname: maker for maker in getPlugins(IServiceMaker)}
    maker = makers["cellbridge"]
    assert verifyObject(IServiceMaker, maker) and verifyObject(IPlugin, maker)
    assert maker.options is tap.Options


def test_no_init_py_hides_or_shadows_anything():
    assert not (REPO / "twisted" / "__init__.py").exists()
    assert not (REPO / "twisted" / "plugins" / "__init__.py").exists()


def test_options_load_the_config(config_path):
    options = tap.Options()
    options.parseOptions(["-c", config_path])
    assert options.cellbridge_config == load_config(config_path)


def test_options_turn_config_problems_into_a_usage_error(tmp_path):
    path = tmp_path / "bad.ini"
    path.write_text("[modem:main]\nport = sim\nbaudrat = 9600\n")
    with pytest.raises(usage.UsageError) as caught:
        tap.Options().parseOptions(["--config", str(path)])
    assert str(caught.value) == f"{path}: [modem:main] baudrat: unknown key (did you mean 'baudrate'?)"


def test_options_require_a_config():
    with pytest.raises(usage.UsageError, match="--config FILE is required"):
        tap.Options().parseOptions([])


def test_make_service_builds_the_named_tree(config_path, monkeypatch):
    fakes = FakeComponents()
    monkeypatch.setattr(bridge.service, "Components", lambda: fakes)
    options = tap.Options()
    options.parseOptions(["-c", config_path])
    reactor = UDPMemoryReactor()
    root = tap.makeService(options, reactor)

    assert [child.name for child in root] == [
        "modem:main", "profile:web", "profile:lan", "profile:dns", "server:ssh", "systemd"]
    assert fakes.calls == [("modem", "main"), ("stream", "web", "modem:main"),
                           ("stream", "lan", "modem:main"), ("datagram", "dns", "modem:main"),
                           ("server", "ssh", "modem:main")]
    root.privilegedStartService()
    assert [(port, interface) for port, _, _, interface in reactor.tcpServers] == [
        (8080, "127.0.0.1"), (8081, "0.0.0.0")]
    assert [(port, interface) for port, _, interface, _ in reactor.udpServers] == [
        (5353, "127.0.0.1")]


def test_ready_only_after_every_readiness_deferred(tmp_path, config_path):
    from twisted.internet.defer import Deferred

    sent = []
    root = make_service(load_config(config_path), UDPMemoryReactor(), FakeComponents(), environ={})
    root.notifier.notify = lambda *lines: sent.append(lines)
    serial_open = Deferred()
    root.add_readiness(serial_open)
    root.privilegedStartService()
    root.startService()
    assert sent == []
    serial_open.callback(None)
    assert sent == [("READY=1", "STATUS=listening: 3 listener(s)")]
    root.stopService()
    assert sent[-1] == ("STOPPING=1",)


def test_health_is_every_check(config_path):
    root = make_service(load_config(config_path), UDPMemoryReactor(), FakeComponents(), environ={})
    assert root.healthy()
    verdicts = [True, True]
    root.add_health_check(lambda: verdicts[0])
    root.add_health_check(lambda: verdicts[1])
    assert root.healthy()
    verdicts[1] = False
    assert not root.healthy()


def test_failed_bind_stops_start_up_naming_the_profile(config_path):
    error = CannotListenError("127.0.0.1", 8080, OSError(98, "Address already in use"))
    reactor = RaisingMemoryReactor(listenException=error)
    config = load_config(config_path)
    config.profiles.pop("dns")  # RaisingMemoryReactor has no listenUDP either
    root = make_service(config, reactor, FakeComponents(), environ={})
    with pytest.raises(CellbridgeError) as caught:
        root.privilegedStartService()
    assert str(caught.value) == ("[profile:web] listen: Couldn't listen on 127.0.0.1:8080: "
                                 "[Errno 98] Address already in use.")


def test_fail_records_the_exit_status_and_stops_the_reactor(config_path):
    reactor = UDPMemoryReactor()
    root = make_service(load_config(config_path), reactor, FakeComponents(), environ={})
    reactor.running = True
    stops = []
    reactor.stop = lambda: stops.append(True)
    root.fail(SimLocked("SIM PIN rejected"))
    root.fail(RuntimeError("a later, secondary error"))
    assert (root.exit_status, stops) == (3, [True])


def test_twistd_lists_the_plugin_and_reports_config_problems_as_usage_errors(tmp_path):
    bad = tmp_path / "bad.ini"
    bad.write_text("[modem:main]\nport = sim\n[profile:p]\nlisten = tcp:1\nremote = tcp:a\"b:1\n")
    twistd = [sys.executable, "-c", "import sys; from twisted.scripts.twistd import run; "
                                    "sys.argv[0] = 'twistd'; run()"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    listing = subprocess.run(twistd + ["--help"], capture_output=True, text=True, env=env,
                             cwd=tmp_path, timeout=60)
    assert "cellbridge" in listing.stdout
    result = subprocess.run(twistd + ["-n", "--pidfile=", "cellbridge", "-c", str(bad)],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert result.returncode == 1  # twistd prints its usage text and then the message, on stdout
    assert result.stdout.rstrip().splitlines()[-1].endswith(
        f"{bad}: [profile:p] remote: contains a quote, which would end the AT command's string "
        "early (got 'tcp:a\"b:1')")
    assert "Traceback" not in result.stderr


def test_plugin_file_is_lazy():
    text = (REPO / "twisted" / "plugins" / "cellbridge_plugin.py").read_text()
    assert "import bridge" not in text and "from bridge" not in text
    assert text.count("ServiceMaker(") == 1


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.skipif(not _installed("cellbridge"), reason="cellbridge is not installed as a "
                    "distribution in this interpreter (tests/run does `pip install .` first)")
def test_twistd_lists_the_plugin_after_a_plain_install(tmp_path):
    """The installed twisted/plugins file, found without the checkout on the import path."""
    twistd = pathlib.Path(sys.executable).parent / "twistd"
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    listing = subprocess.run([str(twistd), "--help"], capture_output=True, text=True, env=env,
                             cwd=tmp_path, timeout=60)
    assert listing.returncode == 0, listing.stderr
    assert any(line.split()[:1] == ["cellbridge"] for line in listing.stdout.splitlines())


@pytest.mark.parametrize("taken", [False, True])
def test_under_twistd_sigusr1_saves_the_rings_unless_twistd_rotates_its_log_with_it(
        config_path, monkeypatch, taken):
    """twistd takes SIGUSR1 to rotate a --logfile (before the reactor runs); else it is ours."""
    monkeypatch.setattr(bridge.service, "Components", FakeComponents)
    options = tap.Options()
    options.parseOptions(["-c", config_path])
    reactor = UDPMemoryReactor()
    tap.makeService(options, reactor)

    def rotate(signum, frame):
        pass

    previous = signal.signal(signal.SIGUSR1, rotate if taken else signal.SIG_DFL)
    try:
        reactor.run()
        handler = signal.getsignal(signal.SIGUSR1)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert (handler is rotate) if taken else handler not in (signal.SIG_DFL, rotate)
