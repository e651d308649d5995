"""Metered SIMs: the engine counts the payload bytes the module carried, both ways, for every
kind of socket; the counts survive a restart in the state directory."""

import json

from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent

from bridge.at import commands as c
from bridge.at.commands import ReadResult
from bridge.counters import DataUsage
from bridge.modem.usage import UsageStore
from tests.modem_harness import ModemHarness
from tests.test_at_datamode import connected
from tests.test_at_harness import Harness, value_of


def test_an_at_qisend_payload_counts_as_sent_and_its_framing_does_not():
    h = Harness()
    h.issue(c.qisend(b"ping!", socket=0))
    h.recv(b"\r\n> ")
    assert h.sent() == b"AT+QISEND=0,5\rping!"
    h.recv(b"\r\nSEND OK\r\n")
    assert (h.proto.usage.sent, h.proto.usage.received) == (5, 0)


def test_pushed_receive_frames_count_as_received():
    h = Harness()
    h.recv(b"\r\n+RECEIVE: 0, 6\r\nOK\r\n\r\n", b"\r\n+RECEIVE: 2, 3\r\nabc")
    assert (h.proto.usage.sent, h.proto.usage.received) == (0, 9)


def test_pulled_tcp_and_udp_reads_count_as_received():
    h = Harness()
    tcp = h.issue(c.qird(1500, socket=1))
    h.recv(b"\r\n+QIRD: 10.0.0.1:80,TCP,4\r\nabcd\r\nOK\r\n")
    udp = h.issue(c.qird(1500, socket=2))
    h.recv(b"\r\n+QIRD: 10.0.0.1:53,UDP,7\r\ndatagra\r\nOK\r\n")
    drained = h.issue(c.qird(1500, socket=2))
    h.recv(b"\r\nOK\r\n")
    assert [value_of(x).data for x in (tcp, udp, drained)] == [b"abcd", b"datagra", b""]
    assert isinstance(value_of(udp), ReadResult)
    assert h.proto.usage.received == 11


def test_transparent_data_counts_both_ways_including_bytes_before_the_sink():
    h, sink = connected()
    h.recv(b"\x00\xffCLOSED?")  # a marker's start held, then released as the peer's bytes
    h.clock.advance(2)
    h.proto.data_mode.write(b"hello")
    assert h.sent() == b"hello"
    assert sink.data == b"early bytes\x00\xffCLOSED?"
    assert (h.proto.usage.sent, h.proto.usage.received) == (5, len(sink.data))


def test_a_modem_counts_into_its_usage_across_engines(tmp_path):
    """Every engine the modem makes (one per port opening) adds to the same DataUsage."""
    h = ModemHarness(tmp_path / "state").up()
    assert h.modem.protocol.usage is h.modem.usage
    h.recv(b"\r\n+RECEIVE: 0, 4\r\nabcd")
    assert (h.modem.usage.sent, h.modem.usage.received) == (0, 4)


# -- persistence --------------------------------------------------------------------------------

def store(tmp_path, usage=None, clock=None):
    return UsageStore(clock or Clock(), str(tmp_path / "state"), "main", usage or DataUsage(),
                      interval=60.0)


def test_counts_are_written_and_read_back(tmp_path):
    first = store(tmp_path)
    first.load()
    first.usage.sent, first.usage.received = 1200, 34000
    first.flush()
    assert json.loads((tmp_path / "state" / "main.usage").read_text()) == {
        "sent": 1200, "received": 34000}
    again = store(tmp_path)
    again.load()
    assert (again.usage.sent, again.usage.received) == (1200, 34000)


def test_the_file_is_written_an_interval_after_a_change_and_never_while_idle(tmp_path):
    clock = Clock()
    s = store(tmp_path, clock=clock)
    s.load()
    path = tmp_path / "state" / "main.usage"
    assert not clock.getDelayedCalls()  # nothing runs while the counts stand still
    s.usage.count_sent(10)
    s.usage.count_sent(10)
    clock.advance(59)
    assert not path.exists()
    clock.advance(1)
    assert json.loads(path.read_text()) == {"sent": 20, "received": 0}
    assert not clock.getDelayedCalls()
    s.usage.count_received(5)
    s.flush()  # the modem goes down: written at once, the timer gone
    assert json.loads(path.read_text()) == {"sent": 20, "received": 5}
    assert not clock.getDelayedCalls()
    path.unlink()
    s.flush()  # unchanged since: not written again
    assert not path.exists()


def test_a_corrupt_file_is_a_warning_and_counting_starts_from_zero(tmp_path):
    (tmp_path / "state").mkdir()
    for text in ("{not json", '{"sent": -1, "received": 2}', '{"sent": 1}', "[1, 2]",
                 '{"sent": "1", "received": 2}'):
        (tmp_path / "state" / "main.usage").write_text(text)
        s = store(tmp_path, DataUsage(7, 7))
        with capturedLogs() as events:
            s.load()
        assert (s.usage.sent, s.usage.received) == (0, 0), text
        (line,) = [formatEvent(e) for e in events]
        assert "cannot read the data usage in" in line and "counting from zero" in line


def test_an_unwritable_state_dir_is_a_warning(tmp_path):
    (tmp_path / "state").write_text("a file where the directory should be")
    s = store(tmp_path)
    s.usage.sent = 1
    with capturedLogs() as events:
        s.flush()
    (line,) = [formatEvent(e) for e in events]
    assert line.startswith("cannot write the data usage to")


def test_a_modem_keeps_its_counts_across_a_restart_and_logs_them_at_stop(tmp_path):
    first = ModemHarness(tmp_path / "state").up()
    first.recv(b"\r\n+RECEIVE: 0, 4\r\nabcd")
    first.modem.usage.sent += 3
    with capturedLogs() as events:
        first.modem.stopService()
    path = tmp_path / "state" / "main.usage"
    assert json.loads(path.read_text()) == {"sent": 3, "received": 4}
    assert any(formatEvent(e) == f"modem:main: data carried: 3 bytes sent, 4 bytes received "
                                 f"(kept in {path})" for e in events)
    second = ModemHarness(tmp_path / "state").up()
    second.recv(b"\r\n+RECEIVE: 0, 2\r\nxy")
    assert (second.modem.usage.sent, second.modem.usage.received) == (3, 6)
