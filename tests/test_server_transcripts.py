"""Module-side server transcripts (task.Clock, exact bytes, the real Modem): listening after
bring-up and again after a recovery (AT+QILPORT, AT+QISERVER, SERVER OK; app note §3.4), a client
accepted (``n, REMOTE IP``) claimed and forwarded, refusals by allow, max_clients and a client
link's index (AT+QISRVC=2, AT+QICLOSE=n), and a local service that refuses."""

import ipaddress

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import DatagramProtocol, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs, formatEvent

from bridge.config import ServerConfig, load_config
from bridge.modem.datagram import DatagramSettings, ModuleDatagramSocket
from bridge.modem.socket import RECLAIM_IDLE, ModuleAddress, ModuleSocket
from bridge.proxy.reverse import RELISTEN_DELAY, SERVER_OK_WAIT, ModuleServer
from bridge.service import make_service
from tests.modem_harness import OK, PLAIN, PUSH, ModemHarness
from tests.socket_bench import PROMPT, SEND_OK
from tests.test_modem_contexts import (SECOND_APN, TWO_CONTEXTS, TwoContexts, context_up,
                                       pdp_deact, qistate)
from tests.test_modem_recovery import REACTIVATE

SERVER = ServerConfig("ssh", 2020, "tcp:127.0.0.1:22", modem="main", max_clients=2,
                      allow=(ipaddress.IPv4Network("10.0.0.0/8"),))
LISTEN = [(b'AT+QILPORT="TCP",2020', OK), (b"AT+QISERVER=0,2", OK + b"\r\nSERVER OK\r\n")]


class LocalService:
    """An endpoint standing for ``forward``: each connect waits until the test answers it."""

    def __init__(self):
        self.pending = []

    def connect(self, factory):
        waiting = Deferred(lambda given_up: self.pending.remove((factory, given_up)))
        self.pending.append((factory, waiting))
        return waiting

    def answer(self):
        """The local service accepts the oldest connect: -> its StringTransport."""
        factory, waiting = self.pending.pop(0)
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        transport.protocol = protocol
        protocol.makeConnection(transport)
        waiting.callback(protocol)
        return transport

    def refuse(self):
        self.pending.pop(0)[1].errback(ConnectionRefusedError("connection refused"))


class LocalUdp:
    """The local service of a udp server: each ``open`` is one peer's local socket."""

    def __init__(self):
        self.sockets = []

    def open(self, protocol):
        socket = FakeUdpSocket(protocol)
        self.sockets.append(socket)
        return socket


class FakeUdpSocket:
    """One peer's local socket, connected to the service: what it sent, whether it is open."""

    def __init__(self, protocol):
        self.protocol = protocol
        self.sent = []
        self.open = True
        protocol.makeConnection(self)

    def write(self, datagram):
        self.sent.append(datagram)

    def stopListening(self):
        self.open = False
        self.protocol.doStop()

    def reply(self, datagram):
        """The local service answers this socket."""
        self.protocol.datagramReceived(datagram, ("127.0.0.1", 53))


class Bench:
    """A modem with ``servers`` (default: the tcp server ``ssh``), brought up; the first server
    listens once ``listen()`` played. ``receive = push`` is what a modem with a udp server gets."""

    def __init__(self, tmp_path, *servers, reserve=None, receive="pull"):
        servers = servers or (SERVER,)
        script = PLAIN if receive == "pull" else PUSH
        self.harness = ModemHarness(tmp_path / "state", persistent=True, health_interval=1e9,
                                    receive=receive)
        self.modem = self.harness.modem
        self.modem.serves = True
        self.modem.sockets.reserve_for_servers(
            sum(s.max_clients for s in servers) if reserve is None else reserve)
        self.local = LocalService()
        self.udp = LocalUdp()
        self.servers = {s.name: ModuleServer(s, self.modem, self.harness.clock, 0,
                                             self.udp if s.protocol == "udp" else self.local)
                        for s in servers}
        self.server = self.servers[servers[0].name]
        for server in self.servers.values():
            server.startService()
        self.harness.up(script)

    def listen(self, script=LISTEN):
        self.harness.play(script)
        assert self.server.listening
        return self

    def wire(self) -> bytes:
        return self.harness.written()

    def module(self, data: bytes) -> None:
        self.harness.recv(data)

    def counter(self, name, server="ssh", **labels):
        return self.modem.counters.get(name, server=server, **labels)


def test_the_module_listens_right_after_bring_up(tmp_path):
    bench = Bench(tmp_path).listen()
    assert bench.wire() == b""


def test_without_server_ok_the_ok_stands_after_a_while(tmp_path):
    bench = Bench(tmp_path)
    bench.harness.play([LISTEN[0], (b"AT+QISERVER=0,2", OK)])
    assert not bench.server.listening
    bench.harness.clock.advance(SERVER_OK_WAIT)
    assert bench.server.listening


def test_the_module_listens_again_after_a_recovery(tmp_path):
    bench = Bench(tmp_path).listen()
    bench.module(b"\r\n+PDP DEACT\r\n")
    assert not bench.server.listening
    bench.harness.play(REACTIVATE + LISTEN)
    assert bench.server.listening


def test_a_failed_listen_is_tried_again_later(tmp_path):
    bench = Bench(tmp_path)
    bench.harness.play([LISTEN[0], (b"AT+QISERVER=0,2", b"\r\nERROR\r\n")])
    assert not bench.server.listening and bench.counter("server_listen_failed") == 1
    bench.harness.clock.advance(RELISTEN_DELAY - 1)
    assert bench.wire() == b""
    bench.harness.clock.advance(1)
    bench.harness.play(LISTEN)
    assert bench.server.listening


def test_a_client_announced_while_the_modem_is_down_is_left_to_the_recovery(tmp_path):
    """``+PDP DEACT`` took the modem down and AT+QIDEACT runs: a REMOTE IP that comes now is
    not taken (its socket would miss the "down" and the AT+QIDEACT that takes it, and hold
    its index and a max_clients place after the recovery); the AT+QIDEACT closes it."""
    bench = Bench(tmp_path).listen()
    bench.module(b"\r\n+PDP DEACT\r\n")
    assert bench.wire() == b"AT+QIDEACT\r"
    with capturedLogs() as events:
        bench.module(b"\r\n1, REMOTE IP: 10.0.0.1\r\n")
    assert [formatEvent(e) for e in events] == [
        "[server:ssh] client 10.0.0.1 on socket 1 announced while the modem is down: left to "
        "the recovery"]
    assert bench.counter("server_refused", cause="down") == 1
    bench.module(b"\r\nDEACT OK\r\n")
    bench.harness.play(REACTIVATE[1:] + LISTEN)
    assert bench.modem.ready and bench.server.listening
    assert bench.modem.slots_in_use == frozenset() and not bench.server.clients
    assert not bench.local.pending


def serving_on_context_1(tmp_path, lost: int):
    """A modem on two PDP contexts whose one server listens on context 1; then context ``lost``
    is lost alone and its recovery's AT+QIDEACT is on the wire."""
    h = TwoContexts(tmp_path / "state")
    h.modem.serves = True
    h.modem.sockets.reserve_for_servers(SERVER.max_clients)
    local = LocalService()
    server = ModuleServer(SERVER, h.modem, h.clock, 1, local)
    server.startService()
    h.up(TWO_CONTEXTS)
    h.play(LISTEN)  # the engine's selection is context 1 since bring-up
    states = [qistate(b"IP PROCESSING"), qistate(b"IP PROCESSING")]
    states[lost] = qistate(b"PDP DEACT")
    pdp_deact(h, *states)
    h.play(context_up(lost, b"")[:1])
    h.expect(b"AT+QIDEACT")
    return h, server, local


def test_a_client_announced_while_the_servers_context_is_down_is_left_to_its_recovery(tmp_path):
    """The same while the modem is ready but the server's PDP context (1) is down alone: its
    recovery's AT+QIDEACT closes the client."""
    h, server, local = serving_on_context_1(tmp_path, lost=1)
    h.recv(b"\r\n1, REMOTE IP: 10.0.0.1\r\n")
    assert h.modem.slots_in_use == frozenset() and not server.clients and not local.pending
    assert h.modem.counters.get("server_refused", server="ssh", cause="down") == 1
    h.recv(b"\r\nDEACT OK\r\n")
    h.play(context_up(1, b"10.0.1.3", SECOND_APN)[2:] + LISTEN)
    assert h.modem.contexts_down == set()
    assert server.listening and h.modem.slots_in_use == frozenset()


def test_a_client_of_a_server_whose_context_is_up_is_taken_while_the_other_is_down(tmp_path):
    h, server, local = serving_on_context_1(tmp_path, lost=0)
    h.recv(b"\r\n1, REMOTE IP: 10.0.0.1\r\n")
    assert h.modem.slots_in_use == {1} and list(server.clients) == [1] and local.pending
    assert h.modem.counters.get("server_refused", server="ssh", cause="down") == 0


def test_an_accepted_client_is_claimed_and_forwarded_and_read_only_once_spliced(tmp_path):
    bench = Bench(tmp_path).listen()
    bench.module(b"\r\n0, REMOTE IP: 10.9.8.7\r\n+QIRDI: 0,2,0\r\n")
    assert bench.modem.slots_in_use == {0} and len(bench.local.pending) == 1
    assert bench.wire() == b""  # nothing is read before the local service answers
    local = bench.local.answer()
    assert bench.wire() == b"AT+QIRD=0,2,0,1500\r"
    bench.module(b"\r\n+QIRD: 10.9.8.7:40000,TCP,5\r\nhello\r\nOK\r\n")
    assert local.value() == b"hello"
    bench.wire()
    bench.module(b"\r\nOK\r\n")  # drained
    local.protocol.dataReceived(b"hi")
    assert bench.wire() == b"AT+QISRVC=2\r"
    bench.module(OK)
    assert bench.wire() == b"AT+QISEND=0,2\r"
    bench.module(PROMPT)
    assert bench.wire() == b"hi"
    bench.module(SEND_OK)
    assert bench.counter("server_accepted") == 1


def test_a_peer_outside_allow_is_closed_on_the_server_side(tmp_path):
    bench = Bench(tmp_path).listen()
    with capturedLogs() as events:
        bench.module(b"\r\n0, REMOTE IP: 192.0.2.9\r\n\r\n+RECEIVE: 0, 3\r\nabc")
    assert [formatEvent(e) for e in events] == [
        "[server:ssh] refused 192.0.2.9 on socket 0: not in allow"]  # its bytes go nowhere
    assert bench.wire() == b"AT+QISRVC=2\r"
    bench.module(OK)
    assert bench.wire() == b"AT+QICLOSE=0\r"
    assert bench.modem.slots_in_use == {0}  # until the module closed it
    bench.module(b"\r\n0, CLOSE OK\r\n")
    assert bench.modem.slots_in_use == frozenset()
    assert not bench.local.pending and bench.counter("server_refused", cause="allow") == 1


def test_a_client_past_max_clients_is_closed(tmp_path):
    bench = Bench(tmp_path).listen()
    bench.module(b"\r\n0, REMOTE IP: 10.0.0.1\r\n\r\n1, REMOTE IP: 10.0.0.2\r\n"
                 b"\r\n2, REMOTE IP: 10.0.0.3\r\n")
    assert bench.wire() == b"AT+QISRVC=2\r"
    bench.module(OK)
    assert bench.wire() == b"AT+QICLOSE=2\r"
    bench.module(b"\r\n2, CLOSE OK\r\n")
    assert bench.modem.slots_in_use == {0, 1} and len(bench.local.pending) == 2
    assert bench.counter("server_refused", cause="max_clients") == 1


def test_a_client_on_an_index_a_link_holds_is_closed_and_the_link_keeps_it(tmp_path):
    bench = Bench(tmp_path).listen()
    taken = []
    bench.modem.sockets.acquire("web").addCallback(taken.append)
    assert taken == [5]  # links start at the top, away from the module's pick
    bench.module(b"\r\n5, REMOTE IP: 10.0.0.1\r\n")
    assert bench.wire() == b"AT+QISRVC=2\r"
    bench.module(OK)
    assert bench.wire() == b"AT+QICLOSE=5\r"
    bench.module(b"\r\n5, CLOSE OK\r\n")
    assert bench.modem.slots_in_use == {5} and not bench.local.pending
    assert bench.counter("server_refused", cause="index_taken") == 1


def test_a_server_side_qirdi_never_reaches_the_client_link_on_that_index(tmp_path):
    bench = Bench(tmp_path).listen()
    socket = ModuleSocket(bench.modem, 5, ModuleAddress("TCP", "10.1.2.3", 80),
                          bench.modem.socket_settings(), server=False)
    socket.makeConnection(Protocol())
    bench.module(b"\r\n+QIRDI: 0,2,5\r\n")
    assert bench.wire() == b""
    bench.module(b"\r\n+QIRDI: 0,1,5\r\n")
    assert bench.wire() == b"AT+QIRD=0,1,5,1500\r"


def test_a_udp_profile_socket_on_a_serving_modem_addresses_the_client_side(tmp_path):
    bench = Bench(tmp_path).listen()
    bench.module(b"\r\n0, REMOTE IP: 192.0.2.9\r\n")  # refused: AT+QISRVC=2 is in force
    bench.module(OK + b"\r\n0, CLOSE OK\r\n")
    bench.wire()
    socket = ModuleDatagramSocket(bench.modem, 4, ModuleAddress("UDP", "10.1.2.3", 53),
                                  DatagramSettings())
    socket.makeConnection(DatagramProtocol())
    socket.write(b"ask")
    assert bench.wire() == b"AT+QISRVC=1\r"
    bench.module(OK)
    assert bench.wire() == b"AT+QISEND=4,3\r"


def test_the_service_tree_makes_the_modem_serve_and_keeps_the_clients_free(tmp_path):
    path = tmp_path / "bridge.ini"
    path.write_text(f"[cellbridge]\nstate_dir = {tmp_path}\n[modem:main]\nport = sim\n"
                    "[profile:web]\nlisten = tcp:0\nremote = tcp:10.1.2.3:80\n"
                    "[server:ssh]\nport = 2020\nforward = tcp:127.0.0.1:22\nmax_clients = 3\n")
    root = make_service(load_config(str(path)), MemoryReactorClock(), environ={})
    modem = root.getServiceNamed("modem:main")
    assert modem.serves and isinstance(root.getServiceNamed("server:ssh"), ModuleServer)
    modem.sockets.set_ready(True)
    taken = []
    for _ in range(3):
        modem.sockets.acquire("web").addCallback(taken.append)
    assert taken == [5, 4]  # five connections, three kept for the server's clients


def test_a_refusing_local_service_closes_the_module_side_client(tmp_path):
    bench = Bench(tmp_path).listen()
    bench.module(b"\r\n3, REMOTE IP: 10.0.0.1\r\n")
    bench.local.refuse()
    assert bench.wire() == b"AT+QISRVC=2\r"
    bench.module(OK)
    assert bench.wire() == b"AT+QICLOSE=3\r"
    bench.module(b"\r\n3, CLOSE OK\r\n")
    bench.harness.clock.advance(0)  # the module side hears of its close on the next turn
    assert bench.modem.slots_in_use == frozenset() and not bench.server.clients
    assert bench.counter("server_refused", cause="forward") == 1


def test_stopping_closes_the_clients_then_the_listener(tmp_path):
    bench = Bench(tmp_path).listen()
    bench.module(b"\r\n0, REMOTE IP: 10.0.0.1\r\n")
    bench.local.answer()
    bench.server.stopService()
    assert bench.wire() == b"AT+QISRVC=2\r"
    bench.module(OK)
    assert bench.wire() == b"AT+QICLOSE=0\r"
    bench.module(b"\r\n0, CLOSE OK\r\n")
    assert bench.wire() == b"AT+QICLOSE\r"
    bench.module(b"\r\nCLOSE OK\r\n")
    assert not bench.server.listening


def test_stopping_while_at_qiserver_is_on_the_wire_closes_the_listener_it_makes(tmp_path):
    bench = Bench(tmp_path)
    bench.harness.play(LISTEN[:1])
    assert bench.wire() == b"AT+QISERVER=0,2\r"
    bench.server.stopService()
    bench.module(OK + b"\r\nSERVER OK\r\n")
    assert bench.wire() == b"AT+QISRVC=2\r"
    bench.module(OK)
    assert bench.wire() == b"AT+QICLOSE\r"
    bench.module(b"\r\nCLOSE OK\r\n")
    assert not bench.server.listening


def test_stopping_while_at_qilport_is_on_the_wire_sends_no_at_qiserver(tmp_path):
    bench = Bench(tmp_path)
    assert bench.wire() == b'AT+QILPORT="TCP",2020\r'
    bench.server.stopService()
    bench.module(OK)
    assert bench.wire() == b"AT+QISRVC=2\r"
    bench.module(OK)
    assert bench.wire() == b"AT+QICLOSE\r"  # ERROR: nothing listens
    bench.module(b"\r\nERROR\r\n")
    assert bench.wire() == b"" and not bench.server.listening


def test_a_link_waiting_for_client_room_leaves_a_lingering_server_client_alone(tmp_path):
    """Links at their cap (five minus max_clients): freeing an accepted client's index would
    give the waiting link no room, so the client's lingering session is not cut for it."""
    bench = Bench(tmp_path).listen()
    bench.module(b"\r\n0, REMOTE IP: 10.0.0.1\r\n")
    local = bench.local.answer()
    bench.wire()
    taken = []
    for _ in range(3):
        bench.modem.sockets.acquire("web").addCallback(taken.append)
    assert taken == [5, 4, 3]
    local.protocol.readConnectionLost()  # the local service sent EOF: the socket lingers
    waiting = bench.modem.sockets.acquire("web")
    bench.harness.clock.advance(RECLAIM_IDLE * 5)
    assert bench.wire() == b"" and bench.modem.slots_in_use == {0, 3, 4, 5}
    bench.modem.sockets.release(3)
    assert waiting.result == 3


def client_gone_before_the_local_service_answers(tmp_path) -> Bench:
    """Push mode cannot leave the bytes in the module: a client that sends and hangs up at once
    is gone before the local service answers."""
    bench = Bench(tmp_path, receive="push").listen()
    bench.module(b"\r\n0, REMOTE IP: 10.9.8.7\r\n+RECEIVE: 0, 6\r\nreport\r\n0, CLOSED\r\n")
    assert bench.wire() == b"AT+QISRVC=2\r"
    bench.module(OK)
    assert bench.wire() == b"AT+QICLOSE=0\r"
    bench.module(b"\r\n0, CLOSE OK\r\n")
    bench.harness.clock.advance(0)
    assert len(bench.local.pending) == 1  # still wanted: the report waits for it
    return bench


def test_a_pushing_client_that_closes_before_the_local_service_answers_still_delivers(tmp_path):
    bench = client_gone_before_the_local_service_answers(tmp_path)
    with capturedLogs() as events:
        local = bench.local.answer()
    assert local.value() == b"report" and local.disconnecting  # its bytes, then EOF
    lines = [formatEvent(e) for e in events if "10.9.8.7" in formatEvent(e)]
    assert [("forwarded" in line, "closed" in line) for line in lines] == [
        (True, False), (False, True)], lines  # in the order they happened to the service
    assert not bench.server.clients


def test_stopping_the_server_gives_up_the_local_connect_of_a_client_already_gone(tmp_path):
    bench = client_gone_before_the_local_service_answers(tmp_path)
    bench.server.stopService()
    assert bench.local.pending == [] and not bench.server.clients
