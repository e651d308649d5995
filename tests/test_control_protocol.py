"""Control socket transcripts: exact bytes in and out of ControlProtocol on a StringTransport; the
snapshot and the trace against the real Modem of the transcript bench."""

import collections
import json
import pathlib
from types import SimpleNamespace

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from bridge.control.protocol import MAX_LINE, ControlProtocol
from bridge.traffic import TrafficTap
from bridge.control.snapshot import server_status, session_link, status_snapshot
from tests.socket_bench import PROFILE, LinkBench, qird, sack


class FakeModem:
    def __init__(self, name):
        self.name = f"modem:{name}"
        self.traffic_observers = []

    def says(self, entry):
        for observer in list(self.traffic_observers):
            observer(entry)


def connected(snapshot=None, modems=()):
    """A protocol on a StringTransport, tracing ``modems`` through a TrafficTap of its own."""
    traffic = TrafficTap()
    for modem in modems:
        traffic.watch(modem)
    protocol = ControlProtocol(lambda: snapshot, traffic,
                               lambda: [modem.name.partition(":")[2] for modem in modems])
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def exchange(protocol, transport, data: bytes) -> bytes:
    transport.clear()
    protocol.dataReceived(data)
    return transport.value()


def test_status_is_one_json_line_and_the_connection_stays_open_for_the_next_request():
    protocol, transport = connected({"version": 1, "modems": []})
    assert exchange(protocol, transport, b'{"command": "status"}\n') == (
        b'{"version": 1, "modems": []}\n')
    assert exchange(protocol, transport, b'{"command":"status"}\r\n') == (
        b'{"version": 1, "modems": []}\n')
    assert not transport.disconnecting


def test_bad_requests_get_an_error_line_and_the_connection_stays_usable():
    protocol, transport = connected({"version": 1})
    assert exchange(protocol, transport, b"status\n") == (
        b'{"error": "not JSON: Expecting value: line 1 column 1 (char 0)"}\n')
    assert exchange(protocol, transport, b'["status"]\n') == (
        b'{"error": "a request is a JSON object, e.g. {\\"command\\": \\"status\\"}"}\n')
    assert exchange(protocol, transport, b'{"command": "reboot"}\n') == (
        b'{"error": "unknown command \'reboot\'; known: status, trace"}\n')
    assert exchange(protocol, transport, b'{}\n') == (
        b'{"error": "unknown command None; known: status, trace"}\n')
    assert exchange(protocol, transport, b"\n  \n") == b""  # blank lines are ignored
    assert exchange(protocol, transport, b'{"command": "status"}\n') == b'{"version": 1}\n'
    assert not transport.disconnecting


def test_a_request_line_longer_than_the_limit_is_refused_and_the_connection_closed():
    protocol, transport = connected({"version": 1})
    assert exchange(protocol, transport, b"x" * (MAX_LINE + 1)) == (
        b'{"error": "request line longer than 4096 bytes; closing"}\n')
    assert transport.disconnecting


def test_a_failing_snapshot_is_an_error_answer_not_a_dropped_connection():
    def broken():
        raise RuntimeError("boom")

    protocol = ControlProtocol(broken, TrafficTap(), lambda: [])
    transport = StringTransport()
    protocol.makeConnection(transport)
    assert exchange(protocol, transport, b'{"command": "status"}\n') == (
        b'{"error": "the status snapshot failed (see the daemon\'s log)"}\n')
    assert not transport.disconnecting


def test_trace_streams_each_entry_of_every_modem_until_the_client_goes():
    main, spare = FakeModem("main"), FakeModem("spare")
    protocol, transport = connected(modems=[main, spare])
    assert exchange(protocol, transport, b'{"command": "trace"}\n') == (
        b'{"trace": ["main", "spare"]}\n')
    transport.clear()
    main.says("2026-12-05T04:40:01.123+0000 > b'AT+CPIN=***\\r'")
    spare.says("2026-12-05T04:40:01.124+0000 < b'OK'")
    assert transport.value() == (
        b'{"modem": "main", "entry": "2026-12-05T04:40:01.123+0000 > b\'AT+CPIN=***\\\\r\'"}\n'
        b'{"modem": "spare", "entry": "2026-12-05T04:40:01.124+0000 < b\'OK\'"}\n')
    assert exchange(protocol, transport, b'{"command": "status"}\n') == b""  # tracing: ignored
    protocol.connectionLost(None)
    assert protocol._traffic.watchers == []


def test_a_slow_trace_client_gets_a_count_of_the_entries_dropped_while_its_buffer_was_full():
    main = FakeModem("main")
    protocol, transport = connected(modems=[main])
    exchange(protocol, transport, b'{"command": "trace"}\n')
    assert transport.producer is protocol and transport.streaming
    transport.clear()
    protocol.pauseProducing()  # what the connection does when its buffer is full
    for n in range(1000):
        main.says(f"entry {n}")
    assert transport.value() == b""  # nothing held for it meanwhile
    protocol.resumeProducing()
    main.says("entry 1000")
    assert transport.value() == (b'{"dropped": 1000}\n'
                                 b'{"modem": "main", "entry": "entry 1000"}\n')


def test_trace_of_a_real_modem_shows_the_open_as_the_ring_records_it(tmp_path):
    bench = LinkBench(tmp_path)
    protocol, transport = connected(modems=[bench.modem])
    exchange(protocol, transport, b'{"command": "trace"}\n')
    transport.clear()
    bench.accept()  # a second local connection: module socket 1
    bench.connect_ok(1)
    entries = [json.loads(line)["entry"] for line in transport.value().splitlines()]
    assert [entry.split(" ", 1)[1] for entry in entries] == [
        "> b'AT+QIDNSIP=0\\r'", "< b'OK'", '> b\'AT+QIOPEN=1,"TCP","10.1.2.3",80\\r\'',
        "< b'OK'", "< b'1, CONNECT OK'"]
    assert bench.modem.ring.dump().splitlines()[-5:] == entries


class Listener(SimpleNamespace):
    """A tcp profile's listener as the tree holds it: ``factory`` and ``running``."""


class Root(list):
    """A service tree's root as the snapshot reads it: its children (named as bridge.service
    names them), reactor and config."""

    def __init__(self, bench):
        super().__init__([bench.modem, Listener(name="profile:web", factory=bench.admission,
                                                running=1)])
        self.reactor = bench.clock
        self.config = SimpleNamespace(profiles={"web": PROFILE})
        self.namedServices = {child.name: child for child in self}


def test_the_snapshot_shows_a_live_link_with_its_bytes_age_and_idle(tmp_path):
    bench = LinkBench(tmp_path)
    bench.local.peerAddr = IPv4Address("TCP", "127.0.0.1", 50123)  # the app's end
    bench.local_data(b"a" * 100)
    bench.send_ok(1)
    bench.clock.advance(5)
    assert bench.wire() == b"AT+QISACK=0\r"  # the tail's acks are due
    bench.module(sack(100, 60))
    bench.module(b"+QIRDI: 0,1,0\r\n")
    assert bench.wire() == b"AT+QIRD=0,1,0,1500\r"
    bench.module(qird(b"b" * 30))
    bench.clock.advance(2)
    snapshot = json.loads(json.dumps(status_snapshot(Root(bench))))
    assert snapshot["profiles"] == [{
        "name": "web", "modem": "main", "protocol": "tcp", "listen": PROFILE.listen.endpoint,
        "listening": True, "remote": "10.1.2.3:80", "waiting": 0,
        "links": [{"slot": 0, "local": "127.0.0.1:50123", "remote": "10.1.2.3:80",
                   "state": "connected", "sent": 100, "received": 30, "unacked": 40,
                   "age": 7.0, "idle": 2.0}]}]
    modem = snapshot["modems"][0]
    assert (modem["name"], modem["state"], modem["registration"], modem["imei"]) == (
        "main", "ready", "home", bench.modem.info["imei"])
    assert modem["local_ips"] == {"0": bench.modem.local_ip}
    assert modem["last_recovery"] is None and modem["recovering"] is None


def test_status_through_the_protocol_is_the_snapshot_on_one_line(tmp_path):
    root = Root(LinkBench(tmp_path))
    protocol, transport = connected(modems=[])
    protocol._snapshot = lambda: status_snapshot(root)
    line = exchange(protocol, transport, b'{"command": "status"}\n')
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == json.loads(json.dumps(status_snapshot(root)))


class ClosedPort:
    """A UDP port after its connectionLost: Twisted's has no socket to ask its address of."""

    def getHost(self):
        raise AttributeError("'Port' object has no attribute 'socket'")


def test_a_servers_links_stream_and_datagram_and_one_whose_local_port_closed():
    stream = SimpleNamespace(ip="10.9.8.7", local=SimpleNamespace(transport=StringTransport(
        hostAddress=IPv4Address("TCP", "127.0.0.1", 40001))), socket=SimpleNamespace(stats=lambda: {
            "slot": 2, "state": "lingering", "sent": 5, "received": 7, "unacked": 1, "age": 3.04,
            "idle": 1.0}))
    datagram = SimpleNamespace(ip="10.9.8.6", local=ClosedPort(), socket=SimpleNamespace(
        stats=lambda: {"slot": 3, "open": True, "bytes_down": 12, "drops": {}}))
    config = SimpleNamespace(name="back", modem="main", protocol="tcp", port=2020,
                             forward="tcp:127.0.0.1:22")
    service = SimpleNamespace(server=config, listening=True, clients={3: datagram, 2: stream})
    assert server_status(service) == {
        "name": "back", "modem": "main", "protocol": "tcp", "port": 2020,
        "forward": "tcp:127.0.0.1:22", "listening": True,
        "links": [{"slot": 2, "local": "127.0.0.1:40001", "remote": "10.9.8.7",
                   "state": "lingering", "sent": 5, "received": 7, "unacked": 1, "age": 3.0,
                   "idle": 1.0},
                  {"slot": 3, "local": None, "remote": "10.9.8.6", "state": "open", "sent": 0,
                   "received": 12, "unacked": None, "age": None, "idle": None}]}


def test_a_udp_session_is_a_link_from_its_source_waiting_until_it_has_a_socket():
    remote = SimpleNamespace(host="10.1.2.3", port=53)
    waiting = SimpleNamespace(source=("127.0.0.1", 5000), socket=None,
                              profile=SimpleNamespace(remote=remote),
                              tally=lambda: (collections.Counter(), collections.Counter()))
    assert session_link(waiting) == {
        "slot": None, "local": "127.0.0.1:5000", "remote": "10.1.2.3:53", "state": "waiting",
        "sent": 0, "received": 0, "unacked": None, "age": None, "idle": None}
    carrying = SimpleNamespace(source=waiting.source, profile=waiting.profile,
                               socket=SimpleNamespace(slot=4, open=True),
                               tally=lambda: (collections.Counter(bytes_up=30, bytes_down=90),
                                              collections.Counter()))
    link = session_link(carrying)
    assert (link["slot"], link["state"], link["sent"], link["received"]) == (4, "open", 30, 90)


def test_every_snapshot_field_is_documented_in_the_readme(tmp_path):
    readme = (pathlib.Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    table = readme.split("### `cellbridge status --json`", 1)[1].split("\n## ", 1)[0]
    snapshot = status_snapshot(Root(LinkBench(tmp_path)))
    modem, profile = snapshot["modems"][0], snapshot["profiles"][0]
    fields = ([f"`{key}`" for key in snapshot] + [f"`.{key}`" for key in modem]
              + [f"`.{key}`" for key in profile] + [f"`.{key}`" for key in profile["links"][0]]
              + [f"`.{key}`" for key in server_status(SimpleNamespace(
                  server=SimpleNamespace(name="s", modem="m", protocol="tcp", port=1, forward="f"),
                  listening=False, clients={}))])
    listed = [field for field in fields if field in table or field[:-1] + "[]`" in table]
    assert fields == listed
