"""The simulator's SIM and network facts (choices 43 and 44 in bridge/sim/__init__.py): ICCID,
IMSI and operator in their reference forms, and a module that registers as roaming."""

from unittest.mock import Mock, call

import pytest

from bridge.sim.control import ControlProtocol
from sim_harness import Module

OK = b"\r\nOK\r\n"


@pytest.mark.parametrize("command, answer", [
    ("AT+QCCID", b"89860012345678901234"),
    ("AT+CCID", b'+CCID: "89860012345678901234"'),
    ("AT+CIMI", b"001010123456789"),
    ("AT+COPS?", b'+COPS: 0,0,"CELLBRIDGE HOME"'),
])
def test_identity_answers_follow_the_reference_forms(command, answer):
    m = Module()
    m.at("ATE0")
    assert m.at(command) == b"\r\n" + answer + b"\r\n" + OK


def test_identity_waits_for_the_pin_and_cops_for_registration():
    m = Module(pin="1234", register_delay=5)
    m.at("ATE0")
    assert m.at("AT+CMEE=2") == OK
    assert m.at("AT+CIMI") == b"\r\n+CME ERROR: SIM PIN required\r\n"
    assert m.at("AT+QCCID") == b"\r\n+CME ERROR: SIM PIN required\r\n"
    m.at('AT+CPIN="1234"')
    assert m.at("AT+COPS?") == b"\r\n+COPS: 0\r\n" + OK
    m.tick(5)
    assert m.at("AT+COPS?") == b'\r\n+COPS: 0,0,"CELLBRIDGE HOME"\r\n' + OK


def test_a_roaming_module_registers_with_stat_5_and_reports_changes():
    m = Module(roaming=True)
    m.at("ATE0")
    assert m.at("AT+CREG?") == b"\r\n+CREG: 0,5\r\n" + OK
    assert m.at("AT+CGREG?") == b"\r\n+CGREG: 0,5\r\n" + OK
    assert m.at("AT+CGATT?") == b"\r\n+CGATT: 1\r\n" + OK  # roaming is registered
    assert m.at("AT+COPS?") == b'\r\n+COPS: 0,0,"CELLBRIDGE ABROAD"\r\n' + OK
    assert m.at("AT+CREG=1") == OK
    m.proto.cellular.set_roaming(False)
    assert m.output() == b"\r\n+CREG: 1\r\n"
    m.proto.cellular.set_roaming(False)
    assert m.output() == b""  # no change, no URC
    m.proto.cellular.set_roaming(True)
    assert m.output() == b"\r\n+CREG: 5\r\n"


def test_the_control_channel_switches_roaming():
    sim = Mock()
    control = ControlProtocol(sim)
    assert [control.run("roaming", ["on"]), control.run("roaming", ["OFF"])] == ["ok", "ok"]
    assert sim.set_roaming.call_args_list == [call(True), call(False)]
