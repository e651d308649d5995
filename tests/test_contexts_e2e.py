"""End to end through the simulator with both PDP contexts (app note §7): profile p on context 0,
profile q on context 1, one echo server behind both. The network drops one context: its links are
reset and it comes back alone, while the other context's link streams on intact."""

import pytest_twisted

from tests.e2e_bed import (Echo, ResetSeen, connect, open_link, reset_not_eof, salted, server, sha,
                           until, within)
from tests.test_recovery_e2e import RecoveryBed

STREAM = 96 * 1024


class TwoContextBed(RecoveryBed):
    modem_keys = "apn1 = wap\n"

    @property
    def profile_keys(self) -> str:
        return ("context = 0\n[profile:q]\nlisten = tcp:0:interface=127.0.0.1\n"
                f"remote = tcp:127.0.0.1:{self.remote.getHost().port}\ncontext = 1\n")


async def start(tmp_path):
    bed = await TwoContextBed.start(tmp_path, server(Echo), act_delay=0.05, deact_delay=0.05)
    bed.modem_states = []
    bed.modem.add_state_listener(lambda state, reason: bed.modem_states.append(state))
    return bed


async def echoes(port: int, payload: bytes):
    """A new connection through the profile on ``port`` is bridged and echoed."""
    client = await connect(port, ResetSeen())
    client.transport.write(payload)
    await until(lambda: bytes(client.received) == payload, what=f"the echo of {payload!r}")
    client.transport.loseConnection()
    await within(client.closed, "the echo connection to close")


async def lose_one_context_while_the_other_streams(bed, lost: int):
    """A link on each profile; the survivor's starts a stream, then context ``lost`` goes."""
    survivor_port, lost_port = ((bed.ports["q"], bed.ports["p"]) if lost == 0 else
                                (bed.ports["p"], bed.ports["q"]))
    doomed = await connect(lost_port, ResetSeen())
    doomed.transport.write(b"before")
    await until(lambda: bytes(doomed.received) == b"before", what="the doomed link's echo")
    payload = salted(STREAM, seed=21 + lost)
    streaming = await connect(survivor_port, ResetSeen())
    streaming.transport.write(payload)
    await until(lambda: len(streaming.received) >= STREAM // 4, what="the stream to be under way")
    bed.sim.pdp_deact(lost)
    await reset_not_eof(doomed)
    await until(lambda: len(streaming.received) == STREAM, timeout=30.0,
                what="the whole stream back through the surviving context")
    assert sha(streaming.received) == sha(payload)
    assert not streaming.closed.called  # the survivor was never reset
    await until(lambda: bed.modem.counters.get("recovered", step="reactivate-context") == 1,
                what=f"context {lost} to be re-activated alone")
    assert bed.sim.stats()["contexts"][lost] in ("IP STATUS", "IP PROCESSING")
    await echoes(lost_port, b"after losing context %d" % lost)
    assert bytes(streaming.received) == payload and not streaming.closed.called
    streaming.transport.loseConnection()
    await within(streaming.closed, "the stream to close")
    assert bed.modem_states == [] and bed.modem.ready  # the modem itself never went down
    assert bed.modem.counters.get("pdp_lost") == 1


@pytest_twisted.ensureDeferred
async def test_bring_up_activates_both_contexts_and_each_profile_uses_its_own(tmp_path):
    async with await start(tmp_path) as bed:
        assert bed.sim.stats()["contexts"] == ["IP STATUS", "IP STATUS"]
        assert set(bed.modem.local_ips) == {0, 1}
        link = await open_link(bed)
        sockets = bed.sim.module.contexts[0].describe_sockets()
        assert list(sockets) == ["0"]
        await echoes(bed.ports["q"], b"on context 1")
        assert bed.sim.module.contexts[1].local_ip == bed.modem.local_ips[1]
        link.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_the_second_context_streams_on_while_the_first_is_lost_and_recovered(tmp_path):
    async with await start(tmp_path) as bed:
        await lose_one_context_while_the_other_streams(bed, lost=0)


@pytest_twisted.ensureDeferred
async def test_the_first_context_streams_on_while_the_second_is_lost_and_recovered(tmp_path):
    async with await start(tmp_path) as bed:
        await lose_one_context_while_the_other_streams(bed, lost=1)
