"""Module socket transcripts: exact UART bytes against the real Modem; the local connection
is a StringTransport spliced to the socket as the daemon does it."""

from twisted.logger import capturedLogs, formatEvent

from bridge.at.events import StreamCorrupt
from tests.socket_bench import (CLOSED_0, PROMPT, QICLOSE_0, QIRD_0, QIRDI_0, QISACK_0, SEND_OK,
                                LinkBench, open_command, qird, sack)


def logged(events, text: str) -> bool:
    return any(text in formatEvent(event) for event in events)

def test_uplink_is_pipelined_in_fixed_length_chunks_without_polling_acks(tmp_path):
    s = LinkBench(tmp_path)
    data = bytes(range(256)) * 12  # 3072 bytes: 1460 + 1460 + 152
    s.local_data(data)
    assert s.wire() == b"AT+QISEND=0,1460\r"
    s.module(PROMPT)
    assert s.wire() == data[:1460]
    s.module(SEND_OK)
    assert s.wire() == b"AT+QISEND=0,1460\r"  # next chunk at once, no AT+QISACK
    s.module(PROMPT)
    s.module(SEND_OK)
    assert s.wire() == data[1460:2920] + b"AT+QISEND=0,152\r"
    s.module(PROMPT)
    s.module(SEND_OK)
    assert s.wire() == data[2920:]
    assert s.socket.stats()["sent"] == 3072 and s.socket.stats()["uplink_buffered"] == 0


def test_window_full_asks_qisack_once_and_goes_on_when_acks_arrive(tmp_path):
    s = LinkBench(tmp_path, settings=dict(window=2920))
    s.local_data(b"x" * 4380)
    wire = s.send_ok(2)
    assert wire.count(b"AT+QISACK") == 1 and wire.endswith(b"AT+QISACK=0\r")
    s.module(b"\r\n+QISACK: 2920, 1460, 1460\r\n\r\nOK\r\n")
    assert s.wire() == b"AT+QISEND=0,1460\r"


def test_still_blocked_polls_again_after_a_delay_from_the_ack_rate(tmp_path):
    s = LinkBench(tmp_path, settings=dict(window=1460, ack_poll_min=0.05))
    s.local_data(b"y" * 2920)
    assert s.send_ok(1).endswith(b"AT+QISACK=0\r")
    s.module(b"\r\n+QISACK: 1460, 0, 1460\r\n\r\nOK\r\n")
    assert s.wire() == b""
    s.clock.advance(0.049)
    assert s.wire() == b""
    s.clock.advance(0.001)
    assert s.wire() == b"AT+QISACK=0\r"
    s.module(b"\r\n+QISACK: 1460, 1460, 0\r\n\r\nOK\r\n")
    assert s.wire() == b"AT+QISEND=0,1460\r"


def test_stop_and_wait_sends_one_chunk_then_waits_for_unacked_zero(tmp_path):
    s = LinkBench(tmp_path, settings=dict(window=0))
    s.local_data(b"z" * 2000)
    assert s.send_ok(1).endswith(b"AT+QISACK=0\r")
    s.module(b"\r\n+QISACK: 1460, 1000, 460\r\n\r\nOK\r\n")
    s.clock.advance(1)
    assert s.wire() == b"AT+QISACK=0\r"
    s.module(b"\r\n+QISACK: 1460, 1460, 0\r\n\r\nOK\r\n")
    assert s.wire() == b"AT+QISEND=0,540\r"


def test_send_fail_retries_the_same_bytes_after_a_backoff(tmp_path):
    s = LinkBench(tmp_path, settings=dict(send_backoff=0.1))
    s.local_data(b"A" * 10)
    s.wire()
    s.module(PROMPT)
    assert s.wire() == b"A" * 10
    s.module(b"\r\nSEND FAIL\r\n")
    assert s.wire() == b""
    s.clock.advance(0.1)
    assert s.wire() == b"AT+QISACK=0\r"  # SEND FAIL = buffer full: learn the acks too
    s.module(b"\r\n+QISACK: 0, 0, 0\r\n\r\nOK\r\n")
    assert s.wire() == b"AT+QISEND=0,10\r"
    s.module(PROMPT)
    assert s.wire() == b"A" * 10
    s.module(SEND_OK)
    assert s.socket.stats()["sent"] == 10 and not s.local.disconnecting


def test_send_fail_past_the_bound_kills_the_link_and_resets_the_local_side(tmp_path):
    s = LinkBench(tmp_path, settings=dict(send_retries=1, send_backoff=0.1))
    s.local_data(b"B" * 10)
    for delay in (0.1, None):
        s.wire()
        s.module(PROMPT)
        s.module(b"\r\nSEND FAIL\r\n")
        if delay:
            s.clock.advance(delay)
            s.module(b"\r\n+QISACK: 0, 0, 0\r\n\r\nOK\r\n")
    assert s.local.disconnected  # abortConnection, not a clean close
    assert s.wire() == b"B" * 10 + b"AT+QICLOSE=0\r"
    s.module(b"\r\n0, CLOSE OK\r\n")
    assert s.modem.slots_in_use == frozenset()


def test_local_reading_pauses_above_high_water_and_resumes_below_low_water(tmp_path):
    s = LinkBench(tmp_path, settings=dict(high_water=3000, low_water=1500))
    s.local_data(b"C" * 2999)
    assert s.local.producerState == "producing"
    s.local_data(b"C")
    assert s.local.producerState == "paused"
    s.send_ok(1)  # 1540 left
    assert s.local.producerState == "paused"
    s.send_ok(1)  # 80 left
    assert s.local.producerState == "producing"


def test_pull_reads_on_qirdi_until_an_empty_read(tmp_path):
    s = LinkBench(tmp_path)
    s.module(b"+QIRDI: 0,1,0\r\n")
    assert s.wire() == b"AT+QIRD=0,1,0,1500\r"
    payload = b"\r\nOK\r\n+RECEIVE: 0, 5\r\n\x1a\x1b+++CLOSED\r\n> "
    s.module(b"\r\n+QIRD: 10.1.2.3:80,TCP,%d\r\n" % len(payload) + payload + b"\r\nOK\r\n")
    assert s.local.value() == payload
    assert s.wire() == b"AT+QIRD=0,1,0,1500\r"
    s.module(b"\r\nOK\r\n")
    assert s.wire() == b""


def test_pull_does_not_read_while_the_local_transport_paused_us_and_reads_on_resume(tmp_path):
    s = LinkBench(tmp_path)
    s.socket.pauseProducing()
    s.module(b"+QIRDI: 0,1,0\r\n")
    assert s.wire() == b""
    s.socket.resumeProducing()
    assert s.wire() == b"AT+QIRD=0,1,0,1500\r"


def test_push_writes_received_data_and_aborts_a_reader_that_falls_too_far_behind(tmp_path):
    s = LinkBench(tmp_path, receive="push", settings=dict(push_limit=8))
    s.module(b"\r\n+RECEIVE: 0, 5\r\nhello")
    assert s.local.value() == b"hello"
    s.socket.pauseProducing()
    s.module(b"\r\n+RECEIVE: 0, 5\r\nworld")
    assert not s.local.disconnected
    s.module(b"\r\n+RECEIVE: 0, 5\r\nagain")
    assert s.local.disconnected and s.wire() == b"AT+QICLOSE=0\r"


def test_remote_close_drains_then_eof_then_qiclose_accepting_error(tmp_path):
    s = LinkBench(tmp_path)
    s.module(b"\r\n0, CLOSED\r\n")
    assert s.wire() == b"AT+QIRD=0,1,0,1500\r"
    s.module(b"\r\n+QIRD: 10.1.2.3:80,TCP,4\r\ntail\r\nOK\r\n")
    assert s.wire() == b"AT+QIRD=0,1,0,1500\r" and not s.local.disconnecting
    s.module(b"\r\nOK\r\n")
    assert s.local.value() == b"tail" and s.local.disconnecting and not s.local.disconnected
    assert s.wire() == b"AT+QICLOSE=0\r"
    assert s.modem.slots_in_use == frozenset({0})  # not before the module answered
    s.module(b"\r\nERROR\r\n")
    assert s.modem.slots_in_use == frozenset()


def test_local_eof_sends_everything_waits_for_acks_then_lingers_without_traffic(tmp_path):
    s = LinkBench(tmp_path, settings=dict(linger=2.0))
    s.local_data(b"D" * 100)
    s.side.readConnectionLost()
    assert s.send_ok(1).endswith(b"AT+QISACK=0\r")
    s.module(b"\r\n+QISACK: 100, 100, 0\r\n\r\nOK\r\n")
    s.clock.advance(1.5)
    s.module(b"\r\n+RECEIVE: 0, 2\r\nhi")  # push-style bytes still reach the local side
    s.clock.advance(1.9)  # traffic restarted the linger
    assert s.wire() == b""
    s.clock.advance(0.1)
    assert s.local.value() == b"hi" and s.local.disconnecting
    assert s.wire() == b"AT+QICLOSE=0\r"
    s.module(b"\r\n0, CLOSE OK\r\n")
    assert s.modem.slots_in_use == frozenset()


def test_connect_fail_resets_the_local_connection_and_frees_the_slot(tmp_path):
    s = LinkBench(tmp_path, open_it=False)
    assert s.wire() == b"AT+QIDNSIP=0\r"
    s.module(b"\r\nOK\r\n")
    assert s.wire() == open_command()
    s.module(b"\r\nOK\r\n\r\n0, CONNECT FAIL\r\n")
    assert s.wire() == QICLOSE_0  # the module keeps the index allocated after a failed open
    assert not s.local.disconnected and s.modem.slots_in_use == frozenset({0})
    s.module(b"\r\n0, CLOSE OK\r\n")
    assert s.local.disconnected and s.modem.slots_in_use == frozenset()


def test_a_connection_is_not_read_until_its_socket_is_open(tmp_path):
    s = LinkBench(tmp_path, open_it=False)
    assert s.local.producerState == "paused"  # its bytes wait in the kernel meanwhile
    s.connect_ok()
    assert s.local.producerState == "producing"
    s.local_data(b"early")
    assert s.wire() == b"AT+QISEND=0,5\r"


def test_modem_down_resets_the_local_side_and_frees_the_slot(tmp_path):
    s = LinkBench(tmp_path)
    s.module(b"\r\n+PDP DEACT\r\n")  # not persistent: the modem is down for good
    assert s.local.disconnected and s.modem.slots_in_use == frozenset() and s.wire() == b""


def test_a_corrupt_send_stream_kills_the_link(tmp_path):
    s = LinkBench(tmp_path)
    s.socket.socket_event(StreamCorrupt(0))
    assert s.local.disconnected and s.wire() == b"AT+QICLOSE=0\r"


def test_acks_still_missing_after_local_eof_fail_the_link_with_a_reset_not_a_clean_close(tmp_path):
    s = LinkBench(tmp_path, settings=dict(ack_wait=4.0))
    s.local_data(b"E" * 100)
    s.side.readConnectionLost()
    assert s.send_ok(1).endswith(QISACK_0)
    with capturedLogs() as events:
        s.module(sack(100, 60))  # the module keeps 40 bytes unacked from here on
        for _ in range(63):  # up to t = 3.9375, in steps of 1/16 s
            s.clock.advance(0.0625)
            if s.wire() == QISACK_0:
                s.module(sack(100, 60))
            assert not s.local.disconnecting
        s.clock.advance(0.0625)
    assert s.local.disconnected  # reset: the app must not believe its tail was delivered
    wire = s.wire()
    if wire == QISACK_0:  # a poll was out when the bound passed: AT+QICLOSE queues behind it
        s.module(sack(100, 60))
        wire = s.wire()
    assert wire == QICLOSE_0
    assert s.modem.counters.get("link_dead", cause="acks_overdue") == 1
    assert logged(events, "40 bytes still unacked 4 s after the last write")


def test_qird_error_without_a_remote_close_fails_the_link_instead_of_a_clean_eof(tmp_path):
    s = LinkBench(tmp_path)
    s.module(QIRDI_0)
    assert s.wire() == QIRD_0
    s.module(b"\r\nERROR\r\n")
    assert s.local.disconnected and s.wire() == QICLOSE_0
    assert s.modem.counters.get("link_dead", cause="read_error") == 1


def test_qird_error_after_the_remote_close_ends_the_drain_with_a_clean_eof(tmp_path):
    s = LinkBench(tmp_path)
    s.module(CLOSED_0)
    assert s.wire() == QIRD_0
    s.module(qird(b"tail"))
    assert s.wire() == QIRD_0
    s.module(b"\r\nERROR\r\n")
    assert s.local.value() == b"tail" and s.local.disconnecting and not s.local.disconnected
    assert s.wire() == QICLOSE_0


def test_linger_keeps_reading_for_a_local_side_that_resumes_in_time(tmp_path):
    s = LinkBench(tmp_path, settings=dict(linger=2.0))
    s.side.readConnectionLost()  # nothing to send: the linger starts now
    s.socket.pauseProducing()
    s.module(QIRDI_0)
    s.clock.advance(1.5)
    assert not s.local.disconnecting and s.wire() == b""
    s.socket.resumeProducing()
    assert s.wire() == QIRD_0
    s.module(qird(b"late"))
    assert s.wire() == QIRD_0
    s.module(b"\r\nOK\r\n")
    s.clock.advance(1.5)
    assert not s.local.disconnecting
    s.clock.advance(0.5)  # a full linger after the last bytes
    assert s.local.value() == b"late" and s.local.disconnecting and not s.local.disconnected
    assert s.wire() == QICLOSE_0


def test_linger_ends_on_time_whatever_the_local_reader_does_and_unread_bytes_reset(tmp_path):
    """A paused local reader cannot hold the socket: after ``linger`` without traffic it is
    closed; the module still holds bytes the reader never took, so the app sees a reset."""
    s = LinkBench(tmp_path, settings=dict(linger=2.0))
    s.side.readConnectionLost()
    s.socket.pauseProducing()
    s.module(QIRDI_0)
    s.clock.advance(1.9)
    assert not s.local.disconnecting and s.wire() == b""
    with capturedLogs() as events:
        s.clock.advance(0.1)
    assert s.local.disconnected and s.wire() == QICLOSE_0
    assert s.modem.counters.get("link_dead", cause="linger_unread") == 1
    assert logged(events, "the module holds bytes the paused local reader has not taken")
    s.module(b"\r\n0, CLOSE OK\r\n")
    assert s.modem.slots_in_use == frozenset()


def test_linger_ends_on_time_for_a_paused_reader_with_nothing_waiting(tmp_path):
    s = LinkBench(tmp_path, settings=dict(linger=2.0))
    s.side.readConnectionLost()
    s.socket.pauseProducing()
    s.clock.advance(2.0)
    assert s.local.disconnecting and not s.local.disconnected and s.wire() == QICLOSE_0


def test_linger_waits_for_a_read_in_flight(tmp_path):
    s = LinkBench(tmp_path, settings=dict(linger=2.0))
    s.side.readConnectionLost()
    s.clock.advance(1.5)
    s.module(QIRDI_0)
    assert s.wire() == QIRD_0
    s.clock.advance(0.5)  # the linger is due while the module is answering
    assert not s.local.disconnecting and s.wire() == b""
    s.module(qird(b"tail"))
    s.module(b"\r\nOK\r\n")
    assert s.local.value() == b"tail" and not s.local.disconnecting
    s.clock.advance(2.0)
    assert s.local.disconnecting and s.wire() == QIRD_0 + QICLOSE_0


def test_local_eof_during_the_drain_after_a_remote_close_still_delivers_everything(tmp_path):
    s = LinkBench(tmp_path)
    s.module(CLOSED_0)
    assert s.wire() == QIRD_0
    s.side.readConnectionLost()  # nothing unsent, nothing unacked: must not cut the drain short
    s.module(qird(b"rest"))
    assert s.wire() == QIRD_0
    s.module(b"\r\nOK\r\n")
    assert s.local.value() == b"rest" and s.local.disconnecting and not s.local.disconnected
    assert s.wire() == QICLOSE_0


def test_local_bytes_the_link_can_no_longer_carry_reset_the_local_side_and_are_logged(tmp_path):
    s = LinkBench(tmp_path)
    s.module(CLOSED_0)
    s.module(b"\r\nOK\r\n")  # drained: clean EOF to the local side, AT+QICLOSE
    assert s.local.disconnecting and not s.local.disconnected
    with capturedLogs() as events:
        s.local_data(b"too late")
    assert s.local.disconnected  # the clean close became a reset
    assert logged(events, "8 bytes from a local connection with no module socket to carry them")


def sent_then_remote_closed(s, request: bytes, reply: bytes) -> None:
    """The app's request goes out (SEND OK, acks never asked), the remote answers and closes;
    the link drains the reply. Leaves the wire holding what follows the empty read."""
    s.local_data(request)
    s.send_ok(1)
    s.module(CLOSED_0)
    assert s.wire() == QIRD_0
    s.module(qird(reply))
    assert s.wire() == QIRD_0
    s.module(b"\r\nOK\r\n")
    assert s.local.value() == reply


def test_remote_close_with_everything_known_acked_asks_nothing_and_ends_with_eof(tmp_path):
    s = LinkBench(tmp_path, settings=dict(linger=2.0))
    s.local_data(b"GET / HTTP/1.0\r\n\r\n")
    s.side.readConnectionLost()  # HTTP/1.0: the request, then a half-close
    assert s.send_ok(1).endswith(QISACK_0)
    s.module(sack(18, 18))
    s.module(CLOSED_0)
    assert s.wire() == QIRD_0
    s.module(qird(b"HTTP/1.0 200 OK\r\n\r\n"))
    s.module(b"\r\nOK\r\n")
    assert s.wire() == QIRD_0 + QICLOSE_0  # no AT+QISACK: the common case costs nothing
    assert s.local.disconnecting and not s.local.disconnected


def test_remote_close_with_unknown_acks_asks_once_and_all_acked_ends_with_eof(tmp_path):
    s = LinkBench(tmp_path)
    sent_then_remote_closed(s, b"E" * 100, b"reply")
    assert s.wire() == QISACK_0 and not s.local.disconnecting  # EOF waits for the answer
    s.module(sack(100, 100))
    assert s.wire() == QICLOSE_0
    assert s.local.disconnecting and not s.local.disconnected
    assert s.modem.counters.get("link_dead", cause="unacked_at_remote_close") == 0


def test_remote_close_with_bytes_still_unacked_resets_the_local_side(tmp_path):
    s = LinkBench(tmp_path)
    sent_then_remote_closed(s, b"E" * 100, b"reply")
    assert s.wire() == QISACK_0
    with capturedLogs() as events:
        s.module(sack(100, 60))
    assert s.local.disconnected  # reset: the peer may never have read the last 40 bytes
    assert s.wire() == QICLOSE_0
    assert s.modem.counters.get("link_dead", cause="unacked_at_remote_close") == 1
    assert logged(events, "the remote closed with 40 sent bytes unacked")
    s.module(b"\r\n0, CLOSE OK\r\n")
    assert s.modem.slots_in_use == frozenset()


def test_remote_close_with_a_failed_ack_query_resets_the_local_side(tmp_path):
    s = LinkBench(tmp_path)
    sent_then_remote_closed(s, b"E" * 100, b"reply")
    assert s.wire() == QISACK_0
    with capturedLogs() as events:
        s.module(b"\r\nERROR\r\n")  # the module may refuse AT+QISACK after the close
    assert s.local.disconnected and s.wire() == QICLOSE_0
    assert s.modem.counters.get("link_dead", cause="unacked_at_remote_close") == 1
    assert logged(events, "the remote closed with 100 sent bytes not known to be acked")
