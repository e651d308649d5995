"""The client side of the control socket, for ``cellbridge status`` and ``cellbridge trace``:
where the socket is (``--control``, or the config's ``control``), one request, the answer lines.

Plain blocking sockets: a command-line client asks once and prints, it needs no reactor. Every
way of not getting an answer (no daemon, no socket, no permission, a timeout, an error from the
daemon) is one :class:`ControlUnavailable` line and exit status 1.
"""

import json
import socket
from typing import Iterator, NamedTuple

from bridge.config import load_config
from bridge.config_values import endpoint_fields, unix_socket_path
from bridge.control.protocol import encode
from bridge.errors import CellbridgeError, ConfigError

DEFAULT_CONFIG = "/etc/cellbridge/cellbridge.ini"
#: How long the daemon may take to accept and to answer a status request.
ANSWER_TIMEOUT = 10.0
#: Where a tcp control endpoint bound to every address is reached from this machine.
LOOPBACK = {"tcp": "127.0.0.1", "tcp6": "::1"}


class ControlUnavailable(CellbridgeError):
    """No answer from the daemon's control socket; the message says why, in one line."""


class ControlAddress(NamedTuple):
    family: int
    address: object  # a path, or (host, port)
    text: str  # for messages


def add_arguments(parser) -> None:
    """``-c FILE`` and ``--control ENDPOINT``, shared by status and trace."""
    parser.add_argument("-c", "--config", metavar="FILE", default=DEFAULT_CONFIG,
                        help="the daemon's config; its [cellbridge] control names the socket "
                             f"(default {DEFAULT_CONFIG})")
    parser.add_argument("--control", metavar="ENDPOINT",
                        help="the control endpoint itself, as in the config "
                             "(unix:/run/cellbridge/control.sock, tcp:PORT:interface=ADDR) or a "
                             "socket path; the config is not read then")


def control_address(args) -> ControlAddress:
    """Where to connect, from ``--control`` or the config's ``control`` key."""
    description = args.control
    if description is None:
        try:
            description = load_config(args.config).general.control
        except ConfigError as error:
            raise ControlUnavailable(f"{error.problems[0]} (or give --control ENDPOINT)") from None
        if not description:
            raise ControlUnavailable(f"{args.config}: [cellbridge] control is empty: the daemon "
                                     "has no control socket (see README, Status and trace)")
    if description.startswith("/"):
        return ControlAddress(socket.AF_UNIX, description, description)
    positional, options = endpoint_fields(description)
    kind = positional[0]
    if kind == "unix":
        path = unix_socket_path(description)
        return ControlAddress(socket.AF_UNIX, path, path)
    if kind in LOOPBACK:
        host = options.get("interface", "")
        if host in ("", "0.0.0.0", "::"):
            host = LOOPBACK[kind]
        port = int(options.get("port") or positional[1])
        if ":" in host:
            return ControlAddress(socket.AF_INET6, (host, port), f"[{host}]:{port}")
        return ControlAddress(socket.AF_INET, (host, port), f"{host}:{port}")
    raise ControlUnavailable(f"cannot reach a {kind}: control endpoint from here; give "
                             "--control unix:PATH or tcp:PORT")


class ControlConnection:
    """One connection to the control socket: ``request`` sends, ``answers`` yields each line."""

    def __init__(self, address: ControlAddress, timeout: float = ANSWER_TIMEOUT) -> None:
        self.address = address
        self.sock = socket.socket(address.family, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self._buffer = b""
        try:
            self.sock.connect(address.address)
        except OSError as error:
            self.sock.close()
            raise ControlUnavailable(self._why(error)) from None

    def _why(self, error: OSError) -> str:
        where = f"control socket {self.address.text}"
        if isinstance(error, FileNotFoundError):
            return f"{where}: no such socket (is the daemon running?)"
        if isinstance(error, ConnectionRefusedError):
            return f"{where}: connection refused (is the daemon running?)"
        if isinstance(error, PermissionError):
            return (f"{where}: permission denied (it is mode 0660: join its group, see README, "
                    "Status and trace)")
        if isinstance(error, socket.timeout):
            return f"{where}: no answer within {self.sock.gettimeout():g} s"
        return f"{where}: {error.strerror or error}"

    def request(self, command: str) -> None:
        try:
            self.sock.sendall(encode({"command": command}))
        except OSError as error:
            raise ControlUnavailable(self._why(error)) from None

    def answers(self) -> Iterator[dict]:
        """Each answer line as a dict; an ``error`` answer raises. Ends when the daemon closes."""
        while True:
            line, newline, rest = self._buffer.partition(b"\n")
            if newline:
                self._buffer = rest
                yield self._decoded(line)
                continue
            try:
                data = self.sock.recv(65536)
            except OSError as error:
                raise ControlUnavailable(self._why(error)) from None
            if not data:
                return
            self._buffer += data

    def _decoded(self, line: bytes) -> dict:
        try:
            answer = json.loads(line)
        except ValueError:
            raise ControlUnavailable(f"control socket {self.address.text}: not a cellbridge "
                                     "control socket (the answer is not JSON)") from None
        if isinstance(answer, dict) and "error" in answer:
            raise ControlUnavailable(f"the daemon answered: {answer['error']}")
        return answer

    def first_answer(self) -> dict:
        for answer in self.answers():
            return answer
        raise ControlUnavailable(f"control socket {self.address.text}: closed without an answer")

    def close(self) -> None:
        self.sock.close()
