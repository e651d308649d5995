"""Metered SIMs end to end, through the simulator: a transfer (mux pull and push, transparent)
moves the modem's data usage by at least its payload both ways and the counts are in the state directory after the bridge stops;
with ``roaming = no`` a simulator that starts roaming takes data down, a local connection is
reset with the reason logged, and once it is home again a connection works."""

import dataclasses
import json

import pytest
import pytest_twisted
from twisted.logger import capturedLogs, formatEvent

from bridge.modem.modem import make_modem_service
from bridge.modem.roaming import REFUSAL
from bridge.service import Components
from tests.e2e_bed import (Bed, Echo, connect, echo_works, ended, open_link, reset_not_eof,
                           salted, server, until)
from tests.test_recovery_e2e import QUICK
from tests.test_transparent_e2e import TransparentBed

ROAMING_QUICK = dict(QUICK, pacing=dataclasses.replace(QUICK["pacing"], roaming_poll=0.1))


class QuickComponents(Components):
    def modem_service(self, modem, root):
        return make_modem_service(modem, root, **ROAMING_QUICK)


class RoamingBed(Bed):
    modem_keys = "roaming = no\n"
    components = QuickComponents()


@pytest.mark.parametrize("kind, receive", [(Bed, "pull"), (Bed, "push"),
                                           (TransparentBed, "push")])
@pytest_twisted.ensureDeferred
async def test_a_transfer_moves_the_usage_both_ways_and_it_is_kept(tmp_path, kind, receive):
    payload = salted(20000)
    async with await kind.start(tmp_path, server(Echo), receive=receive) as bed:
        info = bed.modem.info
        assert (info["iccid"], info["imsi"], info["operator"]) == (
            "89860012345678901234", "001010123456789", "CELLBRIDGE HOME")
        usage = bed.modem.usage
        before = (usage.sent, usage.received)
        client = await connect(bed.port)
        client.transport.write(payload)
        await until(lambda: bytes(client.received) == payload, what="the echo")
        assert usage.sent - before[0] >= len(payload)
        assert usage.received - before[1] >= len(payload)
        client.transport.loseConnection()
        await until(bed.idle, what="the link to close")
    kept = json.loads((tmp_path / "state" / "main.usage").read_text())
    assert kept == {"sent": usage.sent, "received": usage.received}


@pytest_twisted.ensureDeferred
async def test_roaming_resets_connections_with_the_reason_and_home_brings_data_back(tmp_path):
    async with await RoamingBed.start(tmp_path, server(Echo), act_delay=0.05,
                                      deact_delay=0.05) as bed:
        client = await open_link(bed)
        seen = len(bed.sim.command_log.entries())
        with capturedLogs() as events:
            bed.sim.set_roaming(True)  # the health poll (0.3 s) sees CREG 5
            await reset_not_eof(client)
            await until(lambda: bed.modem.roaming.holding and not bed.modem.ready,
                        what="data held down")
            refused = await connect(bed.port)
            await ended(refused, "the refused connection to be reset")
        lines = [formatEvent(e) for e in events]
        assert any(REFUSAL in line and "resetting the local connection" in line
                   for line in lines), lines
        after = [entry["cmd"] for entry in bed.sim.command_log.entries()[seen:]]
        assert after.index("AT+CREG?") < after.index("AT+QIDEACT")  # the poll, then data down
        bed.sim.set_roaming(False)
        await until(lambda: bed.modem.ready, what="data back at home")
        await echo_works(bed, b"home again")
