"""The control socket's protocol: newline-delimited JSON, one request object per line, each answer
one JSON object per line (ASCII: non-ASCII characters are ``\\u`` escapes).

- ``{"command": "status"}``: one line, the status snapshot (:mod:`bridge.control.snapshot`).
- ``{"command": "trace"}``: ``{"trace": [modem names]}``, then one line per AT traffic entry,
  ``{"modem": NAME, "entry": TEXT}``, exactly as the ring records it (redacted, payload as length
  and hex prefix), until the client disconnects; what it sends meanwhile is ignored.
- Anything else (bad JSON, not an object, an unknown command): ``{"error": TEXT}``, and the
  connection stays open for the next request. Blank lines are ignored. A line longer than
  :data:`MAX_LINE` gets its error and the connection is closed (its end cannot be told).

A trace client that reads slower than the modem talks is not buffered without bound: the
connection pauses this protocol (its push producer) once its buffer is full; entries are then
dropped and counted, and ``{"dropped": N}`` comes before the next entry once it reads again.
"""

import json
from functools import partial

from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from zope.interface import implementer

from bridge.control.snapshot import children, status_snapshot

#: The longest request line, delimiter excluded.
MAX_LINE = 4096
COMMANDS = ("status", "trace")


def encode(message: dict) -> bytes:
    """One protocol line."""
    return json.dumps(message).encode("ascii") + b"\n"


@implementer(IPushProducer)
class ControlProtocol(LineReceiver):
    """One client of the control socket.

    :param snapshot: ``snapshot()`` -> the status dict
    :param traffic: the tree's :class:`~bridge.traffic.TrafficTap`, which a trace watches
    :param modem_names: ``modem_names()`` -> the modems a trace starts with
    """

    log = Logger()
    delimiter = b"\n"
    MAX_LENGTH = MAX_LINE

    def __init__(self, snapshot, traffic, modem_names) -> None:
        self._snapshot = snapshot
        self._traffic = traffic
        self._modem_names = modem_names
        self._tracing = False
        self._paused = False
        self._dropped = 0

    def send(self, message: dict) -> None:
        self.transport.write(encode(message))

    def lineReceived(self, line: bytes) -> None:
        if self._tracing or not line.strip():
            return
        try:
            request = json.loads(line)
        except ValueError as error:
            self.send({"error": f"not JSON: {error}"})
            return
        command = request.get("command") if isinstance(request, dict) else None
        if command == "status":
            self._status()
        elif command == "trace":
            self._trace()
        elif isinstance(request, dict):
            self.send({"error": f"unknown command {command!r}; known: {', '.join(COMMANDS)}"})
        else:
            self.send({"error": 'a request is a JSON object, e.g. {"command": "status"}'})

    def lineLengthExceeded(self, line: bytes) -> None:
        self.send({"error": f"request line longer than {MAX_LINE} bytes; closing"})
        self.transport.loseConnection()

    def _status(self) -> None:
        try:
            snapshot = self._snapshot()
        except Exception:  # a fault in the snapshot must not take the client's answer with it
            self.log.failure("control: building the status snapshot failed")
            self.send({"error": "the status snapshot failed (see the daemon's log)"})
            return
        self.send(snapshot)

    # -- trace ------------------------------------------------------------------------------------

    def _trace(self) -> None:
        self._tracing = True
        self.transport.registerProducer(self, True)
        self._traffic.watchers.append(self._entry)
        self.send({"trace": self._modem_names()})

    def _entry(self, service_name: str, entry: str) -> None:
        if self._paused:
            self._dropped += 1
            return
        self.send({"modem": service_name.partition(":")[2], "entry": entry})

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        if self._dropped:
            dropped, self._dropped = self._dropped, 0
            self.send({"dropped": dropped})

    def stopProducing(self) -> None:
        self._stop_watching()

    def connectionLost(self, reason=None) -> None:
        self._stop_watching()

    def _stop_watching(self) -> None:
        if self._entry in self._traffic.watchers:
            self._traffic.watchers.remove(self._entry)


def modem_names(root) -> list:
    """The names of the modems in the tree now (``main``, not ``modem:main``)."""
    return [name for name, _ in children(root, "modem")]


class ControlFactory(Factory):
    """The control socket's clients, answered from the service tree under ``root``."""

    noisy = False

    def __init__(self, root) -> None:
        self.root = root

    def buildProtocol(self, addr) -> ControlProtocol:
        protocol = ControlProtocol(partial(status_snapshot, self.root), self.root.traffic,
                                   partial(modem_names, self.root))
        protocol.factory = self
        return protocol
