"""TrafficRing: bounded, timestamped, redacted, payloads as length + hex prefix."""

import time

from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent

from bridge.at import commands as c
from bridge.at.events import Received
from bridge.at.framing import Data, Junk, Payload
from bridge.at.redact import redact
from bridge.at.ring import TrafficRing
from tests.test_at_harness import Harness


def test_pin_and_bearer_credentials_are_redacted_both_directions():
    h = Harness()
    h.issue(c.cpin("1234"))
    h.recv(b'AT+CPIN="1234"\r\r\nOK\r\n')  # echo on: the PIN comes back too
    h.issue(c.qicsgp("internet", "alice", "hunter2"))
    h.recv(b"\r\nOK\r\n")
    dump = h.proto.ring.dump()
    assert "1234" not in dump and "alice" not in dump and "hunter2" not in dump
    assert 'AT+QICSGP=1,"internet","***","***"' in dump
    assert "AT+CPIN=***" in dump


def test_registered_secret_is_masked_anywhere():
    ring = TrafficRing(Clock())
    ring.add_secret(b"topsecret")
    ring.received(b"+XYZ: topsecret")
    assert "topsecret" not in ring.dump()


def test_payloads_are_length_and_short_hex_prefix_only():
    h = Harness()
    h.issue(c.qisend(b"PASSWORD=abcdefghijklmnop", socket=0))
    h.recv(b"\r\n> ", b"\r\nSEND OK\r\n", b"\r\n+RECEIVE: 0, 20\r\n" + b"Z" * 20)
    dump = h.proto.ring.dump()
    assert "PASSWORD" not in dump and "ZZZZ" not in dump
    assert "[25 bytes 50415353574f52443d61626364656667...]" in dump
    assert "+RECEIVE: 0, 20 [20 bytes" in dump


def test_entries_are_timestamped_by_the_clock_and_directional():
    clock = Clock()
    clock.advance(12.5)
    ring = TrafficRing(clock)
    ring.sent(b"AT\r")
    clock.advance(0.25)
    ring.received(b"OK")
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.{}%z", time.localtime(12))
    assert ring.dump().splitlines() == [stamp.format("500") + " > b'AT\\r'",
                                        stamp.format("750") + " < b'OK'"]


def test_observers_see_each_entry_as_the_ring_keeps_it():
    seen = []
    ring = TrafficRing(Clock(), observers=[seen.append])
    ring.add_secret(b"1234")
    ring.sent(b"AT+CPIN=1234\r")
    ring.sent_payload(b"secret payload")
    assert seen == ring.dump().splitlines()
    assert "1234" not in seen[0] and "secret" not in seen[1]


def test_a_failing_observer_neither_stops_the_ring_nor_the_others():
    seen = []
    ring = TrafficRing(Clock(), observers=[lambda entry: 1 / 0, seen.append])
    ring.sent(b"AT\r")
    assert len(seen) == 1 and ring.dump() == seen[0]


def test_ring_keeps_only_the_newest_64_kib():
    ring = TrafficRing(Clock())
    for n in range(5000):
        ring.received(b"+CSQ: %d,0" % n)
    dump = ring.dump()
    assert len(dump) <= 64 * 1024
    assert dump.endswith("+CSQ: 4999,0'")
    assert "+CSQ: 0,0'" not in dump


def test_recovery_dump_is_rate_limited():
    clock = Clock()
    ring = TrafficRing(clock, dump_interval=60)
    ring.sent(b"AT\r")
    assert ring.recovery_dump("pdp_lost")
    clock.advance(59)
    assert ring.recovery_dump("pdp_lost") is None
    clock.advance(1)
    assert ring.recovery_dump("pdp_lost")


def test_redact_helper_handles_qiregapp_credentials():
    assert redact(b'AT+QIREGAPP="apn","u","p"') == b'AT+QIREGAPP="apn","***","***"'


SECRET = b"user secret: correct horse battery staple"


def test_frames_and_events_carrying_user_bytes_repr_as_length_and_prefix():
    shown = [repr(Received(2, SECRET, "10.0.0.9")), repr(Payload(b"+RECEIVE: 2, 41", SECRET)),
             repr(Data(SECRET)), repr(Junk(SECRET, "no frame"))]
    prefix = SECRET[:16].hex()
    assert shown[0] == f"Received(socket=2, data=[41 bytes {prefix}...], peer='10.0.0.9')"
    assert shown[1] == f"Payload(header=b'+RECEIVE: 2, 41', data=[41 bytes {prefix}...], peer_lines=())"
    assert shown[2] == f"Data(data=[41 bytes {prefix}...])"
    assert shown[3] == f"Junk(data=[41 bytes {prefix}...], reason='no frame')"
    assert Received(2, SECRET) == Received(2, SECRET)  # equality still compares the bytes


def test_engine_logs_never_show_pushed_payload_or_pin():
    h = Harness()

    def broken(event):
        raise RuntimeError("listener bug")

    h.proto.add_listener(broken)
    with capturedLogs() as events:
        h.recv(b"\r\n+RECEIVE: 0, %d\r\n" % len(SECRET) + SECRET)
        h.recv(b'\r\nAT+CPIN="1234"\r\n')  # a stray echo: an unsolicited line
    text = "\n".join(formatEvent(e) + repr(e.get("log_failure", "")) for e in events)
    assert "listener bug" in text and f"[{len(SECRET)} bytes" in text
    assert "horse" not in text and SECRET[:16].hex() + SECRET[16:].hex() not in text
    assert "1234" not in text and "AT+CPIN=***" in text
