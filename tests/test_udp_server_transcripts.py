"""UDP module-side server transcripts (task.Clock, exact bytes, the real Modem): listening
(AT+QILPORT="UDP", AT+QISERVER=1), a peer (``n, REMOTE IP`` at its first datagram, app note §3.2)
forwarded from a local socket of its own with boundaries kept both ways, refusal by allow, the
idle peer forgotten; and a modem with a tcp and a udp server: listens one at a time, and whose an
accepted socket is asked with AT+QISTATE."""

import ipaddress

from twisted.logger import capturedLogs, formatEvent

from bridge.config import ServerConfig
from bridge.proxy.reverse import SERVER_OK_WAIT
from bridge.proxy.reverse_datagram import DatagramForwarding
from tests.modem_harness import OK
from tests.socket_bench import PROMPT, SEND_OK
from tests.test_modem_recovery import REACTIVATE
from tests.test_server_transcripts import LISTEN, SERVER, Bench

DNS = ServerConfig("dns", 3030, "udp:127.0.0.1:53", modem="main", protocol="udp", max_clients=2,
                   allow=(ipaddress.IPv4Network("10.0.0.0/8"),), udp_idle=60.0)
UDP_LISTEN = [(b'AT+QILPORT="UDP",3030', OK), (b"AT+QISERVER=1,2", OK + b"\r\nSERVER OK\r\n")]
TRICKY = b"\r\nOK\r\n+RECEIVE: 0, 5\r\n\x1a\x1b"


def pushed(index: int, datagram: bytes) -> bytes:
    return b"\r\n+RECEIVE: %d, %d\r\n" % (index, len(datagram)) + datagram


def qistate(**protos) -> bytes:
    """AT+QISTATE's answer with socket ``s<n>`` in use by ``protos["s<n>"]``."""
    lines = []
    for index in range(6):
        proto = protos.get(f"s{index}")
        lines.append(f'+QISTATE: {index},"{proto}","10.9.8.7",40000,"CONNECTED"' if proto
                     else f'+QISTATE: {index},"","",,"INITIAL"')
    return (OK + b"\r\nSTATE: IP PROCESSING\r\n"
            + b"".join(b"\r\n" + line.encode() + b"\r\n" for line in lines) + OK)


class UdpBench(Bench):
    def __init__(self, tmp_path, *servers):
        super().__init__(tmp_path, *(servers or (DNS,)), receive="push")

    def counter(self, name, server="dns", **labels):
        return super().counter(name, server, **labels)

    def send_to_peer(self, index: int, datagram: bytes, selected=False) -> None:
        """Play one datagram to the peer on ``index``: [AT+QISRVC=2,] AT+QISEND with its bytes."""
        if not selected:
            assert self.wire() == b"AT+QISRVC=2\r"
            self.module(OK)
        assert self.wire() == b"AT+QISEND=%d,%d\r" % (index, len(datagram))
        self.module(PROMPT)
        assert self.wire() == datagram
        self.module(SEND_OK)


def test_a_udp_server_listens_on_the_udp_port(tmp_path):
    bench = UdpBench(tmp_path).listen(UDP_LISTEN)
    assert bench.wire() == b""


def test_a_peer_gets_a_local_socket_and_datagrams_round_trip_with_their_boundaries(tmp_path):
    bench = UdpBench(tmp_path).listen(UDP_LISTEN)
    with capturedLogs() as events:
        bench.module(b"\r\n0, REMOTE IP: 10.9.8.7\r\n" + pushed(0, TRICKY) + pushed(0, b"two"))
    assert [formatEvent(e) for e in events] == [
        "[server:dns] client 10.9.8.7 on socket 0 forwarded to udp:127.0.0.1:53"]
    [local] = bench.udp.sockets
    assert local.sent == [TRICKY, b"two"] and bench.modem.slots_in_use == {0}
    assert bench.wire() == b""
    local.reply(b"first " + TRICKY)
    local.reply(b"second")
    bench.send_to_peer(0, b"first " + TRICKY)
    bench.send_to_peer(0, b"second", selected=True)
    assert bench.counter("server_accepted") == 1
    assert isinstance(bench.server.clients[0], DatagramForwarding)


def test_each_peer_has_its_own_local_socket_and_gets_its_own_replies(tmp_path):
    bench = UdpBench(tmp_path).listen(UDP_LISTEN)
    bench.module(b"\r\n0, REMOTE IP: 10.0.0.1\r\n" + pushed(0, b"from a")
                 + b"\r\n1, REMOTE IP: 10.0.0.2\r\n" + pushed(1, b"from b"))
    a, b = bench.udp.sockets
    assert (a.sent, b.sent) == ([b"from a"], [b"from b"])
    b.reply(b"to b")
    bench.send_to_peer(1, b"to b")
    a.reply(b"to a")
    bench.send_to_peer(0, b"to a", selected=True)


def test_a_peer_outside_allow_is_closed_and_gets_nothing_through(tmp_path):
    bench = UdpBench(tmp_path).listen(UDP_LISTEN)
    bench.module(b"\r\n0, REMOTE IP: 192.0.2.9\r\n" + pushed(0, b"let me in"))
    assert bench.wire() == b"AT+QISRVC=2\r"
    bench.module(OK)
    assert bench.wire() == b"AT+QICLOSE=0\r"
    bench.module(b"\r\n0, CLOSE OK\r\n")
    assert not bench.udp.sockets and bench.modem.slots_in_use == frozenset()
    assert bench.counter("server_refused", cause="allow") == 1


def test_an_idle_peer_is_forgotten_its_sockets_closed_and_counted(tmp_path):
    bench = UdpBench(tmp_path).listen(UDP_LISTEN)
    bench.module(b"\r\n0, REMOTE IP: 10.0.0.1\r\n" + pushed(0, b"x" * 1461))
    [local] = bench.udp.sockets
    with capturedLogs() as events:
        local.reply(b"y" * 1461)  # one AT+QISEND carries no more: dropped, never split
        local.reply(b"z" * 1500)
    assert [formatEvent(e) for e in events] == [
        "[server:dns] a 1461-byte reply to 10.0.0.1 on socket 0 is larger than one AT+QISEND "
        "carries (1460): dropped, never split (later ones are only counted)"]
    clock = bench.harness.clock
    clock.advance(59)
    bench.module(pushed(0, b"still here"))  # a datagram either way restarts the wait
    clock.advance(59)
    assert bench.wire() == b"" and local.open
    with capturedLogs() as events:
        clock.advance(1)
    assert [formatEvent(e) for e in events] == [
        "[server:dns] client 10.0.0.1 on socket 0 closed: idle 60 s; 2 datagrams from it, 0 to "
        "it, dropped: too_large=2"]
    assert not local.open and not bench.server.clients
    assert bench.wire() == b"AT+QISRVC=2\r"
    bench.module(OK)
    assert bench.wire() == b"AT+QICLOSE=0\r"
    bench.module(b"\r\n0, CLOSE OK\r\n")
    assert bench.modem.slots_in_use == frozenset()
    assert bench.counter("server_datagrams_dropped", cause="too_large") == 2
    assert bench.counter("server_link_closed", cause="idle") == 1
    assert bench.server.ledger.carried() == {"uplink": 0, "downlink": 1461 + 10}


def test_a_peer_whose_module_socket_is_closed_releases_its_local_socket(tmp_path):
    bench = UdpBench(tmp_path).listen(UDP_LISTEN)
    bench.module(b"\r\n2, REMOTE IP: 10.0.0.1\r\n" + pushed(2, b"hi"))
    [local] = bench.udp.sockets
    bench.module(b"\r\n+PDP DEACT\r\n")
    assert not local.open and not bench.server.clients
    assert bench.modem.slots_in_use == frozenset()


# -- a tcp and a udp server on one modem -----------------------------------------------------------

def test_two_servers_listen_one_at_a_time(tmp_path):
    bench = UdpBench(tmp_path, SERVER, DNS)
    bench.harness.play([LISTEN[0], (b"AT+QISERVER=0,2", OK)])
    assert bench.wire() == b""  # the udp listen waits for the tcp one's SERVER OK
    bench.module(b"\r\nSERVER OK\r\n")
    bench.harness.play(UDP_LISTEN)
    assert bench.servers["ssh"].listening and bench.servers["dns"].listening


def test_a_recovery_while_waiting_for_server_ok_gives_the_listen_turn_up(tmp_path):
    bench = UdpBench(tmp_path, SERVER, DNS)
    bench.harness.play([LISTEN[0], (b"AT+QISERVER=0,2", OK)])
    bench.module(b"\r\n+PDP DEACT\r\n")
    bench.harness.play(REACTIVATE)
    reactivated = bench.harness.clock.seconds()
    bench.harness.play(LISTEN + UDP_LISTEN)
    assert bench.harness.clock.seconds() - reactivated < SERVER_OK_WAIT
    assert bench.servers["ssh"].listening and bench.servers["dns"].listening


def listening_both(tmp_path) -> UdpBench:
    bench = UdpBench(tmp_path, SERVER, DNS)
    bench.harness.play(LISTEN + UDP_LISTEN)
    return bench


def test_with_two_servers_qistate_says_a_socket_is_the_udp_servers(tmp_path):
    bench = listening_both(tmp_path)
    bench.module(b"\r\n0, REMOTE IP: 10.0.0.1\r\n" + pushed(0, TRICKY))
    assert bench.wire() == b"AT+QISTATE\r"
    assert bench.modem.slots_in_use == {0} and not bench.udp.sockets
    bench.module(qistate(s0="UDP"))
    [local] = bench.udp.sockets
    assert local.sent == [TRICKY]  # held while the module was asked
    local.reply(b"back")
    bench.send_to_peer(0, b"back")
    assert not bench.local.pending


def test_with_two_servers_qistate_says_a_socket_is_the_tcp_servers(tmp_path):
    bench = listening_both(tmp_path)
    bench.module(b"\r\n1, REMOTE IP: 10.0.0.1\r\n")
    assert bench.wire() == b"AT+QISTATE\r"
    bench.module(qistate(s1="TCP"))
    assert len(bench.local.pending) == 1 and not bench.udp.sockets
    assert list(bench.servers["ssh"].clients) == [1]


def test_with_two_servers_a_socket_qistate_does_not_settle_is_closed(tmp_path):
    bench = listening_both(tmp_path)
    with capturedLogs() as events:
        bench.module(b"\r\n0, REMOTE IP: 10.0.0.1\r\n" + pushed(0, b"whose?"))
        bench.module(qistate())
    assert "[server:ssh] refused 10.0.0.1 on socket 0: which server accepted it is not known " \
           "(AT+QISTATE names nothing on socket 0)" in [formatEvent(e) for e in events]
    bench.wire()
    bench.module(OK)
    assert bench.wire() == b"AT+QICLOSE=0\r"
    bench.module(b"\r\n0, CLOSE OK\r\n")
    assert bench.modem.slots_in_use == frozenset()
    assert not bench.udp.sockets and not bench.local.pending
    assert bench.counter("server_refused", server="ssh", cause="unknown_server") == 1
