"""End to end through the simulator for a udp profile: local UDP sources -> the bridge's port ->
pty -> simulator -> a loopback UDP echo, and back. Datagrams that look like the module talking
round-trip intact, per source; idle sessions free their module sockets; ``reopen = yes`` rides
out +PDP DEACT, a module reboot and a lost port with the local app doing nothing."""

import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.protocol import DatagramProtocol

from tests.e2e_bed import salted, until
from tests.test_recovery_e2e import RecoveryBed

TRICKY = [b"\r\nOK\r\n", b"+RECEIVE: 0, 5\r\n", b"\x1a", b"\x1b"]


class UdpEcho(DatagramProtocol):
    """The remote: echoes every datagram to where it came from."""

    def __init__(self):
        self.peers = set()

    def datagramReceived(self, data, addr):
        self.peers.add(addr)
        self.transport.write(data, addr)


class LocalApp(DatagramProtocol):
    """A local source: sends to the bridge's port, keeps what comes back."""

    def __init__(self):
        self.received = []

    def datagramReceived(self, data, addr):
        self.received.append(data)


def bound_app(ports: list) -> LocalApp:
    """A LocalApp on a fresh loopback port, added to ``ports`` (to stop them at the end)."""
    app = LocalApp()
    ports.append(reactor.listenUDP(0, app, interface="127.0.0.1"))
    return app


class UdpBed(RecoveryBed):
    kind = "udp"

    def start_remote(self):
        self.echo = UdpEcho()
        return reactor.listenUDP(0, self.echo, interface="127.0.0.1")

    def bound_port(self, listener):
        return lambda: listener._port.getHost().port

    @property
    def relay(self):
        return self.listener.args[1]

    def app(self) -> LocalApp:
        return bound_app(self.apps)

    def send(self, app: LocalApp, datagram: bytes) -> None:
        app.transport.write(datagram, ("127.0.0.1", self.port))

    def udp_sockets(self) -> list:
        return [s for s in self.module_sockets().values() if s["proto"] == "UDP"]

    def idle(self) -> bool:
        return not self.relay.sessions and not self.module_sockets() and not self.slots_in_use()

    async def stop(self):
        for port in self.apps:
            await defer.maybeDeferred(port.stopListening)
        await super().stop()


async def start(tmp_path, profile_keys=""):
    UdpBed.apps = []
    UdpBed.profile_keys = profile_keys
    return await UdpBed.start(tmp_path, None, receive="auto", act_delay=0.05, deact_delay=0.05)


async def echoed(bed, app, datagram: bytes) -> None:
    before = len(app.received)
    bed.send(app, datagram)
    await until(lambda: len(app.received) > before, what=f"the echo of {datagram[:20]!r}")
    assert app.received[before:] == [datagram]


@pytest_twisted.ensureDeferred
async def test_six_sources_at_once_each_get_their_own_datagrams_back_intact(tmp_path):
    async with await start(tmp_path) as bed:
        assert bed.modem.config.receive == "push"  # auto, for a modem that carries udp
        apps = [bed.app() for _ in range(6)]
        sent = {id(app): TRICKY + [b"%d" % i + salted(999, seed=i), salted(1460, seed=10 + i)]
                for i, app in enumerate(apps)}
        for round_ in range(len(TRICKY) + 2):
            for app in apps:
                bed.send(app, sent[id(app)][round_])
        await until(lambda: all(len(app.received) == len(sent[id(app)]) for app in apps),
                    what="every echo")
        for app in apps:
            assert app.received == sent[id(app)]
        assert len(bed.udp_sockets()) == 6 and len(bed.echo.peers) == 6
        stats = bed.relay.stats()
        assert (stats["sessions"], stats["datagrams_up"], stats["datagrams_down"]) == (6, 36, 36)
        assert stats["drops"] == {}


@pytest_twisted.ensureDeferred
async def test_idle_sessions_free_their_module_sockets(tmp_path):
    async with await start(tmp_path, "udp_idle = 0.5\n") as bed:
        apps = [bed.app() for _ in range(2)]
        for app in apps:
            await echoed(bed, app, b"ping")
        assert len(bed.udp_sockets()) == 2
        await until(bed.idle, what="both sessions to end and free their sockets")
        await echoed(bed, apps[0], b"again")  # a new session
        assert bed.relay.stats()["started"] == 3


async def survives(bed, fault, counter):
    app = bed.app()
    await echoed(bed, app, b"before")
    fault()
    await until(lambda: bed.modem.counters.get(counter) == 1, what=f"the {counter}")
    # Nothing from the app: the session reopens its module socket by itself.
    await until(lambda: bed.modem.ready and len(bed.udp_sockets()) == 1
                and bed.udp_sockets()[0]["state"] == "CONNECTED", what="the reopened socket")
    await echoed(bed, app, b"\r\nOK\r\nafter")
    stats = bed.relay.stats()
    assert (stats["sessions"], stats["started"]) == (1, 1)


@pytest_twisted.ensureDeferred
async def test_with_reopen_datagrams_flow_again_after_pdp_deact(tmp_path):
    async with await start(tmp_path, "reopen = yes\n") as bed:
        await survives(bed, bed.sim.pdp_deact, "pdp_lost")


@pytest_twisted.ensureDeferred
async def test_with_reopen_datagrams_flow_again_after_a_module_reboot(tmp_path):
    async with await start(tmp_path, "reopen = yes\n") as bed:
        await survives(bed, bed.sim.reboot, "module_reset")


@pytest_twisted.ensureDeferred
async def test_with_reopen_datagrams_flow_again_after_the_port_was_lost(tmp_path):
    async with await start(tmp_path, "reopen = yes\n") as bed:

        def unplug_and_replug():
            bed.sim.stop()  # the pty and its symlink are gone: a USB adapter unplugged
            reactor.callLater(0.5, bed.sim.start)  # a new pty behind the same path

        await survives(bed, unplug_and_replug, "port_lost")


@pytest_twisted.ensureDeferred
async def test_without_reopen_the_session_ends_and_the_next_datagram_starts_a_new_one(tmp_path):
    async with await start(tmp_path) as bed:
        app = bed.app()
        await echoed(bed, app, b"before")
        bed.sim.pdp_deact()
        await until(lambda: bed.modem.ready and bed.modem.counters.get("pdp_lost") == 1,
                    what="the context to come back")
        assert not bed.relay.sessions and not bed.udp_sockets()
        await echoed(bed, app, b"after")
        assert bed.relay.stats()["started"] == 2
