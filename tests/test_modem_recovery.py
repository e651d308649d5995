"""Recovery transcripts (task.Clock, exact bytes): +PDP DEACT, a reset module, a mute module and its
ladder, a lost port reopened with backoff, and sleep mode's DTR timing."""

import os
import random

import pytest
import serial

from twisted.internet.defer import fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.python.failure import Failure

from bridge.at import commands
from bridge.modem.modem import Modem
from bridge.modem.supervisor import RecoveryTimings
from bridge.modem.transport import ModemPort, TransportError
from tests.modem_harness import OK, PLAIN, ModemHarness

ESC_AT = b"\x1bAT"
MUX_STATE = (OK + b"\r\nSTATE: IP PROCESSING\r\n"
             + b'+QISTATE: 0,"","",,"INITIAL"\r\n'
             + b'+QISTATE: 1,"TCP","127.0.0.1",5000,"CONNECTED"\r\n'
             + b"".join(b'+QISTATE: %d,"","",,"INITIAL"\r\n' % n for n in range(2, 6)) + OK)
REACTIVATE = [(b"AT+QIDEACT", b"\r\nDEACT OK\r\n"), (b"AT+QIREGAPP", OK), (b"AT+QIACT", OK),
              (b"AT+QILOCIP", b"\r\n10.0.0.3\r\n")]
BOOT_BURST = b"\r\nRDY\r\n\r\n+CFUN: 1\r\n\r\n+CPIN: READY\r\n\r\nCall Ready\r\n\r\nSMS Ready\r\n"


class DtrTransport(StringTransport):
    """A serial-like transport that records every pyserial ``dtr`` value with the clock time."""

    def __init__(self, clock):
        super().__init__()
        self.clock = clock
        self.dtr = []

    def setDTR(self, asserted):
        self.dtr.append((self.clock.seconds(), asserted))


class SerialLike:
    """What ``SerialTransport.setDTR`` does, on a real pyserial port."""

    def __init__(self, line):
        self.line = line

    def setDTR(self, asserted):
        self.line.dtr = asserted


class RecoveryHarness(ModemHarness):
    """A persistent modem whose port opener can be told to fail (a device that is missing)."""

    def __init__(self, state_dir, *, reset=None, **config):
        super().__init__(state_dir, persistent=True, **config)
        self.missing = 0  # how many more opens fail
        self.opens = []  # clock time of every open attempt
        self.reset_runs = []
        self.transport = DtrTransport(self.clock)
        self.modem = Modem(self.clock, self.config, str(state_dir), on_fatal=self.fatal.append,
                           port_opener=self._open, rng=random.Random(5),
                           timings=RecoveryTimings(), run_command=reset or self._reset)
        self.modem.add_state_listener(lambda state, reason: self.states.append((state, reason)))

    def _open(self, reactor, config, protocol):
        self.opens.append(self.clock.seconds())
        if self.missing:
            self.missing -= 1
            return fail(TransportError("/dev/ttyFAKE: no such device"))
        protocol.makeConnection(self.transport)
        self.port = ModemPort("fake", self.transport)
        return succeed(self.port)

    def _reset(self, clock, argv, timeout):
        self.reset_runs.append((clock.seconds(), argv, timeout))
        return succeed(None)

    def silent(self, probes):
        """The module stays mute through ``probes`` resync probes (ESC, AT)."""
        for _ in range(probes):
            self.expect(ESC_AT)

    def counter(self, name, **labels):
        return self.modem.counters.get(name, **labels)


def harness(tmp_path, **options):
    return RecoveryHarness(tmp_path / "state", **options).up()


def test_pdp_deact_reactivates_the_context_with_exactly_four_commands(tmp_path):
    h = harness(tmp_path)
    waited = []
    with capturedLogs() as events:
        h.recv(b"\r\n+PDP DEACT\r\n")
    lines = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
    (line,) = [line for line in lines if "AT traffic saved to " in line]
    assert line.startswith("modem:main: context lost: PDP context deactivated by the network")
    assert all("AT+QIACT" not in line for line in lines)  # the ring is in the file only
    saved = line.split("; AT traffic saved to ")[1]
    assert saved.startswith(str(tmp_path / "state" / "dumps" / "modem-main-"))
    assert saved.endswith("-pdp_lost.log")
    assert "< b'+PDP DEACT'" in open(saved).read()  # the ring, with the URC that caused it
    assert h.states[-1] == ("down", "context lost: PDP context deactivated by the network "
                                    "(+PDP DEACT)")
    h.modem.when_ready().addCallback(waited.append)
    h.play(REACTIVATE)
    assert h.modem.ready and h.modem.local_ip == "10.0.0.3"
    assert h.modem.stack.state == "IP STATUS"
    assert h.states[-1] == ("ready", "local IP 10.0.0.3") and waited == [None]
    assert h.counter("pdp_lost") == 1 and h.counter("recovered", step="reactivate") == 1
    assert h.take() == b"AT+CSQ\r"  # next: the health poll, nothing else of the recovery


def test_a_successful_recovery_is_logged_at_info(tmp_path):
    h = harness(tmp_path)
    h.recv(b"\r\n+PDP DEACT\r\n")
    with capturedLogs() as events:
        h.play(REACTIVATE)
    (recovered,) = [e for e in events if "recovered after" in formatEvent(e)]
    assert recovered["log_level"] == LogLevel.info
    assert [formatEvent(e) for e in events if e["log_level"] > LogLevel.info] == []


def test_a_reactivated_context_gets_the_configured_dns_servers_again(tmp_path):
    h = RecoveryHarness(tmp_path / "state", dns=("1.1.1.1", "8.8.8.8"))
    dns = (b'AT+QIDNSCFG="1.1.1.1","8.8.8.8"', OK)
    h.up(PLAIN[:-1] + [dns, PLAIN[-1]])
    h.recv(b"\r\n+PDP DEACT\r\n")
    h.play(REACTIVATE + [dns])
    assert h.modem.ready and h.modem.local_ip == "10.0.0.3"
    assert h.take() == b"AT+CSQ\r"


def test_a_failed_reactivation_falls_back_to_a_full_bring_up_after_a_backoff(tmp_path):
    h = harness(tmp_path)
    h.recv(b"\r\n+PDP DEACT\r\n")
    h.play(REACTIVATE[:2] + [(b"AT+QIACT", b"\r\nERROR\r\n")])
    failed_at = h.clock.seconds()
    h.play(PLAIN)
    assert 5.0 * 0.75 <= h.times[-len(PLAIN)] - failed_at <= 5.0
    assert h.modem.ready and h.counter("recovered", step="bring-up") == 1


def acquired(modem) -> int:
    """A socket index, taken at once (the modem is ready and one is free)."""
    taken = []
    modem.sockets.acquire().addCallback(taken.append)
    return taken[0]


def test_rdy_out_of_the_blue_runs_the_full_bring_up_once(tmp_path):
    h = harness(tmp_path)
    slot = acquired(h.modem)
    h.recv(BOOT_BURST)  # the whole burst: only its first line counts
    assert h.states[-1] == ("down", "module reset: the module restarted (RDY)")
    h.modem.sockets.release(slot)
    h.play(PLAIN)
    assert h.modem.ready and h.states[-1][0] == "ready"
    assert h.counter("module_reset") == 1 and h.counter("recovered", step="bring-up") == 1


def test_call_ready_alone_only_checks_the_settings(tmp_path):
    h = harness(tmp_path)
    h.recv(b"\r\nCall Ready\r\n")
    h.expect(b"AT+CMEE?", b"\r\n+CMEE: 2\r\n" + OK)
    assert h.modem.ready and h.counter("module_reset") == 0
    h.recv(b"\r\nSMS Ready\r\n")
    h.expect(b"AT+CMEE?", b"\r\n+CMEE: 1\r\n" + OK)  # back at its default: it was reset
    assert not h.modem.ready and h.counter("module_reset") == 1
    assert "AT+CMEE is 1 instead of 2" in h.states[-1][1]
    h.play(PLAIN)
    assert h.modem.ready


def test_a_reset_found_by_the_settings_check_forgets_the_side(tmp_path):
    """Bring-up writes AT+QIFGCNT=0 but never AT+QISRVC: after a reset found by AT+CMEE? (the
    module back at AT+QISRVC=1), a server-side command must select its side again, or its
    payload would reach the client socket of the same index."""
    h = harness(tmp_path)
    h.modem.serves = True
    h.modem.issue(commands.qisack(socket=2).addressing(h.modem.selection(0, server=True)))
    h.expect(b"AT+QISRVC=2", OK)
    h.expect(b"AT+QISACK=2", b"\r\n+QISACK: 0, 0, 0\r\n" + OK)
    h.recv(b"\r\nCall Ready\r\n")
    h.expect(b"AT+CMEE?", b"\r\n+CMEE: 1\r\n" + OK)  # reset: every setting at its default
    h.play(PLAIN)
    assert h.modem.ready
    h.modem.issue(commands.qisend(b"x", socket=2).addressing(h.modem.selection(0, server=True)))
    assert h.take() == b"AT+QISRVC=2\r"


def test_a_mute_module_climbs_the_ladder_and_recovers_at_its_resync_step(tmp_path):
    h = harness(tmp_path)
    h.modem.issue(commands.csq()).addErrback(lambda _: None)
    h.expect(b"AT+CSQ")  # no answer: 5 s, then three resync probes 2 s apart
    h.silent(3)
    h.silent(3)  # step resync: the engine's ESC, AT
    assert h.states[-1] == ("down", "module mute: the module does not answer AT")
    h.silent(3)  # step reactivate: AT+QIDEACT waits behind a resync that fails
    h.silent(3)  # step restart: AT+CFUN=1,1 the same
    round_over = h.times[-1] + 2.0
    h.expect(ESC_AT, OK)  # round 2 starts after the backoff; the module answers again
    assert 30.0 * 0.75 <= h.times[-1] - round_over <= 30.0
    h.play([(b"AT", OK), (b"AT+CMEE?", b"\r\n+CMEE: 2\r\n" + OK), (b"AT+QISTATE", MUX_STATE),
            (b"AT+QICLOSE=1", b"\r\n1, CLOSE OK\r\n")])  # socket 1 of a link that died mute
    assert h.modem.ready and h.modem.local_ip == "10.0.0.2"
    assert h.counter("module_mute") == 1
    assert h.counter("recovery_step_result", step="restart", outcome="failed") == 1
    assert h.counter("recovered", step="resync") == 1


def test_leftovers_after_a_mute_spell_are_closed_on_both_sides_of_a_modem_that_serves(tmp_path):
    """AT+QISTATE does not say whether socket 1 is a client link's or a server-accepted
    client's: each side is closed, addressed, so neither AT+QICLOSE acts on whatever side the
    module happened to have selected. Then the listeners that survived too (AT+QICLOSE on the
    server side), so that "ready" finds no port still listening."""
    h = harness(tmp_path)
    h.modem.serves = True
    h.modem.issue(commands.csq()).addErrback(lambda _: None)
    h.expect(b"AT+CSQ")
    h.silent(3)
    h.expect(ESC_AT, OK)  # the ladder's resync step: the module answers again
    h.play([(b"AT", OK), (b"AT+CMEE?", b"\r\n+CMEE: 2\r\n" + OK), (b"AT+QISTATE", MUX_STATE),
            (b"AT+QISRVC=1", OK), (b"AT+QICLOSE=1", b"\r\n1, CLOSE OK\r\n"),
            (b"AT+QISRVC=2", OK), (b"AT+QICLOSE=1", b"\r\nERROR\r\n"),
            (b"AT+QICLOSE", b"\r\nCLOSE OK\r\n")])
    assert h.modem.ready


def test_a_mute_spell_with_no_listener_left_is_recovered_all_the_same(tmp_path):
    """The listeners' AT+QICLOSE answers ERROR when nothing listens (the servers had not
    listened yet): the resync step still succeeds."""
    h = harness(tmp_path)
    h.modem.serves = True
    h.modem.issue(commands.csq()).addErrback(lambda _: None)
    h.expect(b"AT+CSQ")
    h.silent(3)
    h.expect(ESC_AT, OK)
    h.play([(b"AT", OK), (b"AT+CMEE?", b"\r\n+CMEE: 2\r\n" + OK),
            (b"AT+QISTATE", MUX_STATE.replace(b'"TCP","127.0.0.1",5000,"CONNECTED"',
                                              b'"","",,"INITIAL"')),
            (b"AT+QISRVC=2", OK), (b"AT+QICLOSE", b"\r\nERROR\r\n")])
    assert h.modem.ready and h.counter("recovered", step="resync") == 1


def test_the_restart_step_sends_cfun_then_brings_the_rebooted_module_up(tmp_path):
    h = harness(tmp_path)
    h.modem.issue(commands.csq()).addErrback(lambda _: None)
    h.expect(b"AT+CSQ")
    h.silent(3 + 3 + 3)  # detection, step resync, step reactivate
    h.expect(ESC_AT, OK)  # step restart: the module answers the resync...
    h.expect(b"AT+CFUN=1,1", OK + BOOT_BURST)  # ... and reboots; its boot URCs are expected
    rebooted = h.times[-1]
    h.play(PLAIN)
    assert h.times[-len(PLAIN)] - rebooted == RecoveryTimings().reboot_wait
    assert h.modem.ready
    assert h.counter("recovered", step="restart") == 1 and h.counter("module_reset") == 0


def test_the_reset_command_is_the_last_step(tmp_path):
    h = harness(tmp_path, reset_command="/usr/local/bin/power-cycle main")
    h.modem.issue(commands.csq()).addErrback(lambda _: None)
    h.expect(b"AT+CSQ")
    h.silent(3 + 3 + 3 + 3)  # detection, resync, reactivate, restart
    h.expect(ESC_AT, OK)  # after the reset command and the reboot wait, the engine resyncs
    ((ran_at, argv, timeout),) = h.reset_runs
    assert argv == ("/usr/local/bin/power-cycle", "main") and timeout == 60.0
    assert h.times[-1] - ran_at == RecoveryTimings().reboot_wait
    h.play(PLAIN)
    assert h.counter("recovered", step="reset-command") == 1


def test_a_lost_port_is_reopened_with_backoff_until_the_device_is_back(tmp_path):
    h = harness(tmp_path)
    h.missing = 3
    h.transport.loseConnection()
    h.modem.protocol.connectionLost(Failure(ConnectionDone()))  # a hangup looks clean
    assert h.states[-1] == ("down", "port lost: Connection was closed cleanly.")
    assert h.modem.healthy()  # recovering: the watchdog keeps the daemon
    h.transport = DtrTransport(h.clock)
    h.play(PLAIN)
    assert len(h.opens) == 5  # the first open, three misses, the reopen
    gaps = [b - a for a, b in zip(h.opens[1:], h.opens[2:])]  # 2nd, 3rd, 4th backoff delay
    for gap, base in zip(gaps, (2.0, 4.0, 8.0)):
        assert 0.75 * base <= gap <= base
    assert h.modem.ready and h.counter("port_lost") == 1
    assert h.counter("recovered", step="bring-up") == 1


def test_sleep_drives_dtr_and_waits_20_ms_before_each_command(tmp_path):
    h = harness(tmp_path, sleep=True)
    h.expect(b"AT+QSCLK=1", OK)
    slept_at = h.clock.seconds()
    assert h.transport.dtr == [(slept_at, False)]  # deasserted: the module's pin HIGH
    h.modem.issue(commands.csq())
    h.expect(b"AT+CSQ", b"\r\n+CSQ: 20,0\r\n" + OK)
    woke_at = h.transport.dtr[1][0]
    assert h.transport.dtr[1][1] is True and h.times[-1] - woke_at == pytest.approx(0.020)
    assert h.transport.dtr[2] == (h.clock.seconds(), False)  # idle again: asleep
    slot = acquired(h.modem)  # a link opens: awake for as long as it lives
    assert h.transport.dtr[-1] == (h.clock.seconds(), True)
    h.modem.sockets.release(slot)
    assert h.transport.dtr[-1] == (h.clock.seconds(), False)


def test_a_pty_cannot_drive_dtr_and_says_so_once(tmp_path):
    master, slave = os.openpty()
    line = serial.Serial(os.ttyname(slave))
    try:
        port = ModemPort("pty", SerialLike(line))
        with capturedLogs() as events:
            assert port.set_dtr(False) is False
            assert port.set_dtr(True) is False
        (warning,) = [e for e in events if e["log_level"] == LogLevel.warn]
        assert "cannot drive DTR" in formatEvent(warning)
    finally:
        line.close()
        os.close(master)
        os.close(slave)
