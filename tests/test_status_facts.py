"""What only ``cellbridge status`` needs from the modem and its links: the modem's state and
since when, its last recovery and cause, a link's age and idle time (also while it reopens), and
what it shows while ``roaming = no`` holds data down."""

import time
from pathlib import Path

from twisted.internet.task import Clock

from bridge.at.ring import TrafficRing
from bridge.control.snapshot import modem_status
from bridge.modem.roaming import REFUSAL
from tests.modem_harness import PLAIN, ModemHarness
from tests.test_modem_recovery import REACTIVATE, RecoveryHarness
from tests.test_persistent_link import ReopenBench
from tests.test_roaming import HOME
from tests.socket_bench import sack

PDP_LOST = "context lost: PDP context deactivated by the network (+PDP DEACT)"


def test_the_modem_keeps_its_state_since_when_and_its_last_recovery(tmp_path):
    h = RecoveryHarness(tmp_path / "state")
    modem = h.modem
    assert (modem.state, modem.supervisor.last_recovery) == ("stopped", None)
    h.start()
    assert (modem.state, modem.state_since) == ("starting", h.clock.seconds())
    h.play(PLAIN)
    assert (modem.state, modem.state_reason) == ("ready", f"local IP {modem.local_ip}")
    h.clock.advance(5)
    h.recv(b"\r\n+PDP DEACT\r\n")
    lost_at = h.clock.seconds()
    assert (modem.state, modem.state_reason, modem.state_since) == ("down", PDP_LOST, lost_at)
    record = modem.supervisor.last_recovery
    assert (record.cause, record.started, record.recovered) == (PDP_LOST, lost_at, None)
    for command, reply in REACTIVATE:  # each answer half a second later
        h.expect(command)
        h.clock.advance(0.5)
        h.recv(reply)
    assert (modem.state, modem.state_since) == ("ready", lost_at + 2.0)
    assert record.recovered == lost_at + 2.0
    modem.stopService()
    assert modem.state == "stopped"


def test_a_link_has_an_age_and_idle_time_and_keeps_its_age_while_it_reopens(tmp_path):
    s = ReopenBench(tmp_path)
    opened = s.clock.seconds()
    s.upload(b"a" * 10)
    s.clock.advance(0.5)
    sent_at = s.clock.seconds() - 0.5
    stats = s.socket.stats()
    assert (stats["age"], stats["idle"]) == (s.clock.seconds() - opened,
                                             s.clock.seconds() - sent_at)
    s.clock.advance(0.5)  # the keepalive's first check
    s.module(sack(10, 10))
    s.module(b"\r\n+PDP DEACT\r\n")
    lost = s.clock.seconds()
    s.clock.advance(0.25)
    stats = s.socket.stats()
    assert (stats["state"], stats["slot"]) == ("reopening", None)
    assert (stats["age"], stats["idle"]) == (s.clock.seconds() - opened, s.clock.seconds() - lost)


def test_ring_timestamps_carry_a_rounded_up_millisecond_into_the_second():
    clock = Clock()
    clock.advance(12.9996)
    ring = TrafficRing(clock)
    ring.sent(b"AT\r")
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000%z", time.localtime(13))
    assert ring.dump() == stamp + " > b'AT\\r'"


def data_down_while_roaming(tmp_path) -> ModemHarness:
    """A ready modem with ``roaming = no`` whose module registers as roaming: data goes down
    (AT+QIDEACT) until the module is registered at home again."""
    h = ModemHarness(tmp_path / "state", persistent=True, roaming=False).up()
    assert modem_status(h.modem, h.clock.seconds())["local_ips"] == {"0": "10.0.0.2"}
    h.recv(b"\r\n+CREG: 5\r\n")
    h.expect(b"AT+QIDEACT", b"\r\nDEACT OK\r\n")
    return h


def test_status_shows_no_local_ip_while_data_is_down(tmp_path):
    """A deactivated context has no local IP: status shows none while the modem is down (the
    modem itself keeps the last ones, for a resync that finds its contexts still up), and the
    context's new address once data is back."""
    h = data_down_while_roaming(tmp_path)
    status = modem_status(h.modem, h.clock.seconds())
    assert (status["state"], status["state_reason"]) == ("down", REFUSAL)
    assert status["local_ips"] == {}
    h.play(HOME + REACTIVATE)  # the context comes back with a new address
    assert modem_status(h.modem, h.clock.seconds())["local_ips"] == {"0": "10.0.0.3"}


def test_the_recovering_value_status_shows_while_roaming_is_in_the_readme(tmp_path):
    """While ``roaming = no`` holds data down, ``.recovering`` is ``roaming``: the README's
    ``--json`` table lists it with the other values."""
    h = data_down_while_roaming(tmp_path)
    value = modem_status(h.modem, h.clock.seconds())["recovering"]
    assert value == "roaming"
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    [row] = [line for line in readme.splitlines() if line.startswith("| `.recovering` |")]
    assert f"`{value}`" in row, f"{value!r} is not in: {row}"
