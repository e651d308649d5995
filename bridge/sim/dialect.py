"""The M95 AT dialect as a Twisted protocol: bytes in from the UART, bytes out to it.

Input is in one of four states: a command line being typed, a QISEND payload after `> `, raw
transparent data (QIMODE=1 data mode), or held while a slow command (QIACT, QIDEACT) runs.
Command handlers live in the cmd_* modules; socket events become URCs in `reports`.  The
protocol needs only a transport and a clock, so transcript tests drive it with StringTransport
and task.Clock.  The two V.24 circuits a pty cannot carry are methods here for a test bed to wire
in process: DTR in (`set_dtr`), DCD out (`carrier`, `carrier_observers`).
"""

from twisted.internet import defer, protocol
from twisted.logger import Logger

from . import cmd_general, cmd_ipconfig, cmd_socket
from .atparse import ParseError, command_text, parse_line
from .cellular import Cellular
from .commandlog import CommandLog
from .payload import PayloadInput
from .reports import SocketReporter
from .responses import Responder
from .settings import ModuleSettings
from .stack import Context
from .transparent import DataMode, Uplink

HANDLERS = {**cmd_general.HANDLERS, **cmd_ipconfig.HANDLERS, **cmd_socket.HANDLERS}
BASIC = cmd_general.BASIC
MAX_LINE = 1024
CR, LF, BS, ESC = 0x0D, 0x0A, 0x08, 0x1B


class ModuleProtocol(protocol.Protocol):
    """One simulated module, from power-up to power-down.

    @param reactor: IReactorTime (+ TCP/UDP/resolve for the stack).
    @param options: SimOptions.
    @param resolver: bridge.sim.resolver.Resolver.
    @param command_log: CommandLog receiving every command line.
    @param chaos: callable(registered) -> URC text or None, or None for no chaos.
    """

    log = Logger()

    def __init__(self, reactor, options, resolver, command_log: CommandLog = None, chaos=None):
        self.reactor = reactor
        self.options = options
        self.resolver = resolver
        self.commands = command_log or CommandLog()
        self.chaos_source = chaos
        self.persisted_ipr = 115200
        self.ipr = self.persisted_ipr
        self.roaming = options.roaming  # kept across reboots, like a SIM abroad
        self.connect_fail_hosts = set()  # fault: QIOPEN to these hosts ends in CONNECT FAIL
        self.boots = 0
        self.powered = False
        self._line = bytearray()
        self._held = bytearray()
        self._busy = False
        self.payload = None  # PayloadInput while a QISEND payload is being typed
        self.uplink = None  # transparent.Uplink while a transparent link exists
        self.data_mode = None  # transparent.DataMode while the UART carries raw data
        self.uart_overrun = 0  # bytes lost because the UART receive buffer was full
        self.dtr = True  # the host's DTR, ON until the host drops it
        self.carrier_observers = []  # called with the new DCD level (bool) when it changes
        self._carrier = False
        self.reports = SocketReporter(self)
        self.settings = ModuleSettings()
        self.r = Responder(self._write, self.settings, self._chaos)
        self.contexts = []
        self.cellular = None

    # -- power ------------------------------------------------------------------------------------

    def connectionMade(self):
        self.transport.registerProducer(self.reports, True)
        self.power_on()

    def power_on(self) -> None:
        """Power-up defaults and the boot URC burst."""
        self.power_off()
        self.boots += 1
        self.powered = True
        self.settings = ModuleSettings()
        self.r.settings = self.settings
        self.ipr = self.persisted_ipr
        self.contexts = [Context(self.reactor, cid, self.options, self.reports) for cid in (0, 1)]
        self.contexts[0].sibling, self.contexts[1].sibling = self.contexts[1], self.contexts[0]
        self.cellular = Cellular(self.reactor, self.options.pin, self.options.register_delay,
                                 self.options.register_deny, self.reports.registration_changed,
                                 self.roaming)
        if self.persisted_ipr:
            self.r.urc("RDY")
        self.r.urc("+CFUN: 1")
        self.r.urc(f"+CPIN: {self.cellular.sim_state}")
        if self.cellular.pin_ok:
            self.sim_ready_urcs()
        self.check_carrier()

    def sim_ready_urcs(self) -> None:
        if self.settings.urc:
            self.r.urc("Call Ready")
        self.r.urc("SMS Ready")

    def power_off(self) -> None:
        """Everything closed, input ignored until the next power_on."""
        self.powered = False
        for ctx in self.contexts:
            ctx.deactivate()
        if self.cellular is not None:
            self.cellular.stop()
        self._line.clear()
        self._held.clear()
        self._busy = False
        if self.payload is not None:
            self.payload.cancel()
        self.payload = None
        self.end_link()
        self.check_carrier()

    # -- context helpers --------------------------------------------------------------------------

    @property
    def ctx(self) -> Context:
        """The foreground context (AT+QIFGCNT)."""
        return self.contexts[self.settings.fgcnt]

    def _chaos(self):
        if self.chaos_source is None or self.data_mode is not None:
            return None
        return self.chaos_source(self.cellular is not None and self.cellular.registered)

    def _write(self, data: bytes) -> None:
        if self.transport is not None and self.powered:
            self.transport.write(data)

    # -- input ------------------------------------------------------------------------------------

    def dataReceived(self, data: bytes):
        self._receive(data)
        self.check_carrier()  # a command may have opened or closed a link, or changed AT&C

    def _receive(self, data: bytes) -> None:
        if not self.powered:
            return
        if self._busy:
            self._held += data
            return
        view = memoryview(data)
        while view and self.powered and not self._busy:
            if self.data_mode is not None:
                self.data_mode.receive(bytes(view))
                return
            if self.payload is not None:
                used = self.payload.receive(bytes(view))
                view = view[used:]
                continue
            view = view[self._command_bytes(view):]
        if self._busy and view:
            self._held += view

    def _command_bytes(self, view) -> int:
        """Consume command-line bytes; stop after a line that changed the input state."""
        echo = bytearray()
        for pos, byte in enumerate(view):
            echo.append(byte)
            if byte == CR:
                self._echo(echo)
                line, self._line = bytes(self._line), bytearray()
                self._run_line(line)
                return pos + 1
            if byte == LF and not self._line:
                continue
            if byte == BS:
                del self._line[-1:]
            elif byte == ESC:
                self._line.clear()
            elif len(self._line) < MAX_LINE:
                self._line.append(byte)
        self._echo(echo)
        return len(view)

    def _echo(self, data) -> None:
        if self.settings.echo and data:
            self.r.raw(bytes(data))

    def _run_line(self, line: bytes) -> None:
        text = command_text(line.decode("latin-1"))
        if text is None:
            return
        self.commands.record(text)
        try:
            commands = parse_line(text)
        except ParseError:
            self.r.error()
            return
        if commands[0].name in BASIC or commands[0].name == "":
            self._run_basic(commands)
            return
        self._run_extended(commands[0])

    def _run_basic(self, commands) -> None:
        for cmd in commands:
            handler = BASIC.get(cmd.name)
            if handler is None:
                self.r.error()
                return
            outcome = handler(self, cmd)
            if outcome is None:  # the handler answered (ATO) or changed input state
                return
            if not outcome:
                self.r.error()
                return
        self.r.ok()

    def _run_extended(self, cmd) -> None:
        handler = HANDLERS.get(cmd.name)
        if handler is None:
            self.r.error()
            return
        try:
            pending = handler(self, cmd)
        except ParseError:
            self.r.error()
            return
        if isinstance(pending, defer.Deferred):
            self._busy = True
            pending.addErrback(self._handler_failed).addBoth(self._unbusy)

    def _handler_failed(self, failure):
        self.log.failure("command failed", failure)
        self.r.error()

    def _unbusy(self, _):
        self._busy = False
        held, self._held = bytes(self._held), bytearray()
        self.dataReceived(held)

    # -- input state changes used by handlers -------------------------------------------------------

    def start_payload(self, sock, length) -> None:
        """QISEND accepted: prompt (per QIPROMPT), then collect the payload."""
        if self.settings.prompt in (1, 2):
            self.r.raw(b"\r\n> ")
        self.payload = PayloadInput(self, sock, length)

    def payload_done(self) -> None:
        self.payload = None

    def enter_data_mode(self, sock) -> None:
        """`CONNECT` has been written: the UART now carries raw data for the link `sock`."""
        if self.uplink is None or self.uplink.sock is not sock:
            self.end_link()
            self.uplink = Uplink(self, sock)
        self.data_mode = DataMode(self, self.uplink)

    def leave_data_mode(self) -> None:
        if self.data_mode is not None:
            self.data_mode.stop()
        self.data_mode = None

    def escape_data_mode(self, cause: str, close: bool = False) -> None:
        """`+++` or a DTR drop: logged as `cause`, command mode, `OK`.  The link stays (and what
        the UART buffer holds still goes out) unless `close`."""
        self.commands.record(cause)
        self.leave_data_mode()
        self.uplink.flush()
        if close:
            sock = self.uplink.sock
            self.end_link()
            self.contexts[sock.cid].close(sock)
        self.r.ok()

    def end_link(self) -> None:
        """The transparent link is over: command mode, and its UART buffer is dropped."""
        self.leave_data_mode()
        if self.uplink is not None:
            self.uplink.stop()
        self.uplink = None

    def link_closed(self, sock) -> None:
        """`sock` was closed or reported closed: if it was the transparent link, that is over."""
        if self.uplink is not None and self.uplink.sock is sock:
            self.end_link()

    # -- V.24 circuits a pty does not carry ---------------------------------------------------------

    def set_dtr(self, asserted: bool) -> None:
        """The host's DTR level.  ON->OFF in data mode: AT&D1 command mode + OK, AT&D2 the link
        closed + OK, AT&D0 nothing (app note §4); outside data mode nothing (choice 9)."""
        dropped = self.dtr and not asserted
        self.dtr = asserted
        if dropped and self.powered and self.data_mode is not None and self.settings.dtr_mode:
            self.escape_data_mode("DTR drop", close=self.settings.dtr_mode == 2)
            self.check_carrier()

    @property
    def carrier(self) -> bool:
        """DCD: AT&C0 always ON; AT&C1 ON while a TCP or UDP connection exists (app note §5.6.2,
        choice 40); OFF while the module is off."""
        if not self.powered:
            return False
        if not self.settings.dcd_mode:
            return True
        return any(sock.state == "CONNECTED" for ctx in self.contexts for sock in ctx.slots.values())

    def check_carrier(self) -> None:
        """Tell the observers if DCD changed (called after anything that can change it)."""
        level = self.carrier
        if level == self._carrier:
            return
        self._carrier = level
        for observer in list(self.carrier_observers):
            observer(level)
