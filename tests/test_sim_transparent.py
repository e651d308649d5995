"""Transcript tests: transparent mode (QIMODE=1, app note §4): data mode, QITCFG packetisation,
`+++` and DTR escapes and their command log entries, ATO, DCD, the UART buffer with and without
flow control, the link's end (remote close, +PDP DEACT, kill, reboot, QICLOSE), the server."""

import pytest

from bridge.sim.cmd_general import lose_contexts
from sim_harness import Module

OK = b"\r\nOK\r\n"
ERROR = b"\r\nERROR\r\n"
CONNECT = b"\r\nCONNECT\r\n"
GUARD = 0.5
BOOT = b"\r\nRDY\r\n\r\n+CFUN: 1\r\n\r\n+CPIN: READY\r\n\r\nCall Ready\r\n\r\nSMS Ready\r\n"


def transparent(tcfg="3,2,1460,1", **options):
    m = Module(escape_guard=GUARD, **options)
    m.ready(mode=1)
    assert m.at(f"AT+QITCFG={tcfg}") == OK
    return m


def connected(tcfg="3,2,1460,1", dtr_mode=1, **options):
    m = transparent(tcfg, **options)
    assert m.at("AT+QIMUX=1") == ERROR  # transparent excludes multi-link
    assert m.at(f"AT&D{dtr_mode}") == OK
    host, out = m.open(index=None)
    assert out == OK + CONNECT
    return m, host


def escape(m) -> bytes:
    """Guard silence, `+++`, guard silence: what the module answered."""
    m.tick(GUARD)
    assert m.send(b"+++") == b""
    return m.tick(GUARD)


def logged(m) -> list:
    return [entry["cmd"] for entry in m.proto.commands.entries()]


def test_raw_data_both_ways_and_packetised_by_wait_time():
    m, host = connected()
    assert m.send(b"AT+QICLOSE\r+++\x1a") == b""  # no echo, no commands: it is all data
    assert host.received == b""
    m.tick(0.4)  # QITCFG WaitTm 2 x 200 ms
    assert host.received == b"AT+QICLOSE\r+++\x1a"
    host.send(b"\r\nOK\r\nCLOSED\r\n")
    assert m.tick() == b"\r\nOK\r\nCLOSED\r\n"
    assert "AT+QICLOSE" not in logged(m)


def test_send_size_packetises_at_once():
    m, host = connected(tcfg="3,10,4,1")
    m.send(b"abcdefghij")
    assert host.received == b"abcdefgh"
    m.tick(2.0)
    assert host.received == b"abcdefghij"


def test_guarded_escape_is_logged_and_the_link_waits_for_ato():
    """App note §4.1: `+++` -> OK; AT+QISACK -> +QISACK: <sent>, <acked>, <nAcked> then OK; ATO
    -> CONNECT, and what the peer sent meanwhile comes out then (choice 34)."""
    m, host = connected()
    m.send(b"hello")
    m.tick(0.4)
    assert escape(m) == OK
    assert logged(m)[-1] == "+++"
    assert m.proto.data_mode is None and m.proto.carrier  # command mode, the link is up
    assert m.at("AT+QISACK") == b"\r\n+QISACK: 5, 5, 0\r\n" + OK
    host.send(b"while in command mode")
    assert m.tick() == b""  # kept in the buffer, no URC
    assert m.at("ATO") == CONNECT + b"while in command mode"
    assert m.proto.data_mode is not None
    m.send(b" again")
    m.tick(0.4)
    assert host.received == b"hello again"


@pytest.mark.parametrize("steps", [
    [(GUARD, b"+"), (0.05, b"++")],  # too slow between the '+'
    [(GUARD, b"+++"), (0.2, b"more")],  # bytes within the guard after it
    [(GUARD, b"+++AT+QPOWD=1\r")],  # a command glued to it
    [(GUARD, b"x+++")],  # no guard before it
    [(GUARD, b"++"), (0.1, b"+")],
], ids=["gap", "guard-after", "glued-command", "guard-before", "gap-before-third"])
def test_plus_signs_that_are_no_escape_are_data(steps):
    m, host = connected()
    for silence, data in steps:
        m.tick(silence)
        assert m.send(data) == b""
    assert m.tick(GUARD + 0.5) == b""  # no OK, and nothing else
    assert host.received == b"".join(data for _, data in steps)
    assert m.proto.data_mode is not None
    assert "+++" not in logged(m) and "AT+QPOWD=1" not in logged(m)
    assert m.proto.powered


def test_qitcfg_esc_zero_makes_plus_signs_data_but_dtr_still_escapes():
    m, host = connected(tcfg="3,2,1460,0")
    assert escape(m) == b""
    m.tick(0.4)
    assert host.received == b"+++"
    m.proto.set_dtr(False)
    assert m.output() == OK
    assert logged(m)[-1] == "DTR drop" and "+++" not in logged(m)


def test_dtr_drop_with_and_d1_escapes_once_per_transition_and_keeps_the_link():
    m, host = connected()
    m.proto.set_dtr(False)
    assert m.output() == OK
    assert logged(m)[-1] == "DTR drop"
    assert m.at("AT+QISTAT") == OK + b"\r\nSTATE: CONNECT OK\r\n"
    assert m.at("ATO") == CONNECT
    m.proto.set_dtr(False)  # still OFF: no transition
    assert m.output() == b"" and m.proto.data_mode is not None
    m.proto.set_dtr(True)
    m.proto.set_dtr(False)
    assert m.output() == OK and m.proto.data_mode is None
    assert logged(m).count("DTR drop") == 2


def test_dtr_drop_with_and_d2_closes_the_link():
    m, host = connected(dtr_mode=2)
    m.send(b"last")  # waits for the WaitTm; the close must not lose it
    m.proto.set_dtr(False)
    assert m.output() == OK
    assert host.received == b"last" and host.transport.disconnecting  # delivered, then FIN
    assert m.at("ATO") == ERROR
    assert not m.proto.carrier


def test_dtr_drop_is_ignored_with_and_d0_and_in_command_mode():
    m, host = connected(dtr_mode=0)
    m.proto.set_dtr(False)
    assert m.output() == b"" and m.proto.data_mode is not None
    m.proto.set_dtr(True)
    assert escape(m) == OK
    assert m.at("AT&D1") == OK
    m.proto.set_dtr(False)
    assert m.output() == b""
    assert "DTR drop" not in logged(m)


def test_dcd_follows_the_connection_with_and_c1_and_is_always_on_with_and_c0():
    """App note §5.6.2: in transparent mode DCD is active while the TCP/UDP connection exists and
    goes inactive when it is dropped."""
    m = transparent()
    levels = []
    m.proto.carrier_observers.append(levels.append)
    assert not m.proto.carrier
    host, _ = m.open(index=None)
    assert levels == [True]
    assert escape(m) == OK and m.proto.carrier  # command mode, the link is still up
    host.close()
    m.tick()
    assert levels == [True, False]
    assert m.at("AT&C0") == OK
    assert levels == [True, False, True]
    m.proto.power_on()  # AT&C1 again at power-up, and no link
    assert levels == [True, False, True, False]


def test_dcd_drops_at_a_reboot_in_data_mode_and_the_boot_urcs_come_as_usual():
    m, host = connected()
    levels = []
    m.proto.carrier_observers.append(levels.append)
    m.proto.power_on()
    assert m.output() == BOOT
    assert levels == [False]
    assert m.proto.data_mode is None and host.transport.aborted
    assert m.send(b"+++") == b"+++"  # echo is on again; no OK: command mode
    assert m.at("AT") == b"AT\r" + OK


def test_with_flow_control_a_full_uart_buffer_stops_the_uart():
    m, host = connected(send_buffer=10, uart_rx_buffer=8)
    host.transport.kernel.room = 0
    m.send(b"a" * 10)  # more than the buffer holds: out at once
    assert m.uart.producerState == "producing"
    m.send(b"b" * 8)  # no room in the send buffer: the UART buffer fills
    assert m.uart.producerState == "paused"
    host.transport.kernel.room = None
    m.tick(0.1)
    assert m.uart.producerState == "producing"
    assert host.received == b"a" * 10 + b"b" * 8
    assert m.proto.uart_overrun == 0


def test_without_flow_control_what_does_not_fit_the_uart_buffer_is_lost_and_counted():
    m, host = connected(send_buffer=8, uart_rx_buffer=8, flow_control=False)
    host.transport.kernel.room = 0
    m.send(b"a" * 8)  # a full buffer goes out at once, below SendSz
    m.send(b"b" * 6)
    m.send(b"c" * 6)
    assert m.uart.producerState == "producing"  # nothing holds the host back
    assert m.proto.uart_overrun == 4
    host.transport.kernel.room = None
    m.tick(0.1)
    assert host.received == b"a" * 8 + b"b" * 6 + b"c" * 2


def test_an_escape_keeps_what_the_uart_buffer_holds_and_sends_it_in_command_mode():
    m, host = connected(send_buffer=10)
    host.transport.kernel.room = 0
    m.send(b"a" * 10)
    m.tick(0.4)
    m.send(b"b" * 5)  # no room in the send buffer: they wait in the UART buffer
    assert escape(m) == OK
    assert m.uart.producerState == "producing"  # the UART takes commands
    host.transport.kernel.room = None
    m.tick(0.1)
    assert host.received == b"a" * 10 + b"b" * 5
    assert m.at("ATO") == CONNECT
    m.send(b"c")
    m.tick(0.4)
    assert host.received == b"a" * 10 + b"b" * 5 + b"c"


def test_remote_close_in_data_mode_puts_closed_after_the_data_and_leaves_data_mode():
    """App note §4 and §6.3: CLOSED in the stream, command mode; a `+++` then gets no OK and does
    not spoil the command typed after it."""
    m, host = connected()
    host.send(b"bye")
    host.close()
    assert m.tick() == b"bye\r\nCLOSED\r\n"
    assert m.proto.data_mode is None and not m.proto.carrier
    assert escape(m) == b""
    assert m.at("AT+QISTAT") == OK + b"\r\nSTATE: IP CLOSE\r\n"
    assert "+++" not in logged(m) and logged(m)[-1] == "AT+QISTAT"
    assert m.at("ATO") == ERROR


def test_remote_close_in_command_mode_is_a_closed_urc_and_ato_answers_error():
    """Choice 34: what waited for ATO stays readable with AT+QIRD until AT+QICLOSE."""
    m, host = connected()
    assert escape(m) == OK
    host.send(b"late")
    host.close()
    assert m.tick() == b"\r\nCLOSED\r\n"
    assert m.at("ATO") == ERROR
    assert m.at("AT+QIRD=0,1,0,100") == b"\r\n+QIRD: 127.0.0.1:5000,TCP,4\r\nlate\r\nOK\r\n"
    assert m.at("AT+QICLOSE") == b"\r\nCLOSE OK\r\n"


def test_pdp_deact_in_data_mode_goes_into_the_stream_and_leaves_data_mode():
    m, host = connected()
    host.send(b"x")
    assert m.tick() == b"x"
    lose_contexts(m.proto)
    assert m.output() == b"\r\n+PDP DEACT\r\n"
    assert m.proto.data_mode is None and not m.proto.carrier
    assert escape(m) == b""
    assert m.at("AT+QISTAT") == OK + b"\r\nSTATE: PDP DEACT\r\n"


def test_a_killed_link_in_data_mode_says_nothing_and_its_acked_count_stops():
    m, host = connected()
    m.send(b"before")
    m.tick(0.4)
    m.proto.ctx.socket(False, 0).kill()
    host.send(b"never")
    m.send(b"up")
    assert m.tick(1.0) == b""
    assert host.received == b"before"
    assert escape(m) == OK
    assert m.at("AT+QISACK") == b"\r\n+QISACK: 8, 6, 2\r\n" + OK
    assert m.at("ATO") == CONNECT  # the module does not know


def test_qiclose_after_escape_answers_close_ok_and_then_ato_errors():
    m, host = connected()
    assert escape(m) == OK
    assert m.at("AT+QICLOSE") == b"\r\nCLOSE OK\r\n"
    assert host.transport.disconnecting and not m.proto.carrier
    assert m.at("ATO") == ERROR


def test_transparent_server_takes_one_client_at_a_time_and_keeps_listening():
    """App note §4.2: REMOTE IP then CONNECT, data mode; AT+QISACK and AT+QICLOSE address the link
    without AT+QISRVC.  The listener stays; a closed link is replaced by the next client."""
    m = transparent()
    assert m.at('AT+QILPORT="TCP",0') == OK
    assert m.at("AT+QISERVER") == OK + b"\r\nSERVER OK\r\n"
    first = m.client_connects(40001)
    assert m.tick() == b"\r\nREMOTE IP: 127.0.0.1\r\n" + CONNECT
    assert m.proto.carrier and m.proto.data_mode is not None
    assert m.client_connects(40002) is None  # one link only
    m.send(b"hi")
    m.tick(0.4)
    assert first.received == b"hi"
    assert escape(m) == OK
    assert m.at("AT+QISACK") == b"\r\n+QISACK: 2, 2, 0\r\n" + OK
    assert m.at('AT+QIOPEN="TCP","127.0.0.1",5000') == b"\r\nALREADY CONNECT\r\n"
    assert m.at("ATO") == CONNECT
    first.send(b"bye")
    first.close()
    assert m.tick() == b"bye\r\nCLOSED\r\n"
    assert m.at("AT+QISSTAT") == OK + b"\r\nS: LISTENNING\r\n"
    second = m.client_connects(40003)
    assert m.tick() == b"\r\nREMOTE IP: 127.0.0.1\r\n" + CONNECT
    assert escape(m) == OK
    assert m.at("AT+QICLOSE") == b"\r\nCLOSE OK\r\n"  # the link
    assert second.transport.disconnecting
    assert m.at("AT+QICLOSE") == b"\r\nCLOSE OK\r\n"  # then the listener
    assert m.at("AT+QISSTAT") == OK + b"\r\nS: INITIAL\r\n"
