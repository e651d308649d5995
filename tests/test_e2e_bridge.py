"""End to end: local sockets -> bridge -> pty -> simulator -> loopback servers."""

import os
import socket

import pytest
import pytest_twisted
from twisted.internet import protocol, reactor

from tests.e2e_bed import (Bed, Client, Echo, ResetSeen, Source, connect, ended, open_fds,
                           reset_not_eof, salted, server, sha, until)


@pytest.mark.parametrize("receive", ["pull", "push"])
@pytest_twisted.ensureDeferred
async def test_salted_binary_is_echoed_intact(tmp_path, receive):
    payload = salted(256 * 1024)
    echo = server(Echo)
    async with await Bed.start(tmp_path, echo, receive=receive) as bed:
        client = await connect(bed.port)
        client.transport.write(payload)
        await until(lambda: len(client.received) >= len(payload), what="the echo")
        assert sha(echo.connections[0].received) == sha(payload)  # uplink intact
        assert sha(client.received) == sha(payload)  # downlink intact
        client.transport.loseConnection()
        await until(bed.idle, what="the module socket to be freed")


@pytest_twisted.ensureDeferred
async def test_six_concurrent_connections_and_a_seventh_that_waits(tmp_path):
    echo = server(Echo)
    async with await Bed.start(tmp_path, echo) as bed:
        clients = [await connect(bed.port) for _ in range(6)]
        await until(lambda: len(echo.connections) == 6, what="six module sockets")
        seventh = await connect(bed.port)
        seventh.transport.write(b"waiting")
        payloads = [os.urandom(40000) for _ in clients]
        for client, payload in zip(clients, payloads):
            client.transport.write(payload)
        for client, payload in zip(clients, payloads):
            await until(lambda: len(client.received) >= len(payload), what="six echoes")
            assert sha(client.received) == sha(payload)
        assert bed.admission.stats()["waiting"] == 1 and seventh.received == b""
        assert len(bed.module_sockets()) == 6
        clients[3].transport.loseConnection()
        await until(lambda: seventh.received == b"waiting", what="the seventh to be served")
        assert len(echo.connections) == 7


@pytest_twisted.ensureDeferred
async def test_remote_close_delivers_everything_then_eof_and_frees_the_socket(tmp_path):
    payload = salted(100000, seed=7)
    async with await Bed.start(tmp_path, server(Source, payload)) as bed:
        client = await connect(bed.port)
        received = await ended(client, "EOF from the bridge after the drain")
        assert sha(received) == sha(payload)
        await until(bed.idle, what="the module socket to be freed")


@pytest_twisted.ensureDeferred
async def test_local_close_frees_the_module_socket(tmp_path):
    echo = server(Echo)
    async with await Bed.start(tmp_path, echo) as bed:
        client = await connect(bed.port)
        client.transport.write(b"bye")
        await until(lambda: client.received == b"bye", what="the echo")
        assert len(bed.module_sockets()) == 1
        client.transport.loseConnection()
        await until(bed.idle, what="the module socket to be freed")
        commands = [entry["cmd"] for entry in bed.sim.stats()["commands"]]
        assert "AT+QICLOSE=0" in commands


@pytest_twisted.ensureDeferred
async def test_half_closed_client_still_gets_the_answer(tmp_path):
    """``nc -N``: the client sends, shuts down its write side, and reads the reply to the end."""
    echo = server(Echo)
    async with await Bed.start(tmp_path, echo) as bed:
        client = await connect(bed.port)
        client.transport.write(b"request")
        client.transport.loseWriteConnection()
        received = await ended(client, "the bridge to close after the linger")
        assert received == b"request"
        await until(bed.idle, what="the module socket to be freed")


@pytest_twisted.ensureDeferred
async def test_hundred_sequential_connections_leak_nothing(tmp_path):
    echo = server(Echo)
    async with await Bed.start(tmp_path, echo, linger=0.05) as bed:
        fds = open_fds()
        for i in range(100):
            client = await connect(bed.port)
            client.transport.write(b"%d" % i)
            await until(lambda: client.received == b"%d" % i, what=f"echo {i}")
            client.transport.loseConnection()
            await ended(client, f"local close {i}")
        await until(bed.idle, what="every module socket to be freed")
        assert bed.admission.stats()["served"] == 100
        for connection in echo.connections:  # the module closed every remote connection
            await until(lambda: not connection.transport.connected, what="remote close")
        assert open_fds() <= fds


class StalledReader(Client):
    """Reads nothing until the test calls :meth:`resume`."""

    def connectionMade(self):
        self.transport.pauseProducing()

    def resume(self):
        self.transport.resumeProducing()


def connect_small_window(port, client):
    """A client socket with a tiny receive buffer, so the kernel cannot absorb the stream."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    factory = protocol.Factory.forProtocol(lambda: client)
    reactor.adoptStreamConnection(sock.fileno(), socket.AF_INET, factory)
    sock.close()  # the reactor holds its own duplicate
    return client


#: What one link holds beyond Twisted's own write buffer of the local transport (bufferSize,
#: 64 KiB): in pull mode at most the one AT+QIRD answer in flight when the transport paused it.
PULL_HELD_BOUND = 1500


@pytest_twisted.ensureDeferred
async def test_slow_local_reader_slows_the_sender_and_bounds_what_the_bridge_holds(tmp_path):
    payload = os.urandom(5 * 1024 * 1024)
    async with await Bed.start(tmp_path, server(Source, payload)) as bed:
        reader = connect_small_window(bed.port, StalledReader())
        await until(lambda: bed.admission.sockets, what="the link")
        link = next(iter(bed.admission.sockets))
        # The simulated module stops reading the remote when its buffer is full and resumes only
        # below half of it, so a module holding half its buffer has stopped the remote sender.
        module_backlog = bed.sim.options.rx_buffer // 2
        buffered = []

        def stalled() -> bool:
            """The local transport paused the link and the module's buffer filled up behind it."""
            buffered.append(bed.admission.stats()["buffered"])
            return (link.stats()["local_paused"]
                    and bed.module_sockets()["0"]["rx_buffered"] >= module_backlog)

        try:
            await until(stalled, what="the paused link to leave the stream in the module")
        except AssertionError as error:
            raise AssertionError(f"{error}: link {link.stats()}, module socket "
                                 f"{bed.module_sockets().get('0')}") from None
        # The bridge stopped pulling: what it wrote fits the local kernel socket buffers (about
        # 2 MB on loopback) and the rest waits in the module and at the remote sender.
        assert link.stats()["received"] < len(payload) // 2
        assert max(buffered) <= PULL_HELD_BOUND
        reader.resume()
        assert sha(await ended(reader, "the whole stream", timeout=60.0)) == sha(payload)
        assert link.stats()["peak_held"] <= PULL_HELD_BOUND


@pytest_twisted.ensureDeferred
async def test_connect_fail_resets_the_local_connection(tmp_path):
    async with await Bed.start(tmp_path, server(Echo)) as bed:
        bed.sim.connect_fail("127.0.0.1")
        client = await connect(bed.port, ResetSeen())
        client.transport.write(b"lost?")
        await reset_not_eof(client)
        assert client.received == b""
        await until(bed.idle, what="the slot to be freed")
        bed.sim.connect_fail(None)
        again = await connect(bed.port)
        again.transport.write(b"works")
        await until(lambda: again.received == b"works", what="a later connection to work")
