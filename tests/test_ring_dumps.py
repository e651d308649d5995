"""Ring dumps go to files under state_dir (bounded, newest kept, owner-only) and the log names
them; a directory that cannot be written costs one warning and the log gets a short tail."""

import os
import re
import stat

from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel, capturedLogs, formatEvent

from bridge.at.dumps import DumpFiles
from bridge.at.ring import TAIL_ENTRIES, TrafficRing, log_event

ENTRY = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d{4} [<>] b'.*'")


def ring_with_traffic(tmp_path, clock, owner="modem-main", keep=20):
    ring = TrafficRing(clock, dump_interval=60, dumps=DumpFiles(str(tmp_path / "dumps"), owner,
                                                               keep))
    ring.add_secret(b"4711")
    ring.sent(b'AT+CPIN="4711"\r')
    ring.received(b"OK")
    ring.received(b"+PDP DEACT")
    return ring


def test_an_event_writes_one_file_and_one_line_naming_it(tmp_path):
    clock = Clock()
    clock.advance(1764909601.25)  # 2025-12-05T04:40:01.250Z
    ring = ring_with_traffic(tmp_path, clock)
    log = []
    log_event(Logger(observer=log.append), ring, "pdp_lost", "modem:main: context lost")
    (line,) = [formatEvent(event) for event in log]
    path = str(tmp_path / "dumps" / "modem-main-20251205T044001.250Z-pdp_lost.log")
    assert line == f"modem:main: context lost; AT traffic saved to {path}"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    header, *entries = open(path).read().splitlines()
    assert header == "# AT traffic of modem-main (pdp_lost), oldest first"
    assert entries == ring.dump().splitlines() and len(entries) == 3
    assert all(ENTRY.fullmatch(entry) for entry in entries)  # ISO timestamps, like the log
    assert entries[0].endswith(" > b'AT+CPIN=***\\r'")
    assert "4711" not in open(path).read()


def test_events_within_the_interval_are_logged_without_a_dump(tmp_path):
    clock = Clock()
    ring = ring_with_traffic(tmp_path, clock)
    assert ring.recovery_dump("pdp_lost").startswith("AT traffic saved to ")
    clock.advance(30)
    assert ring.recovery_dump("module_reset") is None
    assert len(ring.dumps.files()) == 1


def test_the_newest_files_are_kept(tmp_path):
    clock = Clock()
    ring = ring_with_traffic(tmp_path, clock, keep=3)
    other = ring_with_traffic(tmp_path, clock, owner="modem-main-2", keep=3)
    other.save("sigusr1")  # another modem's dump, whose name starts like this modem's
    written = []
    for n in range(5):
        clock.advance(61)
        written.append(ring.save(f"event{n}").split("saved to ")[1])
    assert ring.dumps.files() == written[-3:]
    assert len(other.dumps.files()) == 1  # not this modem's to remove


def test_dumps_in_the_same_millisecond_all_stay_and_sort_as_they_were_written(tmp_path):
    ring = ring_with_traffic(tmp_path, Clock())
    written = [ring.save("sigusr1").split("saved to ")[1] for _ in range(3)]
    assert len(set(written)) == 3 and ring.dumps.files() == written


def test_an_unwritable_directory_warns_once_and_logs_a_short_tail(tmp_path):
    (tmp_path / "dumps").write_text("a file where the directory should be")
    clock = Clock()
    ring = ring_with_traffic(tmp_path, clock)
    for n in range(TAIL_ENTRIES + 5):
        ring.received(b"+CSQ: %d,0" % n)
    with capturedLogs() as events:
        saved = [ring.save("sigusr1"), ring.save("sigusr1")]
    (warning,) = [formatEvent(event) for event in events]
    assert events[0]["log_level"] == LogLevel.warn
    assert warning.startswith(f"cannot write AT traffic dumps to {tmp_path / 'dumps'}: ")
    tail = saved[0].splitlines()
    assert tail[0] == "last AT traffic:" and len(tail) == 1 + TAIL_ENTRIES
    assert tail[-1].endswith(f"< b'+CSQ: {TAIL_ENTRIES + 4},0'")


def test_a_ring_without_a_dump_directory_logs_a_short_tail():
    ring = TrafficRing(Clock())
    for n in range(100):
        ring.received(b"+CSQ: %d,0" % n)
    assert len(ring.save("resync-failed").splitlines()) == 1 + TAIL_ENTRIES
