"""Transcript tests of the QISACK ack-progress schedule and the idle probe, on task.Clock."""

import pytest
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import capturedLogs

from bridge.keepalive import AckProgressWatch, AckStatus, IdleProbe
from timeline import run_until

DEFAULT_SCHEDULE = [5.0 + 10.0 * k for k in range(13)]  # t0+5, then +10 each, 12 retries


class FakeModemSocket:
    """One module TCP socket: the test moves ``sent``/``acked``; AT+QISACK answers are recorded."""

    def __init__(self, clock):
        self.clock = clock
        self.sent = 0
        self.acked = 0
        self.query_times = []
        self.held = None  # when a list, queries are held here for the test to answer

    def query_acks(self):
        self.query_times.append(self.clock.seconds())
        if self.held is not None:
            d = Deferred()
            self.held.append(d)
            return d
        return succeed(AckStatus(self.sent, self.acked, self.sent - self.acked))

    def answer_held(self):
        self.held.pop(0).callback(AckStatus(self.sent, self.acked, self.sent - self.acked))


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def socket(clock):
    return FakeModemSocket(clock)


@pytest.fixture
def deaths(clock):
    return []


def make_watch(clock, socket, deaths, **timing):
    return AckProgressWatch(clock, socket.query_acks,
                            lambda reason: deaths.append((clock.seconds(), reason)), **timing)


def send(watch, socket, nbytes):
    socket.sent += nbytes
    watch.data_sent()


def test_schedule_is_first_then_every_interval_for_retries_then_dead(clock, socket, deaths):
    clock.advance(100)
    watch = make_watch(clock, socket, deaths)
    send(watch, socket, 30)
    run_until(clock, 224.999)
    assert deaths == []
    run_until(clock, 400)
    assert socket.query_times == [100 + t for t in DEFAULT_SCHEDULE]
    assert deaths == [(225.0, "no ack progress for 125 s (30 bytes unacked)")]
    assert not watch.running
    assert clock.getDelayedCalls() == []


def test_unacked_zero_ends_schedule_and_next_send_starts_a_fresh_one(clock, socket, deaths):
    watch = make_watch(clock, socket, deaths)
    send(watch, socket, 30)
    run_until(clock, 10)
    socket.acked = 30
    run_until(clock, 100)
    assert socket.query_times == [5, 15]
    assert not watch.running and clock.getDelayedCalls() == []
    send(watch, socket, 5)
    run_until(clock, 106)
    assert socket.query_times == [5, 15, 105]
    assert deaths == []


def test_progress_restarts_schedule_from_that_check(clock, socket, deaths):
    """Acks move at the t0+35 check: it becomes check 0, the next at +10, death 120 s after it."""
    watch = make_watch(clock, socket, deaths)
    send(watch, socket, 3000)
    run_until(clock, 30)
    socket.acked = 1000
    run_until(clock, 1000)
    assert socket.query_times == [5, 15, 25, 35] + [35 + 10 * k for k in range(1, 13)]
    assert deaths == [(155, "no ack progress for 120 s (2000 bytes unacked)")]


def test_acks_before_the_first_check_are_only_a_baseline(clock, socket, deaths):
    """The first check has no previous check to compare with, so the deadline stays t0+125."""
    watch = make_watch(clock, socket, deaths)
    send(watch, socket, 30)
    socket.acked = 10
    run_until(clock, 1000)
    assert socket.query_times == DEFAULT_SCHEDULE
    assert deaths == [(125, "no ack progress for 125 s (20 bytes unacked)")]


def test_slow_upload_with_steady_progress_never_dies(clock, socket, deaths):
    watch = make_watch(clock, socket, deaths)
    send(watch, socket, 10_000)
    for second in range(1, 1001):
        run_until(clock, second)
        socket.acked += 1  # one byte a second: alive, however slow
        if second % 50 == 0:
            send(watch, socket, 50)
    assert deaths == [] and watch.running


def test_data_sent_during_a_running_schedule_does_not_restart_it(clock, socket, deaths):
    watch = make_watch(clock, socket, deaths)
    send(watch, socket, 30)
    for when in (3, 14, 50, 124):
        run_until(clock, when)
        send(watch, socket, 100)
    run_until(clock, 1000)
    assert socket.query_times == DEFAULT_SCHEDULE
    assert deaths == [(125, "no ack progress for 125 s (430 bytes unacked)")]


def test_failed_query_is_logged_and_counts_as_a_check_without_progress(clock, deaths):
    query_times = []

    def timing_out_query():
        query_times.append(clock.seconds())
        return fail(TimeoutError("AT+QISACK=0 timed out"))

    watch = AckProgressWatch(clock, timing_out_query, lambda r: deaths.append((clock.seconds(), r)))
    watch.data_sent()
    with capturedLogs() as events:
        run_until(clock, 1000)
    assert query_times == DEFAULT_SCHEDULE
    assert deaths == [(125, "no ack progress for 125 s (AT+QISACK unanswered)")]
    failures = [e for e in events if "AT+QISACK failed" in e["log_format"]]
    assert len(failures) == 13
    assert failures[0]["error"] == "AT+QISACK=0 timed out"


def test_failed_query_between_answers_does_not_fake_progress(clock, socket, deaths):
    watch = AckProgressWatch(clock, lambda: outcomes.pop(0), lambda r: deaths.append((clock.seconds(), r)),
                             retries=3)
    outcomes = [succeed(AckStatus(30, 0, 30)), fail(OSError("port gone")),
                succeed(AckStatus(30, 0, 30)), succeed(AckStatus(30, 0, 30))]
    watch.data_sent()
    run_until(clock, 100)
    assert outcomes == []
    assert deaths == [(35, "no ack progress for 35 s (30 bytes unacked)")]


def test_stop_cancels_pending_check(clock, socket, deaths):
    watch = make_watch(clock, socket, deaths)
    send(watch, socket, 30)
    run_until(clock, 20)
    watch.stop()
    assert clock.getDelayedCalls() == []
    send(watch, socket, 30)
    run_until(clock, 1000)
    assert socket.query_times == [5, 15] and deaths == []


def test_stop_cancels_the_query_in_flight_quietly(clock, socket, deaths):
    socket.held = []
    watch = make_watch(clock, socket, deaths)
    send(watch, socket, 30)
    run_until(clock, 5)
    in_flight = socket.held[0]
    with capturedLogs() as events:
        watch.stop()
    assert in_flight.called
    in_flight.addErrback(lambda f: f.trap(CancelledError))
    assert [e for e in events if e.get("log_level").name in ("warn", "error", "critical")] == []
    assert clock.getDelayedCalls() == [] and deaths == []


def test_never_two_queries_in_flight_and_late_answer_skips_missed_checks(clock, socket, deaths):
    socket.held = []
    watch = make_watch(clock, socket, deaths)
    send(watch, socket, 30)
    run_until(clock, 27)
    assert socket.query_times == [5]  # t0+15 and t0+25 passed while the first query was pending
    with capturedLogs() as events:
        socket.answer_held()
    assert [e["n"] for e in events if "skipped" in e["log_format"]] == [2]
    run_until(clock, 35)
    assert socket.query_times == [5, 35]


def test_answer_arriving_after_the_last_check_time_declares_death_at_once(clock, socket, deaths):
    socket.held = []
    watch = make_watch(clock, socket, deaths)
    send(watch, socket, 30)
    for when in DEFAULT_SCHEDULE[:-2]:
        run_until(clock, when)
        socket.answer_held()
    run_until(clock, 115)
    run_until(clock, 126)  # the t0+115 answer comes after t0+125: no time left in the budget
    assert deaths == []
    socket.answer_held()
    assert socket.query_times == DEFAULT_SCHEDULE[:-1]
    assert deaths == [(126, "no ack progress for 126 s (30 bytes unacked)")]


def test_all_acked_answer_to_a_query_older_than_a_send_keeps_watching(clock, socket, deaths):
    """SEND OK while AT+QISACK was in flight: its 'unacked 0' may not cover the new bytes."""
    socket.held = []
    watch = make_watch(clock, socket, deaths)
    send(watch, socket, 30)
    run_until(clock, 5)
    socket.acked = 30
    held = socket.held.pop(0)
    run_until(clock, 6)
    send(watch, socket, 50)
    held.callback(AckStatus(30, 30, 0))
    assert watch.running
    run_until(clock, 11)
    assert socket.query_times == [5, 11]


def test_fractional_timings(clock, socket, deaths):
    watch = make_watch(clock, socket, deaths, first=0.5, interval=0.25, retries=3)
    send(watch, socket, 1)
    run_until(clock, 10)
    assert socket.query_times == pytest.approx([0.5, 0.75, 1.0, 1.25])
    assert deaths == [(pytest.approx(1.25), "no ack progress for 1.25 s (1 bytes unacked)")]


def test_zero_retries_dies_at_first_check(clock, socket, deaths):
    watch = make_watch(clock, socket, deaths, retries=0)
    send(watch, socket, 1)
    run_until(clock, 10)
    assert socket.query_times == [5] and deaths == [(5, "no ack progress for 5 s (1 bytes unacked)")]


class ProbeRecorder:
    def __init__(self, clock):
        self.clock = clock
        self.probes = []
        self.idles = []

    def send_probe(self, data):
        self.probes.append((self.clock.seconds(), data))

    def on_idle(self):
        self.idles.append(self.clock.seconds())


def test_idle_probe_fires_idle_seconds_after_last_traffic_then_every_idle(clock):
    rec = ProbeRecorder(clock)
    probe = IdleProbe(clock, 480, rec.send_probe, b"\n", on_idle=rec.on_idle)
    probe.activity()  # link opened
    run_until(clock, 100)
    probe.activity()  # traffic at 100 re-arms
    run_until(clock, 579.9)
    assert rec.probes == []
    run_until(clock, 580)
    assert rec.probes == [(580, b"\n")]
    run_until(clock, 1060)
    assert rec.probes == [(580, b"\n"), (1060, b"\n")]
    assert rec.idles == []


def test_idle_without_probe_bytes_only_calls_on_idle(clock):
    rec = ProbeRecorder(clock)
    probe = IdleProbe(clock, 2.5, rec.send_probe, b"", on_idle=rec.on_idle)
    probe.activity()
    run_until(clock, 6)
    assert rec.probes == [] and rec.idles == [2.5, 5.0]


def test_idle_probe_stop_disarms(clock):
    rec = ProbeRecorder(clock)
    probe = IdleProbe(clock, 1, rec.send_probe, b"ping")
    probe.activity()
    probe.stop()
    probe.activity()
    run_until(clock, 10)
    assert rec.probes == [] and clock.getDelayedCalls() == []


def test_probe_on_a_dead_idle_link_is_detected_by_the_qisack_schedule(clock, socket, deaths):
    """Wiring: probe -> data path SEND OK -> ack watch; dead at idle + first + interval * retries."""
    watch = make_watch(clock, socket, deaths)

    def data_path_send(data):
        probe.activity()
        send(watch, socket, len(data))  # SEND OK of the probe; the peer never acks it

    probe = IdleProbe(clock, 480, data_path_send, b"\r\n")
    probe.activity()
    run_until(clock, 700)
    assert socket.query_times == [480 + t for t in DEFAULT_SCHEDULE]
    assert deaths == [(605, "no ack progress for 125 s (2 bytes unacked)")]
