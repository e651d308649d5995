"""SIGHUP reload and SIGTERM stop of a real `cellbridge run` process, end to end: real local
sockets -> the bridge process -> pty -> the in-process simulator -> loopback echo servers.

The simulator and the servers run on this test's reactor, the bridge in its own process (signals
are what is tested); what systemd would hear arrives on a datagram socket of the test's. Every
wait is bounded; nothing asserts wall-clock speed.
"""

import os
import socket
import sys

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.logger import capturedLogs, formatEvent

from bridge.config import load_config
from bridge.errors import ConfigError
from bridge.sim import SimOptions, Simulator
from tests.e2e_bed import (Echo, ResetSeen, connect, free_port, salted, server, sha, until,
                           within)
from tests.test_server_e2e import start as start_server_bed

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class BridgeProcess(protocol.ProcessProtocol):
    """``cellbridge run -c CONFIG``: its log lines as they come, ``exited`` with its status."""

    def __init__(self):
        self.log = ""
        self.exited = defer.Deferred()

    def errReceived(self, data):
        self.log += data.decode(errors="replace")

    outReceived = errReceived

    def processEnded(self, reason):
        self.exited.callback(reason.value.exitCode)

    def lines(self, text):
        return [line for line in self.log.splitlines() if text in line]


class Gateway:
    """Simulators by modem name, one echo server, the bridge process and what it notified."""

    def __init__(self, tmp_path, modems=("main",)):
        self.tmp_path = tmp_path
        self.sims = {name: Simulator(reactor, SimOptions(baud=0, act_delay=0.05))
                     for name in modems}
        self.echo = server(Echo)
        self.remote = None
        self.config = tmp_path / "gateway.ini"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(tmp_path / "notify"))
        self.notify.setblocking(False)
        self.notices = []
        self.bridge = None
        self.transport = None

    def ini(self, profiles, modem_keys=""):
        """The config text: ``profiles`` {name: (port, modem[, remote port])} (the remote is the
        echo server unless given); ``modem_keys`` go to the last modem's section."""
        text = f"[cellbridge]\nlog_level = info\nstate_dir = {self.tmp_path}\n"
        for name, sim in self.sims.items():
            text += f"[modem:{name}]\nport = {sim.device}\napn = internet\nreceive = pull\n"
        text += modem_keys
        for name, (port, modem, *remote) in profiles.items():
            remote = remote[0] if remote else self.remote.getHost().port
            text += (f"[profile:{name}]\nmodem = {modem}\nlisten = tcp:{port}:interface=127.0.0.1\n"
                     f"remote = tcp:127.0.0.1:{remote}\nlinger = 0.2\n")
        return text

    async def start(self, profiles, modem_keys=""):
        for sim in self.sims.values():
            sim.start()
        self.remote = reactor.listenTCP(0, self.echo, interface="127.0.0.1")
        self.config.write_text(self.ini(profiles, modem_keys))
        self.bridge = BridgeProcess()
        env = dict(os.environ, PYTHONPATH=REPO, NOTIFY_SOCKET=str(self.tmp_path / "notify"))
        env.pop("WATCHDOG_USEC", None)
        env.pop("JOURNAL_STREAM", None)
        self.transport = reactor.spawnProcess(
            self.bridge, sys.executable, [sys.executable, "-m", "bridge.cli", "run", "-c",
                                          str(self.config)], env=env, path=REPO)
        await self.notified("READY=1")
        await until(lambda: len(self.bridge.lines(", local IP")) == len(self.sims), timeout=30,
                    what="every modem's bring-up")

    async def notified(self, prefix):
        """The next datagram that starts with ``prefix`` (earlier ones are kept in notices)."""
        def arrived():
            try:
                self.notices.append(self.notify.recv(4096).decode())
            except BlockingIOError:
                pass
            return any(notice.startswith(prefix) for notice in self.notices)
        await until(arrived, timeout=30, what=f"{prefix} from the bridge")
        found = next(notice for notice in self.notices if notice.startswith(prefix))
        self.notices = self.notices[self.notices.index(found) + 1:]
        return found

    async def reload(self, text):
        """Write ``text`` as the config, SIGHUP; -> the RELOADING and READY datagrams."""
        self.config.write_text(text)
        self.transport.signalProcess("HUP")
        reloading = await self.notified("RELOADING=1")
        ready = await self.notified("READY=1")
        return reloading, ready

    async def stop(self):
        if self.bridge is not None and not self.bridge.exited.called:
            self.transport.signalProcess("KILL")
            await within(self.bridge.exited, "the bridge to be killed")
        await self.remote.stopListening()
        for sim in self.sims.values():
            sim.stop()
        self.notify.close()


@pytest.fixture
def gateway(tmp_path):
    gateways = []

    def make(modems=("main",)):
        gateways.append(Gateway(tmp_path, modems))
        return gateways[-1]
    yield make
    for each in gateways:
        pytest_twisted.blockon(defer.ensureDeferred(each.stop()))


async def echoed(port, payload):
    """A fresh connection to ``port`` gets ``payload`` echoed; then it closes."""
    client = await connect(port)
    client.transport.write(payload)
    await until(lambda: bytes(client.received) == payload, what=f"the echo on port {port}")
    client.transport.loseConnection()


def reload_shape(reloading, ready):
    """RELOADING=1 carries CLOCK_MONOTONIC in µs (sd_notify(3)); READY=1 ends the reload."""
    first, stamp = reloading.split("\n")
    assert first == "RELOADING=1" and stamp.startswith("MONOTONIC_USEC=")
    assert 0 < int(stamp[len("MONOTONIC_USEC="):]) <= (
        __import__("time").clock_gettime_ns(__import__("time").CLOCK_MONOTONIC) // 1000)
    assert ready.startswith("READY=1\nSTATUS=listening: ")


@pytest_twisted.ensureDeferred
async def test_sighup_adding_a_profile_leaves_a_transfer_on_another_intact(gateway):
    bed = gateway()
    p1, p2 = free_port(), free_port()
    await bed.start({"p1": (p1, "main")})
    payload = salted(48 * 1024)
    client = await connect(p1)
    client.transport.write(payload[:24 * 1024])
    await until(lambda: len(client.received) > 0, what="the first echoed bytes")
    reloading, ready = await bed.reload(bed.ini({"p1": (p1, "main"), "p2": (p2, "main")}))
    reload_shape(reloading, ready)
    assert ready == "READY=1\nSTATUS=listening: 2 listener(s)"
    client.transport.write(payload[24 * 1024:])
    await until(lambda: len(client.received) == len(payload), timeout=60, what="the whole echo")
    client.transport.loseConnection()
    await within(client.closed, "the p1 link to close")
    far_end = bed.echo.connections[0].received
    assert sha(client.received) == sha(far_end) == sha(payload)
    assert len(bed.echo.connections) == 1  # the p1 link was never reopened
    await echoed(p2, b"p2 works after the reload")
    assert bed.bridge.lines("reload: [profile:p2] added: listening on tcp:")
    [summary] = bed.bridge.lines("reloaded ")
    assert summary.endswith(f"reloaded {bed.config}: [profile:p2] added: listening on "
                            f"tcp:{p2}:interface=127.0.0.1")
    assert not [line for line in bed.bridge.lines("reload") if "[profile:p1]" in line]


@pytest_twisted.ensureDeferred
async def test_a_broken_config_on_sighup_leaves_the_daemon_on_the_old_one(gateway):
    bed = gateway()
    p1 = free_port()
    await bed.start({"p1": (p1, "main")})
    broken = bed.ini({"p1": (p1, "main")}).replace("receive = pull", "recieve = pull")
    reloading, ready = await bed.reload(broken + "[profile:p2]\nlisten = tcp:1\n")
    reload_shape(reloading, ready)
    await echoed(p1, b"still bridged on the old config")
    with pytest.raises(ConfigError) as refused:  # what `cellbridge check` prints
        load_config(str(bed.config))
    problems = str(refused.value).splitlines()
    assert len(problems) == 2 and "recieve: unknown key" in problems[0]
    for problem in problems:
        assert len(bed.bridge.lines(problem)) == 1
    assert len(bed.bridge.lines(f"reload refused: 2 problem(s) in {bed.config}")) == 1
    assert not bed.bridge.lines("reloaded ")


@pytest_twisted.ensureDeferred
async def test_removing_a_profile_closes_its_listener_and_ends_its_links_gracefully(gateway):
    bed = gateway()
    p1, p2 = free_port(), free_port()
    await bed.start({"p1": (p1, "main"), "p2": (p2, "main")})
    client = await connect(p2, ResetSeen())
    client.transport.write(b"in flight at the reload")
    await until(lambda: bytes(client.received) == b"in flight at the reload", what="the echo")
    await bed.reload(bed.ini({"p1": (p1, "main")}))
    assert await within(client.closed, "the p2 link to end") == b"in flight at the reload"
    assert client.reason.check(ConnectionDone), "a graceful end is a clean EOF"
    with pytest.raises(ConnectionRefusedError):
        await connect(p2)
    await echoed(p1, b"p1 untouched")
    await until(lambda: bed.bridge.lines("[profile:p2] removed: 1 link(s) closed, 0 aborted"),
                what="the removed profile's links to be counted")


@pytest_twisted.ensureDeferred
async def test_a_changed_profile_applies_to_new_links_and_open_ones_keep_their_remote(gateway):
    bed = gateway()
    p1 = free_port()
    other = server(Echo)
    other_port = reactor.listenTCP(0, other, interface="127.0.0.1")
    try:
        await bed.start({"p1": (p1, "main")})
        client = await connect(p1)
        client.transport.write(b"old remote")
        await until(lambda: bytes(client.received) == b"old remote", what="the first echo")
        await bed.reload(bed.ini({"p1": (p1, "main", other_port.getHost().port)}))
        client.transport.write(b", still")
        await until(lambda: bytes(client.received) == b"old remote, still", what="the old link")
        await echoed(p1, b"new remote")
        assert [bytes(c.received) for c in bed.echo.connections] == [b"old remote, still"]
        assert [bytes(c.received) for c in other.connections] == [b"new remote"]
        assert bed.bridge.lines("reload: [profile:p1] changed: new links follow it, 1 open "
                                "link(s) keep theirs")
    finally:
        await other_port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_changed_modem_restarts_that_modem_only(gateway):
    bed = gateway(modems=("a", "b"))
    pa, pb = free_port(), free_port()
    profiles = {"pa": (pa, "a"), "pb": (pb, "b")}
    await bed.start(profiles)
    client = await connect(pa)
    client.transport.write(b"on modem a")
    await until(lambda: bytes(client.received) == b"on modem a", what="the echo on modem a")
    before = {name: len(sim.command_log.entries()) for name, sim in bed.sims.items()}
    await bed.reload(bed.ini(profiles, modem_keys="send_window = 2920\n"))
    await until(lambda: len(bed.bridge.lines(", local IP")) == 3, timeout=30,
                what="modem b's bring-up after the reload")
    client.transport.write(b", still")
    await until(lambda: bytes(client.received) == b"on modem a, still", what="modem a's link")
    await echoed(pb, b"modem b again")
    since = {name: [entry["cmd"] for entry in sim.command_log.entries()[before[name]:]]
             for name, sim in bed.sims.items()}
    assert "AT+QIACT" not in since["a"]  # modem a was not brought up again
    assert since["b"].count("AT+QIACT") == 1  # modem b was
    assert bed.bridge.lines("reload: [modem:b] restarted: its links reset")
    assert not bed.bridge.lines("[modem:a] restarted")


@pytest.mark.parametrize("mode", [
    "",
    # The simulator is unpaced: the bridge is told the fastest line, as in test_transparent_e2e.
    "mode = transparent\nbaudrate = 460800\n",
], ids=["mux", "transparent"])
@pytest_twisted.ensureDeferred
async def test_sigterm_closes_an_open_link_gracefully_and_deactivates_the_context(gateway, mode):
    bed = gateway()
    p1 = free_port()
    await bed.start({"p1": (p1, "main")}, modem_keys=mode)
    client = await connect(p1, ResetSeen())
    client.transport.write(b"open at the stop")
    await until(lambda: bytes(client.received) == b"open at the stop", what="the echo")
    sim = bed.sims["main"]
    before = len(sim.command_log.entries())
    bed.transport.signalProcess("TERM")
    assert await within(bed.bridge.exited, "the bridge to exit", timeout=60) == 0
    assert await within(client.closed, "the link to end") == b"open at the stop"
    assert client.reason.check(ConnectionDone), "a graceful end is a clean EOF"
    assert bed.echo.connections[0].reason.check(ConnectionDone)  # the module closed, not reset
    commands = [entry["cmd"] for entry in sim.command_log.entries()[before:]]
    close = next(i for i, cmd in enumerate(commands) if cmd.startswith("AT+QICLOSE"))
    assert "AT+QIDEACT" in commands[close:]
    stopped = bed.bridge.lines("stopped: ")
    assert len(stopped) == 1
    assert "stopped: 1 link(s) closed, 0 aborted, context deactivated in " in stopped[0]
    assert await bed.notified("STOPPING=1") == "STOPPING=1"


@pytest_twisted.ensureDeferred
async def test_a_stop_ends_a_module_side_servers_client_gracefully_too(tmp_path):
    """In process (a module-side client needs the bed's simulator listener): the server's tcp
    client is a link like a profile's."""
    bed = await start_server_bed(tmp_path)
    try:
        client = await connect(bed.server_port, ResetSeen())
        client.transport.write(b"through the module-side server")
        await until(lambda: bytes(client.received) == b"through the module-side server",
                    what="the echo through the server")
        before = len(bed.commands())
        with capturedLogs() as events:
            await within(defer.maybeDeferred(bed.root.stopService), "the stop")
        assert await within(client.closed, "the client to end") == b"through the module-side server"
        assert client.reason.check(ConnectionDone), "a graceful end is a clean EOF"
        [local_service] = bed.remote_factory.connections
        assert local_service.reason.check(ConnectionDone), "the local service is not reset"
        commands = bed.commands()[before:]
        assert commands.index("AT+QICLOSE=0") < commands.index("AT+QIDEACT")
        [stopped] = [formatEvent(event) for event in events if "stopped:" in event["log_format"]]
        assert stopped.startswith("stopped: 1 link(s) closed, 0 aborted, context deactivated in ")
        assert bed.modem.counters.get("server_link_closed", cause="local", server="s") == 1, \
            "the bridge ended it: not the module-side client (remote)"
    finally:
        await bed.stop()
