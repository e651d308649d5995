"""The shipped sample configs run: the modem comes up on the simulator, every profile's listener is
bound and every module-side server listens on the module. Only what ties a file to hardware or to
this machine is swapped (the serial device for the in-process simulator's pty, ``state_dir``, the
fixed local and module ports for free ones); everything else is the file as shipped."""

import pathlib
import re

import pytest
import pytest_twisted
from twisted.internet import defer, reactor

from bridge.config import load_config
from bridge.service import make_service
from bridge.sim import SimOptions, Simulator
from tests.e2e_bed import free_port, until, within

CONFIGS = pathlib.Path(__file__).resolve().parent.parent / "configs"


def on_simulator(text: str, device: str) -> str:
    text = re.sub(r"(?m)^port = (?:/dev/\S+|sim)$", f"port = {device}", text)
    text = re.sub(r"(?m)^state_dir = .*$", "state_dir = state", text)
    text = re.sub(r"(?m)^listen = (tcp|udp):\d+", r"listen = \1:0", text)
    return re.sub(r"(?m)^port = \d+$", lambda _: f"port = {free_port()}", text)


@pytest.mark.parametrize("name", ["example.ini", "sim.ini"])
@pytest_twisted.ensureDeferred
async def test_a_shipped_config_runs_on_the_simulator(tmp_path, name):
    sim = Simulator(reactor, SimOptions(baud=0, act_delay=0.05))
    sim.start()
    try:
        path = tmp_path / name
        path.write_text(on_simulator((CONFIGS / name).read_text(), sim.device))
        config = load_config(str(path))
        root = make_service(config, reactor, environ={})
        root.privilegedStartService()
        root.startService()
        try:
            [modem] = [root.getServiceNamed(f"modem:{m}") for m in config.modems]
            servers = [root.getServiceNamed(f"server:{s}") for s in config.servers]
            await until(lambda: modem.ready and all(s.listening for s in servers),
                        what="the modem up and every server listening")
            assert config.profiles and config.servers
            for profile in config.profiles:
                assert root.getServiceNamed(f"profile:{profile}").running
            listeners = sim.stats()["listeners"]
            assert sorted(listeners) == sorted({s.protocol.upper()
                                                for s in config.servers.values()})
        finally:
            await within(defer.maybeDeferred(root.stopService), "the bridge to stop")
    finally:
        sim.stop()
