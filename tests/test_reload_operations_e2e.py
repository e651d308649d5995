"""Reload as an operator meets it, end to end through the in-process bed (tests/e2e_bed.py):
real loopback sockets -> the service tree -> pty -> the simulator -> a loopback echo; the control
socket is a real unix socket and /metrics is scraped over HTTP. A reload is what SIGHUP runs
(``root.reload(path)``)."""

import json
import shutil
import socket
import tempfile
from argparse import Namespace

import pytest_twisted
from twisted.internet import protocol, reactor, threads
from twisted.protocols.basic import LineReceiver

from bridge.control.client import ControlConnection, control_address
from bridge.control.snapshot import status_snapshot
from tests.e2e_bed import Bed, Echo, open_link, server, until, within
from tests.test_metrics_e2e import MetricsBed, link, scrape


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
    """A restarted modem keeps its counters and the profile that kept its listener counts in
    them: closes after a reload restarted the modem show in /metrics and in status."""
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
    """A running ``cellbridge trace`` goes on showing the AT lines of a modem a reload restarted
    (it watches the tree's traffic, not one Modem object)."""
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
    """``control = unix:c.sock`` is relative to the config file's directory: the daemon and
    ``cellbridge status -c FILE``, started in different directories, meet at one socket."""
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
    """An added profile whose port cannot be bound is logged and left out; once the port is free,
    the next reload binds it (README, Reloading)."""
    async with await Bed.start(tmp_path, server(Echo)) as bed:
        port, holder = await reload_adding_a_profile_on_a_taken_port(bed, tmp_path)
        holder.close()  # the port is free now
        await within(bed.root.reload(str(tmp_path / "bridge.ini")), "the second reload")
        assert "profile:late" in bed.root.namedServices, "the second reload did not bind it"


@pytest_twisted.ensureDeferred
async def test_status_shows_a_profile_that_is_not_listening(tmp_path):
    """While its port is taken, status shows the profile with ``listening: false``."""
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
    """The same for ``metrics =`` added on a taken port: the next reload, after the port is freed,
    serves /metrics."""
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
