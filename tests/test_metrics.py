"""Metrics and link accounting on transcripts: the real Modem and a tcp profile's Admission on
StringTransports (tests/socket_bench.py), read by the collector into exact exposition lines; the
AT engine's command counts; the ``metrics`` key."""

from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from twisted.application import internet
from twisted.internet.error import CannotListenError
from twisted.internet.task import Clock
from twisted.internet.testing import RaisingMemoryReactor, StringTransport
from twisted.logger import capturedLogs, formatEvent

from bridge.at import commands
from bridge.at.protocol import ATProtocol
from bridge.config import config_warnings, load_config
from bridge.errors import CellbridgeError, ConfigError
from bridge.counters import Counters
from bridge.metrics import BridgeCollector
from bridge.proxy.accounting import Ledger, Link
from bridge.service import make_service
from tests.test_datagram_relay import A, B, RelayBench
from tests.socket_bench import (CLOSED_0, PROMPT, QICLOSE_0, QIRD_0, QIRDI_0, QISACK_0,
                                SEND_OK, LinkBench, qird, sack)
from tests.test_config import write
from tests.test_plugin import FakeComponents, UDPMemoryReactor


def exposition(bench, profiles=None) -> set:
    """The sample lines a scrape of the bench's modem and tcp profile (or ``profiles``: the tree's
    children by name) gives (no HELP/TYPE)."""
    if profiles is None:
        profiles = {"profile:web": SimpleNamespace(factory=bench.admission)}
    root = SimpleNamespace(reactor=bench.clock,
                           namedServices={"modem:main": bench.modem, **profiles})
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BridgeCollector(root))
    text = generate_latest(registry).decode()
    return {line for line in text.splitlines() if not line.startswith("#")}


def series(lines: set, name: str) -> set:
    return {line for line in lines if line.startswith(name + "{") or line.startswith(name + " ")}


def carried(labels: str, uplink: int, downlink: int) -> set:
    return {f'cellbridge_link_bytes_total{{direction="uplink",{labels}}} {uplink:.1f}',
            f'cellbridge_link_bytes_total{{direction="downlink",{labels}}} {downlink:.1f}'}


def test_a_links_bytes_are_counted_while_it_is_open_and_kept_when_it_closes(tmp_path):
    s = LinkBench(tmp_path)
    s.local_data(b"hello")
    assert s.wire() == b"AT+QISEND=0,5\r"
    s.module(PROMPT)
    assert s.wire() == b"hello"
    s.module(SEND_OK)
    s.module(QIRDI_0)
    assert s.wire() == QIRD_0
    s.module(qird(b"world!"))
    assert s.wire() == QIRD_0
    s.module(b"\r\nOK\r\n")
    lines = exposition(s)
    labels = 'modem="main",profile="web"'
    assert series(lines, "cellbridge_link_bytes_total") == carried(labels, 5, 6)
    assert series(lines, "cellbridge_links_open") == {f"cellbridge_links_open{{{labels}}} 1.0"}
    assert series(lines, "cellbridge_connections_waiting") == {
        f"cellbridge_connections_waiting{{{labels}}} 0.0"}
    assert not series(lines, "cellbridge_links_closed_total")

    s.clock.advance(2.5)
    with capturedLogs() as events:
        s.side.connectionLost()  # the local app closed: once all is acked, AT+QICLOSE
        assert s.wire() == QISACK_0
        s.module(sack(5, 5))
        assert s.wire() == QICLOSE_0
        s.module(b"\r\n0, CLOSE OK\r\n")
    closes = [formatEvent(e) for e in events if "closed (" in formatEvent(e)]
    assert closes == ["[profile:web] link 192.168.1.1:54321 -> 10.1.2.3:80 closed (local) after "
                      "2.5 s: 5 bytes up, 6 bytes down"]
    lines = exposition(s)
    assert series(lines, "cellbridge_link_bytes_total") == carried(labels, 5, 6)
    assert series(lines, "cellbridge_links_open") == {f"cellbridge_links_open{{{labels}}} 0.0"}
    assert series(lines, "cellbridge_links_closed_total") == {
        f'cellbridge_links_closed_total{{cause="local",{labels}}} 1.0'}


def test_a_remote_close_and_a_failed_connect_are_their_own_causes(tmp_path):
    s = LinkBench(tmp_path)
    s.module(CLOSED_0)  # the remote closed, nothing unread, nothing unacked
    assert s.wire() == QIRD_0
    s.module(b"\r\nOK\r\n")
    assert s.wire() == QICLOSE_0
    s.module(b"\r\n0, CLOSE OK\r\n")
    side, _ = s.accept()
    assert s.wire() == b"AT+QIDNSIP=0\r"
    s.module(b"\r\nOK\r\n")
    s.wire()
    s.module(b"\r\nOK\r\n\r\n0, CONNECT FAIL\r\n")
    assert s.wire() == QICLOSE_0  # the failed socket is closed before the index is free
    s.module(b"\r\n0, CLOSE OK\r\n")
    assert side.transport.disconnected
    assert series(exposition(s), "cellbridge_links_closed_total") == {
        'cellbridge_links_closed_total{cause="remote",modem="main",profile="web"} 1.0',
        'cellbridge_links_closed_total{cause="connect_failed",modem="main",profile="web"} 1.0'}


def _read_fails(s):
    s.module(QIRDI_0)
    assert s.wire() == QIRD_0
    s.module(b"\r\nERROR\r\n")  # the remote's close never reported: received bytes may be lost


@pytest.mark.parametrize("end, cause", [
    (_read_fails, "dead"), (lambda s: s.modem.mark_down("the module restarted"), "modem_down")])
def test_a_link_that_fails_is_counted_by_its_cause(tmp_path, end, cause):
    s = LinkBench(tmp_path)
    end(s)
    assert s.local.disconnected  # reset
    assert series(exposition(s), "cellbridge_links_closed_total") == {
        f'cellbridge_links_closed_total{{cause="{cause}",modem="main",profile="web"}} 1.0'}


def test_a_udp_profiles_series_come_from_its_relay(tmp_path):
    s = RelayBench(tmp_path)
    s.session(A, b"ask")
    s.pushed(0, b"answer!")
    s.datagram(b"x" * 1461, B)  # more than one AT+QISEND carries: dropped
    lines = exposition(s, {"profile:dns": internet.UDPServer(0, s.relay)})
    labels = 'modem="main",profile="dns"'
    assert {line for line in lines if 'profile="dns"' in line} == carried(labels, 3, 7) | {
        f'cellbridge_datagrams_total{{direction="uplink",{labels}}} 1.0',
        f'cellbridge_datagrams_total{{direction="downlink",{labels}}} 1.0',
        f"cellbridge_links_open{{{labels}}} 1.0",
        f"cellbridge_connections_waiting{{{labels}}} 0.0",
        f'cellbridge_datagrams_dropped_total{{cause="too_large",{labels}}} 1.0'}


def test_the_modem_series_come_from_its_state_and_counters(tmp_path):
    s = LinkBench(tmp_path)
    s.modem.info.update(registration="roaming", signal_dbm=-83)
    s.modem.usage.sent, s.modem.usage.received = 1200, 3400
    s.modem.counters.incr("recovery_step_result", step="resync", outcome="ok")
    s.modem.counters.incr("some_new_event")
    lines = exposition(s)
    assert 'cellbridge_module_up{modem="main"} 1.0' in lines
    assert series(lines, "cellbridge_registration") == {
        'cellbridge_registration{modem="main",state="roaming"} 1.0'}
    assert 'cellbridge_signal_dbm{modem="main"} -83.0' in lines
    assert {'cellbridge_data_bytes_total{direction="uplink",modem="main"} 1200.0',
            'cellbridge_data_bytes_total{direction="downlink",modem="main"} 3400.0'} <= lines
    assert ('cellbridge_recovery_steps_total{modem="main",outcome="ok",step="resync"} 1.0'
            in lines)
    assert 'cellbridge_some_new_event_total{modem="main"} 1.0' in lines
    # The bring-up and the open: every command once, each by its name, none by its arguments.
    opened = series(lines, "cellbridge_at_commands_total")
    assert ('cellbridge_at_commands_total{command="+QIOPEN",modem="main",result="ok"} 1.0'
            in opened)
    assert all("=" not in line.split('command="')[1].split('"')[0] for line in opened)
    s.modem.ready = False
    assert 'cellbridge_module_up{modem="main"} 0.0' in exposition(s)


def test_the_engine_counts_each_command_by_name_and_result():
    clock = Clock()
    counters = Counters()
    engine = ATProtocol(clock, counters=counters)
    engine.makeConnection(StringTransport())
    engine.issue(commands.basic(b"AT+CPIN=\"1234\"", timeout=5.0))
    engine.dataReceived(b"\r\n+CME ERROR: 16\r\n")
    engine.issue(commands.basic(b"AT+CSQ", timeout=5.0)).addErrback(lambda _: None)
    clock.advance(5.0)  # no answer: timeout, then a resync whose AT answers
    engine.dataReceived(b"\r\nOK\r\n")
    engine.issue(commands.basic(b"AT+CSQ", timeout=5.0))
    engine.dataReceived(b"\r\n+CSQ: 20,0\r\n\r\nOK\r\n")
    assert counters.snapshot() == {
        ("at_command", (("command", "+CPIN"), ("result", "error"))): 1,
        ("at_command", (("command", "+CSQ"), ("result", "timeout"))): 1,
        ("at_command", (("command", "AT"), ("result", "ok"))): 1,
        ("at_command", (("command", "+CSQ"), ("result", "ok"))): 1}


def test_a_ledger_adds_only_the_links_it_was_told_of():
    clock = Clock()
    counters = Counters()
    ledger = Ledger(counters, clock, "server", "ssh", "tcp:127.0.0.1:22")
    first, second = Link(), Link()
    ledger.opened(first, "10.0.0.1")
    ledger.opened(second, "10.0.0.2")
    first.uplink, second.downlink = 7, 9
    ledger.closed(first, "remote")
    ledger.closed(first, "dead")  # told twice: the first cause stands
    assert ledger.carried() == {"uplink": 7, "downlink": 9}
    assert counters.snapshot() == {
        ("server_link_closed", (("cause", "remote"), ("server", "ssh"))): 1,
        ("server_link_bytes", (("direction", "uplink"), ("server", "ssh"))): 7}


@pytest.mark.parametrize("endpoint, warned", [
    ("tcp:9464:interface=127.0.0.1", False), ("tcp6:9464:interface=\\:\\:1", False),
    ("unix:/run/cellbridge/metrics.sock", False), ("tcp:9464", True),
    ("tcp:9464:interface=0.0.0.0", True)])
def test_check_warns_of_a_metrics_endpoint_off_loopback(tmp_path, endpoint, warned):
    config = load_config(write(tmp_path, f"[cellbridge]\nmetrics = {endpoint}\n[modem:m]\n"
                                         "port = sim\n"))
    warnings = [w for w in config_warnings(config) if "[cellbridge] metrics:" in w]
    assert bool(warnings) == warned, warnings
    if warned:
        assert warnings[0].startswith(f"{config.path}: [cellbridge] metrics: warning: ")


def test_check_refuses_a_bad_metrics_endpoint(tmp_path):
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, "[cellbridge]\nmetrics = tcp:nope\n[modem:m]\nport = sim\n"))
    assert "[cellbridge] metrics: not a valid server endpoint" in str(error.value)


METRICS_ONLY = "[cellbridge]\nmetrics = tcp:9464:interface=127.0.0.1\n[modem:m]\nport = sim\n"


def test_the_metrics_child_listens_on_its_endpoint_before_systemd_is_told(tmp_path):
    reactor = UDPMemoryReactor()
    root = make_service(load_config(write(tmp_path, METRICS_ONLY)), reactor, FakeComponents(),
                        environ={})
    assert [child.name for child in root] == ["modem:m", "metrics", "systemd"]
    root.privilegedStartService()
    [(port, factory, _, interface)] = reactor.tcpServers
    assert (port, interface) == (9464, "127.0.0.1")
    assert factory.resource.children[b"metrics"].registry is not None


def test_a_metrics_port_that_cannot_be_bound_stops_start_up_in_one_line(tmp_path):
    error = CannotListenError("127.0.0.1", 9464, OSError(98, "Address already in use"))
    root = make_service(load_config(write(tmp_path, METRICS_ONLY)),
                        RaisingMemoryReactor(listenException=error), FakeComponents(), environ={})
    with pytest.raises(CellbridgeError) as caught:
        root.privilegedStartService()
    assert str(caught.value) == ("[metrics] listen: Couldn't listen on 127.0.0.1:9464: "
                                 "[Errno 98] Address already in use.")


def test_without_the_key_there_is_no_metrics_child(tmp_path):
    root = make_service(load_config(write(tmp_path, "[modem:m]\nport = sim\n")),
                        UDPMemoryReactor(), FakeComponents(), environ={})
    assert "metrics" not in root.namedServices
