"""End to end: the simulator on a real pty, driven with plain pyserial, against real loopback peers.

The simulator runs in-process on the test reactor; the client side runs in a thread (blocking
pyserial), and talks to the simulator's fault API through blockingCallFromThread.
"""

import time

import pytest
import pytest_twisted
from twisted.internet import reactor, threads
from twisted.internet.threads import blockingCallFromThread

from bridge.sim import SimOptions, Simulator
from sim_loopback import Client, Peer

OK = b"\r\nOK\r\n"


@pytest.fixture
def sim():
    s = Simulator(reactor, SimOptions(act_delay=0, deact_delay=0, dns_delay=0, escape_guard=0.2))
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


def bring_up(c: Client, mux=1, indi=1, mode=0):
    for cmd in ("ATE0", f"AT+QIMUX={mux}", f"AT+QIMODE={mode}", f"AT+QINDI={indi}", "AT+QISDE=0",
                "AT+QIREGAPP", "AT+QIACT"):
        assert c.at(cmd).endswith(OK), cmd
    assert c.at("AT+QILOCIP", until=b"0.2\r\n") == b"\r\n10.100.0.2\r\n"  # bare IP, no OK


def open_socket(c: Client, port: int, index=0):
    out = c.at(f'AT+QIOPEN={index},"TCP","127.0.0.1",{port}', until=b"CONNECT OK\r\n")
    assert out.endswith(OK + f"\r\n{index}, CONNECT OK\r\n".encode())


def unacked(c: Client, index=0) -> tuple:
    out = c.at(f"AT+QISACK={index}")
    fields = out.split(b"+QISACK: ")[1].split(b"\r\n")[0].split(b", ")
    return tuple(int(f) for f in fields)


def settle_acks(c, sent, deadline=5.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        counters = unacked(c)
        if counters == (sent, sent, 0):
            return counters
        time.sleep(0.02)
    return unacked(c)


PAYLOAD = b"bin\r\nOK\r\n\x1a\x1b+++CLOSED\r\n> " + bytes(range(256))


@in_thread
async def test_echo_via_qird_and_qisack_after_delivery(sim, peers):
    peer = peers("echo")

    def client():
        c = Client(sim.device)
        bring_up(c)
        open_socket(c, peer.port)
        assert c.at(f"AT+QISEND=0,{len(PAYLOAD)}", until=b"> ") .endswith(b"\r\n> ")
        c.write(PAYLOAD)
        c.read_until(b"\r\nSEND OK\r\n")
        assert peer.wait_for(len(PAYLOAD)) == PAYLOAD
        assert settle_acks(c, len(PAYLOAD)) == (len(PAYLOAD), len(PAYLOAD), 0)
        c.wait_seen(b"\r\n+QIRDI: 0,1,0\r\n")
        c.write(b"AT+QIRD=0,1,0,1500\r")
        header = f"\r\n+QIRD: 127.0.0.1:{peer.port},TCP,{len(PAYLOAD)}\r\n".encode()
        got = c.read_exactly(len(header) + len(PAYLOAD) + len(OK))
        assert got == header + PAYLOAD + OK
        c.close()

    await threads.deferToThread(client)


@in_thread
async def test_echo_via_push_receive(sim, peers):
    peer = peers("echo")

    def client():
        c = Client(sim.device)
        bring_up(c, indi=0)
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
        c.close()

    await threads.deferToThread(client)


@in_thread
async def test_dead_socket_freezes_acked_and_stalled_peer_shows_unacked(sim, peers):
    stall, echo = peers("stall"), peers("echo")

    def client():
        c = Client(sim.device)
        bring_up(c)
        open_socket(c, stall.port, index=0)
        chunk = b"s" * 1400
        sent = 0
        for _ in range(5):
            c.at(f"AT+QISEND=0,{len(chunk)}", until=b"> ")
            c.write(chunk)
            assert c.read_until(b"SEND OK\r\n") == b"\r\nSEND OK\r\n"
            sent += len(chunk)
        time.sleep(0.3)
        total, acked, pending = unacked(c)
        assert total == sent and pending > 0 and acked + pending == sent
        # a peer that reads but a socket that silently died: acked freezes, no URC
        open_socket(c, echo.port, index=1)
        call(sim.kill, 1)
        c.at("AT+QISEND=1,4", until=b"> ")
        c.write(b"dead")
        c.read_until(b"SEND OK\r\n")
        time.sleep(0.2)
        assert unacked(c, 1) == (4, 0, 4)
        assert echo.received == b""
        call(sim.heal, 1)
        assert echo.wait_for(4) == b"dead"
        c.close()

    await threads.deferToThread(client)


@in_thread
async def test_send_buffer_fills_against_stalled_peer(sim, peers):
    stall = peers("stall")

    def client():
        c = Client(sim.device)
        bring_up(c)
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
        c.close()

    await threads.deferToThread(client)


@in_thread
async def test_remote_close_pdp_deact_and_reboot(sim, peers):
    peer = peers("echo")

    def client():
        c = Client(sim.device)
        bring_up(c)
        open_socket(c, peer.port)
        call(sim.remote_close, 0)
        c.read_until(b"\r\n0, CLOSED\r\n")
        assert c.at("AT+QICLOSE=0", until=b"CLOSE OK\r\n").endswith(b"0, CLOSE OK\r\n")
        open_socket(c, peer.port, index=1)
        call(sim.pdp_deact)
        c.read_until(b"\r\n+PDP DEACT\r\n")
        assert c.at("AT+QISTAT", until=b"DEACT\r\n") == OK + b"\r\nSTATE: PDP DEACT\r\n"
        assert c.at('AT+QIOPEN=1,"TCP","127.0.0.1",1', until=b"ERROR\r\n").endswith(b"\r\nERROR\r\n")
        assert c.at("AT+QIDEACT", until=b"DEACT OK\r\n").endswith(b"\r\nDEACT OK\r\n")
        call(sim.reboot)
        c.read_until(b"\r\nRDY\r\n\r\n+CFUN: 1\r\n\r\n+CPIN: READY\r\n\r\nCall Ready\r\n\r\nSMS Ready\r\n")
        assert c.at("AT") == b"AT\r" + OK  # echo is back on: power-up defaults
        assert call(sim.stats)["boots"] == 2
        c.close()

    await threads.deferToThread(client)


@in_thread
async def test_transparent_round_trip_and_escape(sim, peers):
    peer = peers("echo")

    def client():
        c = Client(sim.device)
        bring_up(c, mux=0, mode=1)
        out = c.at(f'AT+QIOPEN="TCP","127.0.0.1",{peer.port}', until=b"CONNECT\r\n")
        assert out.endswith(OK + b"\r\nCONNECT\r\n")
        data = b"raw\r\nOK\r\n+++x" * 10
        c.write(data)
        assert c.read_exactly(len(data)) == data
        time.sleep(0.3)
        c.write(b"+++")
        assert c.read_until(OK) == OK
        assert c.at("AT+QISTAT", until=b"STATE: CONNECT OK\r\n")
        assert c.at("ATO", until=b"CONNECT\r\n") == b"\r\nCONNECT\r\n"
        c.write(b"again")
        assert c.read_exactly(5) == b"again"
        c.close()

    await threads.deferToThread(client)


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
    import socket

    def client():
        c = Client(sim.device)
        bring_up(c)
        assert c.at('AT+QILPORT="TCP",0') == OK
        assert c.at("AT+QISERVER=0,2", until=b"SERVER OK\r\n") == OK + b"\r\nSERVER OK\r\n"
        port = call(sim.stats)["listener"]["port"]
        remote = socket.create_connection(("127.0.0.1", port), timeout=5)
        c.read_until(b"\r\n0, REMOTE IP: 127.0.0.1\r\n")
        remote.sendall(b"hello module")
        c.wait_seen(b"\r\n+QIRDI: 0,2,0\r\n")
        got = c.at("AT+QIRD=0,2,0,100")
        assert got.endswith(b",TCP,12\r\nhello module\r\nOK\r\n")
        assert c.at("AT+QISRVC=2") == OK
        c.at("AT+QISEND=0,3", until=b"> ")
        c.write(b"hey")
        c.read_until(b"SEND OK\r\n")
        assert remote.recv(10) == b"hey"
        remote.close()
        c.close()

    await threads.deferToThread(client)


@in_thread
async def test_udp_round_trip(sim):
    import socket

    def client():
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        udp.settimeout(5)
        c = Client(sim.device)
        bring_up(c)
        out = c.at(f'AT+QIOPEN=0,"UDP","127.0.0.1",{udp.getsockname()[1]}', until=b"CONNECT OK\r\n")
        assert out.endswith(b"0, CONNECT OK\r\n")
        c.at("AT+QISEND=0,4", until=b"> ")
        c.write(b"ping")
        c.read_until(b"SEND OK\r\n")
        data, addr = udp.recvfrom(100)
        assert data == b"ping"
        udp.sendto(b"pong", addr)
        c.wait_seen(b"\r\n+QIRDI: 0,1,0\r\n")
        assert c.at("AT+QIRD=0,1,0,100").endswith(b",UDP,4\r\npong\r\nOK\r\n")
        assert unacked(c) == (4, 0, 0)
        udp.close()
        c.close()

    await threads.deferToThread(client)


@in_thread
async def test_prompt_is_not_starved_by_a_push_downlink_at_115200_baud():
    """Counted in bytes, not seconds: what the UART sends ahead of the prompt is bounded."""
    import socket
    import threading

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
