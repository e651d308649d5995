"""Module bring-up: from an unknown module to an active PDP context with a local IP.

Steps, each named in errors so `cellbridge probe` can say where it stopped: sync (``AT`` until
OK: the module may be autobauding), echo, errors (AT+CMEE=2: the text of an error is what a user
needs, and PIN rejection is recognised by code *or* text), payload-echo (AT+QISDE=0),
flow-control (AT+IFC=2,2 with ``rtscts``), identity (ATI, AT+GMR, AT+GSN), sim (AT+CPIN),
registration (CREG and CGREG, bounded by ``registration_timeout``; with ``roaming = no`` a roaming
registration waits for home without a limit, bridge.modem.roaming), network identity (AT+QCCID
or AT+CCID, AT+CIMI, AT+COPS?: for status only, so a failure is a warning), attach (AT+CGATT=1),
stack (AT+QIMUX? then AT+QISTAT/QISTATE: the module's real state), deactivate (AT+QIDEACT: a known
state), bearer (QIFGCNT, QICSGP, QIMODE/QIMUX, QINDI; in transparent mode the data-mode step
comes between QIMODE=1 and QINDI: AT+QITCFG, AT&D1 with ``dtr_escape``, AT&C1 with ``dcd``),
activate (QIREGAPP, QIACT), local-ip (QILOCIP), dns (AT+QIDNSCFG, only with ``dns`` configured),
signal (CSQ). ``reactivate()`` repeats only deactivate, activate, local-ip and dns, for recovery
after the context alone was lost: the module keeps its settings.

A modem whose profiles or servers use the second PDP context (app note §7) brings it up after the
first: ``bring_up_context()`` runs AT+QIFGCNT=1, AT+QIDEACT, its bearer (AT+QICSGP with apn1 ...,
AT+QIMODE=0, AT+QIMUX=1: the module keeps them per context, app note §7.2), AT+QIREGAPP,
AT+QIACT, AT+QILOCIP [, AT+QIDNSCFG]; the same steps bring one context back alone while the other
carries on. Then every stack command names its context (``selection``), so that the socket
commands of the other context, which select theirs, may come in between.
"""

from dataclasses import dataclass, field
from typing import Optional

from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.logger import Logger

from bridge.at import commands
from bridge.at.commands import DEFAULT_TIMEOUTS, NO_SELECTION, Timeouts
from bridge.at.errors import ATEngineError, ATError, CmeError, CommandTimeout, LinkLost
from bridge.errors import CellbridgeError, SimLocked
from bridge.modem.pinstore import REJECTED, UNCONFIRMED
from bridge.modem.roaming import REFUSAL, RoamingGate

REGISTERED = (1, 5)
DENIED = 3
STAT_NAMES = {0: "not registered", 1: "home", 2: "searching", 3: "denied", 4: "unknown",
              5: "roaming"}


class BringUpFailed(CellbridgeError):
    """A bring-up step failed; ``step`` names it (exit status 1)."""

    def __init__(self, step: str, why: str) -> None:
        super().__init__(f"bring-up failed at step '{step}': {why}")
        self.step = step
        self.why = why


@dataclass(frozen=True)
class Pacing:
    """How long bring-up waits and retries (tests pass shorter ones)."""

    sync_time: float = 30.0  #: total time to get an OK for ``AT``
    sync_timeout: float = 2.0  #: per ``AT`` try
    sync_pause: float = 0.5  #: between tries
    sim_busy_tries: int = 10  #: AT+CPIN? answered "SIM busy" (CME 14) early after boot
    sim_busy_pause: float = 1.0
    registration_poll: float = 1.0
    registration_progress: float = 10.0  #: seconds between "still waiting" log lines
    roaming_poll: float = 10.0  #: registration polls while roaming keeps data down
    roaming_progress: float = 600.0  #: seconds between "still roaming" log lines


@dataclass
class BringUpResult:
    local_ip: str  #: the first context's
    mux: bool
    info: dict = field(default_factory=dict)
    local_ips: dict = field(default_factory=dict)  #: every context in use -> its local IP


def credentials(config, context: int):
    """APN, user name and password of PDP ``context`` (its modem keys)."""
    if context == 0:
        return config.apn, config.username, config.password
    return config.apn1, config.username1, config.password1


def stack_modes(transparent: bool, timeout: float):
    """AT+QIMODE and AT+QIMUX, the "on" one last: the module refuses QIMODE=1 while QIMUX=1 and
    vice versa."""
    if transparent:
        return commands.qimux(False, timeout), commands.qimode(True, timeout)
    return commands.qimode(False, timeout), commands.qimux(True, timeout)


def data_mode_settings(config, timeout: float):
    """Transparent mode's data-mode settings, after AT+QIMODE=1 as in app note §4: AT+QITCFG
    (``packet_wait``, ``packet_size``; ``+++`` off with ``dtr_escape``, so that no payload can
    ever be an escape), AT&D1 with ``dtr_escape`` (a DTR drop leaves data mode), AT&C1 with
    ``dcd`` (DCD follows the connection, app note §5.6.2)."""
    wanted = [commands.qitcfg(config.packet_wait, config.packet_size,
                              plus_escape=not config.dtr_escape, timeout=timeout)]
    if config.dtr_escape:
        wanted.append(commands.dtr_mode(1, timeout))
    if config.dcd:
        wanted.append(commands.dcd_mode(1, timeout))
    return wanted


def cme_matches(error: Exception, code: int, text: str) -> bool:
    """``+CME ERROR: <code>`` (CMEE=1) or ``+CME ERROR: <text>`` (CMEE=2)."""
    return isinstance(error, CmeError) and (
        error.code == code or error.text.strip().lower() == text)


def describe_signal(rssi: int, ber: int) -> str:
    if rssi == 99:
        return "unknown (CSQ 99)"
    return f"{-113 + 2 * rssi} dBm (CSQ {rssi},{ber})"


def record_signal(info: dict, quality) -> None:
    """An AT+CSQ answer into a modem's ``info``: ``signal`` for people, ``csq`` and
    ``signal_dbm`` (None when unknown, CSQ 99) for status and metrics."""
    info["signal"] = describe_signal(quality.rssi, quality.ber)
    info["csq"] = quality.rssi
    info["signal_dbm"] = None if quality.rssi == 99 else -113 + 2 * quality.rssi


def _first_value(reply, prefix: str) -> int:
    for line in reply.lines:
        if line.startswith(prefix):
            return int(line.split(":", 1)[1].split(",")[0])
    raise ValueError(f"no {prefix} line in {reply.lines!r}")


class BringUp:
    """One bring-up run over ``issue`` (an ATProtocol's issue); ``run()`` -> BringUpResult.

    :param pins: a PinStore; :param stack: the StackMachine kept in step on the way.
    :param stacks: every PDP context in use -> its StackMachine (default: context 0, ``stack``)
    :param selection: ``selection(context)`` -> the ``Selection`` its stack commands need
    :param roaming: the modem's RoamingGate (default: roaming allowed)
    """

    log = Logger()

    def __init__(self, clock, issue, config, pins, stack, timeouts: Timeouts = DEFAULT_TIMEOUTS,
                 pacing: Pacing = Pacing(), *, stacks: Optional[dict] = None,
                 selection=lambda context: NO_SELECTION,
                 roaming: Optional[RoamingGate] = None) -> None:
        self.clock = clock
        self._issue = issue
        self.config = config
        self.pins = pins
        self.stack = stack
        self.stacks = stacks or {0: stack}
        self._selection = selection
        self.roaming = roaming if roaming is not None else RoamingGate(True)
        self.t = timeouts
        self.pacing = pacing
        self.info: dict = {}
        self.mux: Optional[bool] = None

    def _at(self, step: str, command):
        """Issue ``command``; an engine failure becomes BringUpFailed naming ``step``."""
        def named(failure):
            if failure.check(ATEngineError) and not failure.check(LinkLost):
                raise BringUpFailed(step, failure.getErrorMessage())
            return failure
        return self._issue(command).addErrback(named)

    @inlineCallbacks
    def run(self):
        c, t = commands, self.t
        yield self._sync()
        yield self._at("echo", c.echo(False, t.simple))
        yield self._at("errors", c.cmee(2, t.simple))
        yield self._at("payload-echo", c.qisde(False, t.simple))
        if self.config.rtscts:
            yield self._at("flow-control", c.setting("+IFC", 2, 2, timeout=t.simple))
        yield self._identify()
        yield self._unlock_sim()
        yield self._wait_registered()
        yield self._network_identity()
        yield self._at("attach", c.cgatt(True, t.attach))
        try:
            local_ips = {0: (yield self._activate())}
            for context in self._other_contexts():
                local_ips[context] = yield self.bring_up_context(context)
        except BringUpFailed:
            yield self._resync_stack_quietly()
            raise
        quality = yield self._at("signal", c.csq(t.simple))
        record_signal(self.info, quality)
        self.info["local_ip"] = local_ips[0]
        return BringUpResult(local_ips[0], self.mux, dict(self.info), local_ips)

    # -- steps ------------------------------------------------------------------------------------

    @inlineCallbacks
    def _sync(self):
        deadline = self.clock.seconds() + self.pacing.sync_time
        tries = 0
        while True:
            tries += 1
            try:
                yield self._issue(commands.at(self.pacing.sync_timeout))
                return
            except LinkLost:
                raise
            except ATEngineError as error:
                self.log.info("sync: no OK for AT yet (try {tries}: {error})", tries=tries,
                              error=error)
            if self.clock.seconds() >= deadline:
                raise BringUpFailed("sync", f"the module did not answer AT ({tries} tries in "
                                            f"{self.pacing.sync_time:g} s)")
            yield deferLater(self.clock, self.pacing.sync_pause, lambda: None)

    @inlineCallbacks
    def _identify(self):
        c, t = commands, self.t
        ident = yield self._at("identity", c.ati(t.simple))
        revision = yield self._at("identity", c.gmr(t.simple))
        serial = yield self._at("identity", c.gsn(t.simple))
        self.info["model"] = " ".join(x for x in ident.lines if not x.startswith("Revision"))
        self.info["firmware"] = " ".join(x.split(":", 1)[-1].strip() for x in revision.lines)
        self.info["imei"] = " ".join(serial.lines)

    @inlineCallbacks
    def _sim_state(self):
        """AT+CPIN?, retried while the SIM is still busy after boot."""
        for attempt in range(1, self.pacing.sim_busy_tries + 1):
            try:
                state = yield self._issue(commands.cpin_query(self.t.pin))
                return state
            except CmeError as error:
                if cme_matches(error, 10, "sim not inserted"):
                    raise BringUpFailed("sim", "no SIM card inserted") from error
                if not cme_matches(error, 14, "sim busy") or attempt == self.pacing.sim_busy_tries:
                    raise BringUpFailed("sim", str(error)) from error
            except ATEngineError as error:
                if isinstance(error, LinkLost):
                    raise
                raise BringUpFailed("sim", str(error)) from error
            yield deferLater(self.clock, self.pacing.sim_busy_pause, lambda: None)

    @inlineCallbacks
    def _unlock_sim(self):
        state = yield self._sim_state()
        if state == "SIM PIN":
            yield self._enter_pin()
            state = yield self._sim_state()
        if state == "READY":
            self.info["sim"] = "READY"
            return
        if "PUK" in state:
            raise SimLocked(f"the SIM is blocked ({state}): unblock it with its PUK in a "
                            "phone, then restart cellbridge")
        if "PIN" in state:
            raise SimLocked(f"the SIM wants a code cellbridge does not have ({state})")
        raise BringUpFailed("sim", f"unexpected SIM state {state!r}")

    @inlineCallbacks
    def _enter_pin(self):
        pin = self.config.pin
        if pin is None:
            raise SimLocked("the SIM wants a PIN and none is configured (set pin in "
                            f"[modem:{self.config.name}])")
        refusal = yield self.pins.refusal(pin)
        if refusal == REJECTED:
            raise SimLocked(f"this PIN was rejected before (recorded in {self.pins.path}); "
                            "it is not sent again until the configured pin changes")
        if refusal == UNCONFIRMED:
            raise SimLocked(f"this PIN got no answer from the SIM before (recorded in "
                            f"{self.pins.path}), so it may have been rejected; {self._check_sim()}")
        try:
            yield self._issue(commands.cpin(pin, self.t.pin))
        except CmeError as error:
            if not cme_matches(error, 16, "incorrect password"):
                raise BringUpFailed("sim", str(error)) from error
            yield self._rejected(pin)
        except ATError:  # plain ERROR for AT+CPIN= is a rejection too
            yield self._rejected(pin)
        except CommandTimeout as error:
            if error.queued:  # never reached the SIM: an ordinary failure
                raise BringUpFailed("sim", str(error)) from error
            yield self.pins.remember(pin, UNCONFIRMED)
            raise SimLocked(f"AT+CPIN= got no answer within {error.timeout:g} s, so the SIM may "
                            f"have rejected the PIN; {self._check_sim()}") from error
        except ATEngineError as error:
            if isinstance(error, LinkLost):
                raise
            raise BringUpFailed("sim", str(error)) from error
        else:
            self.pins.forget()
            self.log.info("sim: PIN accepted")

    @inlineCallbacks
    def _rejected(self, pin: str):
        yield self.pins.remember(pin, REJECTED)
        raise SimLocked("the SIM rejected the configured PIN; it will not be sent again "
                        "until the pin setting changes (a SIM blocks after three wrong PINs)")

    def _check_sim(self) -> str:
        """What to do about a PIN whose verdict is unknown (sending it again risks a SIM try)."""
        return (f"it is not sent again (a SIM blocks after three wrong PINs): check the SIM in "
                f"a phone, then change the pin setting of [modem:{self.config.name}] or, if the "
                f"PIN is right, delete {self.pins.path}, and restart cellbridge")

    @inlineCallbacks
    def _wait_registered(self):
        c, t, pacing = commands, self.t, self.pacing
        timeout = self.config.registration_timeout
        start = self.clock.seconds()
        last, next_progress = None, start
        while True:
            creg = yield self._at("registration", c.creg_query(t.simple))
            cgreg = yield self._at("registration", c.cgreg_query(t.simple))
            stats = (creg.stat, cgreg.stat)
            summary = (f"CREG {creg.stat} ({STAT_NAMES.get(creg.stat, '?')}), "
                       f"CGREG {cgreg.stat} ({STAT_NAMES.get(cgreg.stat, '?')})")
            if DENIED in stats:
                raise BringUpFailed("registration", f"registration denied by the network: {summary}")
            registered = creg.stat in REGISTERED and cgreg.stat in REGISTERED
            held = registered and self.roaming.blocks(*stats)
            if registered and not held:
                self.roaming.release()
                self.info["registration"] = STAT_NAMES[creg.stat]
                self.log.info("registration: {summary}", summary=summary)
                return
            now = self.clock.seconds()
            if held and not self.roaming.waits:
                raise BringUpFailed("registration", f"{summary}: {REFUSAL}")
            if held:  # no time limit: the wait is for home, however long it takes
                self.roaming.hold()
                start, poll, every = now, pacing.roaming_poll, pacing.roaming_progress
            elif now - start >= timeout:
                raise BringUpFailed("registration",
                                    f"not registered after {timeout:g} s: {summary}")
            else:
                poll, every = pacing.registration_poll, pacing.registration_progress
            if stats != last or now >= next_progress:
                if held:
                    self.log.warn("registration: {summary}: {refusal}; waiting to be registered "
                                  "at home", summary=summary, refusal=REFUSAL)
                else:
                    self.log.info("registration: waiting, {summary} ({elapsed:.0f} s of "
                                  "{timeout:g} s)", summary=summary, elapsed=now - start,
                                  timeout=timeout)
                last, next_progress = stats, now + every
            yield deferLater(self.clock, poll, lambda: None)

    @inlineCallbacks
    def _network_identity(self):
        """ICCID (AT+QCCID, else AT+CCID), IMSI (AT+CIMI), operator (AT+COPS?) into ``info``
        (docs/at-dialect.md §13); each failure is a warning and its key stays absent."""
        queries = [("iccid", (b"AT+QCCID", b"AT+CCID")), ("imsi", (b"AT+CIMI",))]
        for key, lines in queries:
            for line in lines:
                value = yield self._optional(commands.sim_identifier(line, self.t.simple))
                if value is not None:
                    self.info[key] = value
                    break
        operator = yield self._optional(commands.cops_query(self.t.simple))
        if operator is not None:
            self.info["operator"] = operator
        self.log.info("sim: ICCID {iccid}, IMSI {imsi}, operator {operator}",
                      iccid=self.info.get("iccid", "unknown"), imsi=self.info.get("imsi", "unknown"),
                      operator=self.info.get("operator", "unknown"))

    @inlineCallbacks
    def _optional(self, command):
        """``command``'s result, or None (logged) if the module would not give it."""
        try:
            result = yield self._issue(command)
        except LinkLost:
            raise
        except ATEngineError as error:
            self.log.warn("network identity: {error}", error=error)
            return None
        return result

    def _other_contexts(self):
        return sorted(self.stacks)[1:]

    @inlineCallbacks
    def _activate(self):
        c, t, cfg = commands, self.t, self.config
        on = self._selection(0)
        mux_reply = yield self._at("stack", c.query("+QIMUX", t.simple).addressing(on))
        self.mux = _first_value(mux_reply, "+QIMUX:") == 1
        yield self._at("stack", self._status_command(0)).addCallback(self.stack.observed)
        yield self._deactivate(t.qideact, 0)
        if not on.settings():  # else every command here selects context 0 itself
            yield self._at("bearer", c.qifgcnt(0, t.simple))
        yield self._at("bearer", c.qicsgp(*credentials(cfg, 0), timeout=t.simple).addressing(on))
        transparent = cfg.mode == "transparent"
        for command in stack_modes(transparent, t.simple):
            yield self._at("bearer", command.addressing(on))
        self.mux = not transparent
        if transparent:
            for command in data_mode_settings(cfg, t.simple):
                yield self._at("data-mode", command)
        yield self._at("bearer", c.qindi(1 if cfg.receive == "pull" else 0, t.simple))
        local_ip = yield self._open_context(0)
        return local_ip

    @inlineCallbacks
    def bring_up_context(self, context: int, qideact_timeout: Optional[float] = None):
        """PDP ``context`` from any state to active, the other context left alone (app note
        §7.2): AT+QIFGCNT, AT+QIDEACT, AT+QICSGP, AT+QIMODE=0, AT+QIMUX=1, AT+QIREGAPP,
        AT+QIACT, AT+QILOCIP -> its local IP."""
        c, t = commands, self.t
        on = self._selection(context)
        yield self._at("bearer", c.qifgcnt(context, t.simple))
        yield self._deactivate(t.qideact if qideact_timeout is None else qideact_timeout, context)
        yield self._at("bearer", c.qicsgp(*credentials(self.config, context),
                                          timeout=t.simple).addressing(on))
        for command in stack_modes(False, t.simple):
            yield self._at("bearer", command.addressing(on))
        local_ip = yield self._open_context(context)
        self.info[f"local_ip{context or ''}"] = local_ip
        return local_ip

    @inlineCallbacks
    def reactivate(self, mux: bool, qideact_timeout: Optional[float] = None):
        """The contexts are gone but the module kept its settings (``+PDP DEACT``, a mute
        spell): AT+QIDEACT, then AT+QIREGAPP, AT+QIACT, AT+QILOCIP [, AT+QIDNSCFG], and the second
        context anew if it is in use -> BringUpResult."""
        self.mux = mux
        timeout = self.t.qideact if qideact_timeout is None else qideact_timeout
        yield self._deactivate(timeout, 0)
        local_ips = {0: (yield self._open_context(0))}
        for context in self._other_contexts():
            local_ips[context] = yield self.bring_up_context(context, timeout)
        self.info["local_ip"] = local_ips[0]
        return BringUpResult(local_ips[0], mux, dict(self.info), local_ips)

    @inlineCallbacks
    def sit_out_roaming(self, mux: bool):
        """Registered as roaming while up with ``roaming = no``: every context goes down
        (AT+QIDEACT), the registration wait holds until the module is home, then the contexts
        come back as after a lost one -> BringUpResult."""
        for context in sorted(self.stacks):
            yield self._deactivate(self.t.qideact, context)
        yield self._wait_registered()
        result = yield self.reactivate(mux)
        return result

    def _status_command(self, context: int):
        command = self.stacks[context].status_command(self.mux, self.t.simple)
        return command.addressing(self._selection(context))

    @inlineCallbacks
    def _deactivate(self, timeout: float, context: int):
        yield self._at("deactivate", commands.qideact(timeout).addressing(self._selection(context)))
        self.stacks[context].step("QIDEACT")

    @inlineCallbacks
    def _open_context(self, context: int):
        c, t = commands, self.t
        on, stack = self._selection(context), self.stacks[context]
        yield self._at("activate", c.qiregapp(t.regapp).addressing(on))
        stack.step("QIREGAPP")
        yield self._at("activate", c.qiact(t.qiact).addressing(on))
        stack.step("QIACT")
        local_ip = yield self._at("local-ip", c.qilocip(t.simple).addressing(on))
        stack.step("QILOCIP")
        if self.config.dns:
            # The module takes the network's DNS servers when the context comes up, so configured
            # ones are set after it, on every activation (app note §8.2).
            yield self._at("dns", c.qidnscfg(self.config.dns, t.simple).addressing(on))
        return local_ip

    @inlineCallbacks
    def _resync_stack_quietly(self):
        """After a failed stack step, learn the module's real state of every context (best
        effort)."""
        if self.mux is None:
            return
        for context, stack in sorted(self.stacks.items()):
            try:
                yield self._issue(self._status_command(context)).addCallback(stack.observed)
            except ATEngineError as error:
                self.log.warn("stack: state query after the failure failed too: {error}",
                              error=error)
