"""End to end through the simulator: a module-side server (AT+QILPORT, AT+QISERVER) whose
clients reach a local echo service; a peer outside ``allow`` is refused; the module listens again
after +PDP DEACT and after a reboot. The module-side client is a real TCP client connecting to
the simulator's listener (a real loopback port)."""

import pytest_twisted
from twisted.logger import capturedLogs, formatEvent

from tests.e2e_bed import Echo, connect, ended, free_port, salted, server, sha, until
from tests.test_recovery_e2e import RecoveryBed


class ServerBed(RecoveryBed):
    """The bed's modem also carries ``[server:s]``, forwarded to the bed's echo server."""

    allow = "127.0.0.0/8"

    @property
    def profile_keys(self):
        self.server_port = free_port()
        return (f"max_links = 3\n[server:s]\nport = {self.server_port}\n"
                f"forward = tcp:127.0.0.1:{self.remote.getHost().port}\nmax_clients = 2\n"
                f"allow = {self.allow}\n")

    def listening(self) -> bool:
        listening = self.sim.stats()["listeners"].get("TCP") == self.server_port
        return listening and self.service.listening

    @property
    def service(self):
        return self.root.getServiceNamed("server:s")


async def start(tmp_path, bed_class=ServerBed, **sim_options):
    bed = await bed_class.start(tmp_path, server(Echo), act_delay=0.05, deact_delay=0.05,
                                **sim_options)
    await until(bed.listening, what="the module to listen")
    return bed


async def echo_through_the_module(bed, payload: bytes):
    client = await connect(bed.server_port)
    client.transport.write(payload)
    await until(lambda: len(client.received) >= len(payload), timeout=60.0,
                what=f"the echo of {len(payload)} bytes through the module-side server")
    client.transport.loseConnection()
    await ended(client)
    assert sha(client.received) == sha(payload)
    await until(lambda: not bed.service.clients and not bed.slots_in_use(),
                what="the server socket to be closed and freed")


@pytest_twisted.ensureDeferred
async def test_a_module_side_client_reaches_the_local_service_and_256_kib_round_trip(tmp_path):
    async with await start(tmp_path) as bed:
        commands = bed.commands()
        listen = commands.index(f'AT+QILPORT="TCP",{bed.server_port}')
        assert commands[listen + 1] == "AT+QISERVER=0,2"
        with capturedLogs() as events:
            await echo_through_the_module(bed, salted(256 * 1024, seed=21))
        lines = [formatEvent(event) for event in events]
        assert any("client 127.0.0.1 on socket 0 forwarded to tcp:127.0.0.1:" in line
                   for line in lines), lines
        assert any("[server:s] link 127.0.0.1 -> tcp:127.0.0.1:" in line and "closed (remote)"
                   in line and "262144 bytes up, 262144 bytes down" in line for line in lines)
        assert "AT+QISRVC=2" in bed.commands()[listen:]
        assert bed.modem.counters.get("server_accepted", server="s") == 1
        assert bed.service.ledger.carried() == {"uplink": 262144, "downlink": 262144}
        assert bed.modem.counters.get("server_link_closed", server="s", cause="remote") == 1
        assert len(bed.remote_factory.connections) == 1


class RefusingBed(ServerBed):
    allow = "10.0.0.0/8 192.0.2.1"


@pytest_twisted.ensureDeferred
async def test_a_peer_outside_allow_is_closed_at_once(tmp_path):
    async with await start(tmp_path, RefusingBed) as bed:
        client = await connect(bed.server_port)
        client.transport.write(b"let me in")
        assert await ended(client, "the refused client to be closed") == b""
        assert bed.modem.counters.get("server_refused", server="s", cause="allow") == 1
        assert not bed.remote_factory.connections  # the local service never saw it
        await until(lambda: not bed.slots_in_use() and not bed.module_sockets(),
                    what="the refused socket to be closed on the module")
        assert bed.commands()[-2:] == ["AT+QISRVC=2", "AT+QICLOSE=0"]


@pytest_twisted.ensureDeferred
async def test_the_module_listens_again_after_pdp_deact_and_after_a_reboot(tmp_path):
    async with await start(tmp_path) as bed:
        for fault, counter in ((bed.sim.pdp_deact, "pdp_lost"), (bed.sim.reboot, "module_reset")):
            seen = len(bed.commands())
            fault()
            await until(lambda: bed.modem.counters.get(counter) == 1, what=counter)
            await until(bed.listening, what=f"the module to listen again after {counter}")
            assert f'AT+QILPORT="TCP",{bed.server_port}' in bed.commands()[seen:]
            await echo_through_the_module(bed, f"after {counter}".encode())


@pytest_twisted.ensureDeferred
async def test_after_a_mute_spell_the_resync_closes_the_kept_listener_and_the_module_listens_anew(
        tmp_path):
    """The ladder's resync step brings the modem back without AT+QIDEACT: the module's listener
    survived the mute. Listening again on "ready" must not meet an AT+QISERVER that answers
    ERROR because the port still listens (simulator choice 32)."""
    async with await start(tmp_path) as bed:
        seen = len(bed.commands())
        bed.sim.mute(2.0)
        await until(lambda: bed.modem.counters.get("module_mute") == 1, what="mute detected")
        await until(lambda: bed.modem.ready, what="the ladder to recover the module")
        assert bed.modem.counters.get("recovered", step="resync") == 1
        await until(lambda: bed.modem.counters.get("server_listen_failed", server="s") > 0
                    or bed.listening(), what="the listen attempt after the resync")
        assert bed.modem.counters.get("server_listen_failed", server="s") == 0, (
            bed.sim.stats()["listeners"], bed.commands()[-6:])
        after_mute = bed.commands()[bed.commands().index("AT+CMEE?", seen):]
        listen = after_mute.index(f'AT+QILPORT="TCP",{bed.server_port}')
        assert after_mute[listen - 2:listen] == ["AT+QISRVC=2", "AT+QICLOSE"]
        await echo_through_the_module(bed, b"after a mute")


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
async def test_a_stop_with_two_module_side_servers_closes_their_listeners_with_no_at_error(
        tmp_path):
    """AT+QICLOSE without an index closes every listener of the module (app note §3.4): the two
    servers stopping together send it once, and a clean stop logs no AT error (a second one
    would be answered ERROR)."""
    bed = await start(tmp_path, TwoServers, receive="push")
    with capturedLogs() as events:
        await bed.stop()
    lines = [formatEvent(event) for event in events]
    assert not [line for line in lines if "ERROR" in line], lines
