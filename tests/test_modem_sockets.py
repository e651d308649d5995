"""Modem after bring-up: open_socket transcripts, URC routing, "down" handling, health poll."""

import pytest

from bridge.at import commands
from bridge.at.events import Closed, ConnectResult, DataAvailable
from bridge.errors import ConnectFailed, ModemDown
from tests.modem_harness import OK, ModemHarness

ERROR = b"\r\nERROR\r\n"
MUX_STATE = (OK + b"\r\nSTATE: IP STATUS\r\n"
             + b"".join(b'+QISTATE: %d,"","",,"INITIAL"\r\n' % n for n in range(6)) + OK)


class Handler:
    server = False  # a client socket's

    def __init__(self):
        self.events = []

    def socket_event(self, event):
        self.events.append(event)


@pytest.fixture
def h(tmp_path):
    return ModemHarness(tmp_path / "state").up()


def open_socket(h, *args):
    outcome = []
    h.modem.open_socket(*args).addBoth(outcome.append)
    return outcome


def test_every_open_sets_qidnsip_first(h):
    """Not cached: a module reset or a lost QIDNSIP answer could leave it other than we think."""
    first = open_socket(h, 0, "TCP", "127.0.0.1", 5000)
    h.play([(b"AT+QIDNSIP=0", OK), (b'AT+QIOPEN=0,"TCP","127.0.0.1",5000', OK)])
    h.recv(b"\r\n0, CONNECT OK\r\n")
    assert first == [None]

    second = open_socket(h, 1, "UDP", "127.0.0.2", 53)
    h.play([(b"AT+QIDNSIP=0", OK), (b'AT+QIOPEN=1,"UDP","127.0.0.2",53', OK)])
    h.recv(b"\r\n1, CONNECT OK\r\n")
    assert second == [None]

    third = open_socket(h, 2, "TCP", "localhost", 80)
    h.play([(b"AT+QIDNSIP=1", OK), (b'AT+QIOPEN=2,"TCP","localhost",80', OK)])
    h.recv(b"\r\n2, CONNECT OK\r\n")
    assert third == [None]


def test_concurrent_opens_keep_each_qidnsip_next_to_its_qiopen(h):
    """A dotted open's QIDNSIP=0 must not land between a host name's QIDNSIP=1 and its QIOPEN
    (the module would answer that QIOPEN with ERROR)."""
    by_name = open_socket(h, 0, "TCP", "localhost", 80)
    by_address = open_socket(h, 1, "TCP", "127.0.0.1", 5000)
    h.play([(b"AT+QIDNSIP=1", OK), (b'AT+QIOPEN=0,"TCP","localhost",80', OK),
            (b"AT+QIDNSIP=0", OK), (b'AT+QIOPEN=1,"TCP","127.0.0.1",5000', OK)])
    h.recv(b"\r\n1, CONNECT OK\r\n\r\n0, CONNECT OK\r\n")
    assert by_name == [None] and by_address == [None]


def test_a_failed_qidnsip_fails_the_open_without_a_qiopen(h):
    outcome = open_socket(h, 0, "TCP", "localhost", 80)
    h.expect(b"AT+QIDNSIP=1", ERROR)
    assert "AT+QIDNSIP failed" in outcome[0].value.reason
    again = open_socket(h, 0, "TCP", "127.0.0.1", 1)
    h.expect(b"AT+QIDNSIP=0", OK)  # the index and the QIDNSIP/QIOPEN turn were given back
    h.expect(b'AT+QIOPEN=0,"TCP","127.0.0.1",1', OK + b"\r\n0, CONNECT OK\r\n")
    assert again == [None]


def test_connect_fail_closes_the_index_and_fails(h):
    outcome = open_socket(h, 3, "TCP", "127.0.0.1", 5000)
    h.play([(b"AT+QIDNSIP=0", OK), (b'AT+QIOPEN=3,"TCP","127.0.0.1",5000', OK)])
    h.recv(b"\r\n3, CONNECT FAIL\r\n")
    h.expect(b"AT+QICLOSE=3", b"\r\n3, CLOSE OK\r\n")
    assert isinstance(outcome[0].value, ConnectFailed)
    assert "CONNECT FAIL" in outcome[0].value.reason


def test_qiopen_error_closes_and_resyncs_the_stack_state(h):
    outcome = open_socket(h, 0, "TCP", "127.0.0.1", 5000)
    h.play([(b"AT+QIDNSIP=0", OK), (b'AT+QIOPEN=0,"TCP","127.0.0.1",5000', ERROR),
            (b"AT+QICLOSE=0", ERROR), (b"AT+QISTATE", MUX_STATE)])
    assert isinstance(outcome[0].value, ConnectFailed)
    assert h.modem.stack.state == "IP STATUS"


@pytest.mark.parametrize("overrides, limit", [((), 75.0), ((("connect", 30.0),), 30.0)])
def test_connect_timeout_is_75_seconds_unless_configured(tmp_path, overrides, limit):
    h = ModemHarness(tmp_path / "state", health_interval=1000.0,  # no poll in between
                     timeouts=overrides).up()
    outcome = open_socket(h, 0, "TCP", "127.0.0.1", 5000)
    h.play([(b"AT+QIDNSIP=0", OK), (b'AT+QIOPEN=0,"TCP","127.0.0.1",5000', OK)])
    opened_at = h.clock.seconds()
    h.expect(b"AT+QICLOSE=0", b"\r\n0, CLOSE OK\r\n")
    assert h.clock.seconds() - opened_at == limit
    assert f"no CONNECT OK within {limit:g} s" in outcome[0].value.reason


def test_socket_events_reach_the_attached_handler_only(h):
    handler, other = Handler(), Handler()
    h.modem.attach_socket(1, handler)
    h.modem.attach_socket(2, other)
    h.recv(b"\r\n1, CLOSED\r\n+QIRDI: 0,1,1\r\n5, CLOSED\r\n")
    assert handler.events == [Closed(1), DataAvailable(0, False, 1)]
    assert other.events == []
    h.modem.detach_socket(1)
    h.recv(b"\r\n1, CLOSED\r\n")
    assert len(handler.events) == 2


def test_an_opening_socket_handler_also_sees_its_connect_result(h):
    handler = Handler()
    h.modem.attach_socket(0, handler)
    outcome = open_socket(h, 0, "TCP", "127.0.0.1", 5000)
    h.play([(b"AT+QIDNSIP=0", OK), (b'AT+QIOPEN=0,"TCP","127.0.0.1",5000', OK)])
    h.recv(b"\r\n0, CONNECT OK\r\n")
    assert outcome == [None]
    assert handler.events == [ConnectResult(0, True)]


def test_pdp_deact_marks_the_modem_down_and_fails_pending_opens(h):
    outcome = open_socket(h, 0, "TCP", "127.0.0.1", 5000)
    h.play([(b"AT+QIDNSIP=0", OK), (b'AT+QIOPEN=0,"TCP","127.0.0.1",5000', OK)])
    h.recv(b"\r\n+PDP DEACT\r\n")
    assert isinstance(outcome[0].value, ModemDown)
    assert h.states[-1] == ("down", "PDP context deactivated by the network (+PDP DEACT)")
    assert not h.modem.ready and h.modem.stack.state == "PDP DEACT"
    refused = []
    h.modem.issue(commands.csq()).addErrback(refused.append)
    assert refused[0].check(ModemDown)


def test_a_module_reboot_marks_it_down_but_harmless_urcs_do_not(h):
    h.recv(b"\r\nCall Ready\r\n\r\nSMS Ready\r\n\r\n+CREG: 1\r\n")
    assert h.modem.ready
    h.recv(b"\r\nRDY\r\n")
    assert h.states[-1] == ("down", "the module restarted (RDY)")


def test_a_lost_port_marks_the_modem_down(h):
    h.transport.loseConnection()
    h.modem.protocol.connectionLost(None)
    assert h.modem.protocol is None and not h.modem.ready
    assert h.states[-1][0] == "down" and "port lost" in h.states[-1][1]
    assert not h.modem.healthy()


def test_health_poll_runs_when_idle_and_updates_info(h):
    h.expect(b"AT+CSQ", b"\r\n+CSQ: 10,0\r\n" + OK)
    h.expect(b"AT+CREG?", b"\r\n+CREG: 0,5\r\n" + OK)
    assert h.times[-1] - h.times[-3] == 30.0  # 30 s after the last bring-up command
    assert h.modem.info["signal"] == "-93 dBm (CSQ 10,0)"
    assert (h.modem.info["csq"], h.modem.info["signal_dbm"]) == (10, -93)
    assert h.modem.info["registration"] == "roaming"


def test_health_poll_is_skipped_while_a_command_is_on_the_wire(h):
    poll_due = h.times[-1] + 30.0
    h.clock.advance(poll_due - 1.0 - h.clock.seconds())
    h.modem.issue(commands.qisack(0))
    assert h.take() == b"AT+QISACK=0\r"
    h.clock.advance(1.0)
    assert h.transport.value() == b""  # the poll saw the engine busy and stayed away
    h.recv(b"\r\n+QISACK: 0, 0, 0\r\n" + OK)
    h.expect(b"AT+CSQ", b"\r\n+CSQ: 10,0\r\n" + OK)  # only at the next round
    assert h.times[-1] == poll_due + 30.0


def test_health_poll_stays_away_while_a_transparent_server_listens(h):
    """Its client's CONNECT switches the UART to data mode unannounced: a poll crossing it would
    reach the client as payload (README, Transparent sessions)."""
    h.modem.protocol.transparent_server_listening = True
    h.clock.advance(95.0)
    assert h.transport.value() == b""
    h.modem.protocol.transparent_server_listening = False
    h.clock.advance(30.0)
    assert h.take() == b"AT+CSQ\r"


def test_a_long_bulk_transfer_cannot_starve_the_health_poll(h):
    """Reads back to back for 100 s: the engine is busy at every poll tick. One round is
    postponed, the next is queued anyway and slips in between two reads, and the registration
    loss it finds is seen."""
    bring_up_done = h.times[-1]

    def read_more(_=None):
        h.modem.issue(commands.qird(socket=0)).addCallback(read_more)

    read_more()
    wire = []
    while h.clock.seconds() < bring_up_done + 100:
        line = h.take()
        wire.append((line, h.clock.seconds()))
        if line == b"AT+QIRD=0,1,0,1500\r":
            h.clock.advance(0.5)  # on the wire: the engine is busy meanwhile
            h.recv(OK)  # drained; the link asks again at once
        elif line == b"AT+CSQ\r":
            h.recv(b"\r\n+CSQ: 10,0\r\n" + OK)
        else:
            assert line == b"AT+CREG?\r"
            h.recv(b"\r\n+CREG: 0,2\r\n" + OK)
    polls = [(i, at) for i, (line, at) in enumerate(wire) if line == b"AT+CSQ\r"]
    assert len(polls) == 1  # t+30 postponed, t+60 queued anyway, t+90 postponed
    (index, at), = polls
    assert bring_up_done + 60 <= at <= bring_up_done + 60.5  # as soon as the read in flight ended
    assert [line for line, _ in wire[index - 1:index + 3]] == [
        b"AT+QIRD=0,1,0,1500\r", b"AT+CSQ\r", b"AT+CREG?\r", b"AT+QIRD=0,1,0,1500\r"]
    assert h.modem.info["registration"] == "searching"


def test_slots_come_lowest_first_and_the_seventh_waits_for_a_release(h):
    taken = []
    for _ in range(7):
        h.modem.sockets.acquire().addCallback(taken.append)
    assert taken == [0, 1, 2, 3, 4, 5] and h.modem.sockets.waiting() == 1
    h.modem.sockets.release(3)
    assert taken == [0, 1, 2, 3, 4, 5, 3] and h.modem.slots_in_use == frozenset(range(6))


def test_commands_fail_with_modem_down_before_ready(tmp_path):
    h = ModemHarness(tmp_path / "state").start()
    refused = []
    h.modem.open_socket(0, "TCP", "127.0.0.1", 1).addErrback(refused.append)
    assert refused[0].check(ModemDown)
