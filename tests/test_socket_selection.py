"""A module socket on a modem that serves or uses the second context: its commands carry the
selection (AT+QIFGCNT, AT+QISRVC) and its reads name context and side (app note §3.4, §7)."""

from twisted.internet.protocol import DatagramProtocol, Protocol

from bridge.at import commands
from bridge.modem.datagram import ModemDatagramEndpoint
from bridge.modem.socket import ModuleAddress, ModuleSocket
from tests.socket_bench import PROMPT, SEND_OK, ModemBench, sack
from tests.modem_harness import OK
from tests.test_module_datagram import DatagramBench


class Collect(Protocol):
    def connectionMade(self):
        self.received = b""

    def dataReceived(self, data):
        self.received += data


def server_socket(bench, slot=2, context=1):
    bench.modem.contexts_in_use = {0, 1}
    bench.modem.serves = True
    socket = ModuleSocket(bench.modem, slot, ModuleAddress("TCP", "10.9.8.7", 40000),
                          bench.modem.socket_settings(), context=context, server=True)
    protocol = Collect()
    socket.makeConnection(protocol)
    return socket, protocol


def test_a_server_socket_on_context_1_selects_before_sending(tmp_path):
    bench = ModemBench(tmp_path)
    socket, _ = server_socket(bench)
    socket.write(b"hello")
    assert bench.wire() == b"AT+QIFGCNT=1\r"
    bench.module(OK)
    assert bench.wire() == b"AT+QISRVC=2\r"
    bench.module(OK)
    assert bench.wire() == b"AT+QISEND=2,5\r"
    bench.module(PROMPT)
    assert bench.wire() == b"hello"
    bench.module(SEND_OK)


def test_a_server_socket_reads_with_its_context_and_side(tmp_path):
    bench = ModemBench(tmp_path)
    _, protocol = server_socket(bench)
    bench.module(b"\r\n+QIRDI: 1,2,2\r\n")
    assert bench.wire() == b"AT+QIRD=1,2,2,1500\r"  # AT+QIRD names both: no selection needed
    bench.module(b"\r\n+QIRD: 10.9.8.7:40000,TCP,3\r\nabc\r\nOK\r\n")
    assert protocol.received == b"abc"


def test_acks_and_close_keep_the_selection_once_it_is_in_force(tmp_path):
    bench = ModemBench(tmp_path)
    socket, _ = server_socket(bench)
    socket.write(b"x")
    bench.module(OK)
    bench.module(OK)
    bench.module(PROMPT)
    bench.module(SEND_OK)
    bench.wire()
    socket.loseConnection()
    assert bench.wire() == b"AT+QISACK=2\r"
    bench.module(sack(1, 1))
    assert bench.wire() == b"AT+QICLOSE=2\r"


def test_an_open_on_context_1_selects_it_first_and_a_client_socket_says_so(tmp_path):
    bench = ModemBench(tmp_path)
    bench.modem.contexts_in_use = {0, 1}
    bench.modem.serves = True
    outcome = []
    bench.modem.open_socket(4, "UDP", "10.1.2.3", 53, context=1).addBoth(outcome.append)
    assert bench.wire() == b"AT+QIFGCNT=1\r"
    bench.module(OK)
    assert bench.wire() == b"AT+QIDNSIP=0\r"
    bench.module(OK)
    assert bench.wire() == b'AT+QIOPEN=4,"UDP","10.1.2.3",53\r'
    bench.module(OK + b"\r\n4, CONNECT OK\r\n")
    assert outcome == [None]
    socket = ModuleSocket(bench.modem, 4, ModuleAddress("UDP", "10.1.2.3", 53),
                          bench.modem.socket_settings(), context=1)
    socket.makeConnection(Collect())
    socket.write(b"q")
    assert bench.wire() == b"AT+QISRVC=1\r"


def client_link(bench, slot=0, protocol=None) -> ModuleSocket:
    """A profile's TCP link on ``slot``, connected to ``protocol`` (default: a Collect)."""
    socket = ModuleSocket(bench.modem, slot, ModuleAddress("TCP", "10.1.2.3", 80),
                          bench.modem.socket_settings())
    socket.makeConnection(protocol or Collect())
    return socket


def test_a_plain_modem_writes_no_selection_at_all(tmp_path):
    bench = ModemBench(tmp_path)
    socket = client_link(bench)
    socket.write(b"q")
    assert bench.wire() == b"AT+QISEND=0,1\r"


def server_side_in_force(bench):
    """A module-side server starts listening and one of its commands leaves AT+QISRVC=2."""
    bench.modem.serves = True
    bench.modem.issue(commands.qisack(socket=0).addressing(bench.modem.selection(0, server=True)))
    bench.module(OK)
    bench.module(sack(0, 0))
    assert bench.wire() == b"AT+QISRVC=2\rAT+QISACK=0\r"


def test_a_socket_opened_before_the_modem_serves_selects_its_side_once_it_does(tmp_path):
    bench = ModemBench(tmp_path)
    socket = client_link(bench)
    server_side_in_force(bench)
    socket.write(b"for the client socket's remote")
    assert bench.wire() == b"AT+QISRVC=1\r"


def test_a_datagram_socket_opened_before_the_modem_serves_selects_its_side_once_it_does(tmp_path):
    bench = DatagramBench(tmp_path)  # client UDP socket 0, the modem does not serve yet
    server_side_in_force(bench)
    bench.socket.write(b"for the client socket's remote")
    assert bench.wire() == b"AT+QISRVC=1\r"


def test_the_close_after_a_cancelled_open_addresses_the_client_side(tmp_path):
    """With AT+QISRVC=2 in force, an unaddressed AT+QICLOSE=0 would close a server-accepted
    client and leave the client socket just opened on the module while its index is freed."""
    bench = ModemBench(tmp_path)
    server_side_in_force(bench)
    opening = ModemDatagramEndpoint(bench.modem, "10.1.2.3", 53).connect(DatagramProtocol())
    opening.addErrback(lambda _: None)
    assert bench.wire() == b"AT+QIDNSIP=0\r"
    bench.module(OK)
    assert bench.wire() == b'AT+QIOPEN=0,"UDP","10.1.2.3",53\r'
    opening.cancel()  # e.g. the udp session went idle while its socket opened
    bench.module(OK + b"\r\n0, CONNECT OK\r\n")
    assert bench.wire() == b"AT+QISRVC=1\r"
    bench.module(OK)
    assert bench.wire() == b"AT+QICLOSE=0\r"


def test_in_push_mode_a_link_whose_index_a_server_client_gets_fails_unfed(tmp_path):
    """``+RECEIVE: 5`` names no side: once a server's client is on index 5 too, the client link
    there cannot tell its bytes from the newcomer's, so it fails instead of taking them."""
    bench = ModemBench(tmp_path, receive="push")
    bench.modem.serves = True
    protocol = Collect()
    lost = []
    protocol.connectionLost = lost.append
    client_link(bench, 5, protocol)
    bench.module(b"\r\n+RECEIVE: 5, 4\r\nmine")
    bench.module(b"\r\n5, REMOTE IP: 10.0.0.1\r\n\r\n+RECEIVE: 5, 7\r\nforeign")
    assert protocol.received == b"mine"
    assert "+RECEIVE names no side" in lost[0].getErrorMessage()
    assert bench.modem.counters.get("link_dead", cause="index_shared") == 1
    assert bench.wire() == b"AT+QISRVC=1\r"  # its close addresses the client side


def test_in_pull_mode_a_link_keeps_its_index_beside_a_server_client(tmp_path):
    bench = ModemBench(tmp_path)
    bench.modem.serves = True
    socket = client_link(bench, 5)
    bench.module(b"\r\n5, REMOTE IP: 10.0.0.1\r\n")
    assert bench.wire() == b""
    assert socket.phase.value == "connected"
