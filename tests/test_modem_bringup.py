"""Bring-up transcripts: exact command sequence, PIN handling, registration, sync, failures."""

import os
from dataclasses import replace

import pytest
from twisted.internet.defer import fail
from twisted.internet.task import Clock
from twisted.logger import capturedLogs

from bridge.at import commands
from bridge.at.commands import DEFAULT_TIMEOUTS, Timeouts
from bridge.at.errors import CommandTimeout
from bridge.config import ModemConfig, load_config
from bridge.errors import SimLocked
from bridge.modem.bringup import BringUp, BringUpFailed
from bridge.modem.modem import Modem
from bridge.modem.pinstore import PinStore
from bridge.modem.stack import StackMachine
from tests.modem_harness import (ACTIVATE, AFTER_SIM, ATTACH, BEARER, IDENTITY, OK, PLAIN, REGISTERED,
                                 SIM_READY, SYNC, InlineThreadsClock, ModemHarness,
                                 transparent, transparent_bearer)

SIM_PIN = [(b"AT+CPIN?", b"\r\n+CPIN: SIM PIN\r\n" + OK)]


def harness(tmp_path, **config):
    return ModemHarness(tmp_path / "state", **config)


def test_plain_bring_up_sends_exactly_the_documented_sequence(tmp_path):
    h = harness(tmp_path).up(PLAIN)
    modem = h.modem
    assert modem.local_ip == "10.0.0.2"
    assert modem.stack.state == "IP STATUS"
    assert h.states == [("ready", "local IP 10.0.0.2")]
    assert modem.info == {"model": "Quectel_Ltd Quectel_M95", "firmware": "M95FAR02A08",
                          "imei": "861234567890125", "sim": "READY", "registration": "home",
                          "iccid": "89860012345678901234", "imsi": "001010123456789",
                          "operator": "SIM NET", "signal": "-63 dBm (CSQ 25,0)", "csq": 25, "signal_dbm": -63,
                          "local_ip": "10.0.0.2"}
    fired = []
    modem.when_ready().addCallback(fired.append)
    assert fired == [None]


def test_transparent_push_rtscts_bring_up(tmp_path):
    h = harness(tmp_path, mode="transparent", receive="push", rtscts=True,
                username="user", password="s3cret")
    bearer = transparent_bearer(b"AT+QITCFG=3,2,1460,1", credentials=b'"user","s3cret"')
    h.up(SYNC + [(b"AT+IFC=2,2", OK)] + IDENTITY + SIM_READY + REGISTERED + ATTACH + bearer
         + ACTIVATE)
    assert "s3cret" not in h.modem.protocol.ring.dump()


@pytest.mark.parametrize("options, data_mode", [
    ({}, [b"AT+QITCFG=3,2,1460,1"]),  # the power-up packetisation, +++ on
    ({"packet_wait": 2.0, "packet_size": 1}, [b"AT+QITCFG=3,10,1,1"]),
    ({"packet_wait": 0.2, "packet_size": 512}, [b"AT+QITCFG=3,1,512,1"]),
    ({"dtr_escape": True}, [b"AT+QITCFG=3,2,1460,0", b"AT&D1"]),  # +++ off: DTR alone escapes
    ({"dcd": True}, [b"AT+QITCFG=3,2,1460,1", b"AT&C1"]),
    ({"packet_wait": 1.4, "dtr_escape": True, "dcd": True},
     [b"AT+QITCFG=3,7,1460,0", b"AT&D1", b"AT&C1"]),
])
def test_transparent_bring_up_sets_packetisation_dtr_and_dcd_after_qimode(tmp_path, options,
                                                                         data_mode):
    h = harness(tmp_path, mode="transparent", receive="push", **options)
    h.up(transparent(*data_mode))


def test_a_mux_modem_ignores_the_transparent_keys(tmp_path):
    harness(tmp_path, packet_wait=1.0, packet_size=100, dtr_escape=True, dcd=True).up(PLAIN)


def test_a_refused_data_mode_setting_fails_bring_up_at_its_step(tmp_path):
    h = harness(tmp_path, mode="transparent", receive="push", dtr_escape=True).start()
    h.play(SYNC + IDENTITY + SIM_READY + REGISTERED + ATTACH
           + transparent_bearer(b"AT+QITCFG=3,2,1460,0")[:-1] + [(b"AT&D1", b"\r\nERROR\r\n")])
    h.expect(b"AT+QISTAT")  # what the module's stack is in after the failure (best effort)
    h.recv(OK + b"\r\nSTATE: IP INITIAL\r\n")
    (error,) = h.fatal
    assert isinstance(error, BringUpFailed) and error.step == "data-mode"
    assert str(error) == "bring-up failed at step 'data-mode': AT&D1: ERROR"


@pytest.mark.parametrize("servers, line", [
    (("1.1.1.1", "8.8.8.8"), b'AT+QIDNSCFG="1.1.1.1","8.8.8.8"'),
    (("9.9.9.9",), b'AT+QIDNSCFG="9.9.9.9"'),
])
def test_configured_dns_servers_are_set_once_the_context_is_up(tmp_path, servers, line):
    """After AT+QILOCIP: activation hands the module the network's servers (app note §8.2)."""
    h = harness(tmp_path, dns=servers)
    local_ip, signal = ACTIVATE[2:]
    h.up(SYNC + IDENTITY + SIM_READY + REGISTERED + ATTACH + BEARER + ACTIVATE[:2]
         + [local_ip, (line, OK), signal])


def test_a_refused_dns_setting_fails_bring_up_at_the_dns_step(tmp_path):
    h = harness(tmp_path, dns=("1.1.1.1",)).start()
    h.play(SYNC + IDENTITY + SIM_READY + REGISTERED + ATTACH + BEARER + ACTIVATE[:3]
           + [(b'AT+QIDNSCFG="1.1.1.1"', b"\r\nERROR\r\n")])
    h.expect(b"AT+QISTATE")  # what the module's stack is in after the failure (best effort)
    h.recv(b"\r\nERROR\r\n")
    (error,) = h.fatal
    assert isinstance(error, BringUpFailed) and error.step == "dns"
    assert str(error) == 'bring-up failed at step \'dns\': AT+QIDNSCFG="1.1.1.1": ERROR'


def test_sync_retries_until_an_autobauding_module_answers(tmp_path):
    h = harness(tmp_path).start()
    h.expect(b"AT")  # silent: the module is still learning the baud rate
    assert h.take() == b"\x1bAT\r"  # the engine resyncs after 2 s on the wire
    h.recv(OK)
    h.play([(b"AT", OK)] + PLAIN[1:])
    assert h.modem.ready
    assert h.times[1] - h.times[0] == 2.0


def test_sync_gives_up_after_its_time_budget(tmp_path):
    h = harness(tmp_path).start()
    while h.take():
        pass
    (error,) = h.fatal
    assert isinstance(error, BringUpFailed) and error.step == "sync"
    assert h.clock.seconds() - 1000.0 >= 30.0


def test_pin_is_entered_and_redacted(tmp_path):
    h = harness(tmp_path, pin="1234")
    h.up(SYNC + IDENTITY + SIM_PIN + [(b'AT+CPIN="1234"', OK)] + SIM_READY + AFTER_SIM)
    assert "1234" not in h.modem.protocol.ring.dump()
    assert not os.path.exists(h.modem.pins.path)


@pytest.mark.parametrize("rejection", [b"\r\n+CME ERROR: incorrect password\r\n",
                                       b"\r\n+CME ERROR: 16\r\n", b"\r\nERROR\r\n"])
def test_a_rejected_pin_is_fatal_and_never_sent_again(tmp_path, rejection):
    h = harness(tmp_path, pin="1234").start()
    h.play(SYNC + IDENTITY + SIM_PIN + [(b'AT+CPIN="1234"', rejection)])
    (error,) = h.fatal
    assert isinstance(error, SimLocked) and error.exit_status == 3
    assert h.take() == b""  # nothing more is sent
    with open(h.modem.pins.path, "rb") as record:
        assert b"1234" not in record.read()

    # A fresh daemon with the same state_dir and the same PIN: only AT+CPIN? goes out.
    again = harness(tmp_path, pin="1234").start()
    again.play(SYNC + IDENTITY + SIM_PIN)
    assert again.take() == b""
    (error,) = again.fatal
    assert isinstance(error, SimLocked) and "rejected before" in str(error)

    # The configured PIN changed: it is tried, and its success clears the record.
    changed = harness(tmp_path, pin="4321")
    changed.up(SYNC + IDENTITY + SIM_PIN + [(b'AT+CPIN="4321"', OK)] + SIM_READY + AFTER_SIM)
    assert not os.path.exists(changed.modem.pins.path)


def test_a_pin_without_an_answer_is_never_sent_again(tmp_path):
    """The answer to AT+CPIN= may have been a lost rejection: no retry may risk another try."""
    h = harness(tmp_path, pin="1234", persistent=True).start()
    h.play(SYNC + IDENTITY + SIM_PIN)
    h.expect(b'AT+CPIN="1234"')  # silence
    assert h.take() == b"\x1bAT\r"  # the engine resyncs after the 10 s limit
    h.recv(OK)
    (error,) = h.fatal
    assert isinstance(error, SimLocked) and error.exit_status == 3
    assert "no answer within 10 s" in str(error) and "check the SIM" in str(error)
    assert h.take() == b""  # no bring-up retry: the supervisor stops on SimLocked

    again = harness(tmp_path, pin="1234").start()
    again.play(SYNC + IDENTITY + SIM_PIN)
    assert again.take() == b""
    (error,) = again.fatal
    assert isinstance(error, SimLocked) and "got no answer from the SIM before" in str(error)
    assert again.modem.pins.path in str(error)


def test_a_pin_command_that_timed_out_in_the_queue_is_an_ordinary_failure(tmp_path):
    """It never reached the SIM, so no try was used: bring-up fails and may be retried."""
    store = PinStore(InlineThreadsClock(), str(tmp_path), "main")
    run = BringUp(None, lambda command: fail(CommandTimeout(command.text, 10.0, queued=True)),
                  ModemConfig(name="main", port="sim", pin="1234"), store, StackMachine())
    outcome = []
    run._enter_pin().addErrback(outcome.append)
    assert outcome[0].check(BringUpFailed) and outcome[0].value.step == "sim"
    assert not os.path.exists(store.path)


@pytest.mark.parametrize("state,pin,message", [
    (b"SIM PUK", "1234", "PUK"),
    (b"SIM PIN", None, "none is configured"),
    (b"PH_SIM PIN", "1234", "does not have"),
])
def test_sim_states_that_stop_without_sending_a_pin(tmp_path, state, pin, message):
    h = harness(tmp_path, pin=pin).start()
    h.play(SYNC + IDENTITY + [(b"AT+CPIN?", b"\r\n+CPIN: " + state + b"\r\n" + OK)])
    assert h.take() == b""
    (error,) = h.fatal
    assert isinstance(error, SimLocked) and message in str(error)


def test_sim_busy_after_boot_is_retried(tmp_path):
    h = harness(tmp_path)
    h.up(SYNC + IDENTITY + [(b"AT+CPIN?", b"\r\n+CME ERROR: SIM busy\r\n")] + SIM_READY
         + AFTER_SIM)
    assert h.times[len(SYNC + IDENTITY) + 1] - h.times[len(SYNC + IDENTITY)] == 1.0


def test_registration_wait_polls_logs_progress_and_proceeds(tmp_path):
    h = harness(tmp_path).start()
    h.play(SYNC + IDENTITY + SIM_READY)
    searching = [(b"AT+CREG?", b"\r\n+CREG: 0,2\r\n" + OK),
                 (b"AT+CGREG?", b"\r\n+CGREG: 0,0\r\n" + OK)]
    with capturedLogs() as events:
        for _ in range(12):
            h.play(searching)
        h.play(AFTER_SIM)
    assert h.modem.ready
    polls = [t for t in h.times[len(SYNC + IDENTITY + SIM_READY)::2]][:13]
    assert [b - a for a, b in zip(polls, polls[1:])] == [1.0] * 12
    waiting = [e for e in events if e.get("log_format", "").startswith("registration: waiting")]
    # One line when the state is first seen, then one per 10 s while it does not change.
    assert [e["elapsed"] for e in waiting] == [0.0, 10.0]
    assert "CREG 2 (searching), CGREG 0 (not registered)" == waiting[0]["summary"]


def test_registration_denied_fails_the_registration_step(tmp_path):
    h = harness(tmp_path).start()
    h.play(SYNC + IDENTITY + SIM_READY + [(b"AT+CREG?", b"\r\n+CREG: 0,3\r\n" + OK),
                                          (b"AT+CGREG?", b"\r\n+CGREG: 0,3\r\n" + OK)])
    (error,) = h.fatal
    assert isinstance(error, BringUpFailed) and error.step == "registration"
    assert "denied" in str(error)


def test_registration_wait_is_bounded_by_registration_timeout(tmp_path):
    h = harness(tmp_path, registration_timeout=5.0).start()
    h.play(SYNC + IDENTITY + SIM_READY)
    start = h.clock.seconds()
    while not h.fatal:
        h.play([(b"AT+CREG?", b"\r\n+CREG: 0,2\r\n" + OK),
                (b"AT+CGREG?", b"\r\n+CGREG: 0,2\r\n" + OK)])
    (error,) = h.fatal
    assert error.step == "registration" and "not registered after 5 s" in str(error)
    assert h.clock.seconds() - start == 5.0


def test_a_failed_activation_asks_the_module_for_its_state(tmp_path):
    h = harness(tmp_path).start()
    sockets = b"".join(b'+QISTATE: %d,"","",,"INITIAL"\r\n' % n for n in range(6))
    h.play(SYNC + IDENTITY + SIM_READY + REGISTERED + ATTACH + BEARER
           + [(b"AT+QIREGAPP", OK), (b"AT+QIACT", b"\r\nERROR\r\n"),
              (b"AT+QISTATE", OK + b"\r\nSTATE: IP INITIAL\r\n" + sockets + OK)])
    (error,) = h.fatal
    assert error.step == "activate"
    assert h.modem.stack.state == "IP INITIAL"  # the module's word, not our "IP START"


def test_a_persistent_modem_retries_a_failed_bring_up(tmp_path):
    h = ModemHarness(tmp_path / "state", persistent=True).start()
    h.play(SYNC + IDENTITY + SIM_READY + [(b"AT+CREG?", b"\r\n+CREG: 0,3\r\n" + OK),
                                          (b"AT+CGREG?", b"\r\n+CGREG: 0,3\r\n" + OK)])
    assert h.fatal == []
    failed_at = h.clock.seconds()
    h.play(PLAIN)
    assert h.modem.ready
    assert 3.75 <= h.times[-len(PLAIN)] - failed_at <= 5.0  # first backoff delay, jittered


@pytest.mark.parametrize("line, limit", [("", 150.0), ("timeouts = qiact=7 qideact=60", 7.0)])
def test_the_configured_qiact_limit_is_the_engines(tmp_path, line, limit):
    """From the INI line to the engine: an unanswered AT+QIACT is given up (ESC + AT resync) at
    the configured limit, and at the built-in 150 s without one."""
    path = tmp_path / "c.ini"
    path.write_text(f"[modem:main]\nport = /dev/ttyFAKE\n{line}\n"
                    "[profile:p]\nlisten = tcp:1\nremote = tcp:h:1\n")
    h = harness(tmp_path, timeouts=load_config(path).modems["main"].timeouts).start()
    h.play(SYNC + IDENTITY + SIM_READY + REGISTERED + ATTACH + BEARER + [(b"AT+QIREGAPP", OK)])
    h.expect(b"AT+QIACT")
    sent_at = h.clock.seconds()
    assert h.take() == b"\x1bAT\r"
    assert h.clock.seconds() - sent_at == limit


@pytest.mark.parametrize("baudrate, limit", [(115200, 5.0 + 1547 * 10 / 115200),
                                             (2400, 5.0 + 1547 * 10 / 2400)])
def test_the_configured_baudrate_paces_the_engines_qird_limit(tmp_path, baudrate, limit):
    """A full AT+QIRD gets the line time of 1500 bytes and its framing at the modem's baudrate."""
    h = harness(tmp_path, baudrate=baudrate).up()
    h.modem.issue(commands.qird(1500, socket=0)).addErrback(lambda failure: None)
    h.expect(b"AT+QIRD=0,1,0,1500")
    sent_at = h.clock.seconds()
    assert h.take() == b"\x1bAT\r"
    assert h.clock.seconds() - sent_at == pytest.approx(limit)


def test_an_explicit_timeouts_option_wins_over_the_config(tmp_path):
    config = ModemConfig(name="main", port="sim", timeouts=(("qiact", 7.0),))
    explicit = Timeouts(qiact=1.0)
    assert Modem(Clock(), config, str(tmp_path), timeouts=explicit).timeouts is explicit
    assert Modem(Clock(), config, str(tmp_path)).timeouts == replace(DEFAULT_TIMEOUTS, qiact=7.0)
