"""Transcript tests: transparent data mode (QIMODE=1), QITCFG packetisation, +++ escape, ATO."""

from sim_harness import Module

OK = b"\r\nOK\r\n"


def connected(**options):
    m = Module(escape_guard=0.5, **options)
    m.ready(mode=1)
    assert m.at("AT+QIMUX=1") == b"\r\nERROR\r\n"  # transparent excludes multi-link
    host, out = m.open(index=None)
    assert out == OK + b"\r\nCONNECT\r\n"
    return m, host


def test_raw_data_both_ways_and_packetised_by_wait_time():
    m, host = connected()
    assert m.send(b"AT+QICLOSE\r+++\x1a") == b""  # no echo, no commands: it is all data
    assert host.received == b""
    m.tick(0.4)  # QITCFG WaitTm 2 x 200 ms
    assert host.received == b"AT+QICLOSE\r+++\x1a"
    host.send(b"\r\nOK\r\nCLOSED\r\n")
    assert m.tick() == b"\r\nOK\r\nCLOSED\r\n"


def test_send_size_packetises_at_once():
    m, host = connected()
    m.proto.settings.tcfg = (3, 10, 4, 1)
    m.proto.leave_data_mode()
    m.proto.enter_data_mode(m.proto.ctx.socket(False, 0))
    m.send(b"abcdefghij")
    assert host.received == b"abcdefgh"
    m.tick(2.0)
    assert host.received == b"abcdefghij"


def test_guarded_escape_then_ato_resumes():
    m, host = connected()
    m.tick(0.5)
    assert m.send(b"+++") == b""
    assert m.tick(0.5) == OK
    assert m.at("AT+QISACK") == b"\r\n+QISACK: 0, 0, 0\r\n" + OK
    host.send(b"while in command mode")
    assert m.tick() == b""  # kept in the buffer, no URC
    assert m.at("ATO") == b"\r\nCONNECT\r\nwhile in command mode"


def test_plus_signs_without_guard_are_data():
    m, host = connected()
    m.tick(0.5)
    m.send(b"x+++")
    assert m.tick(1.0) == b""
    assert host.received == b"x+++"
    m.send(b"++")
    m.tick(0.1)  # gap too long before the third '+'
    m.send(b"+")
    assert m.tick(1.0) == b""
    assert host.received == b"x+++" + b"+++"


def test_data_right_after_plus_cancels_escape():
    m, host = connected()
    m.tick(0.5)
    m.send(b"+++")
    m.tick(0.2)
    m.send(b"y")
    assert m.tick(1.0) == b""
    assert host.received == b"+++y"


def test_remote_close_puts_closed_in_stream_and_returns_to_command_mode():
    m, host = connected()
    host.send(b"bye")
    host.close()
    assert m.tick() == b"bye\r\nCLOSED\r\n"
    assert m.at("AT") == OK


def test_dtr_drop_with_and_d1_escapes():
    m, host = connected()
    m.proto.dtrDropped()
    assert m.output() == OK
    assert m.at("AT+QICLOSE") == b"\r\nCLOSE OK\r\n"


def test_full_send_buffer_pauses_uart_input():
    m, host = connected(send_buffer=10)
    host.transport.kernel.room = 0
    m.send(b"a" * 10)
    m.tick(0.4)
    m.send(b"b" * 5)
    m.tick(0.4)
    assert m.uart.producerState == "paused"
    host.transport.kernel.room = None
    m.tick(0.1)
    assert m.uart.producerState == "producing"
    m.tick(0.5)
    assert host.received == b"a" * 10 + b"b" * 5
