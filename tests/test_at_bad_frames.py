"""ATProtocol transcripts: bad frames from the module never wedge the engine, and nothing but the
real prompt of the AT+QISEND on the wire makes it write payload."""

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from bridge.at import commands as c
from bridge.at.commands import ReadResult, Reply, SendResult
from bridge.at.errors import CommandTimeout, SendRefused
from bridge.at.events import Closed, Received, Resynced, Unsolicited
from tests.test_at_harness import Harness, error_of, value_of


def logged(harness):
    """Collect the engine's formatted log messages."""
    messages = []
    harness.proto.log = Logger(observer=lambda event: messages.append(
        event["log_format"].format(**event)))
    return messages


# -- length headers -------------------------------------------------------------------------------

def test_bogus_huge_receive_header_is_skipped_and_the_next_ok_is_seen():
    h = Harness()
    log = logged(h)
    h.recv(b"\r\n+RECEIVE: 0, 65000\r\n")
    outcome = h.issue(c.at())
    assert h.sent() == b"AT\r"
    h.recv(b"\r\nOK\r\n")
    assert value_of(outcome) == Reply(())
    assert h.events == []
    assert log == ["skipped 18 junk bytes from the module "
                   "(header announces 65000 payload bytes, more than 1500)"]


def test_qird_header_above_the_length_asked_for_is_skipped():
    h = Harness()
    outcome = h.issue(c.qird(100, socket=1))
    assert h.sent() == b"AT+QIRD=0,1,1,100\r"
    h.recv(b"\r\n+QIRD: 1.2.3.4:80,TCP,1400\r\n\r\nOK\r\n")
    assert value_of(outcome) == ReadResult(None, None, b"")


def test_qird_header_of_the_length_asked_for_is_read():
    h = Harness()
    outcome = h.issue(c.qird(4, socket=1))
    h.sent()
    h.recv(b"\r\n+QIRD: 1.2.3.4:80,TCP,4\r\nOK\r\n\r\nOK\r\n")
    assert value_of(outcome) == ReadResult("1.2.3.4:80", "TCP", b"OK\r\n")


def test_resync_drops_a_truncated_payload_so_the_module_is_heard_again():
    h = Harness(resync_timeout=2, stall_timeout=60)
    log = logged(h)
    h.recv(b"\r\n+RECEIVE: 2, 100\r\n0123456789")  # 90 bytes never come
    outcome = h.issue(c.csq(timeout=5))
    h.recv(b"\r\n+CSQ: 9,0\r\n\r\nOK\r\n")  # taken as payload: nothing can tell
    h.clock.advance(5)
    assert isinstance(error_of(outcome), CommandTimeout)
    assert h.sent() == b"AT+CSQ\r\x1bAT\r"
    h.recv(b"\r\nOK\r\n")
    assert h.events == [Resynced(True)]
    assert "dropped 29 bytes of a half-received payload (resync)" in log


def test_first_command_after_a_failed_resync_drops_a_truncated_payload():
    """The recovery ladder starts with a plain AT: it goes through the same resync."""
    h = Harness(resync_timeout=2, resync_attempts=1, stall_timeout=60)
    h.issue(c.at(timeout=1))
    h.clock.advance(1)
    h.clock.advance(2)
    assert h.events == [Resynced(False)]
    h.recv(b"\r\n+RECEIVE: 0, 100\r\nxyz")
    h.sent()
    outcome = h.issue(c.at())
    assert h.sent() == b"\x1bAT\r"
    h.recv(b"\r\nOK\r\n")
    assert h.events[-1] == Resynced(True)
    assert h.sent() == b"AT\r"
    h.recv(b"\r\nOK\r\n")
    assert value_of(outcome) == Reply(())


def test_payload_that_stops_arriving_is_dropped_after_the_stall_timeout():
    h = Harness(stall_timeout=5)
    log = logged(h)
    h.recv(b"\r\n+RECEIVE: 2, 100\r\n0123456789")
    h.clock.advance(4.9)
    h.recv(b"\r\n0, CLOSED\r\n")  # eaten: the frame might still complete
    h.clock.advance(4.9)
    assert log == []
    h.clock.advance(0.1)
    assert log == ["dropped 23 bytes of a half-received payload (no byte for the stall timeout)"]
    h.recv(b"\r\n1, CLOSED\r\n")
    assert h.events == [Closed(1)]


def test_slow_payload_that_keeps_arriving_is_not_dropped():
    h = Harness(stall_timeout=5)
    data = bytes(range(100))
    h.recv(b"\r\n+RECEIVE: 2, 100\r\n")
    for i in range(0, 100, 10):
        h.clock.advance(4)
        h.recv(data[i:i + 10])
    assert h.events == [Received(2, data)]


# -- the prompt -----------------------------------------------------------------------------------

def test_gt_in_junk_before_the_error_writes_no_payload():
    h = Harness()
    outcome = h.issue(c.qisend(b"AT+CFUN=0\r", socket=0))
    assert h.sent() == b"AT+QISEND=0,10\r"
    h.recv(b"\r\n>", b"x\r\nERROR\r\n")
    assert h.sent() == b""
    assert isinstance(error_of(outcome), SendRefused)
    assert h.events == [Unsolicited(b">x")]


def test_prompt_before_the_command_line_is_written_writes_no_payload():
    waking = Deferred()

    class AsleepModule:
        def wake(self):
            return waking

        def idle(self):
            pass

    h = Harness(sleep=AsleepModule())
    outcome = h.issue(c.qisend(b"data", socket=1))
    h.recv(b"\r\n> \r\n")
    assert h.sent() == b""
    waking.callback(None)
    assert h.sent() == b"AT+QISEND=1,4\r"
    h.recv(b"\r\n> ")
    assert h.sent() == b"data"
    h.recv(b"\r\nSEND OK\r\n")
    assert value_of(outcome) == SendResult(True)
    assert h.events == [Unsolicited(b"> ")]
