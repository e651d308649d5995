"""End to end: the simulator on a real pty, driven with plain pyserial, against real loopback peers.

The simulator runs in-process on the test reactor; the client side runs in a thread (blocking
pyserial), and talks to the simulator's fault API through blockingCallFromThread.
"""

import contextlib
import socket
import threading
import time

import pytest
import pytest_twisted
from twisted.internet import reactor, threads
from twisted.internet.threads import blockingCallFromThread

from bridge.sim import SimOptions, Simulator
from sim_loopback import Client, Peer

OK = b"\r\nOK\r\n"


#: Silence the simulator needs around ``+++`` (short, so the escape test stays fast).
ESCAPE_GUARD = 0.2


@pytest.fixture
def sim():
    s = Simulator(reactor, SimOptions(act_delay=0, deact_delay=0, dns_delay=0,
                                      escape_guard=ESCAPE_GUARD))
    s.start()
    yield s
    s.stop()


@pytest.fixture
def peers():
    made = []

    def make(mode="echo"):
        made.append(Peer(mode))
        return made[-1]

    yield make
    for peer in made:
        peer.close()


def in_thread(fn):
    """Run the blocking body in a thread while the reactor serves the simulator."""
    return pytest_twisted.ensureDeferred(fn)


def call(fn, *args):
    return blockingCallFromThread(reactor, fn, *args)


def run_client(sim, body, **setup):
    """Run ``body(client)`` in a thread on a fresh pyserial client whose stack is up (``setup`` as
    for ``bring_up``), while the reactor keeps serving the simulator; the port is closed after."""
    def run():
        c = Client(sim.device)
        try:
            bring_up(c, **setup)
            body(c)
        finally:
            c.close()
    return threads.deferToThread(run)


def bring_up(c: Client, mux=1, indi=1, mode=0):
    for cmd in ("ATE0", f"AT+QIMUX={mux}", f"AT+QIMODE={mode}", f"AT+QINDI={indi}", "AT+QISDE=0",
                "AT+QIREGAPP", "AT+QIACT"):
        assert c.at(cmd).endswith(OK), cmd
    assert c.at("AT+QILOCIP", until=b"0.2\r\n") == b"\r\n10.100.0.2\r\n"  # bare IP, no OK


def open_socket(c: Client, port: int, index=0):
    out = c.at(f'AT+QIOPEN={index},"TCP","127.0.0.1",{port}', until=b"CONNECT OK\r\n")
    assert out.endswith(OK + f"\r\n{index}, CONNECT OK\r\n".encode())


def send(c: Client, index: int, data: bytes):
    """One fixed-length AT+QISEND on socket ``index``, up to its ``SEND OK``."""
    assert c.at(f"AT+QISEND={index},{len(data)}", until=b"> ").endswith(b"\r\n> ")
    c.write(data)
    assert c.read_until(b"SEND OK\r\n").endswith(b"\r\nSEND OK\r\n")


@contextlib.contextmanager
def udp_peer(c: Client):
    """A loopback UDP socket, and module socket 0 opened to it (AT+QIOPEN ... CONNECT OK)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        udp.settimeout(5)
        out = c.at(f'AT+QIOPEN=0,"UDP","127.0.0.1",{udp.getsockname()[1]}',
                   until=b"CONNECT OK\r\n")
        assert out.endswith(b"0, CONNECT OK\r\n")
        yield udp


def unacked(c: Client, index=0) -> tuple:
    out = c.at(f"AT+QISACK={index}")
    fields = out.split(b"+QISACK: ")[1].split(b"\r\n")[0].split(b", ")
    return tuple(int(f) for f in fields)


def settle_acks(c, sent, index=0, deadline=5.0, acked=None):
    """Poll AT+QISACK until ``sent`` bytes are all acked, or ``acked`` of them (or the deadline);
    the last counters."""
    acked = sent if acked is None else acked
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        counters = unacked(c, index)
        if counters == (sent, acked, sent - acked):
            return counters
        time.sleep(0.02)
    return unacked(c, index)


PAYLOAD = b"bin\r\nOK\r\n\x1a\x1b+++CLOSED\r\n> " + bytes(range(256))


@in_thread
async def test_echo_via_qird_and_qisack_after_delivery(sim, peers):
    peer = peers("echo")

    def body(c):
        open_socket(c, peer.port)
        send(c, 0, PAYLOAD)
        assert peer.wait_for(len(PAYLOAD)) == PAYLOAD
        assert settle_acks(c, len(PAYLOAD)) == (len(PAYLOAD), len(PAYLOAD), 0)
        c.wait_seen(b"\r\n+QIRDI: 0,1,0\r\n")
        c.write(b"AT+QIRD=0,1,0,1500\r")
        header = f"\r\n+QIRD: 127.0.0.1:{peer.port},TCP,{len(PAYLOAD)}\r\n".encode()
        got = c.read_exactly(len(header) + len(PAYLOAD) + len(OK))
        assert got == header + PAYLOAD + OK

    await run_client(sim, body)


@in_thread
async def test_echo_via_push_receive(sim, peers):
    peer = peers("echo")

    def body(c):
        open_socket(c, peer.port, index=3)
        c.at(f"AT+QISEND=3,{len(PAYLOAD)}", until=b"> ")
        c.write(PAYLOAD)
        frame = c.read_until(b"+RECEIVE: 3, ")
        assert b"SEND OK" in frame
        rest = c.read_until(b"\r\n")
        length = int(rest[:-2])
        data = rest[len(rest):] + c.read_exactly(length)
        while len(data) < len(PAYLOAD):  # the peer may echo in more than one segment
            c.read_until(b"+RECEIVE: 3, ")
            n = int(c.read_until(b"\r\n")[:-2])
            data += c.read_exactly(n)
        assert data == PAYLOAD

    await run_client(sim, body, indi=0)


@in_thread
async def test_dead_socket_freezes_acked_and_stalled_peer_shows_unacked(sim, peers):
    """Whether bytes are (not) acked is judged against a control socket, sent to later over the
    same path, whose bytes did get acked: no guess at how long delivery takes."""
    stall, echo, control = peers("stall"), peers("echo"), peers("collect")

    def body(c):
        open_socket(c, stall.port, index=0)
        open_socket(c, control.port, index=2)
        chunk = b"s" * 1400
        for _ in range(5):
            send(c, 0, chunk)
        send(c, 2, b"live")
        assert settle_acks(c, 4, index=2) == (4, 4, 0)
        total, acked, pending = unacked(c, 0)
        assert total == 5 * len(chunk) and pending > 0 and acked + pending == total
        # a peer that reads but a socket that silently died: acked freezes, no URC
        open_socket(c, echo.port, index=1)
        call(sim.kill, 1)
        send(c, 1, b"dead")
        send(c, 2, b"live")
        assert settle_acks(c, 8, index=2) == (8, 8, 0)
        assert control.wait_for(8) == b"livelive"
        assert unacked(c, 1) == (4, 0, 4)
        assert echo.received == b""
        call(sim.heal, 1)
        assert echo.wait_for(4) == b"dead"

    await run_client(sim, body)


@in_thread
async def test_a_killed_socket_still_delivers_what_the_kernel_took_and_acks_exactly_that(
        sim, peers):
    """The kill comes while the kernel holds bytes the peer has not taken (it does not read):
    they still reach it once it reads, and acked ends at exactly what it received (choice 39);
    a send after the kill never leaves the module."""
    stall = peers("stall")

    def body(c):
        open_socket(c, stall.port)
        chunk = bytes(range(200)) * 7
        for _ in range(5):
            send(c, 0, chunk)
        total, acked, pending = unacked(c)
        assert total == 5 * len(chunk) and pending > 0
        call(sim.kill, 0)
        send(c, 0, b"late")
        stall.release()
        assert stall.wait_for(total) == chunk * 5
        assert settle_acks(c, total + 4, acked=total) == (total + 4, total, 4)
        time.sleep(0.1)
        assert unacked(c) == (total + 4, total, 4) and bytes(stall.received) == chunk * 5

    await run_client(sim, body)


@in_thread
async def test_send_buffer_fills_against_stalled_peer(sim, peers):
    stall = peers("stall")

    def body(c):
        open_socket(c, stall.port)
        results = []
        for _ in range(30):
            c.at("AT+QISEND=0,1000", until=b"> ")
            c.write(b"f" * 1000)
            results.append(c.read_until(b"SEND ") + c.read_until(b"\r\n"))
            if b"SEND FAIL" in results[-1]:
                break
            time.sleep(0.02)
        assert b"SEND FAIL" in results[-1]
        sent, acked, pending = unacked(c)
        assert pending <= 7300 and sent - acked == pending

    await run_client(sim, body)


@in_thread
async def test_remote_close_pdp_deact_and_reboot(sim, peers):
    peer = peers("echo")

    def body(c):
        open_socket(c, peer.port)
        call(sim.remote_close, 0)
        c.read_until(b"\r\n0, CLOSED\r\n")
        assert c.at("AT+QICLOSE=0", until=b"CLOSE OK\r\n").endswith(b"0, CLOSE OK\r\n")
        open_socket(c, peer.port, index=1)
        call(sim.pdp_deact)
        c.read_until(b"\r\n+PDP DEACT\r\n")
        assert c.at("AT+QISTAT", until=b"DEACT\r\n") == OK + b"\r\nSTATE: PDP DEACT\r\n"
        refused = c.at('AT+QIOPEN=1,"TCP","127.0.0.1",1', until=b"ERROR\r\n")
        assert refused.endswith(b"\r\nERROR\r\n")
        assert c.at("AT+QIDEACT", until=b"DEACT OK\r\n").endswith(b"\r\nDEACT OK\r\n")
        call(sim.reboot)
        c.read_until(b"\r\nRDY\r\n\r\n+CFUN: 1\r\n\r\n+CPIN: READY\r\n"
                     b"\r\nCall Ready\r\n\r\nSMS Ready\r\n")
        assert c.at("AT") == b"AT\r" + OK  # echo is back on: power-up defaults
        assert call(sim.stats)["boots"] == 2

    await run_client(sim, body)


@in_thread
async def test_transparent_round_trip_and_escape(sim, peers):
    peer = peers("echo")

    def body(c):
        out = c.at(f'AT+QIOPEN="TCP","127.0.0.1",{peer.port}', until=b"CONNECT\r\n")
        assert out.endswith(OK + b"\r\nCONNECT\r\n")
        data = b"raw\r\nOK\r\n+++x" * 10
        c.write(data)
        assert c.read_exactly(len(data)) == data
        # The echo proves the simulator has taken every byte: from now on the line is silent,
        # and '+++' counts as an escape only after the guard time of that silence (app note §4).
        time.sleep(ESCAPE_GUARD + 0.05)
        c.write(b"+++")
        assert c.read_until(OK) == OK
        assert c.at("AT+QISTAT", until=b"STATE: CONNECT OK\r\n")
        assert c.at("ATO", until=b"CONNECT\r\n") == b"\r\nCONNECT\r\n"
        c.write(b"again")
        assert c.read_exactly(5) == b"again"

    await run_client(sim, body, mux=0, mode=1)


@in_thread
async def test_port_can_be_closed_and_reopened(sim):
    def client():
        for _ in range(3):
            c = Client(sim.device)
            c.write(b"ATE0\r")
            c.read_until(OK)
            assert c.at("AT+CSQ") == b"\r\n+CSQ: 25,0\r\n" + OK
            c.close()

    await threads.deferToThread(client)


@in_thread
async def test_server_accepts_real_loopback_client(sim):
    def body(c):
        assert c.at('AT+QILPORT="TCP",0') == OK
        assert c.at("AT+QISERVER=0,2", until=b"SERVER OK\r\n") == OK + b"\r\nSERVER OK\r\n"
        port = call(sim.stats)["listeners"]["TCP"]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as remote:
            c.read_until(b"\r\n0, REMOTE IP: 127.0.0.1\r\n")
            remote.sendall(b"hello module")
            c.wait_seen(b"\r\n+QIRDI: 0,2,0\r\n")
            got = c.at("AT+QIRD=0,2,0,100")
            assert got.endswith(b",TCP,12\r\nhello module\r\nOK\r\n")
            assert c.at("AT+QISRVC=2") == OK
            send(c, 0, b"hey")
            assert remote.recv(10) == b"hey"

    await run_client(sim, body)


@in_thread
async def test_a_udp_server_announces_each_peer_at_its_first_datagram(sim):
    """AT+QISERVER=1 (app note §3.2, §3.4): a peer becomes server socket n at its first
    datagram; its datagrams are read one per AT+QIRD, AT+QISEND answers that peer only."""
    def body(c):
        assert c.at('AT+QILPORT="UDP",0') == OK
        assert c.at("AT+QISERVER=1,2", until=b"SERVER OK\r\n") == OK + b"\r\nSERVER OK\r\n"
        assert c.at("AT+QISERVER=1,2", until=b"ERROR\r\n") == b"\r\nERROR\r\n"  # one at a time
        port = call(sim.stats)["listeners"]["UDP"]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as late:
            for peer in (a, b, late):
                peer.settimeout(5)
                peer.bind(("127.0.0.1", 0))
            a.sendto(b"one", ("127.0.0.1", port))
            c.wait_seen(b"\r\n0, REMOTE IP: 127.0.0.1\r\n\r\n+QIRDI: 0,2,0\r\n")
            a.sendto(b"two", ("127.0.0.1", port))
            b.sendto(b"other", ("127.0.0.1", port))
            c.wait_seen(b"\r\n1, REMOTE IP: 127.0.0.1\r\n")
            late.sendto(b"third peer", ("127.0.0.1", port))  # past the 2 clients: dropped
            assert c.at("AT+QIRD=0,2,0,100").endswith(b",UDP,3\r\none\r\nOK\r\n")
            assert c.at("AT+QIRD=0,2,0,100").endswith(b",UDP,3\r\ntwo\r\nOK\r\n")
            assert c.at("AT+QIRD=0,2,1,100").endswith(b",UDP,5\r\nother\r\nOK\r\n")
            assert c.at("AT+QISRVC=2") == OK
            send(c, 1, b"back to b")
            assert b.recvfrom(100) == (b"back to b", ("127.0.0.1", port))
            send(c, 0, b"back to a")
            assert a.recvfrom(100)[0] == b"back to a"
            assert set(call(sim.stats)["sockets"]) == {"0", "1"}
            assert c.at("AT+QICLOSE", until=b"CLOSE OK\r\n") == b"\r\nCLOSE OK\r\n"
            assert call(sim.stats)["sockets"] == {} and call(sim.stats)["listeners"] == {}

    await run_client(sim, body)


@in_thread
async def test_udp_round_trip(sim):
    def body(c):
        with udp_peer(c) as udp:
            send(c, 0, b"ping")
            data, addr = udp.recvfrom(100)
            assert data == b"ping"
            udp.sendto(b"pong", addr)
            c.wait_seen(b"\r\n+QIRDI: 0,1,0\r\n")
            assert c.at("AT+QIRD=0,1,0,100").endswith(b",UDP,4\r\npong\r\nOK\r\n")
            assert unacked(c) == (4, 0, 0)

    await run_client(sim, body)


@in_thread
async def test_udp_push_keeps_datagram_boundaries_and_drops_what_one_frame_cannot_carry(sim):
    datagrams = [b"\r\nOK\r\n", b"+RECEIVE: 0, 5\r\n", b"\x1a\x1b", b"x" * 1460]

    def body(c):
        with udp_peer(c) as udp:
            send(c, 0, b"hi")
            _, addr = udp.recvfrom(100)
            udp.sendto(b"y" * 1461, addr)  # more than one push frame: dropped, never split
            for datagram in datagrams:
                udp.sendto(datagram, addr)
            for datagram in datagrams:
                header = b"\r\n+RECEIVE: 0, %d\r\n" % len(datagram)
                assert c.read_until(header) == header  # nothing before it: no part of the 1461
                assert c.read_exactly(len(datagram)) == datagram
            assert unacked(c) == (2, 0, 0)
            assert call(sim.stats)["sockets"]["0"]["dropped"] == 1

    await run_client(sim, body, indi=0)


@in_thread
async def test_prompt_is_not_starved_by_a_push_downlink_at_115200_baud():
    """Counted in bytes, not seconds: what the UART sends ahead of the prompt is bounded."""

    opts = SimOptions(act_delay=0, deact_delay=0, dns_delay=0, baud=115200, uart_high_water=4096)
    paced = Simulator(reactor, opts)
    paced.start()
    source = socket.socket()
    source.bind(("127.0.0.1", 0))
    source.listen(1)
    stop = threading.Event()

    def flood():
        conn, _ = source.accept()
        with conn:
            while not stop.is_set():
                try:
                    conn.sendall(b"x" * 65536)
                except OSError:
                    return

    threading.Thread(target=flood, daemon=True).start()

    def client():
        c = Client(paced.device)
        try:
            bring_up(c, indi=0)
            open_socket(c, source.getsockname()[1])
            c.read_exactly(20000, deadline=10)  # the downlink saturates the line
            c.write(b"AT+QISEND=0,5\r")
            ahead = c.read_until(b"\r\n> ")
            # high water + one frame in the UART, plus what the pty and its writer may hold
            assert len(ahead) < 4096 + 1500 + 2 * 4096, len(ahead)
            c.write(b"hello")
            c.read_until(b"\r\nSEND OK\r\n")
        finally:
            stop.set()
            c.close()

    try:
        await threads.deferToThread(client)
    finally:
        source.close()
        paced.stop()


def subsequence(part: bytes, whole: bytes) -> bool:
    """Is ``part`` what is left of ``whole`` after taking some bytes out (order kept)?"""
    rest = iter(whole)
    return all(byte in rest for byte in part)


@pytest.mark.parametrize("flow_control", [True, False], ids=["rtscts", "no-flow-control"])
@in_thread
async def test_transparent_uplink_faster_than_the_radio(peers, flow_control):
    """At 115200 baud into a 32 kbit/s radio: with flow control the host's writes block and every
    byte arrives; without it the module's UART buffer overruns, and the peer gets exactly the bytes
    that were not lost, in order.  Stats show data mode, DCD, and the DTR drop in the log."""
    opts = SimOptions(act_delay=0, deact_delay=0, dns_delay=0, baud=115200, up_bps=32000,
                      send_buffer=1460, uart_rx_buffer=1024, flow_control=flow_control)
    paced = Simulator(reactor, opts)
    paced.start()
    peer = peers("collect")
    payload = bytes(b for b in range(256) if b != ord("+")) * 32

    def client():
        c = Client(paced.device)
        try:
            bring_up(c, mux=0, mode=1)
            out = c.at(f'AT+QIOPEN="TCP","127.0.0.1",{peer.port}', until=b"CONNECT\r\n")
            assert out.endswith(OK + b"\r\nCONNECT\r\n")
            c.write(payload)
            end = time.monotonic() + 20
            while time.monotonic() < end:
                stats = call(paced.stats)
                sock, overrun = stats["sockets"]["0"], stats["uart"]["overrun"]
                if sock["sent"] + overrun == len(payload) and sock["acked"] == sock["sent"]:
                    break
                time.sleep(0.05)
            assert stats["data_mode"] and stats["carrier"] and stats["dtr"]
            assert (overrun == 0) == flow_control, overrun
            received = peer.wait_for(len(payload) - overrun)
            assert len(received) == len(payload) - overrun
            assert received == payload if flow_control else subsequence(received, payload)
            call(paced.module.set_dtr, False)  # AT&D1 by default: command mode, OK
            assert c.read_until(OK) == OK
            stats = call(paced.stats)
            assert not stats["data_mode"] and stats["carrier"] and not stats["dtr"]
            assert stats["commands"][-1]["cmd"] == "DTR drop"
        finally:
            c.close()

    try:
        await threads.deferToThread(client)
    finally:
        paced.stop()
