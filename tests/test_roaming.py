"""``roaming = no`` transcripts (task.Clock): bring-up waits for home without a limit, links are
refused meanwhile with the reason, and a roaming registration while up takes data down
(AT+QIDEACT) until the module is home; with the default (yes) roaming is just registered."""

from twisted.internet.error import ConnectError
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import capturedLogs, formatEvent

from bridge.modem.bringup import BringUpFailed
from bridge.modem.endpoint import ModemEndpoint
from bridge.modem.roaming import REFUSAL
from tests.modem_harness import (ACTIVATE, ATTACH, BEARER, IDENTITY, NETWORK_IDENTITY, OK, PLAIN,
                                 REGISTERED, SIM_READY, SYNC, ModemHarness)

ROAMING = [(b"AT+CREG?", b"\r\n+CREG: 0,5\r\n" + OK), (b"AT+CGREG?", b"\r\n+CGREG: 0,5\r\n" + OK)]
HOME = REGISTERED[:2]
REACTIVATE = [(b"AT+QIDEACT", b"\r\nDEACT OK\r\n")] + ACTIVATE[:3]


def connect(modem):
    """A link open through the modem's endpoint -> the list its outcome lands in."""
    outcome = []
    endpoint = ModemEndpoint(modem, "example.com", 80)
    endpoint.connect(Factory.forProtocol(Protocol)).addBoth(outcome.append)
    return outcome


def refused(outcome) -> bool:
    (result,) = outcome
    return result.check(ConnectError) is not None and REFUSAL in result.getErrorMessage()


def test_bring_up_waits_while_roaming_refuses_links_and_goes_on_at_home(tmp_path):
    h = ModemHarness(tmp_path / "state", persistent=True, roaming=False).start()
    h.play(SYNC + IDENTITY + SIM_READY)
    first_poll = len(h.times)
    with capturedLogs() as events:
        for _ in range(70):  # 690 s: far past registration_timeout (180 s), no limit while roaming
            h.play(ROAMING)
        assert h.modem.roaming.holding and not h.fatal
        outcome = connect(h.modem)
        assert refused(outcome) and h.written() == b""  # at once, nothing asked of the module
        h.play(HOME + NETWORK_IDENTITY + ATTACH + BEARER + ACTIVATE)
    assert h.modem.ready and not h.modem.roaming.holding
    assert h.modem.info["registration"] == "home"
    polls = h.times[first_poll::2][:71]
    assert {b - a for a, b in zip(polls, polls[1:])} == {10.0}  # the roaming poll, not 1 s
    held = [formatEvent(e) for e in events if REFUSAL in formatEvent(e)]
    # One line when it is first seen, then one per 10 minutes: bounded however long it lasts.
    assert held == [f"registration: CREG 5 (roaming), CGREG 5 (roaming): {REFUSAL}; waiting to be "
                    f"registered at home"] * 2


def test_a_probe_fails_at_registration_rather_than_wait_for_home(tmp_path):
    h = ModemHarness(tmp_path / "state", roaming=False).start()  # not persistent: a probe
    h.play(SYNC + IDENTITY + SIM_READY + ROAMING)
    (error,) = h.fatal
    assert isinstance(error, BringUpFailed) and error.step == "registration"
    assert str(error) == ("bring-up failed at step 'registration': CREG 5 (roaming), CGREG 5 "
                          f"(roaming): {REFUSAL}")


def test_roaming_while_up_takes_data_down_until_home(tmp_path):
    h = ModemHarness(tmp_path / "state", persistent=True, roaming=False).up()
    down = []
    h.modem.attach_socket(3, type("Link", (), {"server": False,
                                               "modem_down": down.append})())
    opening = connect(h.modem)
    h.expect(b"AT+QIDNSIP=1", OK)
    h.expect(b'AT+QIOPEN=0,"TCP","example.com",80', OK)
    h.recv(b"\r\n+CREG: 5\r\n")  # before CONNECT OK: the open fails with the modem
    assert h.states[-1] == ("down", REFUSAL)
    assert down == [REFUSAL]
    (failed,) = opening
    assert REFUSAL in failed.getErrorMessage()
    assert refused(connect(h.modem))
    h.play([(b"AT+QIDEACT", b"\r\nDEACT OK\r\n")] + ROAMING + ROAMING + HOME + REACTIVATE)
    assert h.modem.ready and not h.modem.roaming.holding
    assert h.states[-1] == ("ready", "local IP 10.0.0.2")
    assert h.modem.counters.get("roaming") == 1


def test_the_health_poll_seeing_roaming_takes_data_down(tmp_path):
    h = ModemHarness(tmp_path / "state", persistent=True, roaming=False,
                     health_interval=30.0).up()
    h.expect(b"AT+CSQ", b"\r\n+CSQ: 25,0\r\n" + OK)
    h.expect(b"AT+CREG?", b"\r\n+CREG: 0,5\r\n" + OK)
    assert h.states[-1] == ("down", REFUSAL)
    h.play([(b"AT+QIDEACT", b"\r\nDEACT OK\r\n")] + HOME + REACTIVATE)
    assert h.modem.ready


def test_with_roaming_allowed_a_roaming_registration_is_just_registered(tmp_path):
    roaming = [(b"AT+CREG?", b"\r\n+CREG: 0,5\r\n" + OK),
               (b"AT+CGREG?", b"\r\n+CGREG: 0,5\r\n" + OK)] + NETWORK_IDENTITY
    h = ModemHarness(tmp_path / "state", persistent=True)
    h.up(SYNC + IDENTITY + SIM_READY + roaming + PLAIN[len(SYNC + IDENTITY + SIM_READY
                                                           + REGISTERED):])
    assert h.modem.info["registration"] == "roaming"
    h.recv(b"\r\n+CREG: 5\r\n")
    assert h.modem.ready and h.states == [("ready", "local IP 10.0.0.2")]
