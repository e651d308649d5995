"""The pty pair that plays the module's serial port.

The master end is read and written by the simulator through the reactor; the slave end is what
users open (pyserial, picocom, the bridge).  We keep our own slave descriptor open for the whole
life of the simulator: a pty master reads EIO as soon as nobody holds the slave, and holding it
lets clients close and reopen the port any number of times.
"""

import errno
import os
import pty
import tty

from twisted.internet import abstract, main
from twisted.logger import Logger


class PtyPair:
    """A raw-mode pty pair; `device` is the slave path to hand to clients."""

    def __init__(self):
        self.master, self.slave = pty.openpty()
        for fd in (self.master, self.slave):
            tty.setraw(fd)
        os.set_blocking(self.master, False)
        self.device = os.ttyname(self.slave)

    def close(self) -> None:
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


def make_link(link: str, device: str) -> None:
    """Point the symlink `link` at `device`, replacing a stale link (never a real file)."""
    if os.path.islink(link):
        os.unlink(link)
    os.symlink(device, link)


def remove_link(link: str, device: str) -> None:
    """Remove our symlink if it still points at our device."""
    try:
        if os.path.islink(link) and os.readlink(link) == device:
            os.unlink(link)
    except OSError:
        pass


class PtyMaster(abstract.FileDescriptor):
    """Reactor reader/writer on the pty master; bytes read go to `receive`.

    @param reactor: the reactor.
    @param fd: the master descriptor (non-blocking).
    @param receive: callable taking the bytes read.
    """

    log = Logger()
    bufferSize = 4096

    def __init__(self, reactor, fd: int, receive):
        abstract.FileDescriptor.__init__(self, reactor)
        self._fd = fd
        self._receive = receive
        self.connected = 1

    def fileno(self) -> int:
        return self._fd

    def doRead(self):
        try:
            data = os.read(self._fd, 65536)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EINTR, errno.EIO):
                # EIO only while no slave is open; we hold one, so it is transient.
                return None
            return main.CONNECTION_LOST
        if data:
            self._receive(data)
        return None

    def writeSomeData(self, data):
        try:
            return os.write(self._fd, data)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EINTR):
                return 0
            return main.CONNECTION_LOST

    def connectionLost(self, reason):
        abstract.FileDescriptor.connectionLost(self, reason)
