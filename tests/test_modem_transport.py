"""Transports on real ptys and loopback sockets: exclusive open, error texts, tcp, sim child."""

import errno
import os
import pty
import select
import signal
import subprocess
import sys
import tempfile
import termios
import time
import tty

import pytest
import pytest_twisted
import serial
from twisted.internet import defer, reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock, deferLater
from twisted.logger import capturedLogs

from bridge.at import commands
from bridge.at.protocol import ATProtocol
from bridge.config import General, ModemConfig
from bridge.modem.modem import make_modem_service
from bridge.modem.transport import PTY_UNSEEN, TransportError, open_port, open_serial
from tests.test_probe import ENV

WAIT = 30  # seconds: generous outer bound for every wait below


@pytest.fixture
def pty_pair():
    master, slave = pty.openpty()
    tty.setraw(master)
    yield master, os.ttyname(slave)
    os.close(master)
    os.close(slave)


def test_a_second_opener_fails_at_once_with_a_clear_error(pty_pair):
    _, device = pty_pair
    first = open_serial(reactor, device, ATProtocol(reactor), 115200, False)
    try:
        with pytest.raises(TransportError) as caught:
            open_serial(reactor, device, ATProtocol(reactor), 115200, False)
        assert str(caught.value) == (f"{device}: the port is in use by another program (another "
                                     "cellbridge?); it is opened exclusively")
        # The real CLI too: exit 1, the step and the reason on stderr.
        result = subprocess.run([sys.executable, "-m", "bridge.cli", "probe", "--port", device],
                                capture_output=True, text=True, env=ENV, timeout=WAIT)
        assert result.returncode == 1
        assert "failed at step 'port'" in result.stderr and "in use" in result.stderr
    finally:
        first.loseConnection()


def test_flow_control_is_off_unless_configured(pty_pair):
    _, device = pty_pair
    port = open_serial(reactor, device, ATProtocol(reactor), 115200, False)
    try:
        assert not port.line.rtscts
        assert not termios.tcgetattr(port.line.fd)[2] & termios.CRTSCTS
    finally:
        port.loseConnection()


def test_a_pty_says_how_much_it_holds_unreported(pty_pair):
    """A pty reports nothing unsent (TIOCOUTQ is 0) while its buffers hold what the other side
    has not read: an escape must wait out their line time (bridge.at.datamode)."""
    master, device = pty_pair
    port = open_serial(reactor, device, ATProtocol(reactor), 115200, False)
    try:
        port.line.write(b"x" * 1000)  # nobody reads the master
        assert port.unsent() == 0
        assert port.unseen == PTY_UNSEEN
    finally:
        port.loseConnection()


def test_permission_denied_names_the_dialout_group():
    def no_access(*args, **kwargs):
        raise serial.SerialException(errno.EACCES, "could not open port /dev/ttyUSB0")

    with pytest.raises(TransportError, match="add the user running cellbridge to the 'dialout' "
                                             "group"):
        open_serial(reactor, "/dev/ttyUSB0", ATProtocol(reactor), 115200, False,
                    serial_class=no_access)


@defer.inlineCallbacks
def read_master(master, expected: bytes):
    """Read the pty master (non-blocking, the reactor keeps turning) until ``expected`` arrived."""
    os.set_blocking(master, False)
    got = b""
    deadline = reactor.seconds() + WAIT
    while expected not in got and reactor.seconds() < deadline:
        try:
            got += os.read(master, 100)
        except BlockingIOError:
            yield deferLater(reactor, 0.01, lambda: None)
    return got


@pytest_twisted.inlineCallbacks
def test_serial_port_carries_commands_and_answers(pty_pair):
    master, device = pty_pair
    protocol = ATProtocol(reactor)
    port = yield open_port(reactor, ModemConfig(name="t", port=device, rtscts=True), protocol)
    # Our end of hardware flow control (the module's, AT+IFC=2,2, is in test_modem_bringup).
    serial_port = port.transport.line
    assert serial_port.rtscts and termios.tcgetattr(serial_port.fd)[2] & termios.CRTSCTS
    answered = protocol.issue(commands.at())
    written = yield read_master(master, b"AT\r")
    assert written == b"AT\r"
    os.write(master, b"\r\nOK\r\n")
    reply = yield answered.addTimeout(WAIT, reactor)
    assert reply.lines == ()
    yield port.close()


class _AnswerOK(Protocol):
    def dataReceived(self, data):
        if data.endswith(b"\r"):
            self.transport.write(b"\r\nOK\r\n")


@pytest_twisted.inlineCallbacks
def test_tcp_port_reaches_a_raw_serial_export():
    listener = reactor.listenTCP(0, Factory.forProtocol(_AnswerOK), interface="127.0.0.1")
    address = f"tcp:127.0.0.1:{listener.getHost().port}"
    protocol = ATProtocol(reactor)
    with capturedLogs() as events:
        port = yield open_port(reactor, ModemConfig(name="t", port=address), protocol)
        reply = yield protocol.issue(commands.at()).addTimeout(WAIT, reactor)
        assert reply.lines == () and port.description == address
        yield port.close()
    assert not [e for e in events if "factory" in e.get("log_format", "")]  # opened quietly
    yield listener.stopListening()


@pytest_twisted.inlineCallbacks
def test_tcp_port_refused_is_a_transport_error():
    listener = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
    number = listener.getHost().port
    yield listener.stopListening()
    with pytest.raises(TransportError, match=f"tcp:127.0.0.1:{number}: cannot connect"):
        yield open_port(reactor, ModemConfig(name="t", port=f"tcp:127.0.0.1:{number}"),
                        ATProtocol(reactor))


@pytest_twisted.inlineCallbacks
def test_sim_port_runs_a_child_and_ends_it_on_close():
    protocol = ATProtocol(reactor)
    port = yield open_port(reactor, ModemConfig(name="t", port="sim"), protocol)
    reply = yield protocol.issue(commands.gsn()).addTimeout(WAIT, reactor)
    assert reply.lines == ("861234567890125",)
    child = port.child
    assert os.path.islink(os.path.join(child.directory, "tty"))
    yield port.close().addTimeout(WAIT, reactor)
    assert child._exited and not os.path.exists(child.directory)


# A daemon reduced to its sim port: it spawns the child exactly as open_port does, then prints
# the child's pid once the child is ready.
SIM_PARENT = """
from twisted.internet import reactor
from bridge.modem.transport import SimChild

child = SimChild(reactor, ())
child.spawn().addCallback(lambda device: print(child.transport.pid, flush=True))
reactor.run()
"""


def running(pid: int) -> bool:
    """The process exists and is not a zombie (whoever adopts an orphan may be slow to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_the_sim_child_ends_with_its_daemon_even_on_sigkill(tmp_path):
    # TMPDIR: a killed daemon cannot remove the child's directory; keep it out of /tmp.
    parent = subprocess.Popen([sys.executable, "-c", SIM_PARENT], stdout=subprocess.PIPE,
                              env=dict(ENV, TMPDIR=str(tmp_path)), text=True)
    child = None
    try:
        assert select.select([parent.stdout], [], [], WAIT)[0], "the sim child never got ready"
        child = int(parent.stdout.readline())
        assert running(child)
        parent.kill()  # SIGKILL: the daemon's own clean-up never runs
        parent.wait(WAIT)
        deadline = time.monotonic() + WAIT
        while running(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not running(child)
    finally:
        parent.kill()
        parent.wait(WAIT)
        if child is not None and running(child):
            os.kill(child, signal.SIGKILL)


def test_a_sim_child_whose_parent_died_before_it_could_follow_it_exits_at_once():
    """The race the parent-death signal leaves open: the parent was gone before it was asked for."""
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    result = subprocess.run([sys.executable, "-m", "bridge.sim", "--exit-with-parent",
                             gone.stdout.strip()], capture_output=True, text=True, env=ENV,
                            timeout=WAIT)
    assert (result.returncode, result.stdout) == (0, "")
    assert "is gone" in result.stderr


class _SpawnFails(Clock):
    """A clock as reactor whose spawnProcess fails the way a missing interpreter makes it fail."""

    def spawnProcess(self, protocol, executable, *args, **kwargs):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", executable)


def test_a_sim_child_that_cannot_start_leaves_no_directory_and_no_timer(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    clock = _SpawnFails()
    outcome = []
    open_port(clock, ModemConfig(name="t", port="sim"), Protocol()).addErrback(outcome.append)
    assert os.listdir(tmp_path) == [] and clock.getDelayedCalls() == []
    assert outcome[0].check(TransportError)
    assert str(outcome[0].value) == (f"sim: cannot start the simulator: [Errno 2] No such file or "
                                     f"directory: {sys.executable!r}")


class _Root:
    """The parts of CellbridgeService that make_modem_service uses."""

    def __init__(self, state_dir):
        self.reactor = reactor
        self.config = type("Config", (), {"general": General(state_dir=state_dir)})()
        self.readiness, self.checks, self.failures = [], [], []
        self.add_readiness = self.readiness.append
        self.add_health_check = self.checks.append
        self.fail = self.failures.append


def test_service_tree_modem_fails_readiness_and_stops_the_daemon_on_a_missing_port(tmp_path):
    root = _Root(str(tmp_path))
    modem = make_modem_service(ModemConfig(name="m", port=str(tmp_path / "ttyNONE")), root)
    outcome = []
    root.readiness[0].addErrback(outcome.append)
    modem.startService()
    assert outcome[0].check(TransportError)
    assert [type(error) for error in root.failures] == [TransportError]
    assert root.checks == [modem.healthy] and not modem.healthy()
    modem.stopService()
