"""Review of the operations features (status, trace, metrics, reload, stop) as an operator uses
them: each test is a finding, written so that it fails while the finding stands (REVIEW.md).

End to end through the in-process bed (tests/e2e_bed.py): real loopback sockets -> the service
tree -> pty -> the simulator -> a loopback echo; the control socket is a real unix socket and
/metrics is scraped over HTTP. A reload is what SIGHUP runs (``root.reload(path)``). What the
modem alone decides is a transcript on tests/modem_harness.py (StringTransport + task.Clock).
"""

import json
import shutil
import socket
import tempfile
from argparse import Namespace

import pytest_twisted
from twisted.internet import defer, protocol, reactor, threads
from twisted.logger import capturedLogs, formatEvent
from twisted.protocols.basic import LineReceiver

from bridge.control.client import ControlConnection, control_address
from bridge.control.snapshot import status_snapshot
from tests.e2e_bed import (Bed, Client, Echo, connect, free_port, open_link, server, until,
                            within)
from tests.test_metrics_e2e import MetricsBed, link, scrape
from tests.test_server_e2e import ServerBed


class TraceClient(LineReceiver):
    """``cellbridge trace`` as a protocol: asks for the trace, keeps every answer line."""

    delimiter = b"\n"

    def __init__(self):
        self.answers = []

    def connectionMade(self):
        self.sendLine(json.dumps({"command": "trace"}).encode())

    def lineReceived(self, line):
        self.answers.append(json.loads(line))

    def entries(self):
        return [answer["entry"] for answer in self.answers if "entry" in answer]


def control_bed(directory):
    """A bed with ``control = unix:DIR/c.sock`` (a short path: sun_path has 108 bytes)."""
    class ControlBed(MetricsBed):
        general_keys = MetricsBed.general_keys + f"control = unix:{directory}/c.sock\n"
    return ControlBed


async def restart_the_modem_by_reload(bed, tmp_path):
    """Change ``[modem:main]`` in the config and reload (SIGHUP): that modem restarts. The bed
    follows the new modem object; -> the new modem, ready."""
    path = tmp_path / "bridge.ini"
    text = path.read_text()
    path.write_text(text.replace("apn = internet\n", "apn = internet\nsend_window = 2920\n"))
    old = bed.modem
    await within(bed.root.reload(str(path)), "the reload")
    bed.modem = bed.root.getServiceNamed("modem:main")
    assert bed.modem is not old, "a changed [modem:main] restarts it (README, Reloading)"
    await within(bed.modem.when_ready(), "the restarted modem's bring-up", timeout=30.0)
    return bed.modem


async def one_link(bed):
    """A link that carries 6 bytes each way and is closed by the local app."""
    client = await open_link(bed)
    client.transport.loseConnection()
    await until(bed.idle, what="the module socket to be freed")


def closed_counters(snapshot):
    """The modem's ``link_closed`` counters in a status snapshot: {cause: value}."""
    [modem] = snapshot["modems"]
    return {counter["labels"]["cause"]: counter["value"] for counter in modem["counters"]
            if counter["name"] == "link_closed" and counter["labels"].get("profile") == "p"}


@pytest_twisted.ensureDeferred
async def test_links_closed_after_a_reload_restarted_the_modem_are_still_counted(tmp_path):
    """After a reload restarts a modem, a tcp profile that kept its listener still counts its
    link closes into the OLD modem's counters (its Ledger is not retargeted): the series leaves
    /metrics and status, and every close from then on is lost."""
    async with await MetricsBed.start(tmp_path, server(Echo)) as bed:
        await one_link(bed)
        assert link(await scrape(bed), "cellbridge_links_closed_total", cause="local") == 1
        await restart_the_modem_by_reload(bed, tmp_path)
        await one_link(bed)
        after = await scrape(bed)
        assert link(after, "cellbridge_links_closed_total", cause="local") is not None, \
            "the close of a link made after the reload is not counted in /metrics"
        assert closed_counters(status_snapshot(bed.root)).get("local"), \
            "nor in the status counters"


@pytest_twisted.ensureDeferred
async def test_a_running_trace_still_shows_the_at_lines_after_a_reload_restarted_the_modem(
        tmp_path):
    """``cellbridge trace`` joins the modem objects there are when it starts; a reload that
    restarts a modem replaces the object, and the trace goes silent for good (the client keeps
    waiting, printing nothing) though the README says it streams until Ctrl-C."""
    directory = tempfile.mkdtemp(prefix="cbrv")
    try:
        async with await control_bed(directory).start(tmp_path, server(Echo)) as bed:
            trace = TraceClient()
            await protocol.ClientCreator(reactor, lambda: trace).connectUNIX(
                f"{directory}/c.sock", timeout=10)
            await until(lambda: trace.answers, what="the trace's first answer")
            assert trace.answers[0] == {"trace": ["main"]}
            await one_link(bed)
            assert any("AT+QIOPEN" in entry for entry in trace.entries())
            await restart_the_modem_by_reload(bed, tmp_path)
            seen = len(trace.entries())
            await one_link(bed)
            await until(lambda: any("AT+QIOPEN" in entry for entry in trace.entries()[seen:]),
                        timeout=5, what="the AT+QIOPEN of a link made after the reload in the "
                        "trace that was running")
            trace.transport.loseConnection()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest_twisted.ensureDeferred
async def test_a_link_the_bridge_ends_at_a_stop_is_not_counted_as_closed_by_the_remote(
        tmp_path):
    """SIGTERM ends an open link gracefully (README, Stopping). Neither end closed it; the
    accounting's own definition (bridge/proxy/accounting.py: ``local`` = "the local side closed
    first, or the bridge ended it") makes it ``local``; it is counted and logged as ``remote``,
    "the remote closed", which sends an operator looking at the far end."""
    bed = await Bed.start(tmp_path, server(Echo))
    try:
        await open_link(bed)  # stays open: neither the app nor the remote closes it
        counters = bed.modem.counters
        await within(defer.maybeDeferred(bed.root.stopService), "the bridge to stop")
        causes = {cause: counters.get("link_closed", cause=cause, profile="p")
                  for cause in ("local", "remote")}
        assert causes == {"local": 1, "remote": 0}
    finally:
        await within(defer.maybeDeferred(bed.remote.stopListening), "the remote to stop")
        bed.sim.stop()


@pytest_twisted.ensureDeferred
async def test_a_link_the_bridge_ends_when_its_profile_is_removed_is_not_closed_by_the_remote(
        tmp_path):
    """The same on a reload that removes the profile (README, Reloading: "its links end as at a
    stop")."""
    class TwoProfiles(Bed):
        profile_keys = ("[profile:other]\nlisten = tcp:0:interface=127.0.0.1\n"
                        "remote = tcp:127.0.0.1:9\n")

    async with await TwoProfiles.start(tmp_path, server(Echo)) as bed:
        client = await open_link(bed)
        path = tmp_path / "bridge.ini"
        text = path.read_text()
        start = text.index("[profile:p]")
        path.write_text(text[:start] + text[text.index("[profile:other]"):])
        await within(bed.root.reload(str(path)), "the reload")
        await within(client.closed, "the removed profile's link to end")
        causes = {cause: bed.modem.counters.get("link_closed", cause=cause, profile="p")
                  for cause in ("local", "remote")}
        assert causes == {"local": 1, "remote": 0}


class Answers(protocol.Protocol):
    """An HTTP/1.0 server: answers the first bytes it gets with ``factory.payload``, closes."""

    def dataReceived(self, data):
        self.transport.write(self.factory.payload)
        self.transport.loseConnection()


class ClosesOnceComplete(Client):
    """An HTTP client with a Content-Length: closes as soon as it has the whole answer, without
    waiting for the server's EOF (curl does)."""

    length = 0

    def dataReceived(self, data):
        super().dataReceived(data)
        if len(self.received) >= self.length:
            self.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_a_remote_that_closes_first_is_counted_remote_though_the_app_then_closes(tmp_path):
    """The remote sends its answer and closes ("socket N: remote closed" in the log); the app
    has all it wanted and closes too, while the bridge still closes the module socket
    (AT+QICLOSE). The link is counted and logged ``local``, though the remote closed first
    (README, Metrics: ``remote`` (the remote closed), ``local`` (the local app closed or
    half-closed first)). Seen with ``curl`` through configs/sim.ini: 4 of 10 fetches of a small
    file said ``closed (local)`` right after ``socket 5: remote closed``."""
    answer = b"HTTP/1.0 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 1000
    async with await Bed.start(tmp_path, server(Answers, answer), receive="push",
                               linger=2) as bed:
        for _ in range(3):
            client = ClosesOnceComplete()
            client.length = len(answer)
            await connect(bed.port, client)
            client.transport.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            await within(client.closed, "the app's connection to end")
            await until(bed.idle, what="the module socket to be freed")
        causes = {cause: bed.modem.counters.get("link_closed", cause=cause, profile="p")
                  for cause in ("local", "remote")}
        assert causes == {"local": 0, "remote": 3}


class TwoServers(ServerBed):
    """The shape of configs/sim.ini: a tcp and a udp module-side server on one modem."""

    @property
    def profile_keys(self):
        self.server_port, self.udp_port = free_port(), free_port()
        return (f"max_links = 2\n[server:s]\nport = {self.server_port}\n"
                f"forward = tcp:127.0.0.1:{self.remote.getHost().port}\nmax_clients = 2\n"
                f"allow = {self.allow}\n[server:u]\nprotocol = udp\nport = {self.udp_port}\n"
                f"forward = udp:127.0.0.1:9\nmax_clients = 1\nallow = {self.allow}\n")


@pytest_twisted.ensureDeferred
async def test_a_stop_with_two_module_side_servers_logs_no_at_error(tmp_path):
    """Every stop of configs/sim.ini logs ``[server:echo-back] closing the listener: AT+QICLOSE:
    ERROR``: the first server's AT+QICLOSE (no index) closes every listener of the module (app
    note §3.4), so the second one's is answered ERROR, and the operator reads an AT error in a
    clean stop."""
    bed = await TwoServers.start(tmp_path, server(Echo), receive="push", act_delay=0.05,
                                 deact_delay=0.05)
    await until(bed.listening, what="the module to listen")
    with capturedLogs() as events:
        await bed.stop()
    lines = [formatEvent(event) for event in events]
    assert not [line for line in lines if "ERROR" in line], lines


def ask_status(address):
    """``cellbridge status --json``'s request, blocking (run it in a thread) -> the snapshot."""
    connection = ControlConnection(address)
    try:
        connection.request("status")
        return connection.first_answer()
    finally:
        connection.close()


@pytest_twisted.ensureDeferred
async def test_a_relative_control_path_is_one_socket_for_the_daemon_and_for_status(
        tmp_path, monkeypatch):
    """``control = unix:c.sock``: ``check`` passes it; the daemon binds it relative to its own
    working directory (/ under systemd), ``cellbridge status -c FILE`` looks for it relative to
    the operator's, and says "no such socket (is the daemon running?)" about a running daemon.
    (``state_dir`` is relative to the config file's directory; ``control`` should be too, or be
    refused.)"""
    class RelativeControl(Bed):
        general_keys = "control = unix:c.sock\n"

    (tmp_path / "daemon").mkdir()
    (tmp_path / "operator").mkdir()
    monkeypatch.chdir(tmp_path / "daemon")
    async with await RelativeControl.start(tmp_path, server(Echo)) as bed:
        del bed
        monkeypatch.chdir(tmp_path / "operator")
        address = control_address(Namespace(control=None, config=str(tmp_path / "bridge.ini")))
        snapshot = await within(threads.deferToThread(ask_status, address), "the status")
        assert snapshot["version"] == 1


@pytest_twisted.ensureDeferred
async def test_a_unix_socket_profiles_link_shows_no_python_repr(tmp_path):
    """``listen = unix:PATH`` (any Twisted server endpoint is allowed): a client's unix socket
    has no name, and status shows its link's local peer as the string ``"None"`` (not null, not
    ``--``), and its close line says ``link UNIXAddress(None) -> ...``: an internal name in a
    message (the issue: "Messages carry no internal symbol names")."""
    directory = tempfile.mkdtemp(prefix="cbrv")

    class UnixProfile(Bed):
        @property
        def profile_keys(self):
            return (f"[profile:x]\nlisten = unix:{directory}/p.sock\n"
                    f"remote = tcp:127.0.0.1:{self.remote.getHost().port}\nlinger = 0.2\n")

        def bound_port(self, listener):
            if listener.name == "profile:x":  # a unix socket has no port
                return lambda: None
            return super().bound_port(listener)

    try:
        async with await UnixProfile.start(tmp_path, server(Echo)) as bed:
            client = Client()
            await protocol.ClientCreator(reactor, lambda: client).connectUNIX(
                f"{directory}/p.sock", timeout=10)
            client.transport.write(b"hello")
            await until(lambda: bytes(client.received) == b"hello", what="the echo")
            profiles = {p["name"]: p for p in status_snapshot(bed.root)["profiles"]}
            [link_status] = profiles["x"]["links"]
            assert link_status["local"] != "None", "a unix peer with no name is null"
            with capturedLogs() as events:
                client.transport.loseConnection()
                admission = bed.root.getServiceNamed("profile:x").factory
                await until(lambda: not admission.sockets, what="the link to close")
            lines = [formatEvent(event) for event in events]
            assert not [line for line in lines if "UNIXAddress" in line], lines
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def reload_adding_a_profile_on_a_taken_port(bed, tmp_path):
    """Reload with ``[profile:late]`` added on a port something else holds -> (its port, the
    holder socket)."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    path = tmp_path / "bridge.ini"
    path.write_text(path.read_text() + f"[profile:late]\nlisten = tcp:{port}:interface=127.0.0.1\n"
                    f"remote = tcp:127.0.0.1:{bed.remote.getHost().port}\n")
    await within(bed.root.reload(str(path)), "the reload")
    return port, holder


@pytest_twisted.ensureDeferred
async def test_a_profile_that_could_not_bind_at_a_reload_binds_at_the_next_one(tmp_path):
    """README, Reloading: an added profile whose port cannot be bound "is logged at error; the
    rest applies". The operator frees the port and reloads again (``systemctl reload``): the
    log says ``reloaded FILE: nothing changed`` and the profile never listens, until its section
    is edited or the daemon restarts: the reload compares the new config with the one it
    recorded, which already has the profile."""
    async with await Bed.start(tmp_path, server(Echo)) as bed:
        port, holder = await reload_adding_a_profile_on_a_taken_port(bed, tmp_path)
        holder.close()  # the port is free now
        await within(bed.root.reload(str(tmp_path / "bridge.ini")), "the second reload")
        assert "profile:late" in bed.root.namedServices, "the second reload did not bind it"


@pytest_twisted.ensureDeferred
async def test_status_shows_a_profile_that_is_not_listening(tmp_path):
    """The same profile, while its port is taken: it is in the running config, but status (and
    /metrics) do not show it at all, although ``.listening`` exists to say "not bound"."""
    async with await Bed.start(tmp_path, server(Echo)) as bed:
        port, holder = await reload_adding_a_profile_on_a_taken_port(bed, tmp_path)
        try:
            profiles = {p["name"]: p for p in status_snapshot(bed.root)["profiles"]}
            assert "late" in profiles and profiles["late"]["listening"] is False, \
                sorted(profiles)
        finally:
            holder.close()


@pytest_twisted.ensureDeferred
async def test_a_metrics_listener_that_could_not_bind_at_a_reload_binds_at_the_next_one(
        tmp_path):
    """The same for ``metrics =`` added on a taken port: logged at error, and the next reload,
    after the port is freed, says "nothing changed" and /metrics stays off."""
    async with await Bed.start(tmp_path, server(Echo)) as bed:
        holder = socket.socket()
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        path = tmp_path / "bridge.ini"
        path.write_text(path.read_text().replace(
            "[cellbridge]\n", f"[cellbridge]\nmetrics = tcp:{port}:interface=127.0.0.1\n"))
        await within(bed.root.reload(str(path)), "the reload")
        holder.close()
        await within(bed.root.reload(str(path)), "the second reload")
        probe = socket.socket()
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return  # someone (the daemon) listens there now
        finally:
            probe.close()
        raise AssertionError("/metrics is still not served after the second reload")
