"""Reload (bridge.reload) on the service tree with stand-in parts, and what systemd hears: the
exact datagrams on a real AF_UNIX socket, the tree before and after, one log line per change."""

import signal
import socket
import subprocess
import sys

import pytest
from twisted.application.service import Service
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs

from bridge.config import load_config
from bridge.reload import modems_to_restart
from bridge.service import make_service
from tests.e2e_bed import free_port
from tests.test_cli import ENV, RUN_WITH_FAKE_PARTS
from tests.test_systemd import notify_socket, received  # noqa: F401 (a fixture)

BASE = """\
[cellbridge]
{general}
[modem:main]
port = sim
apn = internet
{modem}
[modem:spare]
port = sim
apn = spare
[profile:web]
modem = main
listen = tcp:8080
remote = tcp:10.0.0.1:80
{profiles}
"""


def ini(general="", modem="", profiles=""):
    return BASE.format(general=general, modem=modem, profiles=profiles)


class Reactor(MemoryReactorClock):
    """Memory reactor with a listenUDP (MemoryReactorClock has none)."""

    taken = ()  #: ports that cannot be bound

    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
        return self.listenTCP(port, Factory(), interface=interface)

    def listenTCP(self, port, factory, backlog=50, interface=""):
        if port in self.taken:
            raise CannotListenError(interface, port, OSError(98, "Address already in use"))
        return super().listenTCP(port, factory, backlog, interface)


class Admission(Factory):
    """Stands in for a tcp profile's Admission: no links, notes what it is retargeted to."""

    protocol = Protocol
    sockets = ()

    def __init__(self, events):
        self.events = events

    def retarget(self, profile, modem):
        self.events.append(("retarget", profile.name, modem.name))

    def finish_links(self):
        return 0

    def abort_links(self):
        return 0


class Parts:
    """Stand-in modem, proxy and server parts that note what was built, started and stopped."""

    def __init__(self):
        self.events = []

    def _service(self, what):
        parts = self

        class Noted(Service):
            def startService(self):
                super().startService()
                parts.events.append(("start", what))

            def stopService(self):
                super().stopService()
                parts.events.append(("stop", what))
        return Noted()

    def modem_service(self, modem, root):
        return self._service(f"modem:{modem.name}")

    def stream_factory(self, profile, modem_service, root):
        self.events.append(("factory", profile.name, modem_service.name))
        return Admission(self.events)

    def datagram_protocol(self, profile, modem_service, root):
        return DatagramProtocol()

    def server_service(self, server, modem_service, root):
        return self._service(f"server:{server.name}")

    def control(self, root):
        """A test double of a ``[cellbridge]`` key's child (the control socket's); ``tcp:...``
        cannot be bound."""
        address = root.config.general.control
        if not address:
            return None
        child = self._service(f"control at {address}")
        if address.startswith("tcp:"):
            def refuse():
                raise CannotListenError("127.0.0.1", 1, OSError(98, "Address already in use"))
            child.privilegedStartService = refuse
        return child


@pytest.fixture
def tree(tmp_path, notify_socket):  # noqa: F811
    sock, path = notify_socket
    config = tmp_path / "cellbridge.ini"
    parts = Parts()

    def build(text):
        config.write_text(text)
        reactor = Reactor()
        root = make_service(load_config(str(config)), reactor, parts, {"NOTIFY_SOCKET": path},
                            general_children={"control": parts.control})
        root.notifier._monotonic = lambda: 123456789
        levels = []
        root.set_log_level = levels.append
        root.privilegedStartService()
        root.startService()
        received(sock)  # READY=1 of the start
        parts.events.clear()

        def reload(new_text):
            config.write_text(new_text)
            with capturedLogs() as events:
                done = root.reload(str(config))
            assert done.called
            lines = [event["log_format"].format(**event) for event in events
                     if event["log_namespace"].startswith("bridge.")]
            return lines, received(sock)
        root.test = type("T", (), {"reload": staticmethod(reload), "levels": levels,
                                   "reactor": reactor, "events": parts.events})
        return root
    return build


def listeners(reactor):
    return [(port, interface) for port, _, _, interface in reactor.tcpServers]


def test_an_added_profile_binds_and_nothing_else_is_touched(tree):
    root = tree(ini())
    lines, notices = root.test.reload(ini(profiles="[profile:mail]\nmodem = main\n"
                                                   "listen = tcp:2525\nremote = tcp:10.0.0.1:25\n"))
    assert notices == ["RELOADING=1\nMONOTONIC_USEC=123456789",
                       "READY=1\nSTATUS=listening: 2 listener(s)"]
    assert listeners(root.test.reactor) == [(8080, "127.0.0.1"), (2525, "127.0.0.1")]
    assert root.test.events == [("factory", "mail", "modem:main")]
    path = root.config.path
    assert lines == ["reload: [profile:mail] added: listening on tcp:2525:interface=127.0.0.1",
                     f"reloaded {path}: [profile:mail] added: listening on "
                     "tcp:2525:interface=127.0.0.1",
                     "listening: 2 listener(s): [profile:web] tcp:8080:interface=127.0.0.1, "
                     "[profile:mail] tcp:2525:interface=127.0.0.1"]


def test_a_broken_config_is_refused_and_the_old_one_stays(tree):
    root = tree(ini())
    before = root.config
    lines, notices = root.test.reload(ini(modem="baudrat = 9600"))
    assert notices == ["RELOADING=1\nMONOTONIC_USEC=123456789",
                       "READY=1\nSTATUS=listening: 1 listener(s)"]
    assert root.config is before and root.test.events == []
    path = before.path
    assert lines == [f"{path}: [modem:main] baudrat: unknown key (did you mean 'baudrate'?)",
                     f"reload refused: 1 problem(s) in {path}; running on as before",
                     "listening: 1 listener(s): [profile:web] tcp:8080:interface=127.0.0.1"]


def test_a_changed_modem_restarts_it_alone_and_its_profile_keeps_its_listener(tree):
    root = tree(ini())
    web = root.getServiceNamed("profile:web")
    lines, _ = root.test.reload(ini(modem="send_window = 2920"))
    assert root.test.events == [("stop", "modem:main"), ("start", "modem:main"),
                                ("retarget", "web", "modem:main")]
    assert root.getServiceNamed("modem:main").running
    assert root.getServiceNamed("profile:web") is web and web.running
    assert lines[0] == "reload: [modem:main] restarted: its links reset"


def test_a_profile_with_a_new_listen_address_is_bound_anew_with_its_factory(tree):
    root = tree(ini())
    web = root.getServiceNamed("profile:web")
    lines, _ = root.test.reload(ini().replace("listen = tcp:8080", "listen = tcp:8088"))
    moved = root.getServiceNamed("profile:web")
    assert not web.running and moved.running and moved.factory is web.factory  # links stay
    assert listeners(root.test.reactor)[-1] == (8088, "127.0.0.1")
    assert root.test.events == [("retarget", "web", "modem:main")]
    assert lines[0] == "reload: [profile:web] changed: listening on tcp:8088:interface=127.0.0.1"


def test_a_port_that_cannot_be_bound_is_logged_and_the_rest_applies(tree):
    root = tree(ini())
    root.test.reactor.taken = (2525,)
    lines, notices = root.test.reload(ini(profiles="".join(
        f"[profile:{name}]\nmodem = main\nlisten = tcp:{port}\nremote = tcp:10.0.0.1:25\n"
        for name, port in (("mail", 2525), ("news", 2626)))))
    assert "profile:mail" not in root.namedServices and root.getServiceNamed("profile:news").running
    assert notices[-1] == "READY=1\nSTATUS=listening: 2 listener(s)"
    assert lines[:2] == ["reload: [profile:mail] listen: Couldn't listen on 127.0.0.1:2525: "
                         "[Errno 98] Address already in use. (not listening; the rest applies)",
                         "reload: [profile:news] added: listening on tcp:2626:interface=127.0.0.1"]


def test_a_changed_udp_profile_is_replaced_and_a_removed_one_closes_its_port(tree):
    dns = "[profile:dns]\nmodem = main\nlisten = udp:5353\nremote = udp:10.0.0.1:{0}\n"
    root = tree(ini(profiles=dns.format(53)))
    old = root.getServiceNamed("profile:dns")
    lines, _ = root.test.reload(ini(profiles=dns.format(5300)))
    new = root.getServiceNamed("profile:dns")
    assert new is not old and new.running and not old.running
    assert lines[0] == "reload: [profile:dns] changed: listening on udp:5353:interface=127.0.0.1"
    lines, _ = root.test.reload(ini())
    assert "profile:dns" not in root.namedServices and not new.running
    assert lines[0] == "reload: [profile:dns] removed: port closed, its sessions ended"


def test_a_removed_profile_stops_listening(tree):
    root = tree(ini(profiles="[profile:mail]\nmodem = main\nlisten = tcp:2525\n"
                             "remote = tcp:10.0.0.1:25\n"))
    mail = root.getServiceNamed("profile:mail")
    lines, _ = root.test.reload(ini())
    assert "profile:mail" not in root.namedServices and not mail.running
    assert lines[0] == "reload: [profile:mail] removed: listener closed, 0 link(s) ending"


def test_log_level_applies_at_once_and_a_key_with_a_child_replaces_it(tree):
    root = tree(ini(general="control = unix:/run/a.sock"))
    assert root.getServiceNamed("control").running
    lines, _ = root.test.reload(ini(general="control = unix:/run/b.sock\nlog_level = debug\n"
                                            "state_dir = /var/lib/other"))
    assert root.test.levels == ["debug"]
    assert root.test.events == [("stop", "control at unix:/run/a.sock"),
                                ("start", "control at unix:/run/b.sock")]
    assert lines[:3] == ["reload: control: restarted", "reload: log_level info -> debug",
                         "reload: [cellbridge] state_dir changed: applies at the next start"]
    lines, _ = root.test.reload(ini(general="log_level = debug\nstate_dir = /var/lib/other"))
    assert "control" not in root.namedServices
    assert lines[0] == "reload: control: stopped"


def test_a_modem_restarted_with_state_dir_changed_keeps_the_running_state_dir(tree):
    """state_dir applies at the next start, for a modem a reload restarts too: its PIN record,
    data usage and dumps stay where they are (a PIN the SIM rejected is never sent again)."""
    root = tree(ini())
    before = root.config.general.state_dir
    seen = []
    service = root.components.modem_service
    root.components.modem_service = lambda modem, root: (
        seen.append(root.config.general.state_dir) or service(modem, root))
    lines, _ = root.test.reload(ini(general="state_dir = /var/lib/other",
                                    modem="send_window = 2920"))
    assert seen == [before] and root.config.general.state_dir == before
    assert "reload: [cellbridge] state_dir changed: applies at the next start" in lines


def test_a_keys_child_that_cannot_bind_is_logged_and_the_rest_applies(tree):
    root = tree(ini(general="control = unix:/run/a.sock"))
    lines, notices = root.test.reload(ini(general="control = tcp:1\nlog_level = warn"))
    assert "control" not in root.namedServices and root.test.levels == ["warn"]
    assert notices[-1].startswith("READY=1")
    assert lines[:2] == ["reload: [control] listen: Couldn't listen on 127.0.0.1:1: [Errno 98] "
                         "Address already in use. (not listening; the rest applies)",
                         "reload: log_level info -> warn"]


@pytest.mark.parametrize("change, restarted", [
    ("", set()),
    ("[profile:web2]\nmodem = main\nlisten = tcp:8081\nremote = tcp:10.0.0.1:80\n", set()),
    ("[profile:web2]\nmodem = main\nlisten = tcp:8081\nremote = tcp:10.0.0.1:80\ncontext = 1\n",
     {"main"}),  # bring-up must activate the second context
    ("[server:ssh]\nmodem = spare\nport = 2222\nforward = tcp:127.0.0.1:22\n", {"spare"}),
])
def test_which_modems_restart(tmp_path, change, restarted):
    old, new = tmp_path / "old.ini", tmp_path / "new.ini"
    old.write_text(ini())
    new.write_text(ini(profiles=change))
    assert modems_to_restart(load_config(str(old)), load_config(str(new))) == restarted


def test_sighup_under_twistd_reloads_too(tmp_path):
    """twistd leaves SIGHUP alone: the plugin's tree installs the same reload as ``run``."""
    first, second = free_port(), free_port()
    config = tmp_path / "twistd.ini"
    profile = "[profile:{0}]\nlisten = tcp:{1}\nremote = tcp:127.0.0.1:7\n"
    config.write_text("[modem:main]\nport = sim\n" + profile.format("one", first))
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(30)
    script = RUN_WITH_FAKE_PARTS.split("from bridge.cli import main")[0] + (
        "from twisted.scripts.twistd import run\nsys.argv[0] = 'twistd'\nrun()\n")
    env = dict(ENV, NOTIFY_SOCKET=str(tmp_path / "notify"))
    env.pop("WATCHDOG_USEC", None)
    process = subprocess.Popen(
        [sys.executable, "-c", script, "-n", "--pidfile=", "--logfile=-", "cellbridge", "-c",
         str(config)], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    try:
        assert notify.recv(4096).startswith(b"READY=1")
        config.write_text(config.read_text() + profile.format("two", second))
        process.send_signal(signal.SIGHUP)
        assert notify.recv(4096).startswith(b"RELOADING=1\nMONOTONIC_USEC=")
        assert notify.recv(4096) == b"READY=1\nSTATUS=listening: 2 listener(s)"
        with socket.create_connection(("127.0.0.1", second), timeout=30) as client:
            client.sendall(b"echo")
            assert client.recv(4) == b"echo"
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
        notify.close()
    assert "reload: [profile:two] added: listening on tcp:" in output
