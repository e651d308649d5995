"""Module UDP socket transcripts: exact UART bytes against the real Modem (push receive, as a
modem carrying udp runs), the datagram socket opened through ModemDatagramEndpoint."""

import pytest
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.protocol import DatagramProtocol

from bridge.at import commands
from bridge.config import Remote
from bridge.modem.datagram import DatagramSettings, ModemDatagramEndpoint
from tests.modem_harness import OK
from tests.socket_bench import PROMPT, QICLOSE_0, SEND_OK, ModemBench

UDP = Remote("UDP", "10.1.2.3", 53)
#: Datagrams that look like the module talking, and the bytes that end or cancel a send.
TRICKY = [b"\r\nOK\r\n", b"+RECEIVE: 0, 5\r\n", b"\x1a", b"\x1b", b"a\r\nSEND OK\r\n\x1a\x1b",
          b"\r\n0, CLOSED\r\n"]


class Recorder(DatagramProtocol):
    def __init__(self):
        self.datagrams = []
        self.reasons = []
        self.stopped = 0

    def datagramReceived(self, data, addr):
        self.datagrams.append((data, addr))

    def connectionLost(self, reason):
        self.reasons.append(reason)

    def stopProtocol(self):
        self.stopped += 1


class DatagramBench(ModemBench):
    """A push-mode modem with one module UDP socket open on index 0."""

    def __init__(self, tmp_path, **settings):
        super().__init__(tmp_path, receive="push")
        self.protocol = self.open(**settings)
        self.socket = self.protocol.transport

    def open(self, n=0, **settings) -> Recorder:
        protocol = Recorder()
        endpoint = ModemDatagramEndpoint(self.modem, UDP.host, UDP.port,
                                         DatagramSettings(**settings))
        result = []
        endpoint.connect(protocol).addBoth(result.append)
        self.connect_ok(n, UDP)
        assert result == [protocol]
        return protocol

    def received(self, data: bytes, n=0) -> bytes:
        return b"\r\n+RECEIVE: %d, %d\r\n" % (n, len(data)) + data


@pytest.fixture
def bench(tmp_path):
    return DatagramBench(tmp_path)


def test_each_datagram_is_one_fixed_length_qisend_with_exact_bytes_and_no_qisack(bench):
    for datagram in TRICKY:
        bench.socket.write(datagram)
    wire = b""
    for datagram in TRICKY:
        command = bench.wire()
        assert command == b"AT+QISEND=0,%d\r" % len(datagram)  # one at a time, through the pump
        bench.module(PROMPT)
        assert bench.wire() == datagram
        bench.module(SEND_OK)
        wire += command
    assert bench.wire() == b""  # no AT+QISACK: UDP has no acks (app note §5.2.2)
    stats = bench.socket.stats()
    assert (stats["datagrams_up"], stats["bytes_up"]) == (len(TRICKY), sum(map(len, TRICKY)))
    assert stats["drops"] == {}


def test_a_datagram_larger_than_one_qisend_is_dropped_and_counted_never_split(bench):
    bench.socket.write(b"L" * 1461)
    assert bench.wire() == b""
    bench.socket.write(b"F" * 1460)
    assert bench.wire() == b"AT+QISEND=0,1460\r"
    bench.module(PROMPT)
    assert bench.wire() == b"F" * 1460
    assert bench.socket.stats()["drops"] == {"too_large": 1}


def test_send_fail_or_error_loses_that_datagram_only(bench):
    bench.socket.write(b"one")
    bench.socket.write(b"two")
    bench.socket.write(b"three")
    assert bench.wire() == b"AT+QISEND=0,3\r"
    bench.module(PROMPT)
    assert bench.wire() == b"one"
    bench.module(b"\r\nSEND FAIL\r\n")
    assert bench.wire() == b"AT+QISEND=0,3\r"  # the next datagram at once, no retry, no QISACK
    bench.module(b"\r\nERROR\r\n")  # no prompt: the module refused this one
    assert bench.wire() == b"AT+QISEND=0,5\r"
    bench.module(PROMPT)
    assert bench.wire() == b"three"
    bench.module(SEND_OK)
    stats = bench.socket.stats()
    assert stats["drops"] == {"send_failed": 2}
    assert (stats["datagrams_up"], stats["bytes_up"]) == (1, 5)
    assert bench.protocol.reasons == []  # the socket goes on


def test_the_uplink_queue_is_bounded_in_bytes_and_drops_the_newest(tmp_path):
    bench = DatagramBench(tmp_path, queue_bytes=2500)
    for n in range(4):
        bench.socket.write(bytes([n]) * 1000)  # the first leaves the queue for the pump at once
    assert bench.socket.stats()["drops"] == {"uplink_full": 1}
    sent = bench.send_ok(3)
    assert sent.count(b"AT+QISEND=0,1000\r") == 3
    assert b"\x03" * 1000 not in sent and b"\x02" * 1000 in sent


def test_pushed_receive_frames_are_one_datagram_each_whatever_they_contain(bench):
    bench.module(b"".join(bench.received(d) for d in TRICKY))
    assert bench.protocol.datagrams == [(d, ("10.1.2.3", 53)) for d in TRICKY]
    stats = bench.socket.stats()
    assert (stats["datagrams_down"], stats["bytes_down"]) == (len(TRICKY), sum(map(len, TRICKY)))
    assert bench.wire() == b""


def test_a_stray_qirdi_is_read_one_datagram_per_answer_until_empty(bench):
    bench.module(b"\r\n+QIRDI: 0,1,0\r\n")
    assert bench.wire() == b"AT+QIRD=0,1,0,1500\r"
    bench.module(b"\r\n+QIRD: 10.1.2.3:53,UDP,6\r\n\r\nOK\r\n\r\nOK\r\n")
    assert bench.wire() == b"AT+QIRD=0,1,0,1500\r"
    bench.module(b"\r\n+QIRD: 10.1.2.3:53,UDP,1\r\n\x1a\r\nOK\r\n")
    assert bench.wire() == b"AT+QIRD=0,1,0,1500\r"
    bench.module(OK)
    assert bench.wire() == b""
    assert [d for d, _ in bench.protocol.datagrams] == [b"\r\nOK\r\n", b"\x1a"]


def test_close_issues_qiclose_and_releases_the_index_once(bench):
    bench.socket.write(b"queued")
    assert bench.wire() == b"AT+QISEND=0,6\r"
    bench.socket.write(b"unsent")
    bench.socket.loseConnection()
    assert bench.protocol.reasons == []  # the datagram on the wire decides first
    bench.module(PROMPT)
    assert bench.wire() == b"queued"
    bench.module(SEND_OK)
    assert [r.type for r in bench.protocol.reasons] == [ConnectionDone]
    assert bench.protocol.stopped == 1
    assert bench.socket.stats()["datagrams_up"] == 1  # final when the protocol heard the end
    assert bench.wire() == QICLOSE_0
    assert bench.modem.slots_in_use == frozenset({0})  # not before the module answered
    bench.module(b"\r\n0, CLOSE OK\r\n")
    assert bench.modem.slots_in_use == frozenset()
    assert bench.socket.stats()["drops"] == {"unsent": 1}
    old = bench.socket
    newer = bench.open(0)
    old.loseConnection()
    old.modem_down("late")
    bench.module(bench.received(b"for the new one"))
    assert bench.modem.slots_in_use == frozenset({0})  # still the new socket's
    assert newer.datagrams == [(b"for the new one", ("10.1.2.3", 53))]
    assert bench.wire() == b"" and bench.protocol.stopped == 1


def test_a_close_answered_with_error_still_releases_the_index(bench):
    bench.socket.loseConnection()
    assert bench.wire() == QICLOSE_0
    bench.module(b"\r\nERROR\r\n")
    assert bench.modem.slots_in_use == frozenset()


def test_modem_down_tells_the_protocol_and_frees_the_index_without_a_command(bench):
    bench.socket.write(b"x")
    bench.wire()
    bench.module(b"\r\n+PDP DEACT\r\n")
    assert bench.modem.slots_in_use == frozenset()
    assert bench.protocol.reasons == []  # the datagram on the wire decides first
    bench.module(b"\r\nERROR\r\n")
    [reason] = bench.protocol.reasons
    assert reason.check(ConnectionLost) and "modem down" in reason.getErrorMessage()
    assert bench.protocol.stopped == 1
    bench.socket.write(b"after")
    assert b"AT+QISEND" not in bench.wire()
    assert bench.socket.stats()["drops"] == {"send_failed": 1, "unsent": 1}


def test_a_datagram_lost_to_a_prompt_timeout_is_counted(bench):
    """The engine ends the socket (StreamCorrupt) before it fails the AT+QISEND whose ``> ``
    never came: that datagram is still counted, before the protocol hears the end."""
    bench.socket.write(b"lost")
    assert bench.wire() == b"AT+QISEND=0,4\r"
    bench.clock.advance(commands.DEFAULT_TIMEOUTS.prompt + 1)
    [reason] = bench.protocol.reasons
    assert "AT+QISEND timed out" in reason.getErrorMessage()
    assert bench.socket.stats()["drops"] == {"send_failed": 1}


def test_the_module_closing_the_socket_ends_it_with_a_reason(bench):
    bench.module(b"\r\n0, CLOSED\r\n")
    assert bench.wire() == QICLOSE_0
    [reason] = bench.protocol.reasons
    assert reason.check(ConnectionLost)
    bench.module(b"\r\n0, CLOSE OK\r\n")
    assert bench.modem.slots_in_use == frozenset()


def test_a_write_to_another_address_is_refused(bench):
    with pytest.raises(ValueError):
        bench.socket.write(b"x", ("10.9.9.9", 53))
    bench.socket.write(b"y", ("10.1.2.3", 53))
    assert bench.wire() == b"AT+QISEND=0,1\r"


def test_a_server_client_put_on_its_index_ends_it_before_a_datagram_could_be_mixed_in(bench):
    """Push mode: ``+RECEIVE: 0`` would name no side once a server's client is on index 0."""
    bench.module(b"\r\n0, REMOTE IP: 10.0.0.1\r\n\r\n+RECEIVE: 0, 7\r\nforeign")
    assert bench.protocol.datagrams == []
    [reason] = bench.protocol.reasons
    assert "+RECEIVE names no side" in reason.getErrorMessage()
    assert bench.wire() == QICLOSE_0
