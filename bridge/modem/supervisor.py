"""Bringing the module back without a human: one recovery procedure at a time.

What went wrong decides what runs (docs/at-dialect.md §3, §8.4, §8.7, §8.9, §12.8;
app note §6.3):

- the context was lost (``+PDP DEACT``): AT+QIDEACT, then AT+QIREGAPP, AT+QIACT, AT+QILOCIP
  (``BringUp.reactivate``); the module kept its settings;
- one of two PDP contexts was lost, the other carries on: that one alone is brought back
  (``BringUp.bring_up_context``), tried again after a backoff while it fails (the other one lost
  meanwhile comes back first, not instead; lost while that one's recovery runs: the whole modem).
  A ``+PDP DEACT`` while a procedure runs is asked about (``Modem.find_lost_context``) once it is
  done;
- the module was reset (``RDY`` or ``+CFUN:`` out of the blue, or AT+CMEE? found back at its
  default after a weaker sign such as ``Call Ready``): the full bring-up;
- the module is mute (the engine's resync after a timeout failed): the :class:`RecoveryLadder`
  resync -> AT+QIDEACT (60 s) and re-activation -> AT+CFUN=1,1 and bring-up -> the modem's
  ``reset_command`` and bring-up -> again after a backoff;
- the port was lost (read error, EOF, a hangup reported as a clean close): reopen with backoff
  until the device is back (the opener respawns a ``sim`` child), then the full bring-up;
- the module registered as roaming with ``roaming = no`` (bridge.modem.roaming): AT+QIDEACT, the
  registration wait until home, then re-activation (``BringUp.sit_out_roaming``).

A procedure that fails without the module going mute (no coverage, SIM busy ...) is retried as a
full bring-up after a backoff. Every transition is one log line with its cause (naming the file
the AT traffic ring was saved to, rate-limited) and a count in the modem's
:class:`~bridge.counters.Counters`: ``pdp_lost``, ``module_reset``, ``module_mute``,
``port_lost``, ``roaming``, ``recovered{step}`` (the ladder counts its own).
"""

import random
from dataclasses import dataclass
from functools import partial
from typing import Callable, Optional

from twisted.internet.defer import CancelledError, Deferred, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.logger import Logger

from bridge.at import commands
from bridge.at.errors import ATEngineError, ATError
from bridge.at.ring import log_event
from bridge.config_values import shell_words
from bridge.errors import SimLocked
from bridge.modem.bringup import BringUpResult
from bridge.modem.recovery import Backoff, RecoveryLadder, Step, run_reset_command

#: AT+CMEE as bring-up leaves it; a module that reports anything else has been reset.
CMEE_SET = 2
#: States of a mux socket line (AT+QISTATE) that hold a module socket.
FREE_SOCKET_STATES = ("INITIAL", "")
SINGLE_LINK_BUSY = ("CONNECT OK", "TCP CONNECTING", "UDP CONNECTING")


@dataclass(frozen=True)
class RecoveryTimings:
    """How long recovery waits (tests pass shorter ones)."""

    reboot_wait: float = 5.0  #: after AT+CFUN=1,1 or the reset command, before bring-up syncs
    qideact: float = 60.0  #: the ladder's AT+QIDEACT limit (the app note allows 2.5 min)
    reset_command: float = 60.0  #: the external reset command's limit
    reopen_initial: float = 1.0  #: first delay before reopening a lost port
    reopen_maximum: float = 30.0
    retry_initial: float = 5.0  #: first delay before a failed bring-up is tried again
    retry_maximum: float = 300.0
    ladder_initial: float = 30.0  #: first delay between two rounds of the ladder
    ladder_maximum: float = 600.0


@dataclass
class RecoveryRecord:
    """The last time the module was lost (what ``cellbridge status`` shows): the first cause
    of the outage, when it began and when the module was back (None while it is not)."""

    cause: str
    started: float
    recovered: Optional[float] = None


def cmee_value(reply) -> Optional[int]:
    """``+CMEE: 2`` -> 2 (None if the reply has no such line)."""
    for line in reply.lines:
        if line.startswith("+CMEE:"):
            return int(line.split(":", 1)[1].strip() or -1)
    return None


class Supervisor:
    """Runs bring-up and every recovery for one :class:`~bridge.modem.modem.Modem`.

    Uses of the modem: ``reactor``, ``name``, ``config``, ``protocol`` (the engine, may be None),
    ``timeouts``, ``pacing``, ``resync_budget``, ``stack``, ``persistent``, ``ring``,
    ``new_bring_up()`` -> BringUp, ``came_up(result)``, ``mark_down(reason)``, ``fatal(error)``,
    ``reopen_port()`` -> Deferred (fails while the device is missing), ``close_port()``,
    ``counters``, ``mux``, ``local_ip``, ``local_ips``, ``info``, ``contexts_in_use``,
    ``stacks``, ``query_stack(context)``, ``selection(context, server)``, ``serves``, ``ready``,
    ``contexts_down``, ``mark_context_down(context, reason)``,
    ``context_came_up(context, local_ip)``, ``find_lost_context()``.
    """

    #: the job that brings one PDP context back alone
    CONTEXT_JOB = "reactivate-context"

    log = Logger()

    def __init__(self, modem, timings: RecoveryTimings = RecoveryTimings(),
                 rng: Optional[random.Random] = None,
                 run_command: Callable = run_reset_command) -> None:
        self.modem = modem
        self.clock = modem.reactor
        self.timings = timings
        self._rng = rng or random.Random()
        self._run_command = run_command
        self._retry_backoff = Backoff(self._rng, timings.retry_initial, timings.retry_maximum)
        self._reopen_backoff = Backoff(self._rng, timings.reopen_initial, timings.reopen_maximum)
        self._job: Optional[Deferred] = None
        #: what runs: bring-up, reactivate, ladder, reopen, reactivate-context
        self.job: Optional[str] = None
        self._context: Optional[int] = None  # the context the reactivate-context job is at
        self._timer = None
        self._since: Optional[float] = None  # when the module was lost (for "recovered after")
        self._expect_boot = False  # AT+CFUN=1,1 or the reset command: boot URCs are ours
        self._result = None  # what the ladder's successful step brought up
        self._pdp_deact_seen = False  # during the job, with two contexts: ask which once done
        self.last_recovery: Optional[RecoveryRecord] = None

    @property
    def recovering(self) -> bool:
        """A procedure runs or is scheduled (the systemd watchdog keeps the daemon meanwhile)."""
        return self._job is not None or (self._timer is not None and self._timer.active())

    def stop(self) -> None:
        self._cancel()

    # -- causes -----------------------------------------------------------------------------------

    def start(self) -> None:
        """The port is open: the first bring-up."""
        self._run("bring-up", self._bring_up)

    def context_lost(self, cause: str) -> None:
        if self.job is not None and self.job != self.CONTEXT_JOB:
            return  # whatever runs re-activates the context (or reboots the module) anyway
        self._transition("pdp_lost", f"context lost: {cause}; re-activating it")
        self._run("reactivate", self._reactivate)

    def context_down(self, context: int, cause: str) -> None:
        """PDP ``context`` alone was lost; the other one carries on (or waits for its retry, which
        this recovery then does right after this context)."""
        if self.job == self.CONTEXT_JOB and self._context != context:
            self.context_lost(f"{cause}, while context {self._context} was down too")
            return
        if self.job is not None or context in self.modem.contexts_down:
            return  # whatever runs (or the retry it waits for) brings this context back
        self._transition("pdp_lost", f"context {context} lost: {cause}; re-activating it alone",
                         context)
        self._run_contexts()

    def ask_which_context_when_done(self) -> None:
        """``+PDP DEACT`` on a modem with two contexts while a procedure runs: asked now, the
        module would answer about contexts the procedure has not finished activating (and a
        context it already brought back would be lost unnoticed), so the modem asks once the
        procedure is done (``find_lost_context``)."""
        self._pdp_deact_seen = True

    def module_reset(self, cause: str) -> None:
        if self._expect_boot or self.job == "bring-up" or self.job == "reopen":
            return
        self._transition("module_reset", f"module reset: {cause}; full bring-up again")
        self._run("bring-up", self._bring_up)

    def module_mute(self, cause: str) -> None:
        if self.job in ("ladder", "reopen"):
            return  # the ladder's own steps go through mute spells
        self._transition("module_mute", f"module mute: {cause}; starting the recovery ladder")
        self._run_ladder(cause)

    def roaming(self, cause: str) -> None:
        """Registered as roaming while data is up, and ``roaming = no``: data goes down until
        the module is home (a bring-up under way waits for home by itself)."""
        if self.job in ("roaming", "bring-up", "reopen"):
            return
        self._transition("roaming", f"{cause}; data down until the module is registered at home")
        self._run("roaming", self._sit_out_roaming)

    def port_lost(self, cause: str) -> None:
        self._transition("port_lost", f"port lost: {cause}; reopening it")
        self._cancel()
        self.job = "reopen"
        self.modem.close_port().addBoth(lambda _: self._schedule_reopen())

    @inlineCallbacks
    def check_settings(self, cause: str):
        """A weak sign of a reset (``Call Ready``, a resync): ask AT+CMEE? whether our settings
        are still in effect; a module back at its default was reset."""
        engine = self.modem.protocol
        if engine is None or self.job is not None:
            return
        try:
            reply = yield engine.issue(commands.query("+CMEE", self.modem.timeouts.simple))
        except ATEngineError as error:
            self.log.info("{name}: settings check after {cause} failed: {error}",
                          name=self.modem.name, cause=cause, error=error)
            return
        value = cmee_value(reply)
        if value != CMEE_SET:
            self.module_reset(f"{cause}, and AT+CMEE is {value} instead of {CMEE_SET}")

    # -- running one procedure --------------------------------------------------------------------

    def _transition(self, counter: str, text: str, context: Optional[int] = None) -> None:
        """Count, log (naming the saved traffic ring), and mark the modem (or only ``context``)
        down."""
        self.modem.counters.incr(counter)
        if self._since is None:
            self._since = self.clock.seconds()
            self.last_recovery = RecoveryRecord(text.split(";")[0], self._since)
        log_event(self.log, self.modem.ring, counter, "{name}: {text}", name=self.modem.name,
                  text=text)
        if context is None:
            self.modem.mark_down(text.split(";")[0])
        else:
            self.modem.mark_context_down(context, text.split(";")[0])

    def _run(self, kind: str, procedure: Callable[[], Deferred],
             came_up: Optional[Callable] = None) -> None:
        """Run ``procedure``; its result goes to ``came_up`` (default: the modem's)."""
        self._cancel()
        self.job = kind
        job = self._job = procedure()
        job.addCallbacks(self._up, self._failed, callbackArgs=(job, kind, came_up),
                         errbackArgs=(job,))

    def _run_contexts(self) -> None:
        """Bring back every context that is down alone; each is reported as it comes back."""
        self._run(self.CONTEXT_JOB, self._reactivate_contexts, lambda _: None)

    def _run_ladder(self, cause: str) -> None:
        self._cancel()
        self.job = "ladder"
        t, timings = self.modem.timeouts, self.timings
        budget = self._bring_up_budget()
        steps = [Step("resync", self._resync_and_settle, self.modem.resync_budget + budget),
                 Step("reactivate", lambda: self._reactivate(timings.qideact),
                      self.modem.resync_budget + timings.qideact + t.regapp + t.qiact + t.simple),
                 Step("restart", self._restart,
                      self.modem.resync_budget + t.simple + timings.reboot_wait + budget)]
        if self.modem.config.reset_command:
            steps.append(Step("reset-command", self._power_cycle,
                              timings.reset_command + timings.reboot_wait + budget))
        ladder = RecoveryLadder(self.clock, steps,
                                Backoff(self._rng, timings.ladder_initial, timings.ladder_maximum),
                                self.modem.counters, self._dump_for_step)
        self._result = None
        job = self._job = ladder.run(cause)
        job.addCallbacks(lambda step: self._up(self._result, job, None), self._failed,
                         errbackArgs=(job,))

    def _up(self, result, job: Deferred, counted_as: Optional[str],
            came_up: Optional[Callable] = None) -> None:
        if job is not self._job:
            return
        self._job, self.job, self._expect_boot = None, None, False
        self._retry_backoff.reset()
        if self._since is not None:
            if counted_as is not None:  # the ladder counted its own success
                self.modem.counters.incr("recovered", step=counted_as)
            self.log.info("{name}: recovered after {elapsed:.1f} s", name=self.modem.name,
                          elapsed=self.clock.seconds() - self._since)
            self.last_recovery.recovered = self.clock.seconds()
            self._since = None
        (came_up or self.modem.came_up)(result)
        self._ask_about_pdp_deact()

    def _failed(self, failure, job: Deferred) -> None:
        if job is not self._job or failure.check(CancelledError):
            return
        kind = self.job
        self._job, self.job, self._expect_boot = None, None, False
        error = failure.value
        if isinstance(error, SimLocked) or not self.modem.persistent:
            self.modem.fatal(error)
            return
        delay = self._retry_backoff.next_delay()
        if kind == self.CONTEXT_JOB:  # the other context still carries: not a full bring-up
            again, retry = f"context {self._context} re-activation", self._run_contexts
        else:
            again, retry = "bring-up", partial(self._run, "bring-up", self._bring_up)
        self.log.error("{name}: {error}; {again} again in {delay:.1f} s", name=self.modem.name,
                       error=error, again=again, delay=delay)
        self._timer = self.clock.callLater(delay, retry)
        self._ask_about_pdp_deact()

    def _ask_about_pdp_deact(self) -> None:
        """The job is done; a ``+PDP DEACT`` came meanwhile: which context did it take? (Not
        while the modem is down: the retried bring-up brings every context back.)"""
        seen, self._pdp_deact_seen = self._pdp_deact_seen, False
        if seen and self.modem.ready:
            self.modem.find_lost_context()

    def _cancel(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        job, self._job, self.job = self._job, None, None
        self._expect_boot = self._pdp_deact_seen = False
        if job is not None:
            job.addErrback(lambda failure: failure.trap(CancelledError))
            job.cancel()

    def _dump_for_step(self, step: str, cause: str) -> None:
        """The AT traffic before each step of the ladder, unless it was saved a moment ago."""
        ring = self.modem.ring
        saved = ring.recovery_dump(f"step-{step}") if ring is not None else None
        if saved is not None:
            self.log.warn("{name}: before recovery step {step}: {saved}", name=self.modem.name,
                          step=step, saved=saved)

    # -- the port ---------------------------------------------------------------------------------

    def _schedule_reopen(self) -> None:
        if self.job != "reopen":
            return  # stopped meanwhile
        delay = self._reopen_backoff.next_delay()
        self.log.info("{name}: reopening the port in {delay:.1f} s", name=self.modem.name,
                      delay=delay)
        self._timer = self.clock.callLater(delay, self._reopen)

    def _reopen(self) -> None:
        self._timer = None
        self.modem.reopen_port().addCallbacks(self._reopened, self._reopen_failed)

    def _reopened(self, _) -> None:
        if self.job != "reopen":
            return
        self._reopen_backoff.reset()
        self._run("bring-up", self._bring_up)

    def _reopen_failed(self, failure) -> None:
        if self.job != "reopen":
            return
        self.log.info("{name}: port still missing: {why}", name=self.modem.name,
                      why=failure.getErrorMessage())
        self._schedule_reopen()

    # -- procedures: each fires with a BringUpResult once the module is usable ---------------------

    def _bring_up(self) -> Deferred:
        return self.modem.new_bring_up().run()

    def _reactivate(self, qideact_timeout: Optional[float] = None) -> Deferred:
        run = self._run_on_known_module()
        return run.reactivate(self.modem.mux, qideact_timeout).addCallback(self._keep)

    def _sit_out_roaming(self) -> Deferred:
        return self._run_on_known_module().sit_out_roaming(self.modem.mux)

    def _run_on_known_module(self):
        """A BringUp for a module that kept its settings: it starts from what the modem knows
        of it (``info``), so status keeps the identity a full bring-up collected."""
        run = self.modem.new_bring_up()
        run.info.update(self.modem.info)
        return run

    @inlineCallbacks
    def _reactivate_contexts(self):
        for context in sorted(self.modem.contexts_down):
            self._context = context
            local_ip = yield self.modem.new_bring_up().bring_up_context(context)
            self.modem.context_came_up(context, local_ip)

    def _keep(self, result):
        self._result = result  # the ladder reports only the step's name
        return result

    @inlineCallbacks
    def _resync_and_settle(self):
        """ESC and AT (the desynced engine sends them first), then whatever the module needs."""
        engine, t = self.modem.protocol, self.modem.timeouts
        yield engine.issue(commands.at(self.modem.resync_budget + t.simple))
        reply = yield engine.issue(commands.query("+CMEE", t.simple))
        if cmee_value(reply) != CMEE_SET:
            self.log.warn("{name}: the module was reset while mute; full bring-up",
                          name=self.modem.name)
            result = yield self._bring_up()
            return self._keep(result)
        states = {}
        for context in sorted(self.modem.contexts_in_use):
            states[context] = yield self.modem.query_stack(context)
        if not all(self.modem.stacks[context].context_up for context in states):
            result = yield self._reactivate()
            return result
        for context, state in states.items():
            yield self._close_leftovers(context, state)
        return self._keep(BringUpResult(self.modem.local_ip, self.modem.mux, dict(self.modem.info),
                                        dict(self.modem.local_ips)))

    @inlineCallbacks
    def _close_leftovers(self, context: int, state):
        """Module sockets of links that died while the module was mute still hold their index.
        AT+QISTATE does not say whether an index is a client socket or a server-accepted one
        (docs/at-dialect.md §4.7): on a modem that serves, both sides are closed, each
        addressed (AT+QISRVC), and the side with nothing there answers ERROR."""
        engine, modem = self.modem.protocol, self.modem
        if modem.mux:
            busy = [s.socket for s in state.sockets if s.state not in FREE_SOCKET_STATES]
        else:
            busy = [None] if state.state in SINGLE_LINK_BUSY else []
        sides = (False, True) if modem.serves else (False,)
        for socket in busy:
            for server in sides:
                try:
                    yield engine.issue(commands.qiclose(socket, modem.timeouts.qiclose)
                                       .addressing(modem.selection(context, server)))
                except ATEngineError as error:
                    self.log.info("{name}: closing leftover {side} socket {socket}: {error}",
                                  name=modem.name, side="server" if server else "client",
                                  socket=socket, error=error)
        if modem.serves:
            yield self._close_listeners(context)

    @inlineCallbacks
    def _close_listeners(self, context: int):
        """The module's listeners outlived the mute spell as well, and "ready" makes every server
        listen again, which AT+QISERVER refuses (ERROR) while its port still listens. So they are
        closed, all at once (AT+QICLOSE without an index on the server side, app note §3.4 step
        4), and each server listens afresh, as after any other recovery."""
        close = commands.qiclose(None, self.modem.timeouts.qiclose)
        try:
            yield self.modem.protocol.issue(close.addressing(self.modem.selection(context, True)))
        except ATError:
            pass  # nothing listened

    @inlineCallbacks
    def _restart(self):
        """AT+CFUN=1,1 reboots the module; its boot URCs are expected, then the full bring-up."""
        self._expect_boot = True
        # Queued behind the engine's resync probes: its limit covers them too.
        limit = self.modem.resync_budget + self.modem.timeouts.simple
        yield self.modem.protocol.issue(commands.cfun(1, reset=True, timeout=limit))
        result = yield self._after_reboot()
        return result

    @inlineCallbacks
    def _power_cycle(self):
        """The modem's ``reset_command`` (e.g. a GPIO power-cycle), then the full bring-up."""
        self._expect_boot = True
        argv = shell_words(self.modem.config.reset_command)
        yield self._run_command(self.clock, argv, self.timings.reset_command)
        result = yield self._after_reboot()
        return result

    @inlineCallbacks
    def _after_reboot(self):
        yield deferLater(self.clock, self.timings.reboot_wait, lambda: None)
        result = yield self._bring_up()
        return self._keep(result)

    def _bring_up_budget(self) -> float:
        """An upper bound for one full bring-up (the ladder's step timeouts contain one)."""
        t, pacing = self.modem.timeouts, self.modem.pacing
        return (pacing.sync_time + pacing.sim_busy_tries * (t.pin + pacing.sim_busy_pause)
                + self.modem.config.registration_timeout + 2 * t.simple + t.attach + t.qideact
                + t.regapp + t.qiact + 20 * t.simple)

