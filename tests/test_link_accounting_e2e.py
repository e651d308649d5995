"""End to end through the simulator: why a link ended (the ``cause`` of ``link_closed``, in
/metrics, status and the close line) and how the close line and status name a link's local end.

``local`` is the local app closing or half-closing first, or the bridge ending the link (a stop,
a reload removing its profile); ``remote`` is the remote closing first. Who was first is what
counts, not which close completed last: the module socket's own close (its bytes drained and
acked, AT+QICLOSE) ends after both.
"""

import shutil
import tempfile

import pytest_twisted
from twisted.internet import defer, protocol, reactor
from twisted.logger import capturedLogs, formatEvent

from bridge.control.snapshot import status_snapshot
from tests.e2e_bed import Bed, Client, Echo, connect, open_link, server, until, within


def closes_by_cause(bed, counters=None) -> dict:
    """Profile ``p``'s ``link_closed`` counters: {"local": n, "remote": n}."""
    counters = counters or bed.modem.counters
    return {cause: counters.get("link_closed", cause=cause, profile="p")
            for cause in ("local", "remote")}


@pytest_twisted.ensureDeferred
async def test_a_link_the_bridge_ends_at_a_stop_is_closed_local(tmp_path):
    """A stop ends an open link gracefully (README, Stopping): neither the app nor the remote
    closed it, the bridge did, so it is ``local``, not ``remote``."""
    bed = await Bed.start(tmp_path, server(Echo))
    try:
        await open_link(bed)  # stays open: neither the app nor the remote closes it
        counters = bed.modem.counters
        await within(defer.maybeDeferred(bed.root.stopService), "the bridge to stop")
        assert closes_by_cause(bed, counters) == {"local": 1, "remote": 0}
    finally:
        await within(defer.maybeDeferred(bed.remote.stopListening), "the remote to stop")
        bed.sim.stop()


@pytest_twisted.ensureDeferred
async def test_a_link_the_bridge_ends_when_its_profile_is_removed_is_closed_local(tmp_path):
    """A reload that removes a profile ends its links as a stop does (README, Reloading): they
    are ``local`` too."""
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
        assert closes_by_cause(bed) == {"local": 1, "remote": 0}


class Answers(protocol.Protocol):
    """An HTTP/1.0 server: answers the first bytes it gets with ``factory.payload``, closes."""

    def dataReceived(self, data):
        self.transport.write(self.factory.payload)
        self.transport.loseConnection()


class ClosesOnceComplete(Client):
    """An HTTP client with a Content-Length: closes as soon as it has the whole answer, without
    waiting for the server's EOF (as curl does)."""

    length = 0

    def dataReceived(self, data):
        super().dataReceived(data)
        if len(self.received) >= self.length:
            self.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_a_remote_that_closes_first_is_counted_remote_though_the_app_then_closes(tmp_path):
    """The remote sends its answer and closes (``n, CLOSED``); the app has all it wanted and
    closes too while the module socket is still closing (its AT+QISACK, AT+QICLOSE). The remote
    was first: ``remote``."""
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
        assert closes_by_cause(bed) == {"local": 0, "remote": 3}


@pytest_twisted.ensureDeferred
async def test_a_unix_socket_profiles_link_names_its_local_end_unix(tmp_path):
    """``listen = unix:PATH``: a client's unix socket has no name; status and the close line
    name that end ``unix``, never a Python repr or ``None``."""
    directory = tempfile.mkdtemp(prefix="cbla")  # short: sun_path has 108 bytes

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
            assert link_status["local"] == "unix"
            with capturedLogs() as events:
                client.transport.loseConnection()
                admission = bed.root.getServiceNamed("profile:x").factory
                await until(lambda: not admission.sockets, what="the link to close")
            [closed] = [formatEvent(event) for event in events
                        if "closed (" in event.get("log_format", "")]
            assert closed.startswith("[profile:x] link unix -> 127.0.0.1:"), closed
    finally:
        shutil.rmtree(directory, ignore_errors=True)
