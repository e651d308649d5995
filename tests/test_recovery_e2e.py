"""End to end with the simulator's faults: +PDP DEACT, reboot, a mute module, a port that
disappears and comes back. Each fault resets the local connection (never a clean EOF), the modem
comes back by itself, and the next connection through the bridge works. Short timings throughout;
wall clock only bounds the waits."""

import os
import signal

import pytest_twisted
from twisted.internet import defer, reactor
from twisted.logger import capturedLogs, formatEvent

from bridge.at.commands import Timeouts
from bridge.config import ModemConfig
from bridge.modem.bringup import Pacing
from bridge.modem.modem import Modem, make_modem_service
from bridge.modem.supervisor import RecoveryTimings
from bridge.service import Components
from bridge.sim import Simulator
from tests.e2e_bed import Bed, Echo, echo_works, open_link, reset_not_eof, server, until, within

QUICK = dict(
    timeouts=Timeouts(simple=0.5, pin=1.0, attach=2.0, regapp=1.0, qiact=2.0, qideact=1.0,
                      qiopen=1.0, qiclose=1.0, dns=1.0),
    pacing=Pacing(sync_time=3.0, sync_timeout=0.3, sync_pause=0.1, registration_poll=0.1),
    timings=RecoveryTimings(reboot_wait=0.2, qideact=1.0, reset_command=1.0, reopen_initial=0.1,
                            reopen_maximum=0.4, retry_initial=0.2, retry_maximum=1.0,
                            ladder_initial=0.2, ladder_maximum=0.5),
    resync_timeout=0.3, health_interval=0.3)


class QuickComponents(Components):
    def modem_service(self, modem, root):
        return make_modem_service(modem, root, **QUICK)


class RecoveryBed(Bed):
    """Bed whose modem has short timings and opens the simulator through a fixed symlink, so a
    new simulator at the same path is the same device coming back."""

    components = QuickComponents()

    def __init__(self, tmp_path, remote_factory, receive, linger, sim_options):
        super().__init__(tmp_path, remote_factory, receive, linger, sim_options)
        self.link = str(tmp_path / "modem-tty")
        self.sim = Simulator(reactor, self.sim.options, link=self.link)

    def device(self) -> str:
        return self.link

    def commands(self) -> list:
        return [entry["cmd"] for entry in self.sim.command_log.entries()]


async def start(tmp_path):
    return await RecoveryBed.start(tmp_path, server(Echo), act_delay=0.05, deact_delay=0.05)


@pytest_twisted.ensureDeferred
async def test_pdp_deact_resets_links_reactivates_and_the_next_connection_works(tmp_path):
    async with await start(tmp_path) as bed:
        client = await open_link(bed)
        seen = len(bed.commands())
        bed.sim.pdp_deact()
        await reset_not_eof(client)
        await until(lambda: bed.modem.ready, what="the context to be re-activated")
        after = [c for c in bed.commands()[seen:] if c.startswith("AT+QI")]
        assert after[:4] == ["AT+QIDEACT", "AT+QIREGAPP", "AT+QIACT", "AT+QILOCIP"]
        assert bed.modem.counters.get("pdp_lost") == 1
        await echo_works(bed, b"after pdp deact")


@pytest_twisted.ensureDeferred
async def test_a_reboot_runs_the_bring_up_again_and_the_next_connection_works(tmp_path):
    async with await start(tmp_path) as bed:
        client = await open_link(bed)
        seen = len(bed.commands())
        bed.sim.reboot()
        await reset_not_eof(client)
        await until(lambda: bed.modem.ready and bed.modem.counters.get("module_reset") == 1,
                    what="the bring-up after the reboot")
        again = bed.commands()[seen:]
        for step in ("ATE0", "AT+CMEE=2", "AT+QISDE=0", "AT+CPIN?", "AT+QIMUX=1", "AT+QIACT",
                     "AT+QILOCIP"):
            assert step in again, step
        assert again.index("ATE0") < again.index("AT+QIMUX=1") < again.index("AT+QIACT")
        await echo_works(bed, b"after reboot")


@pytest_twisted.ensureDeferred
async def test_a_mute_module_is_recovered_by_the_ladder(tmp_path):
    async with await start(tmp_path) as bed:
        client = await open_link(bed)
        bed.sim.mute(4.0)  # the health poll's AT+CSQ times out (0.5 s), every resync fails
        await reset_not_eof(client)
        await until(lambda: bed.modem.counters.get("module_mute") == 1, what="mute detected")
        await until(lambda: bed.modem.ready, what="the ladder to recover the module")
        counters = bed.modem.counters
        started = sum(counters.get("recovery_step_started", step=step)
                      for step in ("resync", "reactivate", "restart"))
        recovered = sum(counters.get("recovered", step=step)
                        for step in ("resync", "reactivate", "restart"))
        assert started >= 2 and recovered == 1  # it climbed, then one step brought it back
        await echo_works(bed, b"after mute")


@pytest_twisted.ensureDeferred
async def test_a_vanished_port_is_reopened_when_the_device_comes_back(tmp_path):
    async with await start(tmp_path) as bed:
        client = await open_link(bed)
        bed.sim.stop()  # the pty and its symlink are gone: a USB adapter unplugged
        await reset_not_eof(client)
        await until(lambda: bed.modem.counters.get("port_lost") == 1, what="the port loss")
        assert not bed.modem.ready and bed.modem.healthy()  # recovering, not dead
        with capturedLogs() as events:
            await until(lambda: sum("port still missing" in formatEvent(e) for e in events) >= 2,
                        what="two failed reopen attempts")
        assert not bed.modem.ready and bed.modem.healthy()  # still recovering, not given up
        bed.sim.start()  # a new pty behind the same path
        await until(lambda: bed.modem.ready, what="the reopened port's bring-up")
        assert bed.modem.counters.get("recovered", step="bring-up") == 1
        await echo_works(bed, b"after replug")


@pytest_twisted.ensureDeferred
async def test_a_dead_sim_child_is_respawned(tmp_path):
    config = ModemConfig(name="main", port="sim", apn="internet",
                         sim_args=("--act-delay", "0.05", "--deact-delay", "0.05"))
    modem = Modem(reactor, config, str(tmp_path), **QUICK)
    modem.startService()
    try:
        await until(lambda: modem.ready, timeout=30.0, what="the first bring-up")
        first = modem.port.child
        os.kill(first.transport.pid, signal.SIGKILL)
        await until(lambda: modem.counters.get("port_lost") == 1, what="the child's death")
        await until(lambda: modem.ready, timeout=30.0, what="a new child's bring-up")
        assert modem.port.child is not first and modem.port.child.transport.pid is not None
    finally:
        await within(defer.maybeDeferred(modem.stopService), "the modem service to stop")
