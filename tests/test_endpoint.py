"""The modem as a client endpoint, on transcripts: connectProtocol, ConnectError naming the
reason, cancellation, the reasons a protocol hears, and lingering sockets given to waiters."""

import pytest
from twisted.internet.defer import CancelledError
from twisted.internet.endpoints import connectProtocol
from twisted.internet.error import ConnectError, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IConsumer, IPushProducer, ITransport
from twisted.internet.protocol import Factory, Protocol

from bridge.modem.endpoint import ModemEndpoint
from bridge.modem.socket import ModuleAddress
from tests.modem_harness import OK
from tests.socket_bench import (CLOSED_0, PROMPT, QICLOSE_0, LinkBench, ModemBench, Recorder,
                                open_command, outcome)


@pytest.fixture
def bench(tmp_path):
    return ModemBench(tmp_path)


def endpoint(bench, **options):
    return ModemEndpoint(bench.modem, "10.1.2.3", 80, **options)


def test_connect_protocol_fires_on_connect_ok_with_a_full_transport(bench):
    protocol = Recorder()
    result = outcome(connectProtocol(endpoint(bench), protocol))
    assert bench.wire() == b"AT+QIDNSIP=0\r"
    bench.module(OK)
    assert bench.wire() == open_command(0)
    bench.module(OK)
    assert result == []  # not before CONNECT OK
    bench.module(b"\r\n0, CONNECT OK\r\n")
    assert result == [protocol]
    transport = protocol.transport
    assert all(i.providedBy(transport) for i in (ITransport, IPushProducer, IConsumer))
    assert transport.getPeer() == ModuleAddress("TCP", "10.1.2.3", 80, "modem:main", 0)
    assert transport.getHost() == ModuleAddress("TCP", "10.0.0.2", 0, "modem:main", 0)
    transport.write(b"hello")
    assert bench.wire() == b"AT+QISEND=0,5\r"
    bench.module(PROMPT)
    assert bench.wire() == b"hello"


def test_connect_fail_is_a_connect_error_naming_it_and_frees_the_index(bench):
    result = outcome(connectProtocol(endpoint(bench), Recorder()))
    assert bench.wire() == b"AT+QIDNSIP=0\r"
    bench.module(OK)
    assert bench.wire() == open_command(0)
    bench.module(OK + b"\r\n0, CONNECT FAIL\r\n")
    assert bench.wire() == QICLOSE_0
    bench.module(b"\r\n0, CLOSE OK\r\n")
    assert result[0].check(ConnectError) and "CONNECT FAIL" in result[0].getErrorMessage()
    assert bench.modem.slots_in_use == frozenset()


def test_cancel_while_waiting_for_a_socket_leaves_the_queue(bench):
    held = [connectProtocol(endpoint(bench, limit=1), Recorder())]
    waiting = connectProtocol(endpoint(bench, limit=1), Recorder())
    assert bench.modem.sockets.waiting() == 1
    result = outcome(waiting)
    waiting.cancel()
    assert result[0].check(CancelledError) and bench.modem.sockets.waiting() == 0
    assert held[0].called is False  # the first one is still opening, untouched


def test_cancel_while_opening_lets_the_open_finish_and_closes_that_socket(bench):
    connecting = connectProtocol(endpoint(bench), Recorder())
    result = outcome(connecting)
    assert bench.wire() == b"AT+QIDNSIP=0\r"
    bench.module(OK)
    assert bench.wire() == open_command(0)
    connecting.cancel()  # the module cannot be stopped half way
    assert result[0].check(CancelledError)
    bench.module(OK + b"\r\n0, CONNECT OK\r\n")
    assert bench.wire() == QICLOSE_0  # nothing stays open on the module with nobody behind it
    assert bench.modem.slots_in_use == frozenset({0})
    bench.module(b"\r\n0, CLOSE OK\r\n")
    assert bench.modem.slots_in_use == frozenset()


def test_a_factory_that_refuses_gets_a_connect_error_and_the_socket_is_closed(bench):
    class Refusing(Factory):
        def buildProtocol(self, addr):
            return None

    result = outcome(endpoint(bench).connect(Refusing()))
    bench.connect_ok()
    assert result[0].check(ConnectError) and bench.wire() == QICLOSE_0


def connected(bench):
    protocol = Recorder()
    connectProtocol(endpoint(bench), protocol)
    bench.connect_ok()
    return protocol


def test_a_clean_remote_close_is_connection_done_after_every_byte(bench):
    protocol = connected(bench)
    bench.module(CLOSED_0)
    bench.wire()
    bench.module(b"\r\n+QIRD: 10.1.2.3:80,TCP,4\r\ntail\r\nOK\r\n")
    bench.wire()
    bench.module(OK)
    assert protocol.received == b"tail" and protocol.reason.check(ConnectionDone)


def test_a_dead_link_is_connection_lost_naming_the_cause(tmp_path):
    bench = ModemBench(tmp_path)
    protocol = Recorder()
    connectProtocol(ModemEndpoint(bench.modem, "10.1.2.3", 80), protocol)
    bench.connect_ok()
    protocol.transport.write(b"x")
    bench.wire()
    bench.module(PROMPT)
    bench.wire()
    bench.module(b"\r\nSEND FAIL\r\n")
    for _ in range(6):  # the default retries, each after a doubling back-off
        bench.clock.advance(10)
        if bench.wire().startswith(b"AT+QISACK"):
            bench.module(b"\r\n+QISACK: 0, 0, 0\r\n\r\nOK\r\n")
            bench.wire()
        bench.module(PROMPT)
        bench.wire()
        bench.module(b"\r\nSEND FAIL\r\n")
    assert protocol.reason.check(ConnectionLost)
    assert "SEND FAIL 7 times in a row" in protocol.reason.getErrorMessage()


def test_a_modem_going_down_is_connection_lost(bench):
    protocol = connected(bench)
    bench.module(b"\r\n+PDP DEACT\r\n")
    assert protocol.reason.check(ConnectionLost)
    assert "modem down" in protocol.reason.getErrorMessage()


# -- lingering sockets and waiting connections ---------------------------------------------------

def lingering_six(tmp_path):
    """Six local connections spliced to sockets 0..5; the one on socket 0 has half-closed."""
    bench = LinkBench(tmp_path)
    others = []
    for n in range(1, 6):
        others.append(bench.accept())
        bench.connect_ok(n)
    bench.side.readConnectionLost()  # nothing unsent or unacked: socket 0 lingers from now
    return bench


def test_a_lingering_socket_idle_for_0_2_s_yields_to_a_waiting_connection(tmp_path):
    bench = lingering_six(tmp_path)
    start = bench.clock.seconds()
    waiter, waiter_local = bench.accept()
    assert waiter.module is None and bench.modem.sockets.waiting() == 1
    bench.clock.advance(0.1)
    bench.module(b"\r\n+RECEIVE: 0, 2\r\nhi")  # traffic: idle counts again from here
    bench.clock.advance(0.1875)
    assert bench.wire() == b"" and not bench.local.disconnecting
    bench.clock.advance(0.0125)  # 0.2 s without traffic
    assert bench.wire() == QICLOSE_0
    assert bench.local.value() == b"hi" and bench.local.disconnecting
    assert not bench.local.disconnected  # closed exactly as when a linger ends: a clean EOF
    bench.module(b"\r\n0, CLOSE OK\r\n")
    bench.connect_ok(0)
    assert waiter.module.transport.slot == 0
    assert bench.clock.seconds() - start < 2.0  # well before the linger would have ended


def test_with_nobody_waiting_a_lingering_socket_keeps_its_full_linger(tmp_path):
    bench = lingering_six(tmp_path)
    bench.clock.advance(1.9375)
    assert bench.wire() == b"" and not bench.local.disconnecting
    bench.clock.advance(0.0625)
    assert bench.wire() == QICLOSE_0


def test_lose_connection_sends_the_rest_waits_for_its_acks_then_closes(bench):
    protocol = connected(bench)
    protocol.transport.write(b"bye")
    protocol.transport.loseConnection()
    assert bench.send_ok(1).endswith(b"AT+QISACK=0\r")  # the tail must be acked first
    assert protocol.reason is None
    bench.module(b"\r\n+QISACK: 3, 3, 0\r\n\r\nOK\r\n")
    assert bench.wire() == QICLOSE_0 and protocol.reason.check(ConnectionDone)


def test_abort_connection_closes_at_once(bench):
    from twisted.internet.error import ConnectionAborted

    protocol = connected(bench)
    protocol.transport.write(b"never sent")
    bench.wire()
    protocol.transport.abortConnection()
    assert protocol.reason is None  # never from inside the protocol's own call (as over TCP)
    bench.clock.advance(0)
    assert protocol.reason.check(ConnectionAborted)
    bench.module(PROMPT)  # the AT+QISEND already on the wire still gets its payload
    assert bench.wire() == b"never sent"
    bench.module(b"\r\nSEND OK\r\n")
    assert bench.wire() == QICLOSE_0


def test_a_write_after_lose_connection_is_not_dropped_silently(bench):
    protocol = connected(bench)
    protocol.transport.write(b"a")
    protocol.transport.loseConnection()
    protocol.transport.write(b"late")
    bench.clock.advance(0)
    assert protocol.reason.check(ConnectionLost)
    assert "4 bytes written after the stream stopped carrying" in protocol.reason.getErrorMessage()


def test_a_lingering_socket_whose_paused_reader_has_bytes_waiting_is_not_reclaimed(tmp_path):
    """Reclaiming would lose those bytes: the reader keeps its whole linger to resume."""
    bench = lingering_six(tmp_path)
    bench.socket.pauseProducing()
    bench.module(b"+QIRDI: 0,1,0\r\n")
    bench.accept()  # a connection waits for a socket
    bench.clock.advance(1.0)
    assert bench.wire() == b"" and not bench.local.disconnecting
    bench.socket.resumeProducing()
    assert bench.wire() == b"AT+QIRD=0,1,0,1500\r"
    bench.module(b"\r\n+QIRD: 10.1.2.3:80,TCP,5\r\nreply\r\nOK\r\n")
    assert bench.wire() == b"AT+QIRD=0,1,0,1500\r"
    bench.module(OK)  # drained: idle from here
    bench.clock.advance(0.1875)
    assert bench.wire() == b""
    bench.clock.advance(0.0125)
    assert bench.wire() == QICLOSE_0
    assert bench.local.value() == b"reply" and not bench.local.disconnected  # clean EOF
