"""ATProtocol transcripts: routing, queue and priority, timeouts, resync, lost link."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from bridge.at import commands as c
from bridge.at.commands import ReadResult, Reply, SackResult, SendResult, SignalQuality
from bridge.at.errors import CommandTimeout, LinkLost, ResyncFailed
from bridge.at.events import (
    Boot,
    Closed,
    ConnectResult,
    DataAvailable,
    PdpDeact,
    Received,
    Registration,
    RemoteIp,
    Resynced,
    StreamCorrupt,
    Unsolicited,
)
from bridge.at.protocol import ATProtocol
from tests.test_at_harness import Harness, error_of, value_of


def test_receive_payload_with_ok_and_send_ok_inside_does_not_end_a_send():
    h = Harness()
    outcome = h.issue(c.qisend(b"ping", socket=0))
    h.recv(b"\r\n> ")
    assert h.sent() == b"AT+QISEND=0,4\rping"
    data = b"\r\nOK\r\nSEND OK\r\n"
    h.recv(b"\r\n+RECEIVE: 1, %d\r\n" % len(data) + data)
    assert outcome == []
    assert h.events == [Received(1, data)]
    h.recv(b"\r\nSEND OK\r\n")
    assert value_of(outcome) == SendResult(True)


def test_qirdi_glued_to_ok():
    h = Harness()
    first, second = h.issue(c.at()), h.issue(c.at())
    h.recv(b"\r\nOK+QIRDI: 0,1,0\r\n")
    h.recv(b"\r\nOK\r\n+QIRDI: 0,2,1,3,100,300\r\n")
    assert value_of(first) == Reply(()) and value_of(second) == Reply(())
    assert h.events == [DataAvailable(0, False, 0), DataAvailable(0, True, 1, 3, 100, 300)]


def test_echo_on_command_lines_are_skipped():
    h = Harness()
    outcome = h.issue(c.csq())
    h.recv(b"AT+CSQ\r\r\n+CSQ: 17,99\r\n\r\nOK\r\n")
    assert value_of(outcome) == SignalQuality(17, 99)
    assert h.events == []


def test_echo_on_with_payload_echo_skips_the_echoed_payload():
    h = Harness(payload_echo=True)
    payload = b"SEND OK\r\nOK\r\n"
    outcome = h.issue(c.qisend(payload, socket=2))
    h.recv(b"AT+QISEND=2,13\r\r\n> ")
    assert h.sent() == b"AT+QISEND=2,13\r" + payload
    h.recv(payload[:5], payload[5:] + b"\r\nSEND OK\r\n")
    assert value_of(outcome) == SendResult(True)
    assert h.events == []


def test_garbage_is_skipped_and_the_command_still_completes():
    h = Harness()
    outcome = h.issue(c.csq())
    h.recv(b"\x00\xff\xfe junk\r\n\x1b\x1b", b"\r\n+CSQ: 5,0\r\n\r\nOK\r\n")
    assert value_of(outcome) == SignalQuality(5, 0)
    assert h.events == [Unsolicited(b"\x00\xff\xfe junk"), Unsolicited(b"\x1b\x1b")]


def test_urcs_become_typed_events():
    h = Harness()
    h.recv(b"RDY\r\n\r\n+CFUN: 1\r\n\r\n+CPIN: READY\r\n\r\nCall Ready\r\n\r\nSMS Ready\r\n"
           b"\r\n+CREG: 5\r\n\r\n+CGREG: 1,\"1A2B\",\"0C3D\"\r\n\r\n2, CLOSED\r\n"
           b"\r\nCLOSED\r\n\r\n+PDP DEACT\r\n\r\n1, REMOTE IP: 10.0.0.9\r\n"
           b"\r\n+RECEIVE: 4, 2\r\nhi")
    assert h.events == [
        Boot("RDY"), Boot("CFUN", "1"), Boot("CPIN", "READY"), Boot("Call Ready"),
        Boot("SMS Ready"), Registration("CREG", 5), Registration("CGREG", 1), Closed(2),
        Closed(None), PdpDeact(), RemoteIp(1, "10.0.0.9"), Received(4, b"hi")]


def test_urc_claimed_by_the_command_that_asked_for_it():
    h = Harness()
    outcome = h.issue(c.cpin_query())
    h.recv(b"\r\n+CPIN: READY\r\n\r\nOK\r\n")
    assert value_of(outcome) == "READY"
    assert h.events == []


def test_next_command_is_written_before_the_previous_callback_runs():
    h = Harness()
    seen_on_wire = []
    h.proto.issue(c.at()).addCallback(lambda _: seen_on_wire.append(h.transport.value()))
    h.issue(c.csq())
    assert h.sent() == b"AT\r"
    h.recv(b"\r\nOK\r\n")
    assert seen_on_wire == [b"AT+CSQ\r"]


def test_one_command_on_the_wire_and_control_before_bulk():
    h = Harness()
    h.issue(c.qisend(b"a" * 10, socket=0))
    sends = [h.issue(c.qisend(b"b" * 10, socket=0)) for _ in range(3)]
    sack = h.issue(c.qisack(0))
    assert h.sent() == b"AT+QISEND=0,10\r"
    h.recv(b"\r\n> ")
    assert h.sent() == b"a" * 10
    h.recv(b"\r\nSEND OK\r\n")
    assert h.sent() == b"AT+QISACK=0\r"
    h.recv(b"\r\n+QISACK: 10, 0, 10\r\n\r\nOK\r\n")
    assert value_of(sack).unacked == 10
    assert h.sent() == b"AT+QISEND=0,10\r"
    assert all(outcome == [] for outcome in sends)


def test_queued_command_times_out_and_is_removed():
    h = Harness()
    busy = h.issue(c.qiact(timeout=150))
    queued = h.issue(c.csq(timeout=5))
    h.sent()
    h.clock.advance(4.9)
    assert queued == []
    h.clock.advance(0.2)
    error = error_of(queued)
    assert isinstance(error, CommandTimeout) and error.queued
    h.recv(b"\r\nOK\r\n")
    assert value_of(busy) == Reply(())
    assert h.sent() == b""  # the timed-out command never reaches the wire


def test_cancelled_queued_command_never_reaches_the_wire():
    h = Harness()
    h.issue(c.at())
    d = h.proto.issue(c.csq())
    d.addErrback(lambda f: None)
    d.cancel()
    h.sent()
    h.recv(b"\r\nOK\r\n")
    assert h.sent() == b""


def test_in_flight_timeout_resyncs_before_anything_else():
    h = Harness()
    stuck = h.issue(c.csq(timeout=5))
    waiting = h.issue(c.gsn(timeout=60))
    assert h.sent() == b"AT+CSQ\r"
    h.clock.advance(5)
    error = error_of(stuck)
    assert isinstance(error, CommandTimeout) and not error.queued
    assert h.sent() == b"\x1bAT\r"
    h.recv(b"\r\n+CSQ: 9,0\r\n")  # the late answer must not be taken for anything
    assert waiting == []
    h.recv(b"\r\nOK\r\n")
    assert h.events[-1] == Resynced(True)
    assert h.sent() == b"AT+GSN\r"
    assert h.proto.last_response == h.clock.seconds()


def test_resync_retries_then_gives_up_and_fails_the_queue():
    h = Harness(resync_timeout=2, resync_attempts=3)
    h.issue(c.at(timeout=1))
    queued = h.issue(c.gsn(timeout=60))
    h.sent()
    h.clock.advance(1)
    assert h.sent() == b"\x1bAT\r"
    h.clock.advance(2)
    assert h.sent() == b"\x1bAT\r"
    h.recv(b"\r\nERROR\r\n")  # '+++AT' style junk on the command line: retry at once
    assert h.sent() == b"\x1bAT\r"
    h.clock.advance(2)
    assert isinstance(error_of(queued), ResyncFailed)
    assert h.events[-1] == Resynced(False)
    later = h.issue(c.csq())
    assert h.sent() == b"\x1bAT\r"  # still out of sync: resync first
    h.recv(b"\r\nOK\r\n")
    assert h.sent() == b"AT+CSQ\r"
    assert later == []


def test_qisend_timeout_reports_corrupt_stream_before_resync_bytes():
    h = Harness()
    on_wire_at_event = []
    h.proto.add_listener(lambda event: isinstance(event, StreamCorrupt)
                         and on_wire_at_event.append(h.transport.value()))
    outcome = h.issue(c.qisend(b"data", socket=4, prompt_timeout=5, timeout=20))
    h.recv(b"\r\n> ")
    h.clock.advance(19.9)
    assert outcome == []
    h.clock.advance(0.1)
    assert isinstance(error_of(outcome), CommandTimeout)
    assert StreamCorrupt(4) in h.events
    assert on_wire_at_event == [b"AT+QISEND=4,4\rdata"]
    assert h.sent() == b"AT+QISEND=4,4\rdata\x1bAT\r"


def test_a_restart_fails_the_send_on_the_wire_at_once_and_the_queue_goes_on():
    """An AT+QISEND written to the old power cycle gets no SEND OK: it fails at ``RDY``, not
    20 s later, and no ESC filler or resync follows (nothing of ours is pending any more)."""
    h = Harness()
    send = h.issue(c.qisend(b"data", socket=1, timeout=20))
    h.recv(b"\r\n> ")
    after = h.issue(c.at())
    assert h.sent() == b"AT+QISEND=1,4\rdata"
    h.recv(b"\r\nRDY\r\n")
    assert "the module restarted (RDY) while it was on the wire" in str(error_of(send))
    assert Boot("RDY") in h.events and StreamCorrupt(1) not in h.events
    assert h.sent() == b"AT\r"
    h.recv(b"\r\nOK\r\n")
    assert value_of(after) is not None
    h.clock.advance(30)
    assert h.sent() == b""


def test_a_restart_leaves_a_command_the_bring_up_wrote_after_the_first_boot_line():
    """``RDY`` then ``+CFUN: 1``: the AT written between them reaches the new power cycle."""
    h = Harness()
    h.recv(b"\r\nRDY\r\n")
    sync = h.issue(c.at())
    h.recv(b"\r\n+CFUN: 1\r\n")
    assert sync == []
    h.recv(b"\r\nOK\r\n")
    assert value_of(sync) is not None

def test_missing_prompt_times_out_on_the_prompt_timeout():
    h = Harness()
    outcome = h.issue(c.qisend(b"x", socket=0, prompt_timeout=5, timeout=20))
    h.clock.advance(5)
    assert isinstance(error_of(outcome), CommandTimeout)
    assert h.events[0] == StreamCorrupt(0)


def test_prompt_timeout_writes_payload_length_filler_before_the_resync():
    h = Harness()
    on_wire_at_event = []
    h.proto.add_listener(lambda event: isinstance(event, StreamCorrupt)
                         and on_wire_at_event.append(h.transport.value()))
    outcome = h.issue(c.qisend(b"hello", socket=2, prompt_timeout=5, timeout=20))
    h.clock.advance(5)
    assert isinstance(error_of(outcome), CommandTimeout)
    assert on_wire_at_event == [b"AT+QISEND=2,5\r"]  # told before any filler is written
    assert h.sent() == b"AT+QISEND=2,5\r" + b"\x1b" * 5 + b"\x1bAT\r"


def test_late_prompt_after_the_timeout_recovers_with_one_resync():
    h = Harness(resync_timeout=2)
    h.issue(c.qisend(b"hello", socket=0, prompt_timeout=5, timeout=20))
    after = h.issue(c.qisack(0, timeout=30))
    h.clock.advance(5)
    assert h.sent() == b"AT+QISEND=0,5\r\x1b\x1b\x1b\x1b\x1b\x1bAT\r"
    # The module was only slow: its prompt, the filler taken as payload, then the AT.
    h.recv(b"\r\n> ")
    assert h.sent() == b""  # a late prompt gets nothing: the filler is already on its way
    h.recv(b"\r\nSEND OK\r\n", b"\r\nOK\r\n")
    assert [e for e in h.events if isinstance(e, Resynced)] == [Resynced(True)]
    assert h.sent() == b"AT+QISACK=0\r"
    h.recv(b"\r\n+QISACK: 5, 5, 0\r\n\r\nOK\r\n")
    assert value_of(after) == SackResult(5, 5, 0)


PUSHED_FRAME = b"\x42" * 1460
#: What the module still had to send us when the AT+QISEND went out: 1482 bytes, 6.2 s at 2400 baud.
BACKLOG = b"\r\n+RECEIVE: 1, 1460\r\n" + PUSHED_FRAME


def send_behind_backlog(h):
    """AT+QISEND=0,5 written while the module pushes BACKLOG at 2400 baud (240 bytes a second)."""
    outcome = h.issue(c.qisend(b"hello", socket=0, prompt_timeout=10, timeout=20))
    assert h.sent() == b"AT+QISEND=0,5\r"
    for start in range(0, len(BACKLOG), 240):
        h.clock.advance(1)
        h.recv(BACKLOG[start:start + 240])
    assert h.events == [Received(1, PUSHED_FRAME)]
    return outcome


def test_a_prompt_late_only_by_the_backlog_ahead_of_it_gets_the_payload_not_filler():
    h = Harness(baud=2400)
    outcome = send_behind_backlog(h)
    h.clock.advance(12 - 7)  # past the 10 s base: the prompt queued behind 6.2 s of backlog
    assert h.sent() == b""
    h.recv(b"\r\n> ")
    assert h.sent() == b"hello"
    h.recv(b"\r\nSEND OK\r\n")
    assert value_of(outcome) == SendResult(True)
    assert h.events == [Received(1, PUSHED_FRAME)]  # no StreamCorrupt


#: The prompt wait at 2400 baud: the base, then the command line (14 bytes) and the backlog.
PAST_THE_BACKLOG = 10 + (14 + len(BACKLOG)) * 10 / 2400


@pytest.mark.parametrize("baud, limit", [(None, 10.0), (2400, PAST_THE_BACKLOG)])
def test_the_prompt_wait_ends_at_its_base_plus_the_line_time_of_what_came_before(baud, limit):
    h = Harness(baud=baud)
    outcome = send_behind_backlog(h)
    h.clock.advance(limit - 7 - 0.01)
    assert outcome == [] and h.sent() == b""
    h.clock.advance(0.01)
    assert isinstance(error_of(outcome), CommandTimeout)
    assert h.events[-1] == StreamCorrupt(0)
    assert h.sent() == b"\x1b" * 5 + b"\x1bAT\r"


def test_timeout_after_the_prompt_needs_no_filler():
    h = Harness()
    h.issue(c.qisend(b"hello", socket=0, prompt_timeout=5, timeout=20))
    h.recv(b"\r\n> ")
    h.clock.advance(20)
    assert h.sent() == b"AT+QISEND=0,5\rhello\x1bAT\r"


FULL_READ = bytes(range(256)) * 5 + b"\xaa" * 220  # 1500 bytes
#: 1500 data bytes + 47 of the longest header and the OK (``\r\n+QIRD: 255.255.255.255:65535,
#: TCP,1500\r\n`` ... ``\r\nOK\r\n``) at 10 bits per byte and 2400 baud: 6.45 s of line time.
FULL_READ_LINE_TIME = 1547 * 10 / 2400


def test_a_full_qird_at_2400_baud_answered_after_6_4_s_is_no_timeout():
    h = Harness(baud=2400)
    outcome = h.issue(c.qird(1500, socket=3))
    assert h.sent() == b"AT+QIRD=0,1,3,1500\r"
    h.clock.advance(6.4)
    h.recv(b"\r\n+QIRD: 10.0.0.1:80,TCP,1500\r\n" + FULL_READ + b"\r\nOK\r\n")
    assert value_of(outcome) == ReadResult("10.0.0.1:80", "TCP", FULL_READ)
    assert h.sent() == b""
    assert h.events == []


@pytest.mark.parametrize("baud, limit", [(None, 5.0), (2400, 5.0 + FULL_READ_LINE_TIME)])
def test_a_qird_times_out_at_its_base_limit_plus_the_line_time_of_its_longest_answer(baud, limit):
    h = Harness(baud=baud)
    outcome = h.issue(c.qird(1500, socket=3, timeout=5.0))
    h.sent()
    h.clock.advance(limit - 0.01)
    assert outcome == [] and h.sent() == b""
    h.clock.advance(0.01)
    error = error_of(outcome)
    assert isinstance(error, CommandTimeout) and error.timeout == pytest.approx(limit)
    assert h.sent() == b"\x1bAT\r"


def test_a_qisend_at_2400_baud_waits_for_send_ok_its_limit_plus_its_payloads_line_time():
    h = Harness(baud=2400)
    payload = b"\x55" * 1460
    limit = 20 + 1460 * 10 / 2400  # the 1460 bytes alone take 6.08 s to write
    answered = h.issue(c.qisend(payload, socket=1, prompt_timeout=10, timeout=20))
    h.sent()
    h.recv(b"\r\n> ")
    assert h.sent() == payload
    h.clock.advance(limit - 0.01)
    h.recv(b"\r\nSEND OK\r\n")
    assert value_of(answered) == SendResult(True)
    unanswered = h.issue(c.qisend(payload, socket=1, prompt_timeout=10, timeout=20))
    assert h.sent() == b"AT+QISEND=1,1460\r"
    h.recv(b"\r\n> ")
    assert h.sent() == payload
    h.clock.advance(limit - 0.01)
    assert unanswered == [] and h.sent() == b""
    h.clock.advance(0.01)
    assert isinstance(error_of(unanswered), CommandTimeout)
    assert h.sent() == b"\x1bAT\r"


def test_commands_issued_before_the_port_opens_go_out_on_connect():
    proto, transport = ATProtocol(Clock()), StringTransport()
    proto.issue(c.at())
    proto.makeConnection(transport)
    assert transport.value() == b"AT\r"


def test_connection_lost_fails_everything_and_refuses_new_commands():
    h = Harness()
    in_flight, queued = h.issue(c.at()), h.issue(c.csq())
    h.proto.connectionLost(Failure(ConnectionLost("tty hangup")))
    assert isinstance(error_of(in_flight), LinkLost)
    assert isinstance(error_of(queued), LinkLost)
    assert isinstance(error_of(h.issue(c.at())), LinkLost)
    h.clock.advance(100)  # no timer left behind
    assert h.clock.getDelayedCalls() == []


def test_a_failing_listener_is_logged_and_others_still_hear_the_event():
    h = Harness()

    def broken(event):
        raise RuntimeError("listener bug")

    h.proto.remove_listener(h.events.append)
    h.proto.add_listener(broken)
    h.proto.add_listener(h.events.append)
    h.recv(b"\r\n+PDP DEACT\r\n")
    assert h.events == [PdpDeact()]


RECORDED = (
    b"AT+QISEND=0,4\r\r\n+QIRDI: 0,1,0\r\n\r\n> "
    b"\r\nSEND OK\r\n"
    b"\r\n+RECEIVE: 2, 12\r\n\r\nOK\r\nSEND O\r\n"
    b"\r\n3, CONNECT OK\r\n"
    b"\x00garbage\r"
    b"\r\n+QISACK: 4, 4, 0\r\n\r\nOK+QIRDI: 0,1,1\r\n"
    b"\r\n3, CONNECT FAIL\r\n\r\n1, CLOSE OK\r\n"
    b"\r\nOK\r\n\r\nSTATE: IP STATUS\r\n"
    b"\r\n+QIRD: 1.2.3.4:80,TCP,4\r\nOK\r\n\r\nOK\r\n"
)


def run_recorded(chunks):
    """Issue five commands (bulk ones go last), feed the module's side, collect everything."""
    h = Harness()
    outcomes = [h.issue(cmd) for cmd in (c.qisend(b"ping", socket=0), c.qird(1500),
                                         c.qisack(0), c.qiclose(1), c.qistat())]
    for chunk in chunks:
        h.recv(chunk)
    results = [value_of(outcome) for outcome in outcomes]
    return results, h.events, h.sent()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(RECORDED)), max_size=30))
def test_any_split_of_a_recorded_exchange_gives_the_same_results_and_events(cuts):
    points = sorted(set(cuts))
    chunks = [RECORDED[a:b] for a, b in zip([0] + points, points + [len(RECORDED)])]
    assert run_recorded(chunks) == run_recorded([RECORDED])


def test_recorded_exchange_outcome():
    results, events, wire = run_recorded([RECORDED])
    assert results[0] == SendResult(True)
    assert results[1] == ReadResult("1.2.3.4:80", "TCP", b"OK\r\n")
    assert results[2] == SackResult(4, 4, 0)
    assert results[3] is None and results[4].state == "IP STATUS"
    assert events == [DataAvailable(0, False, 0), Received(2, b"\r\nOK\r\nSEND O"),
                      ConnectResult(3, True), Unsolicited(b"\x00garbage"),
                      DataAvailable(0, False, 1), ConnectResult(3, False)]
    assert wire == (b"AT+QISEND=0,4\rping" b"AT+QISACK=0\r" b"AT+QICLOSE=1\r"
                    b"AT+QISTAT\r" b"AT+QIRD=0,1,0,1500\r")


def test_a_command_queued_behind_a_long_read_waits_as_long_as_the_line_needs_for_it():
    """At 2400 baud a full AT+QIRD answer takes 6.45 s on the line: an AT+QISACK (5 s limit)
    queued behind it must not time out before it was ever written."""
    h = Harness(baud=2400)
    read = h.issue(c.qird(1500, socket=0))
    sack = h.issue(c.qisack(0, timeout=5))
    assert h.sent() == b"AT+QIRD=0,1,0,1500\r"
    h.clock.advance(6.4)
    h.recv(b"\r\n+QIRD: 10.1.2.3:80,TCP,1500\r\n" + b"r" * 1500 + b"\r\nOK\r\n")
    assert value_of(read).data == b"r" * 1500 and sack == []
    assert h.sent() == b"AT+QISACK=0\r"
    h.recv(b"\r\n+QISACK: 5, 5, 0\r\n\r\nOK\r\n")
    assert value_of(sack) == SackResult(5, 5, 0)
