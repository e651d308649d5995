"""Shared transcript harness for the AT engine tests (no tests here).

An ATProtocol on a StringTransport with a task.Clock: ``sent()`` returns (and clears) the exact
bytes written, ``recv()`` feeds module bytes, ``events`` collects everything listeners heard.
"""

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from bridge.at.protocol import ATProtocol


class Harness:
    def __init__(self, **options) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.proto = ATProtocol(self.clock, **options)
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)
        self.events = []
        self.proto.add_listener(self.events.append)

    def issue(self, command):
        outcome = []
        self.proto.issue(command).addBoth(outcome.append)
        return outcome

    def sent(self) -> bytes:
        value = self.transport.value()
        self.transport.clear()
        return value

    def recv(self, *chunks: bytes) -> None:
        for chunk in chunks:
            self.proto.dataReceived(chunk)


def value_of(outcome):
    """The single result in an outcome list; re-raises a failure's exception."""
    assert len(outcome) == 1, outcome
    result = outcome[0]
    if hasattr(result, "raiseException"):
        result.raiseException()
    return result


def error_of(outcome):
    assert len(outcome) == 1, outcome
    assert hasattr(outcome[0], "value"), outcome
    return outcome[0].value
