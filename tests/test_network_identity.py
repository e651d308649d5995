"""ICCID, IMSI and operator at bring-up (docs/at-dialect.md §13): either answer form is read, and a
module that will not tell never fails the bring-up."""

import pytest
from twisted.logger import capturedLogs, formatEvent

from bridge.at import commands as c
from tests.modem_harness import IDENTITY, OK, PLAIN, REGISTERED, SIM_READY, SYNC, ModemHarness
from tests.test_at_harness import Harness, value_of

BEFORE = SYNC + IDENTITY + SIM_READY + REGISTERED[:2]
AFTER = PLAIN[len(BEFORE) + 3:]


@pytest.mark.parametrize("reply, value", [
    (b"\r\n89860012345678901234\r\n", "89860012345678901234"),
    (b'\r\n+CCID: "8986001234567890123F"\r\n', "8986001234567890123F"),
    (b"\r\n+QCCID: 89860012345678901234\r\n", "89860012345678901234"),
    (b'\r\n"001010123456789"\r\n', "001010123456789"),
])
def test_identifiers_are_read_with_or_without_prefix_and_quotes(reply, value):
    h = Harness()
    outcome = h.issue(c.sim_identifier(b"AT+QCCID"))
    h.recv(reply + OK)
    assert value_of(outcome) == value


@pytest.mark.parametrize("reply, name", [
    (b'\r\n+COPS: 0,0,"SIM NET"\r\n', "SIM NET"),
    (b"\r\n+COPS: 1,2,26201\r\n", "26201"),
    (b"\r\n+COPS: 0\r\n", None),
])
def test_the_operator_is_read_from_cops(reply, name):
    h = Harness()
    outcome = h.issue(c.cops_query())
    h.recv(reply + OK)
    assert value_of(outcome) == name


def test_at_ccid_is_asked_when_at_qccid_is_refused(tmp_path):
    h = ModemHarness(tmp_path / "state")
    h.up(BEFORE + [(b"AT+QCCID", b"\r\nERROR\r\n"),
                   (b"AT+CCID", b'\r\n+CCID: "89860012345678901234"\r\n' + OK),
                   (b"AT+CIMI", b"\r\n001010123456789\r\n" + OK),
                   (b"AT+COPS?", b'\r\n+COPS: 0,0,"SIM NET"\r\n' + OK)] + AFTER)
    info = h.modem.info
    assert (info["iccid"], info["imsi"], info["operator"]) == (
        "89860012345678901234", "001010123456789", "SIM NET")


def test_a_module_that_tells_nothing_still_comes_up_with_warnings(tmp_path):
    h = ModemHarness(tmp_path / "state")
    with capturedLogs() as events:
        h.up(BEFORE + [(b"AT+QCCID", b"\r\nERROR\r\n"), (b"AT+CCID", b"\r\nERROR\r\n"),
                       (b"AT+CIMI", b"\r\n+CME ERROR: SIM failure\r\n"),
                       (b"AT+COPS?", b"\r\n+COPS: 0\r\n" + OK)] + AFTER)
    assert not {"iccid", "imsi", "operator"} & set(h.modem.info)
    warnings = [formatEvent(e) for e in events if "network identity" in formatEvent(e)]
    assert warnings == ["network identity: AT+QCCID: ERROR", "network identity: AT+CCID: ERROR",
                        "network identity: AT+CIMI: +CME ERROR: SIM failure"]
    assert any(formatEvent(e) == "sim: ICCID unknown, IMSI unknown, operator unknown"
               for e in events)
