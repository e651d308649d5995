"""End to end over a radio with a round trip: an HTTP-like exchange ends in a clean EOF.

A real TCP peer acks a request no later than it sends the reply and FIN that answer it, so a
module never reports a reply before the ack of the request; the bridge resets the local side on
a remote close with bytes still unacked, so a simulator that showed acks late would turn every
such exchange into a false reset.
"""

import pytest
import pytest_twisted
from twisted.internet import protocol
from twisted.internet.error import ConnectionDone

from tests.e2e_bed import Bed, ResetSeen, connect, ended, server, until

REQUEST = b"GET / HTTP/1.0\r\n\r\n"
REPLY = b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello"


class Responder(protocol.Protocol):
    """Reads one whole request, answers it and closes, like an HTTP/1.0 server."""

    def connectionMade(self):
        self.factory.connections.append(self)
        self.received = bytearray()

    def dataReceived(self, data):
        self.received += data
        if self.received.endswith(b"\r\n\r\n"):
            self.transport.write(REPLY)
            self.transport.loseConnection()


@pytest.mark.parametrize("receive", ["pull", "push"])
@pytest_twisted.ensureDeferred
async def test_request_reply_close_ends_in_eof_not_reset_with_100ms_rtt(tmp_path, receive):
    responder = server(Responder)
    async with await Bed.start(tmp_path, responder, receive=receive, rtt_ms=100) as bed:
        for i in range(5):
            client = await connect(bed.port, ResetSeen())
            client.transport.write(REQUEST)
            received = await ended(client, f"the reply and close of exchange {i}")
            assert received == REPLY, f"exchange {i}"
            assert client.reason.check(ConnectionDone), f"exchange {i} ended in a reset"
            assert bytes(responder.connections[i].received) == REQUEST
            await until(bed.idle, what=f"the module socket of exchange {i} to be freed")
        counters = bed.modem.counters
        assert counters.get("link_dead", cause="unacked_at_remote_close") == 0
