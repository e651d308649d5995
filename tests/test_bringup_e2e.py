"""End to end: a transparent modem's bring-up against the simulator on a real pty leaves the
module with the configured packetisation (AT+QITCFG), +++ off with dtr_escape, and the stack up."""

import pytest_twisted
from twisted.internet import reactor

from bridge.config import ModemConfig
from bridge.modem.modem import Modem
from bridge.sim import SimOptions, Simulator
from tests.e2e_bed import within


@pytest_twisted.ensureDeferred
async def test_a_transparent_bring_up_configures_the_simulated_module(tmp_path):
    sim = Simulator(reactor, SimOptions(baud=0, act_delay=0.05, deact_delay=0.05))
    sim.start()
    config = ModemConfig(name="main", port=sim.device, apn="internet", mode="transparent",
                         receive="push", packet_wait=1.0, packet_size=512, dtr_escape=True,
                         dcd=True)
    fatal = []
    modem = Modem(reactor, config, str(tmp_path / "state"), on_fatal=fatal.append)
    try:
        modem.startService()
        await within(modem.when_ready(), "the transparent bring-up", timeout=30.0)
        settings = sim.module.settings
        assert settings.tcfg == (3, 5, 512, 0)  # 5 x 200 ms, 512 bytes, +++ off
        assert sim.module.ctx.mode == 1 and sim.module.ctx.mux == 0
        commands = [entry["cmd"] for entry in sim.command_log.entries()]
        modes = commands.index("AT+QIMODE=1")
        assert commands[modes - 1:modes + 5] == [
            "AT+QIMUX=0", "AT+QIMODE=1", "AT+QITCFG=3,5,512,0", "AT&D1", "AT&C1", "AT+QINDI=0"]
        assert fatal == []
    finally:
        await within(modem.stopService(), "the modem to stop")
        sim.stop()
