"""AT lines in the log at debug (``set_traffic_logging``): each ring entry, redacted as the ring
keeps it; switched off, nothing watches the traffic at all."""

from twisted.application.service import MultiService
from twisted.logger import LogLevel, capturedLogs

from bridge.traffic import TrafficTap, log_traffic_line, set_traffic_logging
from tests.modem_harness import AFTER_SIM, IDENTITY, OK, SIM_READY, SYNC, ModemHarness
from tests.test_modem_bringup import SIM_PIN

PIN_UP = SYNC + IDENTITY + SIM_PIN + [(b'AT+CPIN="1234"', OK)] + SIM_READY + AFTER_SIM


def tree(tmp_path):
    h = ModemHarness(tmp_path / "state", pin="1234")
    root = MultiService()
    root.traffic = TrafficTap()
    root.traffic.watch(h.modem)
    h.modem.setServiceParent(root)
    return h, root


def traffic(events):
    return [event for event in events if event.get("log_namespace") == "bridge.traffic"]


def test_on_every_at_line_is_logged_at_debug_as_the_ring_keeps_it(tmp_path):
    h, root = tree(tmp_path)
    set_traffic_logging(root, True)
    set_traffic_logging(root, True)  # twice: still one line per entry
    with capturedLogs() as events:
        h.up(PIN_UP)
    lines = traffic(events)
    assert {event["log_level"] for event in lines} == {LogLevel.debug}
    assert [f"{e['modem']}: {e['entry']}" for e in lines] == [
        f"modem:main: {entry}" for entry in h.modem.ring.dump().splitlines()]
    assert any(e["entry"].endswith("> b'AT+CPIN=***\\r'") for e in lines)
    assert not any("1234" in e["entry"] for e in lines)


def test_off_nothing_watches_and_nothing_is_logged(tmp_path):
    h, root = tree(tmp_path)
    set_traffic_logging(root, True)
    set_traffic_logging(root, False)  # log_level back to info
    assert log_traffic_line not in root.traffic.watchers
    with capturedLogs() as events:
        h.up(PIN_UP)
    assert traffic(events) == []


def test_other_watchers_stay_when_it_is_switched(tmp_path):
    h, root = tree(tmp_path)
    seen = []
    watcher = lambda name, entry: seen.append(entry)  # noqa: E731 (e.g. a live trace)
    root.traffic.watchers.append(watcher)
    set_traffic_logging(root, True)
    set_traffic_logging(root, False)
    h.up(PIN_UP)
    assert root.traffic.watchers == [watcher] and seen
