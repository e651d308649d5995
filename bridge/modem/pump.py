"""The bulk scheduler of one modem: at most one AT+QISEND or AT+QIRD issued at a time.

Why one: the UART carries one command at a time anyway, and a deep queue of bulk commands would
make a control command (AT+QISACK, AT+QICLOSE, AT+QIOPEN) wait behind kilobytes of payload, and
would decide now which socket gets the wire next instead of when the wire frees. So the pump keeps
a single bulk command outstanding; control commands, issued at CONTROL priority, go out between
two bulk commands. The engine writes the next queued command before firing the finished
command's Deferred, and the pump issues the next bulk command synchronously inside that callback
(never via callLater): at 115200 baud the turnaround is the throughput.

Sockets are served round robin (magic-wormhole's outbound rotation): the socket that just got the
wire goes to the back, and a socket with nothing to do is skipped.
"""

from collections import deque

from twisted.logger import Logger


class BulkJob:
    """One bulk command a socket wants issued, and where its outcome goes.

    :param command: an AT engine command (``commands.qisend`` / ``commands.qird``)
    :param done: ``done(result_or_failure)`` called when it finishes
    """

    __slots__ = ("command", "done")

    def __init__(self, command, done) -> None:
        self.command = command
        self.done = done


class Pump:
    """Round-robin bulk scheduler over the sockets of one modem.

    A socket offers work through ``next_bulk() -> BulkJob | None``; it calls :meth:`kick` whenever
    it may have new work (bytes from the local side, a ``+QIRDI``, an ack, a resume).

    :param issue: ``issue(command) -> Deferred`` (``Modem.issue``)
    """

    log = Logger()

    def __init__(self, issue) -> None:
        self._issue = issue
        self._sockets = deque()
        self._busy = False
        self._kicking = False
        self.issued = 0  #: bulk commands issued so far (stats)

    def add(self, socket) -> None:
        if socket not in self._sockets:
            self._sockets.append(socket)

    def remove(self, socket) -> None:
        if socket in self._sockets:
            self._sockets.remove(socket)

    @property
    def sockets(self):
        return tuple(self._sockets)

    @property
    def busy(self) -> bool:
        """A bulk command is outstanding."""
        return self._busy

    def kick(self) -> None:
        """Issue the next bulk command if none is outstanding.

        A loop, not recursion: a command that fails at once (modem down) finishes inside
        ``issue`` and the loop goes on with the next socket.
        """
        if self._busy or self._kicking:
            return
        self._kicking = True
        try:
            while not self._busy:
                job = self._next_job()
                if job is None:
                    return
                self._busy = True
                self.issued += 1
                self._issue(job.command).addBoth(self._finished, job)
        finally:
            self._kicking = False

    def _next_job(self):
        for _ in range(len(self._sockets)):
            socket = self._sockets.popleft()
            self._sockets.append(socket)
            job = socket.next_bulk()
            if job is not None:
                return job
        return None

    def _finished(self, result, job: BulkJob) -> None:
        self._busy = False
        try:
            job.done(result)
        except Exception:
            self.log.failure("socket failed handling the result of {command!r}",
                             command=job.command)
        self.kick()
