"""The byte pipe to the module, chosen by the modem's ``port`` setting.

- a device path: pyserial opened with ``exclusive=True`` (an ``flock``), so a second cellbridge on
  the same device fails at once instead of both reading half of every answer, and read and
  written by our ``SerialTransport`` (Twisted's ``SerialPort`` opens the device itself and has no
  public way to ask for the lock);
- ``tcp:HOST:PORT``: a TCP client, for a module exported raw by ser2net or similar;
- ``sim``: the built-in simulator as a child process on a pty (its costs stay out of ours), opened
  like a device once it printed ``device: /dev/pts/N``; it stops when we end, however we end
  (``--exit-with-parent``, bridge.sim.lifeline).

``open_port(reactor, config, protocol)`` connects ``protocol`` and returns a ``ModemPort`` whose
``close()`` undoes everything (for ``sim`` it also ends the child).
"""

import errno
import os
import shutil
import sys
import tempfile
from typing import Optional

import serial
from twisted.internet import abstract, defer, fdesc
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import Factory, ProcessProtocol
from twisted.logger import Logger

import bridge
from bridge.errors import CellbridgeError

#: Bytes a pty takes from its writer that nobody reports as unsent: Linux's buffer of the other
#: side (64 KiB of flip buffers) and its line discipline's (4 KiB).
PTY_UNSEEN = 69632
#: Bytes a serial port may hold beyond what TIOCOUTQ reports: a UART's or a USB adapter's FIFO.
SERIAL_UNSEEN = 4096
#: Major device numbers of Unix98 pty slaves (/dev/pts/N).
PTY_MAJORS = range(136, 144)
#: Seconds the simulator child may take to print its ``device:`` line.
SIM_START_TIMEOUT = 15.0
#: Seconds the simulator child may take to exit after SIGTERM before it is killed.
SIM_STOP_TIMEOUT = 5.0


class TransportError(CellbridgeError):
    """The module's port cannot be opened; the text says why and what to do."""


class SerialTransport(abstract.FileDescriptor):
    """An open pyserial port as a Twisted transport: the reactor reads and writes its descriptor
    (as Twisted's ``SerialPort`` does), pyserial keeps its settings, lock and modem lines."""

    connected = True  # from the start: FileDescriptor.write() drops data while not connected
    #: Bytes queued here before a registered producer (a transparent session) is paused: small,
    #: because an escape must wait until they have left (0.36 s at 115200 baud).
    bufferSize = 4096

    def __init__(self, reactor, line: serial.Serial, protocol) -> None:
        super().__init__(reactor)
        self.line = line
        self.protocol = protocol
        protocol.makeConnection(self)
        self.startReading()

    def fileno(self) -> int:
        return self.line.fd

    def setDTR(self, asserted: bool) -> None:
        self.line.dtr = asserted

    def getCD(self) -> bool:
        return self.line.cd

    @property
    def unseen(self) -> int:
        """The most bytes the port may hold that ``unsent()`` does not count."""
        try:
            major = os.major(os.fstat(self.fileno()).st_rdev)
        except OSError:
            return PTY_UNSEEN
        return PTY_UNSEEN if major in PTY_MAJORS else SERIAL_UNSEEN

    def unsent(self) -> int:
        """Bytes written but not yet on the wire: ours queued here, and the driver's."""
        queued = len(self.dataBuffer) - self.offset + self._tempDataLen
        try:
            return queued + self.line.out_waiting
        except (OSError, serial.SerialException):
            return queued

    def writeSomeData(self, data):
        return fdesc.writeToFD(self.fileno(), data)

    def doRead(self):
        return fdesc.readFromFD(self.fileno(), self.protocol.dataReceived)

    def connectionLost(self, reason) -> None:
        super().connectionLost(reason)
        self.line.close()
        self.protocol.connectionLost(reason)


def describe_serial_error(path: str, error: serial.SerialException) -> str:
    """One line for the user: in use, permission (the ``dialout`` group), missing, other."""
    code = getattr(error, "errno", None)
    if code in (errno.EAGAIN, errno.EWOULDBLOCK) or "exclusively lock" in str(error):
        return (f"{path}: the port is in use by another program (another cellbridge?); "
                "it is opened exclusively")
    if code in (errno.EACCES, errno.EPERM):
        return (f"{path}: permission denied; add the user running cellbridge to the 'dialout' "
                "group (or give the service SupplementaryGroups=dialout)")
    if code == errno.ENOENT:
        return f"{path}: no such device (is the modem plugged in? prefer /dev/serial/by-id/...)"
    return f"{path}: cannot open: {error}"


def open_serial(reactor, path: str, protocol, baudrate: int, rtscts: bool,
                serial_class=serial.Serial) -> SerialTransport:
    """Open ``path`` exclusively and connect ``protocol`` (synchronously)."""
    try:
        line = serial_class(path, baudrate=baudrate, rtscts=rtscts, exclusive=True, timeout=0)
    except serial.SerialException as error:
        raise TransportError(describe_serial_error(path, error)) from error
    return SerialTransport(reactor, line, protocol)


class ModemPort:
    """An open connection to the module; ``close()`` -> Deferred fired when all is released."""

    log = Logger()

    def __init__(self, description: str, transport, child: Optional["SimChild"] = None) -> None:
        self.description = description
        self.transport = transport
        self.child = child
        self._dtr_warned = False

    def set_dtr(self, asserted: bool) -> bool:
        """Set pyserial's ``dtr`` (asserted = the module's pin LOW, see ``bridge.modem.sleep``).

        A TCP socket has no DTR line and a pty's modem-control ioctls fail: then nothing happens,
        one warning is logged, and False is returned.
        """
        set_dtr = getattr(self.transport, "setDTR", None)
        try:
            if set_dtr is None:
                raise OSError("this transport has no DTR line")
            set_dtr(asserted)
            return True
        except (OSError, serial.SerialException) as error:
            if not self._dtr_warned:
                self._dtr_warned = True
                self.log.warn("{port}: cannot drive DTR ({error}); sleep control and dtr_escape "
                              "do not work on this port", port=self.description, error=error)
            return False

    def carrier(self) -> Optional[bool]:
        """DCD (pyserial ``cd``): True while the module signals a data link (AT&C1); None
        where the transport cannot tell (a TCP socket, a pty)."""
        get_cd = getattr(self.transport, "getCD", None)
        if get_cd is None:
            return None
        try:
            return bool(get_cd())
        except (OSError, serial.SerialException):
            return None

    def close(self):
        self.transport.loseConnection()
        if self.child is None:
            return defer.succeed(None)
        return self.child.stop()


def child_environment() -> dict:
    """Our environment, with this ``bridge`` package first on the child's import path."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(bridge.__file__)))
    path = os.environ.get("PYTHONPATH")
    return dict(os.environ, PYTHONPATH=root + (os.pathsep + path if path else ""))


class SimChild(ProcessProtocol):
    """The simulator process: waits (bounded) for its ``device:`` line, ends it on ``stop()``."""

    log = Logger()

    def __init__(self, reactor, sim_args, start_timeout: float = SIM_START_TIMEOUT,
                 stop_timeout: float = SIM_STOP_TIMEOUT) -> None:
        self.reactor = reactor
        self.sim_args = sim_args
        self.directory: Optional[str] = None  # made by spawn(), removed once the child is gone
        self.device = defer.Deferred()
        self._exited = False
        self._waiters = []
        self._start_timer = None
        self._kill_timer = None
        self._stdout = b""
        self._stderr = b""
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout

    def spawn(self):
        """Start the child; returns the Deferred of its pty path. A child that cannot be started
        leaves neither its directory nor a timer behind."""
        self.directory = tempfile.mkdtemp(prefix="cellbridge-sim-")
        argv = [sys.executable, "-m", "bridge.sim", "--link", os.path.join(self.directory, "tty"),
                "--control", os.path.join(self.directory, "ctl"),
                "--exit-with-parent", str(os.getpid()), *self.sim_args]
        try:
            self.reactor.spawnProcess(self, argv[0], argv, env=child_environment())
        except Exception as error:  # OSError (no interpreter, no free fds) or a rejected argument
            shutil.rmtree(self.directory, ignore_errors=True)
            self.device.errback(TransportError(f"sim: cannot start the simulator: {error}"))
            return self.device
        self._start_timer = self.reactor.callLater(self._start_timeout, self._start_timed_out)
        return self.device

    def outReceived(self, data: bytes) -> None:
        if self.device.called:
            return
        self._stdout += data
        for line in self._stdout.splitlines():
            if line.startswith(b"device: "):
                self._start_timer.cancel()
                self.device.callback(line[len(b"device: "):].decode().strip())
                return

    def errReceived(self, data: bytes) -> None:
        self._stderr = (self._stderr + data)[-2000:]  # for the error message if it dies early

    def processEnded(self, reason) -> None:
        if not self.device.called:
            self._start_timer.cancel()
            self.device.errback(TransportError(
                f"sim: the simulator exited before it was ready: {self._stderr_tail()}"))
        shutil.rmtree(self.directory, ignore_errors=True)
        self._exited = True
        if self._kill_timer is not None and self._kill_timer.active():
            self._kill_timer.cancel()
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def _start_timed_out(self) -> None:
        self.device.errback(TransportError(
            f"sim: no 'device:' line from the simulator within {self._start_timeout:g} s"))
        self._signal("KILL")

    def stop(self):
        """SIGTERM, then SIGKILL if it lingers; fires once the child has exited."""
        if self._exited:
            return defer.succeed(None)
        if self._kill_timer is None:
            self._signal("TERM")
            self._kill_timer = self.reactor.callLater(self._stop_timeout, self._signal, "KILL")
        waiter = defer.Deferred()
        self._waiters.append(waiter)
        return waiter

    def _signal(self, name: str) -> None:
        try:
            self.transport.signalProcess(name)
        except (ProcessExitedAlready, OSError):
            pass

    def _stderr_tail(self) -> str:
        lines = self._stderr.decode("utf-8", "replace").strip().splitlines()
        return lines[-1] if lines else "(no output)"


class _OneProtocol(Factory):
    """Builds the one ``protocol`` (``connectProtocol``'s factory, without its "Starting
    factory" log line at every reconnect)."""

    noisy = False

    def __init__(self, protocol) -> None:
        self._instance = protocol

    def buildProtocol(self, addr):
        return self._instance


@defer.inlineCallbacks
def open_port(reactor, config, protocol):
    """Connect ``protocol`` to the module named by ``config.port``; -> ModemPort.

    :raises TransportError: the port cannot be opened (the message says why).
    """
    port = config.port
    if port.startswith("tcp:"):
        host, _, number = port[4:].rpartition(":")
        endpoint = HostnameEndpoint(reactor, host.encode("idna"), int(number))
        try:
            yield endpoint.connect(_OneProtocol(protocol))
        except Exception as error:
            raise TransportError(f"{port}: cannot connect: {error}") from error
        return ModemPort(port, protocol.transport)
    if port == "sim":
        child = SimChild(reactor, config.sim_args)
        device = yield child.spawn()
        try:
            transport = open_serial(reactor, device, protocol, config.baudrate, config.rtscts)
        except TransportError:
            yield child.stop()
            raise
        return ModemPort(f"sim ({device})", transport, child)
    transport = open_serial(reactor, port, protocol, config.baudrate, config.rtscts)
    return ModemPort(port, transport)
