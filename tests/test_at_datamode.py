"""Transparent data mode: which CONNECT enters it, raw bytes both ways, +++ with guard times,
CLOSED detection."""

import pytest
from twisted.logger import capturedLogs, formatEvent

from bridge.at import commands as c
from bridge.at.commands import OpenAccepted, Reply, SignalQuality
from bridge.at.datamode import DRAIN_POLL, DTR_SETTLE, MODULE_GUARD, UNSEEN_BUFFER
from bridge.at.errors import CommandTimeout
from bridge.at.events import Boot, Closed, ConnectResult, DataModeEnded, PdpDeact, Resynced
from bridge.at.plusguard import PLUS_HOLD
from tests.test_at_harness import Harness, error_of, value_of


class Sink:
    def __init__(self):
        self.data = b""
        self.ended = []

    def data_received(self, data):
        self.data += data

    def data_mode_ended(self, reason):
        self.ended.append(reason)


def connected(guard=1.0, **options):
    """A harness in data mode after a transparent AT+QIOPEN + CONNECT, with a sink attached; its
    engine is a transparent modem's (its resyncs escape first)."""
    h = Harness(guard_time=guard, escape_timeout=2.0, **options)
    h.proto.transparent = True
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
    h.clock.advance(MODULE_GUARD)  # the module answers after its own guard
    h.recv(b"tail\r\nOK\r\n")
    assert escaped == [None]
    assert sink.data.endswith(b"tail")
    assert DataModeEnded("escaped") in h.events
    h.issue(c.at())
    assert h.sent() == b"AT\r"  # back in command mode


def unanswered_escape(h):
    """An escape after the guard (1 s) that the module never answers -> its error."""
    escaped = []
    h.proto.data_mode.escape().addBoth(escaped.append)
    h.clock.advance(1)
    assert h.sent() == b"+++"
    h.clock.advance(3)
    return error_of(escaped)


def test_escape_without_ok_fails_and_stays_in_data_mode():
    h, sink = connected(guard=1.0)
    assert isinstance(unanswered_escape(h), CommandTimeout)
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
    h.clock.advance(MODULE_GUARD)  # the module answers after its own guard
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


# -- payload never forms an escape (bridge/at/plusguard.py) ----------------------------------------


def test_plus_payload_after_silence_leaves_as_one_plus_then_the_rest_after_the_hold():
    h, sink = connected()
    h.clock.advance(1)
    h.proto.data_mode.write(b"+++")
    assert h.sent() == b"+"
    h.clock.advance(PLUS_HOLD - 0.001)
    assert h.sent() == b""
    h.clock.advance(0.001)
    assert h.sent() == b"++"
    assert h.events == []  # still in data mode: no escape, no end


def test_an_escape_waits_for_held_plus_bytes_then_the_guard_time():
    h, _ = connected(guard=1.0)
    h.clock.advance(1)
    h.proto.data_mode.write(b"+ab")
    assert h.sent() == b"+"
    escaped = []
    h.proto.data_mode.escape().addBoth(escaped.append)
    h.clock.advance(PLUS_HOLD)
    assert h.sent() == b"ab"  # the held bytes still leave: they were written before the escape
    h.clock.advance(0.999)
    assert h.sent() == b""  # the guard counts from the held bytes, not from the '+'
    h.clock.advance(0.002)
    assert h.sent() == b"+++"
    h.clock.advance(MODULE_GUARD)  # the module answers after its own guard
    h.recv(b"\r\nOK\r\n")
    assert escaped == [None]


def draining(h, unsent: int) -> list:
    """Give the harness's port an ``unsent()`` (bytes not yet on the wire); the test moves it."""
    backlog = [unsent]
    h.transport.unsent = lambda: backlog[0]
    return backlog


def test_an_escape_waits_while_the_port_has_unsent_bytes_and_counts_the_guard_from_the_drain():
    h, _ = connected(guard=1.0)
    h.proto.data_mode.write(b"x" * 4096)
    h.sent()
    backlog = draining(h, 4096)
    escaped = []
    h.proto.data_mode.escape().addBoth(escaped.append)
    h.clock.advance(2.0)  # twice the guard after our last write: the bytes have not left yet
    assert h.sent() == b""
    backlog[0] = 0
    h.clock.advance(DRAIN_POLL)  # the next poll sees the port empty
    h.clock.advance(0.999)
    assert h.sent() == b""  # a guard of silence after the drain, not after the write
    h.clock.advance(0.002)
    assert h.sent() == b"+++"
    h.clock.advance(MODULE_GUARD)  # the module answers after its own guard
    h.recv(b"\r\nOK\r\n")
    assert escaped == [None]


def with_dtr(h) -> list:
    """Wire the DTR pin of the harness's data mode; returns ``(time, asserted)`` of each change."""
    pins = []
    h.proto.data_mode.dtr = lambda asserted: pins.append((h.clock.seconds(), asserted))
    return pins


def test_a_dtr_escape_drops_dtr_after_the_drain_and_a_settle_and_raises_it_on_ok():
    h, sink = connected(guard=1.0)
    pins = with_dtr(h)
    h.proto.data_mode.write(b"data")
    assert h.sent() == b"data"
    backlog = draining(h, 4)
    escaped = []
    h.proto.data_mode.escape().addBoth(escaped.append)
    h.clock.advance(0.5)
    assert pins == []  # the bytes are still on their way
    backlog[0] = 0
    h.clock.advance(DRAIN_POLL)
    drained = h.clock.seconds()
    h.clock.advance(DTR_SETTLE - 0.001)
    assert pins == []
    h.clock.advance(0.002)
    assert pins == [(pytest.approx(drained + DTR_SETTLE, abs=0.002), False)]
    assert h.sent() == b""  # no '+++' (AT+QITCFG disabled it)
    h.recv(b"tail\r\nOK\r\n")
    assert [asserted for _, asserted in pins] == [False, True]
    assert escaped == [None]
    assert sink.data.endswith(b"tail")
    assert DataModeEnded("escaped") in h.events
    h.issue(c.at())
    assert h.sent() == b"AT\r"


def test_an_unanswered_dtr_escape_times_out_raises_dtr_and_stays_in_data_mode():
    h, sink = connected(guard=1.0)
    pins = with_dtr(h)
    escaped = []
    h.proto.data_mode.escape().addBoth(escaped.append)
    h.clock.advance(DTR_SETTLE)
    assert [asserted for _, asserted in pins] == [False]
    h.clock.advance(1.999)
    assert escaped == []
    h.clock.advance(0.002)  # escape_timeout (2 s) after the drop
    assert isinstance(error_of(escaped), CommandTimeout)
    assert [asserted for _, asserted in pins] == [False, True]
    assert h.sent() == b""  # no resync: the module never left data mode
    h.recv(b"more")
    assert sink.data.endswith(b"more")
    h.proto.data_mode.write(b"x")
    assert h.sent() == b"x"


# -- a held marker decided by DCD or by a probe escape (app note §6.3) ---------------------------


def with_carrier(h, value) -> list:
    """Wire DCD to ``value``; returns the times it was read."""
    reads = []

    def carrier():
        reads.append(h.clock.seconds())
        return value

    h.proto.data_mode.carrier = carrier
    return reads


def test_carrier_on_means_a_held_closed_was_payload_and_no_escape_is_written():
    h, sink = connected(guard=1.0)
    reads = with_carrier(h, True)
    h.recv(b"abc\r\nCLOSED\r\n")
    assert sink.data == b"early bytesabc"
    h.clock.advance(0.999)
    assert reads == []
    h.clock.advance(0.002)
    assert len(reads) == 1
    assert sink.data == b"early bytesabc\r\nCLOSED\r\n"
    h.clock.advance(10)
    assert h.sent() == b""
    assert sink.ended == [] and h.events == []
    h.proto.data_mode.write(b"still")
    assert h.sent() == b"still"


def test_carrier_off_means_a_held_closed_was_the_module_ending_the_session():
    h, sink = connected(guard=1.0)
    with_carrier(h, False)
    h.recv(b"abc\r\nCLOSED\r\n")
    h.clock.advance(1.0)
    assert sink.data == b"early bytesabc"  # the module's words are not the peer's data
    assert sink.ended == ["closed"]
    assert DataModeEnded("closed") in h.events and Closed(None) in h.events
    h.clock.advance(10)
    assert h.sent() == b""  # no probe escape, no resync: nothing was written on its line
    h.issue(c.at())
    assert h.sent() == b"AT\r"  # command mode


@pytest.mark.parametrize("marker, reason, event", [
    (b"\r\nCLOSED\r\n", "closed", Closed(None)),
    (b"\r\n+PDP DEACT\r\n", "pdp", PdpDeact()),
    (b"\r\nCall Ready\r\n", "restarted", Boot("boot in data mode", "Call Ready")),
    (b"\r\nSMS Ready\r\n", "restarted", Boot("boot in data mode", "SMS Ready")),
])
def test_a_held_marker_with_no_ok_to_the_probe_ends_the_session_for_its_reason(marker, reason,
                                                                              event):
    h, sink = connected(guard=1.0)
    heard = h.events  # the engine's listeners (the modem) and the sink, in turn
    sink.data_mode_ended = lambda why: heard.append(("sink", why))
    h.recv(b"abc" + marker)
    h.clock.advance(1.0)
    assert h.sent() == b"+++"  # the probe: the module is asked whether it is still in data mode
    h.clock.advance(2.999)
    assert heard == []
    h.clock.advance(0.002)  # guard + escape_timeout without OK: the marker was the module's
    assert sink.data == b"early bytesabc"
    # The modem hears first: a context lost or a restart takes it down before the session
    # frees its place for a waiting connection.
    assert heard == [event, DataModeEnded(reason), ("sink", reason)]
    assert h.sent() == b"\x1bAT\r"
    h.recv(b"\r\nOK\r\n")
    assert h.events[-1] == Resynced(True)


class IssuingSink(Sink):
    """A sink that closes the link on the module as soon as it hears data mode ended."""

    def __init__(self, proto):
        super().__init__()
        self.proto = proto
        self.closing = []

    def data_mode_ended(self, reason):
        super().data_mode_ended(reason)
        self.proto.issue(c.qiclose()).addBoth(self.closing.append)


def test_after_a_probe_without_ok_the_resync_goes_before_what_the_sink_issues():
    h, _ = connected(guard=1.0)
    sink = IssuingSink(h.proto)
    h.proto.data_mode.set_sink(sink)
    h.recv(b"\r\nCLOSED\r\n")
    h.clock.advance(1.0)
    assert h.sent() == b"+++"
    h.clock.advance(3.0)
    assert sink.ended == ["closed"]
    assert h.sent() == b"\x1bAT\r"  # the '+++' on the module's command line is cleared first
    h.recv(b"\r\nOK\r\n")
    assert h.sent() == b"AT+QICLOSE\r"
    h.recv(b"\r\nCLOSE OK\r\n")
    assert sink.closing == [None]


def test_abandon_leaves_data_mode_resyncs_and_tells_the_sink():
    h, sink = connected(guard=1.0)
    assert isinstance(unanswered_escape(h), CommandTimeout)
    h.clock.advance(1.0)
    h.proto.data_mode.write(b"+held")  # after silence: '+' alone, the rest held
    assert h.sent() == b"+"
    h.proto.data_mode.abandon()
    assert sink.ended == ["abandoned"]
    assert DataModeEnded("abandoned") in h.events
    assert h.sent() == b""  # the held bytes died with the session
    h.clock.advance(1.0)
    # The resync escapes first: a module still in data mode must not pass ESC AT to its peer.
    assert h.sent() == b"+++"
    h.clock.advance(1.0)
    assert h.sent() == b"\x1bAT\r"
    assert not h.proto.data_mode.active
    with pytest.raises(RuntimeError):
        h.proto.data_mode.write(b"x")
    h.proto.data_mode.abandon()  # once is enough
    assert h.sent() == b"" and sink.ended == ["abandoned"]


def reconnected(h) -> None:
    """A new transparent AT+QIOPEN on the same engine, answered CONNECT."""
    opened = h.issue(c.qiopen_transparent("TCP", "1.2.3.4", 80))
    assert h.sent() == b'AT+QIOPEN="TCP","1.2.3.4",80\r'
    h.recv(b"\r\nOK\r\n\r\nCONNECT\r\n")
    assert value_of(opened) == ConnectResult(None, True, transparent=True)


def test_abandon_during_an_escape_fails_it_and_the_next_data_mode_is_writable():
    """The owner gives up (the modem went down) while its escape waits for the guard: that
    escape must end (its caller waits on it) and must not leave the engine 'escaping' for the
    next session."""
    h, sink = connected(guard=1.0)
    escaped = []
    h.proto.data_mode.escape().addBoth(escaped.append)
    h.clock.advance(0.5)
    h.proto.data_mode.abandon()
    assert sink.ended == ["abandoned"]
    h.clock.advance(0.5)
    assert h.sent() == b"+++"  # the resync's escape, in place of the abandoned one
    h.recv(b"\r\nOK\r\n")  # it was still in data mode after all: that OK is the escape's
    assert h.sent() == b""
    h.clock.advance(1.0)
    assert h.sent() == b"\x1bAT\r"
    h.recv(b"\r\nOK\r\n")
    h.clock.advance(5.0)
    assert h.sent() == b""  # no other '+++' 
    assert len(escaped) == 1 and hasattr(escaped[0], "value"), escaped
    reconnected(h)
    assert h.proto.data_mode.writable
    h.proto.data_mode.write(b"next")
    assert h.sent() == b"next"


def test_abandon_during_a_probe_leaves_the_next_data_mode_deciding_its_markers():
    h, sink = connected(guard=1.0)
    h.recv(b"\r\nCLOSED\r\n")
    h.clock.advance(1.0)
    assert h.sent() == b"+++"  # probing
    h.proto.data_mode.abandon()
    assert sink.ended == ["abandoned"]
    h.clock.advance(1.0)
    assert h.sent() == b"+++"  # the resync's escape
    h.clock.advance(1.0)
    assert h.sent() == b"\x1bAT\r"
    h.recv(b"\r\nOK\r\n")
    reconnected(h)
    second = Sink()
    h.proto.data_mode.set_sink(second)
    assert h.proto.data_mode.writable
    h.recv(b"bye\r\nCLOSED\r\n")
    h.clock.advance(1.0)
    assert h.sent() == b"+++"  # this session's own probe
    h.clock.advance(3.0)
    assert second.data == b"bye" and second.ended == ["closed"]


# -- a marker that arrives while our own escape waits is decided by that escape -------------------


def test_a_closed_tail_during_our_escape_with_ok_was_payload_and_no_ato_follows():
    h, sink = connected(guard=1.0)
    escaped = []
    h.proto.data_mode.escape().addBoth(escaped.append)
    h.recv(b"x\r\nCLOSED\r\n")
    assert sink.data == b"early bytesx"
    h.clock.advance(1.0)
    assert h.sent() == b"+++"  # one escape: ours, and the probe of the tail
    h.clock.advance(MODULE_GUARD)  # the module answers after its own guard
    h.recv(b"\r\nOK\r\n")
    assert sink.data == b"early bytesx\r\nCLOSED\r\n"
    assert escaped == [None] and sink.ended == []
    assert h.sent() == b""  # no ATO: we meant to leave data mode
    assert Closed(None) not in h.events


def test_a_closed_tail_during_our_escape_without_ok_ends_the_session_before_the_escape_fails():
    h, sink = connected(guard=1.0)
    heard = []
    sink.data_mode_ended = lambda why: heard.append(("sink", why))
    h.proto.data_mode.escape().addBoth(lambda result: heard.append(("escape", result)))
    h.recv(b"x\r\nCLOSED\r\n")
    h.clock.advance(1.0)
    assert h.sent() == b"+++"
    h.clock.advance(3.0)
    assert heard[0] == ("sink", "closed")  # the owner learns why before its escape fails
    assert heard[1][0] == "escape" and isinstance(heard[1][1].value, CommandTimeout)
    assert sink.data == b"early bytesx"
    assert Closed(None) in h.events
    assert h.sent() == b"\x1bAT\r"


# -- the line's own time: what a port does not report as unsent -----------------------------------

def test_at_a_baud_rate_the_guard_counts_from_when_the_last_byte_is_on_the_wire():
    """1152 bytes take 0.1 s at 115200 baud (10 bits a byte): a StringTransport reports nothing
    unsent (as a pty), so the line time is what tells when they have left."""
    h, sink = connected(guard=1.0, baud=115200)
    h.clock.advance(5.0)  # the open's command line has long left
    h.proto.data_mode.write(b"x" * 1152)
    h.sent()
    h.proto.data_mode.escape()
    h.clock.advance(1.0 + 0.1 - 0.001)
    assert h.sent() == b""
    h.clock.advance(0.002)
    assert h.sent() == b"+++"


def test_the_line_time_waited_for_is_at_most_what_a_port_can_hold_unreported():
    """An unpaced peer took 1 MB at once (its line is faster than the configured baud): the
    escape waits for at most UNSEEN_BUFFER at the line rate after the port reported itself
    drained, not for a megabyte's line time."""
    h, sink = connected(guard=1.0, baud=115200)
    h.clock.advance(5.0)
    h.proto.data_mode.write(b"y" * 1_000_000)
    h.sent()
    h.proto.data_mode.escape()
    unseen = UNSEEN_BUFFER * 10 / 115200
    h.clock.advance(unseen + 1.0 - 0.001)
    assert h.sent() == b""
    h.clock.advance(0.002)
    assert h.sent() == b"+++"


@pytest.mark.parametrize("answer, data, ended", [
    (b"\r\nOK\r\n", b"tail\r\nCLOSED\r\n", []),  # still in data mode: CLOSED was payload
    (None, b"tail", ["closed"]),  # no OK: the module had said it
])
def test_an_escape_begun_while_a_closed_tail_awaits_its_decision_decides_it(answer, data, ended):
    """Our own escape (a check, a close) starting while a held CLOSED waits for its guard: the
    held bytes are neither lost nor delivered as payload before the escape has told whose they
    are."""
    h, sink = connected(guard=1.0)
    h.recv(b"tail\r\nCLOSED\r\n")
    h.clock.advance(0.5)
    escaped = []
    h.proto.data_mode.escape().addBoth(escaped.append)
    h.clock.advance(0.5)
    assert h.sent() == b"+++"
    assert sink.data == b"early bytestail"
    if answer is not None:
        h.clock.advance(MODULE_GUARD)  # the module answers after its own guard
        h.recv(answer)
    else:
        h.clock.advance(1.0 + 2.0)
    assert sink.data == b"early bytes" + data
    assert sink.ended == ended
    assert len(escaped) == 1
