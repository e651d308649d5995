"""Transparent sessions end to end: local socket -> bridge -> pty -> simulator in data mode ->
loopback server, and back (README, "Transparent sessions")."""

import pytest
import pytest_twisted
from twisted.internet import reactor, task
from twisted.internet.error import ConnectionDone

from tests.e2e_bed import (Bed, Echo, ResetSeen, Sink, Source, connect, echo_works, ended,
                           free_port, open_link, reset_not_eof, salted, server, sha, troubles,
                           until)
from bridge.modem.modem import make_modem_service
from bridge.modem.transport import open_port
from bridge.service import Components
from tests.test_recovery_e2e import RecoveryBed
from tests.test_tls_e2e import PKI
from tests.tls_bed import TLSBed, start as start_tls

# Twisted's own TLS code still hands pyOpenSSL X509/PKey objects; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Passing pyOpenSSL:DeprecationWarning")

#: What a data-mode stream must carry as plain bytes: the module's own words and escapes.
LOOKALIKES = [b"+++", b"\r\nCLOSED\r\n", b"\r\n+PDP DEACT\r\n", b"\r\nOK\r\n", b"\r\nCONNECT\r\n",
              b"\r\nCall Ready\r\n", b"AT+QPOWD=1\r"]


def lookalike_salted(size: int, seed: int) -> bytes:
    """``salted`` bytes with every data-mode look-alike sprinkled through as well."""
    out = bytearray(salted(size, seed))
    for i, position in enumerate(range(500, size - 32, 1009)):
        piece = LOOKALIKES[i % len(LOOKALIKES)]
        out[position:position + len(piece)] = piece
    return bytes(out)


async def echo_and_close(port: int, payload: bytes, released):
    """``payload`` echoed intact through a connection to ``port``, which is then closed until
    ``released()``."""
    client = await connect(port)
    client.transport.write(payload)
    await until(lambda: len(client.received) >= len(payload), timeout=60, what="the echo")
    assert sha(client.received) == sha(payload)
    client.transport.loseConnection()
    await until(released, what="the session to be released")


#: The bed's simulator is unpaced: its line is faster than any rate, and the bridge, which waits
#: out the line time of what it wrote before an escape, is told the fastest there is.
FAST_LINE = "mode = transparent\nbaudrate = 460800\n"


class TransparentBed(Bed):
    modem_keys = FAST_LINE


def commands(bed) -> list:
    return [entry["cmd"] for entry in bed.sim.stats()["commands"]]


@pytest_twisted.ensureDeferred
async def test_a_transparent_session_echoes_every_lookalike_intact(tmp_path):
    payload = lookalike_salted(256 * 1024, seed=21)
    async with await TransparentBed.start(tmp_path, server(Echo)) as bed:
        with troubles() as seen:
            await echo_and_close(bed.port, payload, bed.idle)
        assert seen == []
        assert bed.sim.stats()["data_mode"] is False
        log = commands(bed)
        assert log.index("+++") < log.index("AT+QICLOSE"), log[-5:]


@pytest_twisted.ensureDeferred
async def test_a_second_connection_waits_for_the_session_and_gets_its_own_remote(tmp_path):
    async with await TransparentBed.start(tmp_path, server(Echo)) as bed:
        first = await connect(bed.port)
        first.transport.write(b"first")
        await until(lambda: bytes(first.received) == b"first", what="the first echo")
        second = await connect(bed.port)
        second.transport.write(b"second")
        await until(lambda: bed.admission.stats()["waiting"] == 1, what="the second to wait")
        assert bytes(second.received) == b""
        first.transport.loseConnection()
        await until(lambda: bytes(second.received) == b"second", what="the second echo")
        assert [bytes(c.received) for c in bed.remote_factory.connections] == [b"first",
                                                                               b"second"]
        second.transport.loseConnection()
        await until(bed.idle, what="the session to be released")


@pytest_twisted.ensureDeferred
async def test_a_remote_close_gives_every_byte_then_eof(tmp_path):
    payload = lookalike_salted(60000, seed=5) + b"\r\nCLOSED\r\n"  # the last bytes look like it
    async with await TransparentBed.start(tmp_path, server(Source, payload)) as bed:
        with troubles() as seen:
            client = await connect(bed.port, ResetSeen())
            received = await ended(client, "the remote's close to reach the app")
            assert sha(received) == sha(payload)
            await until(bed.idle, what="the session to be released")
        assert seen == []
        assert client.reason.check(ConnectionDone), client.reason


class ShortKeepaliveBed(TransparentBed):
    """Checks 1 s after the first uplink byte, then every 3 s, two retries."""

    modem_keys = (FAST_LINE
                  + "keepalive_first = 1\nkeepalive_interval = 3\nkeepalive_retries = 2\n")


@pytest_twisted.ensureDeferred
async def test_a_silently_killed_session_is_found_dead_on_schedule_and_the_app_reset(tmp_path):
    async with await ShortKeepaliveBed.start(tmp_path, server(Sink)) as bed:
        client = await connect(bed.port, ResetSeen())
        client.transport.write(b"alive")
        await until(lambda: bed.remote_factory.connections
                    and bytes(bed.remote_factory.connections[0].received) == b"alive",
                    what="the first bytes at the remote")
        bed.sim.kill(0)
        client.transport.write(b"into the void")
        await reset_not_eof(client)
        log = bed.sim.stats()["commands"]
        checks = [entry["t"] for entry in log if entry["cmd"] == "AT+QISACK"]
        assert len(checks) == 3, [entry["cmd"] for entry in log[-12:]]
        gaps = [later - earlier for earlier, later in zip(checks, checks[1:])]
        assert all(abs(gap - 3.0) < 0.5 for gap in gaps), gaps
        # Back to data mode after every check but the last.
        assert [e["cmd"] for e in log].count("ATO") == 2
        await until(bed.idle, what="the session to be released")


@pytest_twisted.ensureDeferred
async def test_payload_framed_like_an_escape_reaches_the_remote_and_never_the_module(tmp_path):
    async with await TransparentBed.start(tmp_path, server(Sink)) as bed:
        client = await connect(bed.port)
        client.transport.write(b"hello")
        await until(lambda: bed.remote_factory.connections
                    and bytes(bed.remote_factory.connections[0].received) == b"hello",
                    what="the first bytes at the remote")
        await task.deferLater(reactor, 1.2, lambda: None)  # silence: a guard before '+++'
        client.transport.write(b"+++")
        await task.deferLater(reactor, 1.2, lambda: None)  # and one after it
        client.transport.write(b"AT+QPOWD=1\r")
        remote = bed.remote_factory.connections[0]
        await until(lambda: bytes(remote.received) == b"hello+++AT+QPOWD=1\r",
                    what="the escape look-alike at the remote")
        assert bed.sim.stats()["data_mode"] is True
        log = commands(bed)
        assert "+++" not in log and "AT+QPOWD=1" not in log, log[-5:]
        client.transport.loseConnection()
        await until(bed.idle, what="the session to be released")


class TransparentServerBed(TransparentBed):
    """No client profile: the modem's one session is ``[server:s]``'s, forwarded to the bed's
    echo server."""

    def profile_section(self) -> str:
        self.server_port = free_port()
        return (f"[server:s]\nport = {self.server_port}\n"
                f"forward = tcp:127.0.0.1:{self.remote.getHost().port}\n"
                "allow = 127.0.0.0/8\n")

    def listening(self) -> bool:
        service = self.root.getServiceNamed("server:s")
        return service.listening and self.sim.stats()["listeners"].get("TCP") == self.server_port


async def echo_through_the_server(bed, payload: bytes):
    await echo_and_close(bed.server_port, payload,
                         lambda: not bed.slots_in_use() and not bed.sim.stats()["data_mode"])


@pytest_twisted.ensureDeferred
async def test_module_side_clients_reach_a_local_echo_through_a_transparent_server(tmp_path):
    async with await TransparentServerBed.start(tmp_path, server(Echo)) as bed:
        await until(bed.listening, what="the module to listen")
        log = commands(bed)
        assert log[log.index(f'AT+QILPORT="TCP",{bed.server_port}') + 1] == "AT+QISERVER"
        with troubles() as seen:
            await echo_through_the_server(bed, lookalike_salted(64 * 1024, seed=8))
            await echo_through_the_server(bed, b"the next client")
        assert seen == []
        assert [len(c.received) for c in bed.remote_factory.connections] == [64 * 1024, 15]
        assert bed.modem.counters.get("server_accepted", server="s") == 2


@pytest_twisted.ensureDeferred
async def test_pdp_loss_and_a_reboot_in_data_mode_reset_the_app_and_a_waiting_one_is_served(
        tmp_path):
    async with await TransparentBed.start(tmp_path, server(Echo), act_delay=0.05,
                                          deact_delay=0.05) as bed:
        for fault, counter in ((bed.sim.pdp_deact, "pdp_lost"), (bed.sim.reboot, "module_reset")):
            active = await connect(bed.port, ResetSeen())
            active.transport.write(b"before")
            await until(lambda: bytes(active.received) == b"before", what="the first echo")
            waiting = await connect(bed.port)
            waiting.transport.write(b"waited")
            await until(lambda: bed.admission.stats()["waiting"] == 1, what="a waiter")
            fault()
            await reset_not_eof(active)
            await until(lambda: bed.modem.counters.get(counter) == 1, what=counter)
            await until(lambda: bytes(waiting.received) == b"waited", timeout=30,
                        what=f"the waiting connection served after {counter}")
            waiting.transport.loseConnection()
            await until(bed.idle, what="the session to be released")


class TransparentTLSBed(TLSBed):
    modem_keys = FAST_LINE


@pytest_twisted.ensureDeferred
async def test_tls_runs_on_top_of_a_transparent_session_and_ends_with_close_notify(tmp_path):
    pki = PKI(tmp_path / "pki")
    echo = server(Echo)
    remote = await pki.remote(echo)
    payload = lookalike_salted(64 * 1024, seed=13)
    async with await start_tls(tmp_path, remote, pki.verified(), bed=TransparentTLSBed) as bed:
        with troubles() as seen:
            client = await connect(bed.port, ResetSeen())
            client.transport.write(payload)
            await until(lambda: len(client.received) >= len(payload), timeout=60,
                        what="the echo through TLS")
            assert sha(echo.connections[0].received) == sha(payload)  # decrypted by the server
            assert sha(client.received) == sha(payload)
            assert bytes(remote.raw)[:1] == b"\x16"  # a TLS handshake record came first
            client.transport.loseConnection()
            await until(lambda: echo.connections[0].reason is not None,
                        what="the server's close")
            assert echo.connections[0].reason.check(ConnectionDone), echo.connections[0].reason
            await until(bed.idle, what="the session to be released")
        assert seen == []


class WiredPort:
    """The bridge's port with its DTR and DCD pins wired to the simulator's, as a cable would:
    a pty carries the bytes but no modem lines."""

    def __init__(self, port, module) -> None:
        self._port = port
        self._module = module

    def __getattr__(self, name):
        return getattr(self._port, name)

    def set_dtr(self, asserted: bool) -> bool:
        self._module.set_dtr(asserted)
        return True

    def carrier(self) -> bool:
        return self._module.carrier


class WiredComponents(Components):
    def __init__(self, bed) -> None:
        self.bed = bed

    def modem_service(self, modem, root):
        def wired(reactor, config, protocol):
            opening = open_port(reactor, config, protocol)
            return opening.addCallback(WiredPort, self.bed.sim.module)

        return make_modem_service(modem, root, port_opener=wired)


class WiredBed(TransparentBed):
    def __init__(self, *args):
        super().__init__(*args)
        self.components = WiredComponents(self)


class DtrBed(WiredBed):
    modem_keys = FAST_LINE + "dtr_escape = yes\n"


class DcdBed(WiredBed):
    modem_keys = FAST_LINE + "dcd = yes\n"


@pytest_twisted.ensureDeferred
async def test_with_dtr_escape_a_dtr_drop_leaves_data_mode_and_plus_signs_are_only_data(tmp_path):
    async with await DtrBed.start(tmp_path, server(Echo)) as bed:
        assert "AT+QITCFG=3,2,1460,0" in commands(bed) and "AT&D1" in commands(bed)
        client = await connect(bed.port)
        client.transport.write(b"hello")
        await until(lambda: bytes(client.received) == b"hello", what="the first echo")
        await task.deferLater(reactor, 0.8, lambda: None)  # past the simulator's 0.5 s guard
        client.transport.write(b"+++")
        await task.deferLater(reactor, 0.8, lambda: None)
        client.transport.write(b"AT+QPOWD=1\r")
        await until(lambda: bytes(client.received) == b"hello+++AT+QPOWD=1\r",
                    what="the escape look-alike echoed")
        assert bed.sim.stats()["data_mode"] is True
        client.transport.loseConnection()
        await until(bed.idle, what="the session to be released")
        log = commands(bed)
        assert "+++" not in log and "AT+QPOWD=1" not in log
        assert log.index("DTR drop") < log.index("AT+QICLOSE")
        assert bed.sim.module.dtr is True  # raised again after the escape


@pytest_twisted.ensureDeferred
async def test_with_dcd_a_remote_close_and_a_closed_lookalike_are_told_apart_without_plus(
        tmp_path):
    async with await DcdBed.start(tmp_path, server(Echo)) as bed:
        assert "AT&C1" in commands(bed)
        client = await connect(bed.port)
        client.transport.write(b"data\r\nCLOSED\r\n")  # the echo's tail looks like the module
        await until(lambda: bytes(client.received) == b"data\r\nCLOSED\r\n", timeout=10,
                    what="the look-alike delivered once DCD showed the link up")
        assert "+++" not in commands(bed)  # no probe escape was needed
        client.transport.loseConnection()
        await until(bed.idle, what="the session to be released")
    payload = lookalike_salted(20000, seed=3) + b"\r\nCLOSED\r\n"
    async with await DcdBed.start(tmp_path, server(Source, payload)) as bed:
        client = await connect(bed.port, ResetSeen())
        assert sha(await ended(client)) == sha(payload)
        assert client.reason.check(ConnectionDone), client.reason
        await until(bed.idle, what="the session to be released")
        assert "+++" not in commands(bed)


class RefusingServerBed(TransparentServerBed):
    def profile_section(self) -> str:
        return super().profile_section().replace("127.0.0.0/8", "10.0.0.0/8")


@pytest_twisted.ensureDeferred
async def test_a_transparent_server_closes_a_peer_outside_allow_and_takes_the_next(tmp_path):
    async with await RefusingServerBed.start(tmp_path, server(Echo)) as bed:
        await until(bed.listening, what="the module to listen")
        for attempt in range(2):
            client = await connect(bed.server_port, ResetSeen())
            client.transport.write(b"let me in")
            assert await ended(client, "the refused client to be closed") == b""
            await until(lambda: not bed.slots_in_use() and not bed.sim.stats()["data_mode"],
                        what="the refused session to end")
            assert bed.modem.counters.get("server_refused", server="s",
                                          cause="allow") == attempt + 1
        assert not bed.remote_factory.connections  # the local service never saw one
        log = commands(bed)
        assert log.count("+++") == 2 and log.count("AT+QICLOSE") == 2, log[-8:]


class TransparentRecoveryBed(RecoveryBed):
    """Short recovery timings; checks 0.5 s after the first uplink byte, then every second."""

    modem_keys = (FAST_LINE
                  + "keepalive_first = 0.5\nkeepalive_interval = 1\nkeepalive_retries = 2\n")


@pytest_twisted.ensureDeferred
async def test_a_module_gone_mute_in_data_mode_is_escaped_by_the_resync_not_fed_commands(
        tmp_path):
    """The check's escape goes unheard while the module is mute, so it is still in data mode
    when it hears again: the resync escapes first (its OK swallowed), and not a byte of the
    bridge's own commands reaches the remote peer."""
    async with await TransparentRecoveryBed.start(tmp_path, server(Echo), act_delay=0.05,
                                                  deact_delay=0.05) as bed:
        client = await open_link(bed)
        bed.sim.mute(6.0)
        client.transport.write(b"into the silence")  # the uplink starts the check schedule
        await reset_not_eof(client)
        assert bed.modem.counters.get("link_dead", cause="escape_unanswered") == 1
        await until(lambda: "+++" in commands(bed), timeout=30,
                    what="an escape heard once the module listens again")
        await until(lambda: not bed.sim.stats()["data_mode"], what="command mode")
        await until(lambda: bed.modem.ready and bed.idle(), timeout=30, what="the modem usable")
        await echo_works(bed, b"after mute")
        assert bytes(bed.remote_factory.connections[0].received) == b"before"


@pytest_twisted.ensureDeferred
async def test_a_port_lost_in_data_mode_resets_the_app_and_the_session_comes_back(tmp_path):
    async with await TransparentRecoveryBed.start(tmp_path, server(Echo), act_delay=0.05,
                                                  deact_delay=0.05) as bed:
        client = await open_link(bed)
        bed.sim.stop()  # a USB adapter unplugged mid-session
        await reset_not_eof(client)
        await until(lambda: bed.modem.counters.get("port_lost") == 1, what="the port loss")
        bed.sim.start()
        await until(lambda: bed.modem.ready, timeout=30, what="the reopened port's bring-up")
        await echo_works(bed, b"after replug")
