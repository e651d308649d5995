"""Pump transcripts: one bulk command at a time, round robin, control commands in between."""

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import connectProtocol
from twisted.internet.protocol import Protocol

from bridge.at import commands
from bridge.config import Remote
from bridge.modem.endpoint import ModemEndpoint
from bridge.modem.pump import BulkJob, Pump
from tests.socket_bench import ModemBench


class Worker:
    """A link stand-in offering ``jobs`` bulk commands."""

    def __init__(self, name, jobs):
        self.name, self.jobs, self.results = name, jobs, []

    def next_bulk(self):
        if not self.jobs:
            return None
        self.jobs -= 1
        return BulkJob(self.name, self.results.append)


def test_one_bulk_command_at_a_time_round_robin():
    issued, pending = [], []

    def issue(command):
        issued.append(command)
        pending.append(Deferred())
        return pending[-1]

    pump = Pump(issue)
    a, b = Worker("a", 3), Worker("b", 1)
    pump.add(a)
    pump.add(b)
    pump.kick()
    pump.kick()
    assert issued == ["a"]
    pending[-1].callback("ok")
    assert issued == ["a", "b"] and a.results == ["ok"]
    pending[-1].callback("ok")
    pending[-1].callback("ok")
    pending[-1].callback("ok")
    assert issued == ["a", "b", "a", "a"] and not pump.busy


def test_commands_failing_at_once_do_not_recurse_or_stall():
    pump = Pump(lambda command: fail(RuntimeError("modem down")))
    worker = Worker("a", 5000)
    pump.add(worker)
    pump.kick()
    assert len(worker.results) == 5000 and not pump.busy


def test_next_bulk_issued_synchronously_from_the_previous_callback():
    pump = Pump(lambda command: succeed(command))
    worker = Worker("a", 3)
    pump.add(worker)
    pump.kick()
    assert worker.results == ["a", "a", "a"]


def two_sockets(tmp_path):
    """A ready modem with two connected module sockets (0 and 1); returns (bench, transports)."""
    bench = ModemBench(tmp_path)
    endpoint = ModemEndpoint(bench.modem, "10.0.0.9", 7)
    protocols = []
    for n in (0, 1):
        protocols.append(Protocol())
        connectProtocol(endpoint, protocols[-1])
        bench.connect_ok(n, Remote("TCP", "10.0.0.9", 7))
    return bench, [protocol.transport for protocol in protocols]


def test_links_take_turns_and_a_control_command_goes_between_two_sends(tmp_path):
    modem, (first, second) = two_sockets(tmp_path)
    first.write(b"1" * 3000)
    second.write(b"2" * 3000)
    assert modem.wire() == b"AT+QISEND=0,1460\r"
    modem.module(b"\r\n> ")
    query = modem.modem.issue(commands.qisack(1))  # a control command while a send is on the wire
    modem.module(b"\r\nSEND OK\r\n")
    assert modem.wire() == b"1" * 1460 + b"AT+QISACK=1\r"
    modem.module(b"\r\n+QISACK: 0, 0, 0\r\n\r\nOK\r\n")
    assert query.called
    assert modem.wire() == b"AT+QISEND=1,1460\r"  # the other link's turn
    modem.module(b"\r\n> ")
    modem.module(b"\r\nSEND OK\r\n")
    assert modem.wire() == b"2" * 1460 + b"AT+QISEND=0,1460\r"


def test_a_link_both_sending_and_reading_alternates_directions(tmp_path):
    modem, (link, _) = two_sockets(tmp_path)
    link.write(b"u" * 3000)
    modem.module(b"+QIRDI: 0,1,0\r\n")
    assert modem.wire() == b"AT+QISEND=0,1460\r"
    modem.module(b"\r\n> ")
    modem.module(b"\r\nSEND OK\r\n")
    assert modem.wire().endswith(b"AT+QIRD=0,1,0,1500\r")
    modem.module(b"\r\n+QIRD: 10.0.0.9:7,TCP,1\r\nd\r\nOK\r\n")
    assert modem.wire() == b"AT+QISEND=0,1460\r"
