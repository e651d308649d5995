"""The simulator assembled: pty + paced UART + dialect + stack, with the fault API and stats.

    sim = Simulator(reactor, SimOptions(baud=0))
    sim.start()          # sim.device is the slave path, usable at once
    sim.kill(0); sim.stats(); sim.stop()

The pins a pty does not carry are on the module: `sim.module.set_dtr(False)` drops DTR,
`sim.module.carrier` is DCD, `sim.module.carrier_observers.append(callback)` hears it change.

Socket numbers in fault calls address the foreground context: the client socket with that
index if there is one, else the server-accepted one.
"""

import os

from twisted.logger import Logger

from .chaos import Chaos
from .cmd_general import lose_contexts
from .commandlog import CommandLog
from .control import ControlFactory
from .dialect import ModuleProtocol
from .options import SimOptions
from .ptyport import PtyMaster, PtyPair, make_link, remove_link
from .resolver import Resolver, read_hosts
from .uart import PacedUart


class Simulator:
    """One simulated module on its own pty.

    @param reactor: the reactor to run on (TCP, UDP, UNIX, time, resolve).
    @param options: SimOptions.
    @param link: optional symlink path to create for the slave device.
    @param control: optional unix socket path for the control channel.
    """

    log = Logger()

    def __init__(self, reactor, options: SimOptions = SimOptions(), link=None, control=None):
        self._reactor = reactor
        self.options = options
        self.link = link
        self.control_path = control
        self.command_log = CommandLog()
        self.module = None
        self.uart = None
        self._pty = None
        self._port = None
        self._control = None

    @property
    def device(self) -> str:
        return self._pty.device

    def start(self) -> None:
        opts = self.options
        self._pty = PtyPair()
        self.uart = PacedUart(self._reactor, opts.baud, opts.uart_high_water)
        self._port = PtyMaster(self._reactor, self._pty.master, self.uart.receive)
        self._port.registerProducer(self.uart.gate, True)
        self.uart.attach_port(self._port)
        self._port.startReading()
        resolver = Resolver(self._reactor, read_hosts(opts.hosts_file), opts.dns_delay)
        self.module = ModuleProtocol(self._reactor, opts, resolver, self.command_log)
        self.chaos(opts.chaos_seed)
        self.uart.connect(self.module)
        if self.link:
            make_link(self.link, self.device)
        if self.control_path:
            if os.path.exists(self.control_path):
                os.unlink(self.control_path)
            self._control = self._reactor.listenUNIX(self.control_path, ControlFactory(self))

    def stop(self) -> None:
        if self.module is None:
            return
        self.module.power_off()
        if self._control is not None:
            self._control.stopListening()
            self._control = None
        self.uart.detach_port()
        self._port.stopReading()
        self._port.stopWriting()
        if self.link:
            remove_link(self.link, self.device)
        self._pty.close()
        self.module = None

    # -- faults ------------------------------------------------------------------------------------

    def _socket(self, n: int):
        ctx = self.module.ctx
        sock = ctx.socket(False, n) or ctx.socket(True, n)
        if sock is None:
            raise ValueError(f"no socket {n}")
        return sock

    def kill(self, n: int) -> None:
        """Silent death of socket n at the radio: nothing new delivered, no URC (choice 39)."""
        self._socket(n).kill()

    def heal(self, n: int) -> None:
        self._socket(n).heal()

    def remote_close(self, n: int) -> None:
        """The network closes socket n: the peer sees the connection end, the module `CLOSED`."""
        self._socket(n).remote_close()

    def pdp_deact(self, context=None) -> None:
        """The network drops every PDP context, or only `context` (0 or 1): `+PDP DEACT` once."""
        if context not in (None, 0, 1):
            raise ValueError(f"no context {context}")
        lose_contexts(self.module, context)

    def reboot(self) -> None:
        """Power-cycle: power-up defaults and the boot URCs."""
        self.module.power_on()

    def set_roaming(self, roaming: bool) -> None:
        """Register on a visited network (stat 5) or back home (stat 1); kept across reboots."""
        self.module.roaming = roaming
        self.module.cellular.set_roaming(roaming)

    def garbage(self, data: bytes) -> None:
        self.uart.write(data)

    def mute(self, seconds: float) -> None:
        self.uart.mute(seconds)

    def send_fail(self, n: int, count: int = 1) -> None:
        self._socket(n).fail_next_sends(count)

    def connect_fail(self, host) -> None:
        """QIOPEN to `host` (as written, or its IP) ends in CONNECT FAIL; None clears the list."""
        if host is None:
            self.module.connect_fail_hosts.clear()
        else:
            self.module.connect_fail_hosts.add(host)

    def chaos(self, seed) -> None:
        self.module.chaos_source = Chaos(seed).pick if seed is not None else None

    # -- stats -------------------------------------------------------------------------------------

    def stats(self) -> dict:
        module = self.module
        ctx = module.ctx
        return {
            "state": ctx.reported_state,
            "mux": ctx.mux,
            "mode": ctx.mode,
            "indi": module.settings.indi,
            "context": module.settings.fgcnt,
            "sockets": ctx.describe_sockets(),
            "contexts": [each.reported_state for each in module.contexts],
            "listeners": {proto: ctx.listen_port(proto) for proto in ctx.listeners},
            "data_mode": module.data_mode is not None,
            "powered": module.powered,
            "registered": module.cellular.registered,
            "roaming": module.roaming,
            "dtr": module.dtr,
            "carrier": module.carrier,
            "commands": self.command_log.entries(),
            "uart": {"rx_bytes": self.uart.rx_bytes, "tx_bytes": self.uart.tx_bytes,
                     "rx_buffered": module.uplink.buffered if module.uplink else 0,
                     "overrun": module.uart_overrun},
            "boots": module.boots,
        }
