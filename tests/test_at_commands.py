"""Transcript tests, one per command family: exact bytes out, module bytes in, typed result."""

import pytest

from bridge.at import commands as c
from bridge.at.commands import (
    OpenAccepted,
    ReadResult,
    RegistrationState,
    Reply,
    SackResult,
    SendResult,
    SignalQuality,
    SocketState,
    StackState,
)
from bridge.at.errors import ATError, CmeError, CmsError, CommandTimeout, SendRefused
from bridge.at.events import Closed, ConnectResult, DataAvailable, Unsolicited
from tests.test_at_harness import Harness, error_of, value_of


def exchange(command, reply: bytes, expect_sent: bytes, **options):
    h = Harness(**options)
    outcome = h.issue(command)
    assert h.sent() == expect_sent
    assert outcome == []
    h.recv(reply)
    return h, outcome


def test_plain_ok():
    h, outcome = exchange(c.at(), b"\r\nOK\r\n", b"AT\r")
    assert value_of(outcome) == Reply(())


def test_setting_and_query():
    _, outcome = exchange(c.qimux(True), b"\r\nOK\r\n", b"AT+QIMUX=1\r")
    assert value_of(outcome) == Reply(())
    _, outcome = exchange(c.query("+QIMUX"), b"\r\n+QIMUX: 1\r\n\r\nOK\r\n", b"AT+QIMUX?\r")
    assert value_of(outcome) == Reply(("+QIMUX: 1",))


@pytest.mark.parametrize("command, wire, reply, result", [
    (c.csq(), b"AT+CSQ\r", b"\r\n+CSQ: 20,0\r\n\r\nOK\r\n", SignalQuality(20, 0)),
    (c.cpin_query(), b"AT+CPIN?\r", b"\r\n+CPIN: SIM PIN\r\n\r\nOK\r\n", "SIM PIN"),
    (c.creg_query(), b"AT+CREG?\r", b"\r\n+CREG: 0,5\r\n\r\nOK\r\n", RegistrationState(0, 5)),
    (c.cgreg_query(), b"AT+CGREG?\r", b"\r\n+CGREG: 0, 1\r\n\r\nOK\r\n",
     RegistrationState(0, 1)),
    (c.cgatt_query(), b"AT+CGATT?\r", b"\r\n+CGATT: 1\r\n\r\nOK\r\n", True),
    (c.gsn(), b"AT+GSN\r", b"\r\n861234567890123\r\n\r\nOK\r\n", Reply(("861234567890123",))),
    (c.ati(), b"ATI\r", b"\r\nQuectel_Ltd\r\nQuectel_M95\r\nRevision: M95FAR02A08\r\n\r\nOK\r\n",
     Reply(("Quectel_Ltd", "Quectel_M95", "Revision: M95FAR02A08"))),
    (c.qilocip(), b"AT+QILOCIP\r", b"\r\n10.12.34.56\r\n", "10.12.34.56"),
    (c.qideact(), b"AT+QIDEACT\r", b"\r\nDEACT OK\r\n", None),
    (c.qisack(0), b"AT+QISACK=0\r", b"\r\n+QISACK: 30, 20, 10\r\n\r\nOK\r\n",
     SackResult(30, 20, 10)),
    (c.qisack(), b"AT+QISACK\r", b"\r\n+QISACK: 5,5,0\r\n\r\nOK\r\n", SackResult(5, 5, 0)),
    (c.qiclose(2), b"AT+QICLOSE=2\r", b"\r\n2, CLOSE OK\r\n", None),
    (c.qiclose(2), b"AT+QICLOSE=2\r", b"\r\nCLOSE OK\r\n", None),
    (c.qiclose(), b"AT+QICLOSE\r", b"\r\nCLOSE OK\r\n", None),
    (c.qistat(), b"AT+QISTAT\r", b"\r\nOK\r\n\r\nSTATE: IP INITIAL\r\n", StackState("IP INITIAL")),
    (c.qiopen("TCP", "1.2.3.4", 80, socket=0), b'AT+QIOPEN=0,"TCP","1.2.3.4",80\r',
     b"\r\nOK\r\n", OpenAccepted(False)),
    (c.qiopen("TCP", "1.2.3.4", 80), b'AT+QIOPEN="TCP","1.2.3.4",80\r',
     b"\r\nALREADY CONNECT\r\n", OpenAccepted(True)),
    (c.qird(1500, socket=1), b"AT+QIRD=0,1,1,1500\r", b"\r\nOK\r\n", ReadResult(None, None, b"")),
    (c.qicsgp("internet", "bob", "s3cret"), b'AT+QICSGP=1,"internet","bob","s3cret"\r',
     b"\r\nOK\r\n", Reply(())),
    (c.cpin("1234"), b'AT+CPIN="1234"\r', b"\r\nOK\r\n", Reply(())),
    (c.ato(), b"ATO\r", b"\r\nCONNECT\r\n", None),
    (c.qitcfg(0.4, 1460, True), b"AT+QITCFG=3,2,1460,1\r", b"\r\nOK\r\n", Reply(())),
    (c.qitcfg(2.0, 1, False), b"AT+QITCFG=3,10,1,0\r", b"\r\nOK\r\n", Reply(())),
    (c.qitcfg(0.6, 512, True), b"AT+QITCFG=3,3,512,1\r", b"\r\nOK\r\n", Reply(())),
    (c.dtr_mode(1), b"AT&D1\r", b"\r\nOK\r\n", Reply(())),
    (c.dcd_mode(1), b"AT&C1\r", b"\r\nOK\r\n", Reply(())),
])
def test_family(command, wire, reply, result):
    _, outcome = exchange(command, reply, wire)
    assert value_of(outcome) == result


def test_qistate_mux_with_trailing_ok():
    lines = b"".join(b'+QISTATE: %d,"TCP","1.2.3.4","80","CONNECTED"\r\n' % n for n in range(6))
    h, outcome = exchange(c.qistate(), b"\r\nOK\r\n\r\nSTATE: IP STATUS\r\n" + lines,
                          b"AT+QISTATE\r")
    assert outcome == []
    h.recv(b"\r\nOK\r\n")
    state = value_of(outcome)
    assert state.state == "IP STATUS"
    assert state.sockets[5] == SocketState(5, ("TCP", "1.2.3.4", "80", "CONNECTED"), "CONNECTED")


def test_qistate_mux_without_trailing_ok_ends_at_the_sixth_socket():
    lines = b"".join(b'+QISTATE: %d,"","",,"INITIAL"\r\n' % n for n in range(6))
    _, outcome = exchange(c.qistate(trailing_ok=False),
                          b"\r\nOK\r\n\r\nSTATE: IP INITIAL\r\n" + lines, b"AT+QISTATE\r")
    assert [s.state for s in value_of(outcome).sockets] == ["INITIAL"] * 6


def test_qidnsgip_one_address_is_complete_once_the_module_goes_quiet():
    h, outcome = exchange(c.qidnsgip("example.com"), b"\r\nOK\r\n\r\n93.184.216.34\r\n",
                          b'AT+QIDNSGIP="example.com"\r')
    h.clock.advance(c.ADDRESS_QUIET - 0.01)
    assert outcome == []  # more addresses may follow
    h.clock.advance(0.01)
    assert value_of(outcome) == ("93.184.216.34",)


def test_qidnsgip_several_address_lines_with_a_urc_between():
    """The app note's example answers three addresses (docs/at-dialect.md §4.1); a URC among them
    is routed as an event and no address is lost or taken for something else."""
    h, outcome = exchange(c.qidnsgip("www.google.com"),
                          b"\r\nOK\r\n\r\n64.233.189.99\r\n\r\n0, CLOSED\r\n",
                          b'AT+QIDNSGIP="www.google.com"\r')
    next_command = h.issue(c.at())
    h.clock.advance(c.ADDRESS_QUIET - 0.1)
    h.recv(b"\r\n64.233.189.104\r\n")
    h.clock.advance(c.ADDRESS_QUIET - 0.1)
    h.recv(b"\r\n64.233.189.147\r\n")
    h.clock.advance(c.ADDRESS_QUIET - 0.1)
    assert (outcome, h.sent()) == ([], b"")  # the module is still talking: the wire stays held
    h.clock.advance(0.1)
    assert value_of(outcome) == ("64.233.189.99", "64.233.189.104", "64.233.189.147")
    assert h.events == [Closed(0)]
    assert h.sent() == b"AT\r" and next_command == []


def test_qidnsgip_addresses_on_one_line():
    h, outcome = exchange(c.qidnsgip("www.google.com"),
                          b"\r\nOK\r\n\r\n64.233.189.99 64.233.189.104,64.233.189.147\r\n",
                          b'AT+QIDNSGIP="www.google.com"\r')
    h.clock.advance(c.ADDRESS_QUIET)
    assert value_of(outcome) == ("64.233.189.99", "64.233.189.104", "64.233.189.147")


def test_qidnsgip_a_module_that_never_stops_talking_ends_at_the_limit():
    h, outcome = exchange(c.qidnsgip("example.com", timeout=14.0),
                          b"\r\nOK\r\n\r\n93.184.216.34\r\n", b'AT+QIDNSGIP="example.com"\r')
    for _ in range(139):
        h.clock.advance(0.1)
        h.recv(b"\r\nCall Ready\r\n")
    assert outcome == []
    h.clock.advance(0.1)
    assert value_of(outcome) == ("93.184.216.34",)


@pytest.mark.parametrize("reply", [b"\r\nOK\r\n\r\nERROR\r\n", b"\r\nERROR\r\n"])
def test_qidnsgip_error_after_ok_or_instead_of_it(reply):
    h, outcome = exchange(c.qidnsgip("nx.example"), reply, b'AT+QIDNSGIP="nx.example"\r')
    assert isinstance(error_of(outcome), ATError)
    h.clock.advance(c.ADDRESS_QUIET)
    assert h.sent() == b""  # no resync: the answer was complete


def test_qidnsgip_without_an_answer_times_out_at_its_limit():
    h, outcome = exchange(c.qidnsgip("slow.example", timeout=14.0), b"\r\nOK\r\n",
                          b'AT+QIDNSGIP="slow.example"\r')
    h.clock.advance(13.9)
    assert outcome == []
    h.clock.advance(0.1)
    assert isinstance(error_of(outcome), CommandTimeout)


@pytest.mark.parametrize("servers, wire", [
    (("1.1.1.1", "8.8.8.8"), b'AT+QIDNSCFG="1.1.1.1","8.8.8.8"\r'),
    (("9.9.9.9",), b'AT+QIDNSCFG="9.9.9.9"\r'),
])
def test_qidnscfg(servers, wire):
    _, outcome = exchange(c.qidnscfg(servers), b"\r\nOK\r\n", wire)
    assert value_of(outcome) == Reply(())


@pytest.mark.parametrize("servers", [(), ("1.1.1.1", "2.2.2.2", "3.3.3.3"), ("dns.example",),
                                     ('1.1.1.1"\rAT+CFUN=0',), ("1.1.1.1\r",)])
def test_qidnscfg_takes_only_one_or_two_dotted_addresses(servers):
    with pytest.raises(ValueError):
        c.qidnscfg(servers)


def test_qiopen_ok_then_connect_event_later():
    h, outcome = exchange(c.qiopen("TCP", "1.2.3.4", 80, socket=0), b"\r\nOK\r\n",
                          b'AT+QIOPEN=0,"TCP","1.2.3.4",80\r')
    assert value_of(outcome) == OpenAccepted(False)
    h.recv(b"\r\n0, CONNECT FAIL\r\n")
    assert h.events == [ConnectResult(0, False)]


def test_qird_payload_containing_ok_then_ok():
    data = b"x\r\nOK\r\ny"
    _, outcome = exchange(c.qird(1500), b"\r\n+QIRD: 1.2.3.4:80,TCP,%d\r\n" % len(data) + data
                          + b"\r\nOK\r\n", b"AT+QIRD=0,1,0,1500\r")
    assert value_of(outcome) == ReadResult("1.2.3.4:80", "TCP", data)


def test_qird_error_when_drained_after_close():
    _, outcome = exchange(c.qird(100), b"\r\nERROR\r\n", b"AT+QIRD=0,1,0,100\r")
    assert isinstance(error_of(outcome), ATError)


@pytest.mark.parametrize("reply, kind, code, text", [
    (b"\r\n+CME ERROR: 14\r\n", CmeError, 14, "14"),
    (b"\r\n+CME ERROR: SIM busy\r\n", CmeError, None, "SIM busy"),
    (b"\r\n+CMS ERROR: 604\r\n", CmsError, 604, "604"),
])
def test_cme_and_cms_errors(reply, kind, code, text):
    _, outcome = exchange(c.cpin_query(), reply, b"AT+CPIN?\r")
    error = error_of(outcome)
    assert type(error) is kind and (error.code, error.text) == (code, text)


def test_cpin_error_message_does_not_leak_the_pin():
    _, outcome = exchange(c.cpin("4321"), b"\r\n+CME ERROR: 16\r\n", b'AT+CPIN="4321"\r')
    assert "4321" not in str(error_of(outcome))


def test_qisend_writes_payload_only_on_prompt():
    h, outcome = exchange(c.qisend(b"hello", socket=0), b"", b"AT+QISEND=0,5\r")
    h.recv(b"\r\n")
    assert h.sent() == b""
    h.recv(b"> ")
    assert h.sent() == b"hello"
    h.recv(b"\r\nSEND OK\r\n")
    assert value_of(outcome) == SendResult(True)


def test_qisend_send_fail_is_a_result():
    h, outcome = exchange(c.qisend(b"\x1a\x1b", socket=3), b"\r\n> ", b"AT+QISEND=3,2\r")
    assert h.sent() == b"\x1a\x1b"
    h.recv(b"\r\nSEND FAIL\r\n")
    assert value_of(outcome) == SendResult(False)


def test_qisend_error_instead_of_prompt_is_typed_and_sends_nothing():
    h, outcome = exchange(c.qisend(b"abc", socket=1), b"\r\nERROR\r\n", b"AT+QISEND=1,3\r")
    assert isinstance(error_of(outcome), SendRefused)
    assert h.sent() == b""


def test_urc_between_qisend_and_its_prompt():
    h, outcome = exchange(c.qisend(b"abc", socket=0), b"\r\n+QIRDI: 0,1,2\r\n", b"AT+QISEND=0,3\r")
    assert h.events == [DataAvailable(0, False, 2)]
    assert h.sent() == b""
    h.recv(b"\r\n> ")
    assert h.sent() == b"abc"
    h.recv(b"\r\nSEND OK\r\n")
    assert value_of(outcome) == SendResult(True)


def test_qiclose_claims_only_its_own_socket():
    h, outcome = exchange(c.qiclose(1), b"\r\n3, CONNECT OK\r\n\r\n3, CLOSE OK\r\n",
                          b"AT+QICLOSE=1\r")
    assert outcome == []
    assert h.events == [ConnectResult(3, True), Unsolicited(b"3, CLOSE OK")]
    h.recv(b"\r\n1, CLOSE OK\r\n")
    assert value_of(outcome) is None


def test_argument_checks():
    with pytest.raises(ValueError):
        c.qicsgp('apn"', "", "")
    with pytest.raises(ValueError):
        c.qiopen("TCP", "host\r\nAT+CFUN=0", 80)
    with pytest.raises(ValueError):
        c.qisend(b"x" * 1461, socket=0)
    with pytest.raises(ValueError):
        c.qisack(6)
    with pytest.raises(ValueError):
        c.cpin("12a4")
    for wait, size in ((0.1, 1460), (2.2, 1460), (0.4, 0), (0.4, 1461)):
        with pytest.raises(ValueError):
            c.qitcfg(wait, size, True)
