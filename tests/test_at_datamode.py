"""Transparent data mode: which CONNECT enters it, raw bytes both ways, +++ with guard times,
CLOSED detection."""

import pytest
from twisted.logger import capturedLogs, formatEvent

from bridge.at import commands as c
from bridge.at.commands import OpenAccepted, Reply, SignalQuality
from bridge.at.errors import CommandTimeout
from bridge.at.events import Closed, ConnectResult, DataModeEnded, Resynced
from tests.test_at_harness import Harness, error_of, value_of


class Sink:
    def __init__(self):
        self.data = b""
        self.ended = []

    def data_received(self, data):
        self.data += data

    def data_mode_ended(self, reason):
        self.ended.append(reason)


def connected(guard=1.0):
    """A harness in data mode after a transparent AT+QIOPEN + CONNECT, with a sink attached."""
    h = Harness(guard_time=guard, escape_timeout=2.0)
    opened = h.issue(c.qiopen_transparent("TCP", "1.2.3.4", 80))
    assert h.sent() == b'AT+QIOPEN="TCP","1.2.3.4",80\r'
    h.recv(b"\r\nOK\r\n\r\nCONNECT\r\nearly bytes")
    assert value_of(opened) == ConnectResult(None, True, transparent=True)
    assert h.events == []
    sink = Sink()
    h.proto.data_mode.set_sink(sink)
    h.sent()
    return h, sink


def test_connect_enters_data_mode_and_binary_flows_both_ways():
    h, sink = connected()
    assert sink.data == b"early bytes"
    h.recv(b"\r\nOK\r\nSEND OK\x00\xff")  # payload that looks like module output
    assert sink.data == b"early bytes\r\nOK\r\nSEND OK\x00\xff"
    h.proto.data_mode.write(b"AT\r\x1a")
    assert h.sent() == b"AT\r\x1a"


def test_commands_wait_while_in_data_mode():
    h, _ = connected()
    queued = h.issue(c.qisack())
    assert h.sent() == b""
    h.clock.advance(1)
    escaped = []
    h.proto.data_mode.escape().addBoth(escaped.append)
    h.clock.advance(0)
    h.sent()
    h.clock.advance(0.5)
    h.recv(b"\r\nOK\r\n")
    assert escaped == [None]
    assert h.sent() == b"AT+QISACK\r"
    assert queued == []


def test_escape_respects_guard_times():
    h, sink = connected(guard=1.0)
    h.proto.data_mode.write(b"x")
    h.sent()
    escaped = []
    h.proto.data_mode.escape().addBoth(escaped.append)
    h.clock.advance(0.99)
    assert h.sent() == b""  # still inside the guard after our last byte
    h.clock.advance(0.01)
    assert h.sent() == b"+++"
    h.recv(b"tail\r\nOK\r\n")
    assert escaped == [None]
    assert sink.data.endswith(b"tail")
    assert DataModeEnded("escaped") in h.events
    h.issue(c.at())
    assert h.sent() == b"AT\r"  # back in command mode


def test_escape_without_ok_fails_and_stays_in_data_mode():
    h, sink = connected(guard=1.0)
    escaped = []
    h.proto.data_mode.escape().addBoth(escaped.append)
    h.clock.advance(1)
    assert h.sent() == b"+++"
    h.clock.advance(3)
    assert isinstance(error_of(escaped), CommandTimeout)
    h.recv(b"more")
    assert sink.data.endswith(b"more")


def test_closed_marker_followed_by_data_was_payload():
    h, sink = connected()
    h.recv(b"abc\r\nCLOSED\r\n")
    assert sink.data.endswith(b"abc")
    h.recv(b"def")
    assert sink.data.endswith(b"abc\r\nCLOSED\r\ndef")
    h.clock.advance(10)
    assert h.sent() == b""  # no probe: the tail was resolved by more data


def test_closed_marker_then_silence_and_no_ok_means_closed():
    h, sink = connected(guard=1.0)
    h.recv(b"abc\r\nCLOSED\r\n")
    h.clock.advance(1.0)  # quiet after the marker, then our own guard (already satisfied)
    h.clock.advance(0)
    assert h.sent() == b"+++"
    h.recv(b"+++")  # command-mode echo of our escape
    h.clock.advance(3.0)
    assert sink.data == b"early bytesabc"
    assert sink.ended == ["closed"]
    assert Closed(None) in h.events and DataModeEnded("closed") in h.events
    assert h.sent() == b"\x1bAT\r"  # clean the '+++' off the module's command line
    h.recv(b"\r\nOK\r\n")
    assert h.events[-1] == Resynced(True)


def test_closed_marker_then_ok_to_probe_was_payload_and_session_resumes():
    h, sink = connected(guard=1.0)
    h.recv(b"abc\r\nCLOSED\r\n")
    h.clock.advance(1.0)
    h.clock.advance(0)
    assert h.sent() == b"+++"
    h.recv(b"\r\nOK\r\n")
    assert sink.data == b"early bytesabc\r\nCLOSED\r\n"
    assert h.sent() == b"ATO\r"
    h.recv(b"\r\nCONNECT\r\nagain")
    assert sink.data.endswith(b"again")
    assert sink.ended == []


def test_held_trailing_cr_is_delivered_after_a_short_hold():
    h, sink = connected()
    h.recv(b"line\r")
    assert sink.data.endswith(b"line")
    h.clock.advance(0.05)
    assert sink.data.endswith(b"line\r")


def test_write_outside_data_mode_is_refused():
    h = Harness()
    with pytest.raises(RuntimeError):
        h.proto.data_mode.write(b"x")


def stray_connect_lines(events):
    return [formatEvent(e) for e in events if "CONNECT" in e["log_format"]]


def test_a_bare_connect_with_nothing_in_flight_is_logged_and_ignored():
    h = Harness()
    with capturedLogs() as logged:
        h.recv(b"\r\nCONNECT\r\n")
    assert stray_connect_lines(logged) == [
        "ignored a bare CONNECT from the module (data mode needs a transparent AT+QIOPEN or "
        "ATO on the wire, or a transparent server listening; on the wire: nothing)"]
    assert h.events == []
    outcome = h.issue(c.csq())
    assert h.sent() == b"AT+CSQ\r"
    h.recv(b"\r\n+CSQ: 17,99\r\n\r\nOK\r\n")
    assert value_of(outcome) == SignalQuality(17, 99)


def test_a_bare_connect_during_a_mux_qiopen_leaves_the_command_and_the_queue_working():
    h = Harness()
    opened = h.issue(c.qiopen("TCP", "1.2.3.4", 80, socket=0))
    queued = h.issue(c.csq())
    assert h.sent() == b'AT+QIOPEN=0,"TCP","1.2.3.4",80\r'
    with capturedLogs() as logged:
        h.recv(b"\r\nCONNECT\r\n")
    assert stray_connect_lines(logged)[0].endswith(
        'on the wire: AT+QIOPEN=0,"TCP","1.2.3.4",80)')
    h.recv(b"\r\nOK\r\n")
    assert value_of(opened) == OpenAccepted(False)
    assert h.sent() == b"AT+CSQ\r"
    h.recv(b"\r\n+CSQ: 5,0\r\n\r\nOK\r\n")
    assert value_of(queued) == SignalQuality(5, 0)
    assert h.events == []


def test_transparent_qiopen_stays_on_the_wire_until_connect_fail():
    h = Harness()
    opened = h.issue(c.qiopen_transparent("TCP", "1.2.3.4", 80))
    queued = h.issue(c.at())
    h.sent()
    h.recv(b"\r\nOK\r\n")
    assert h.sent() == b""  # the module may switch to data mode any moment: nothing is written
    h.recv(b"\r\nCONNECT FAIL\r\n")
    assert value_of(opened) == ConnectResult(None, False)
    assert h.sent() == b"AT\r"
    h.recv(b"\r\nOK\r\n")
    assert value_of(queued) == Reply(())


def test_a_listening_transparent_server_takes_its_client_on_an_unprompted_connect():
    h = Harness()
    h.proto.transparent_server_listening = True
    h.recv(b"\r\nREMOTE IP: 10.79.141.26\r\n\r\nCONNECT\r\nhello")
    sink = Sink()
    h.proto.data_mode.set_sink(sink)
    assert sink.data == b"hello"
    assert h.events[-1] == ConnectResult(None, True, transparent=True)
    h.issue(c.at())
    assert h.sent() == b""  # commands wait while the UART is the client's


def test_no_unprompted_connect_is_taken_once_the_server_stopped_listening():
    h = Harness()
    h.proto.transparent_server_listening = True
    h.proto.transparent_server_listening = False
    h.recv(b"\r\nCONNECT\r\n")
    h.issue(c.at())
    assert h.sent() == b"AT\r"
