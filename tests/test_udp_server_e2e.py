"""End to end through the simulator: a udp module-side server (AT+QILPORT="UDP", AT+QISERVER=1)
beside a tcp one on the same modem, forwarded to a local UDP echo. Module-side peers are real UDP
sockets sending to the simulator's listener (a real loopback port); each peer's datagrams
round-trip intact and come back to it alone; a peer outside ``allow`` gets nothing through."""

import socket

import pytest_twisted
from twisted.internet import defer, reactor

from tests.e2e_bed import Echo, salted, server, until
from tests.test_server_e2e import ServerBed, echo_through_the_module
from tests.test_udp_e2e import TRICKY, LocalApp, UdpEcho, bound_app


def free_udp_port() -> int:
    """A loopback UDP port free a moment ago (the simulator listens on the configured port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class UdpServerBed(ServerBed):
    """The modem carries the tcp ``[server:s]`` and the udp ``[server:u]``, forwarded to a UDP
    echo; module-side peers are ``peer()`` sockets."""

    udp_allow = "127.0.0.0/8"

    def start_remote(self):
        self.echo = UdpEcho()
        self.echo_port = reactor.listenUDP(0, self.echo, interface="127.0.0.1")
        self.peers = []
        return super().start_remote()

    @property
    def profile_keys(self):
        self.udp_port = free_udp_port()
        return (super().profile_keys.replace("max_links = 3", "max_links = 1")
                + f"[server:u]\nprotocol = udp\nport = {self.udp_port}\n"
                f"forward = udp:127.0.0.1:{self.echo_port.getHost().port}\nmax_clients = 2\n"
                f"allow = {self.udp_allow}\nudp_idle = 30\n")

    @property
    def udp_service(self):
        return self.root.getServiceNamed("server:u")

    def listening(self) -> bool:
        listeners = self.sim.stats()["listeners"]
        return (super().listening() and listeners.get("UDP") == self.udp_port
                and self.udp_service.listening)

    def peer(self) -> LocalApp:
        return bound_app(self.peers)

    def send(self, app: LocalApp, datagram: bytes) -> None:
        app.transport.write(datagram, ("127.0.0.1", self.udp_port))

    async def stop(self):
        for port in self.peers + [self.echo_port]:
            await defer.maybeDeferred(port.stopListening)
        await super().stop()


async def start(tmp_path, bed_class=UdpServerBed):
    bed = await bed_class.start(tmp_path, server(Echo), receive="auto", act_delay=0.05,
                                deact_delay=0.05)
    await until(bed.listening, what="the module to listen on both ports")
    return bed


@pytest_twisted.ensureDeferred
async def test_two_module_side_peers_each_round_trip_their_own_datagrams(tmp_path):
    async with await start(tmp_path) as bed:
        commands = bed.commands()
        assert f'AT+QILPORT="UDP",{bed.udp_port}' in commands and "AT+QISERVER=1,2" in commands
        await echo_through_the_module(bed, b"the tcp server gets its own clients")
        seen = len(bed.commands())
        peers = [bed.peer() for _ in range(2)]
        sent = {id(peer): TRICKY + [salted(1000, seed=30 + i), salted(1460, seed=40 + i)]
                for i, peer in enumerate(peers)}
        for count, datagrams in enumerate(zip(*(sent[id(peer)] for peer in peers)), 1):
            for peer, datagram in zip(peers, datagrams):
                bed.send(peer, datagram)
            await until(lambda: all(len(peer.received) == count for peer in peers),
                        what=f"echo {count} back to each peer: {[p.received for p in peers]}")
        for peer in peers:
            assert peer.received == sent[id(peer)]
        assert len(bed.echo.peers) == 2  # one local socket per module-side peer
        # two servers: the module said whose each peer's socket is
        assert bed.commands()[seen:].count("AT+QISTATE") == 2
        assert bed.modem.counters.get("server_accepted", server="u") == 2


class RefusingUdpBed(UdpServerBed):
    udp_allow = "10.0.0.0/8"


@pytest_twisted.ensureDeferred
async def test_a_peer_outside_allow_gets_nothing_through(tmp_path):
    async with await start(tmp_path, RefusingUdpBed) as bed:
        peer = bed.peer()
        bed.send(peer, b"let me in")
        await until(lambda: bed.modem.counters.get("server_refused", server="u",
                                                   cause="allow") == 1,
                    what="the refusal of the peer")
        await until(lambda: not bed.slots_in_use() and not bed.module_sockets(),
                    what="the refused socket to be closed on the module")
        assert not bed.echo.peers and not peer.received
        assert not bed.udp_service.clients
