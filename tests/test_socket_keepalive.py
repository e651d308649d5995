"""Keepalive on a module socket, on task.Clock with exact UART bytes: the AT+QISACK schedule from a
SEND OK, its restart on progress and end on unacked = 0, the dead link (one warning, counted,
AT+QICLOSE, local reset, slot freed only after the answer), the idle probe and the AT+QISTATE
check of idle links, and the window's AT+QISACK backing off while acks stall."""

from twisted.logger import LogLevel, capturedLogs, formatEvent

from bridge.keepalive import KeepaliveTimings
from bridge.modem.socket import Phase
from tests.socket_bench import PROMPT, QISACK_0, SEND_OK, LinkBench, sack

QISTATE = b"AT+QISTATE\r"


def qistate(socket0_state: bytes) -> bytes:
    """A mux AT+QISTATE answer with socket 0 in ``socket0_state`` and the other five unused."""
    lines = [b'+QISTATE: 0,"TCP","10.1.2.3",80,"%s"' % socket0_state]
    lines += [b'+QISTATE: %d,"","",,"INITIAL"' % n for n in range(1, 6)]
    return (b"\r\nOK\r\n\r\nSTATE: IP PROCESSING\r\n"
            + b"".join(b"\r\n" + line + b"\r\n" for line in lines) + b"\r\nOK\r\n")


def send_data(bench, data: bytes) -> float:
    """Local bytes out through one AT+QISEND; returns the clock time of its SEND OK (t0)."""
    bench.local_data(data)
    assert bench.wire() == b"AT+QISEND=0,%d\r" % len(data)
    bench.module(PROMPT)
    assert bench.wire() == data
    bench.module(SEND_OK)
    return bench.clock.seconds()


def run_checks(bench, acked_at, until, step=0.5):
    """Advance the clock by ``step`` up to ``until``; answer each AT+QISACK=0 with the sent count
    and ``acked_at(check_number)``. Returns (check times, the first other bytes on the wire)."""
    times, sent = [], bench.socket.acks.sent
    while bench.clock.seconds() < until:
        bench.clock.advance(step)
        wire = bench.wire()
        if wire == QISACK_0:
            times.append(bench.clock.seconds())
            bench.module(sack(sent, acked_at(len(times))))
            wire = bench.wire()  # what the answer led to, at once
        if wire:
            return times, wire
    return times, b""


def test_schedule_is_t0_plus_5_then_every_10_s_for_12_retries_then_the_link_is_closed(tmp_path):
    bench = LinkBench(tmp_path)
    bench.clock.advance(3)
    t0 = send_data(bench, b"x" * 10)
    with capturedLogs() as events:
        times, wire = run_checks(bench, lambda k: 0, until=t0 + 200)
    assert [t - t0 for t in times] == [5.0 + 10.0 * k for k in range(13)]  # t0+5 ... t0+125
    assert wire == b"AT+QICLOSE=0\r" and bench.clock.seconds() == t0 + 125
    assert bench.local.disconnected  # abortConnection: a reset, not a clean EOF
    warnings = [e for e in events if e["log_level"] >= LogLevel.warn]
    assert len(warnings) == 1
    assert "no ack progress for 125 s (10 bytes unacked)" in warnings[0]["reason"]
    assert bench.modem.counters.get("link_dead", cause="no_ack_progress") == 1
    assert bench.modem.slots_in_use == frozenset({0})  # not before the module answered
    bench.module(b"\r\n0, CLOSE OK\r\n")
    assert bench.modem.slots_in_use == frozenset()
    bench.accept()
    bench.connect_ok(0)  # the next connection gets the socket again


def test_acked_progress_restarts_the_schedule_from_that_check(tmp_path):
    bench = LinkBench(tmp_path)
    t0 = send_data(bench, b"y" * 10)
    acked = {1: 0, 2: 4}  # the check at t0+15 shows progress; none after it
    times, wire = run_checks(bench, lambda k: acked.get(k, 4), until=t0 + 300)
    assert [t - t0 for t in times] == [5.0, 15.0] + [15.0 + 10.0 * k for k in range(1, 13)]
    assert wire == b"AT+QICLOSE=0\r" and bench.clock.seconds() == t0 + 135


def test_a_dropped_links_zero_counters_are_no_progress_so_the_link_is_still_found_dead(tmp_path):
    """``0, 0, 0`` counts fewer bytes sent than the module took: not this link's counters (a
    link the module dropped answers so). Read as "all acked" they would end the schedule."""
    bench = LinkBench(tmp_path)
    t0 = send_data(bench, b"w" * 10)
    times = []
    with capturedLogs() as events:
        while not bench.local.disconnected and bench.clock.seconds() < t0 + 200:
            bench.clock.advance(0.5)
            if bench.wire() == QISACK_0:
                times.append(bench.clock.seconds())
                bench.module(b"\r\n+QISACK: 0, 0, 0\r\n\r\nOK\r\n")
    assert [t - t0 for t in times] == [5.0 + 10.0 * k for k in range(13)]
    assert bench.local.disconnected  # reset: the 10 bytes were never known delivered
    assert bench.modem.counters.get("link_dead", cause="no_ack_progress") == 1
    assert any("not this link's counters" in formatEvent(e) for e in events)


def test_unacked_zero_ends_the_schedule_and_the_next_send_ok_starts_a_new_one(tmp_path):
    bench = LinkBench(tmp_path)
    t0 = send_data(bench, b"z" * 10)
    times, wire = run_checks(bench, lambda k: 10, until=t0 + 300)
    assert [t - t0 for t in times] == [5.0] and wire == b""
    t1 = send_data(bench, b"w" * 6)
    times, _ = run_checks(bench, lambda k: 16, until=t1 + 100)
    assert [t - t1 for t in times] == [5.0]
    assert not bench.local.disconnecting and bench.socket.phase is Phase.CONNECTED


def test_the_window_and_the_schedule_share_one_qisack_and_both_learn_from_it(tmp_path):
    bench = LinkBench(tmp_path, settings=dict(window=1460, keepalive=KeepaliveTimings(first=1.0)))
    bench.local_data(b"v" * 2920)
    assert bench.send_ok(1).endswith(QISACK_0)  # the window is full: it asks at t0
    bench.clock.advance(1.0)  # the schedule's first check is due while that query is out
    assert bench.wire() == b""  # no second AT+QISACK
    bench.module(sack(1460, 1460))
    assert bench.wire() == b"AT+QISEND=0,1460\r"  # the window went on
    bench.module(PROMPT)
    bench.wire()
    bench.module(SEND_OK)  # the answer ended the first schedule: this SEND OK starts one
    bench.clock.advance(0.999)
    assert bench.wire() == b""
    bench.clock.advance(0.001)
    assert bench.wire() == QISACK_0


def test_idle_probe_is_sent_keepalive_idle_after_the_last_traffic_then_watched(tmp_path):
    bench = LinkBench(tmp_path, settings=dict(probe=b"\n", keepalive=KeepaliveTimings(idle=480)))
    bench.clock.advance(100)
    bench.module(b"\r\n+RECEIVE: 0, 2\r\nhi")  # traffic: idle counts from here
    assert bench.local.value() == b"hi"
    bench.clock.advance(479.9)
    assert bench.wire() == b""
    bench.clock.advance(0.1)
    assert bench.wire() == b"AT+QISEND=0,1\r"
    bench.module(PROMPT)
    assert bench.wire() == b"\n"
    bench.module(SEND_OK)
    t0 = bench.clock.seconds()
    times, wire = run_checks(bench, lambda k: 0, until=t0 + 200)
    assert [t - t0 for t in times] == [5.0 + 10.0 * k for k in range(13)]
    assert wire == b"AT+QICLOSE=0\r" and bench.local.disconnected


def test_idle_link_without_probe_is_checked_with_qistate_and_dead_when_not_connected(tmp_path):
    bench = LinkBench(tmp_path, settings=dict(keepalive=KeepaliveTimings(idle=60)))
    bench.clock.advance(59.9)
    assert bench.wire() == b""
    bench.clock.advance(0.1)
    assert bench.wire() == QISTATE
    bench.module(qistate(b"CONNECTED"))
    assert bench.wire() == b"" and bench.socket.phase is Phase.CONNECTED
    bench.clock.advance(60)  # still idle: checked again
    assert bench.wire() == QISTATE
    with capturedLogs() as events:
        bench.module(qistate(b"CLOSED"))
    assert bench.wire() == b"AT+QICLOSE=0\r" and bench.local.disconnected
    assert "AT+QISTATE reports the socket CLOSED" in [
        e for e in events if e["log_level"] >= LogLevel.warn][0]["reason"]
    assert bench.modem.counters.get("link_dead", cause="idle_not_connected") == 1
    bench.module(b"\r\n0, CLOSE OK\r\n")
    assert bench.modem.slots_in_use == frozenset()


def test_no_idle_check_or_probe_while_sent_bytes_are_being_watched(tmp_path):
    bench = LinkBench(tmp_path, settings=dict(probe=b"\n", keepalive=KeepaliveTimings(first=5, interval=10, retries=12,
                                                               idle=20)))
    t0 = send_data(bench, b"u" * 10)
    times, wire = run_checks(bench, lambda k: 0, until=t0 + 30)
    assert [t - t0 for t in times] == [5.0, 15.0, 25.0] and wire == b""  # no probe at t0+20


def test_a_window_whose_acks_stall_backs_off_to_at_most_one_and_a_half_qisack_per_second(
        tmp_path):
    """Window polls and keepalive checks together, from the stall until the link is dead."""
    bench = LinkBench(tmp_path, settings=dict(window=1460))
    bench.local_data(b"s" * 2920)
    assert bench.send_ok(1).endswith(QISACK_0)  # the window is full at t0
    t0 = bench.clock.seconds()
    asked = [t0]
    bench.module(sack(1460, 0))
    while not bench.local.disconnected:
        assert bench.clock.seconds() - t0 < 200, "the keepalive never declared the link dead"
        bench.clock.advance(0.005)
        if bench.wire() == QISACK_0:
            asked.append(bench.clock.seconds())
            bench.module(sack(1460, 0))
    duration = bench.clock.seconds() - t0
    assert 124 < duration < 126  # the keepalive schedule, unchanged: t0 + 5 + 12 * 10
    assert len(asked) <= 1.5 * duration
    assert max(b - a for a, b in zip(asked, asked[1:])) <= 2.0 + 0.01  # still asking

