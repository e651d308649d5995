"""Transcript tests: bearer setup, QIOPEN/QISEND/QISACK/QIRD/QICLOSE/QISTAT, push receive,
server sockets, faults.  Exact bytes per docs/at-dialect.md §3-§5 and §9."""

import pytest

from sim_harness import Module

OK = b"\r\nOK\r\n"
ERROR = b"\r\nERROR\r\n"
NASTY = b"a\r\nOK\r\n\x1a\x1b+++CLOSED\r\n> \r\n+QIRDI: 0,1,0\r\nz"


def test_bearer_state_machine_single_link():
    m = Module()
    m.at("ATE0")
    assert m.at("AT+QIFGCNT=0") == OK
    assert m.at('AT+QICSGP=1, "CMNET"') == OK
    assert m.at("AT+QILOCIP") == ERROR
    assert m.at("AT+QIACT") == ERROR  # needs IP START
    assert m.at("AT+QIREGAPP") == OK
    assert m.at("AT+QISTAT") == OK + b"\r\nSTATE: IP START\r\n"
    assert m.at("AT+QIMUX=1") == ERROR  # only in IP INITIAL
    assert m.at("AT+QIACT") == OK
    assert m.at("AT+QISTAT") == OK + b"\r\nSTATE: IP GPRSACT\r\n"
    assert m.at("AT+QILOCIP") == b"\r\n10.100.0.2\r\n"
    assert m.at("AT+QISTAT") == OK + b"\r\nSTATE: IP STATUS\r\n"
    assert m.at("AT+QIDEACT") == b"\r\nDEACT OK\r\n"
    assert m.at("AT+QISTAT") == OK + b"\r\nSTATE: IP INITIAL\r\n"


def test_qiact_takes_its_time_and_holds_later_commands():
    m = Module(act_delay=2.0)
    m.at("ATE0")
    m.at("AT+QIREGAPP")
    assert m.at("AT+QIACT") == b""
    assert m.at("AT+CSQ") == b""  # held while QIACT runs
    assert m.tick(2.0) == OK + b"\r\n+CSQ: 25,0\r\n" + OK


def test_open_send_ack_close_single_link():
    m = Module()
    m.ready()
    host, out = m.open(index=None)
    assert out == OK + b"\r\nCONNECT OK\r\n"
    assert m.at("AT+QISTAT") == OK + b"\r\nSTATE: CONNECT OK\r\n"
    assert m.at('AT+QIOPEN="TCP","127.0.0.1",5000') == b"\r\nALREADY CONNECT\r\n"
    assert m.at("AT+QISEND=5") == b"\r\n> "
    assert m.send(b"hello") == b"hello\r\nSEND OK\r\n"  # QISDE=1 echoes the payload
    assert host.received == b"hello"
    assert m.at("AT+QISACK") == b"\r\n+QISACK: 5, 5, 0\r\n" + OK
    assert m.at("AT+QISACK=0") == ERROR  # no index with QIMUX=0
    assert m.at("AT+QICLOSE") == b"\r\nCLOSE OK\r\n"
    assert m.at("AT+QISTAT") == OK + b"\r\nSTATE: IP CLOSE\r\n"
    assert m.at("AT+QISEND=5") == ERROR


def test_variable_length_send_ctrl_z_and_esc_cancel():
    m = Module()
    m.ready()
    host, _ = m.open(index=None)
    m.at("AT+QISDE=0")
    assert m.at("AT+QISEND") == b"\r\n> "
    assert m.send(b"abc\x1a") == b"\r\nSEND OK\r\n"
    assert m.at("AT+QISEND") == b"\r\n> "
    assert m.send(b"never\x1b") == OK
    assert host.received == b"abc"


@pytest.mark.parametrize("payload", [NASTY, bytes(range(256)) * 5 + b"\x1a\x1b"])
def test_fixed_length_binary_payload_is_data_not_control(payload):
    m = Module()
    m.ready(mux=1)
    host, out = m.open(0)
    assert out == OK + b"\r\n0, CONNECT OK\r\n"
    m.at("AT+QISDE=0")
    assert m.at(f"AT+QISEND=0,{len(payload)}") == b"\r\n> "
    assert m.send(payload + b"AT\r") == b"\r\nSEND OK\r\n" + OK  # the extra bytes are a command
    assert host.received == payload


def test_esc_filler_completes_a_pending_fixed_payload_and_is_noise_in_command_mode():
    """What the AT engine writes after a QISEND whose prompt came too late (ESC x len, ESC, AT)."""
    m = Module()
    m.ready(mux=1)
    host, _ = m.open(0)
    m.at("AT+QISDE=0")
    recovery = b"\x1b" * 5 + b"\x1bAT\r"
    assert m.at("AT+QISEND=0,5") == b"\r\n> "
    assert m.send(recovery) == b"\r\nSEND OK\r\n" + OK
    assert host.received == b"\x1b" * 5
    assert m.send(recovery) == OK  # no payload pending: the ESC bytes only clear the line
    assert host.received == b"\x1b" * 5


def test_qisend_limits_and_mux_argument_rules():
    m = Module()
    m.ready(mux=1)
    m.open(0)
    assert m.at("AT+QISEND=0,1461") == ERROR
    assert m.at("AT+QISEND") == ERROR
    assert m.at("AT+QISEND=3,5") == ERROR  # not connected
    assert m.at("AT+QISACK") == ERROR
    assert m.at("AT+QISACK=3") == b"\r\n+QISACK: 0, 0, 0\r\n" + OK
    assert m.at("AT+QICLOSE") == ERROR


def test_send_buffer_full_gives_send_fail_and_acks_follow_the_kernel():
    m = Module(send_buffer=100)
    m.ready(mux=1)
    host, _ = m.open(0)
    m.at("AT+QISDE=0")
    host.transport.kernel.room = 30  # the "kernel" takes 30 bytes, then is full
    m.at("AT+QISEND=0,60")
    assert m.send(b"x" * 60) == b"\r\nSEND OK\r\n"
    assert m.at("AT+QISACK=0") == b"\r\n+QISACK: 60, 30, 30\r\n" + OK
    m.at("AT+QISEND=0,80")
    assert m.send(b"y" * 80) == b"\r\nSEND FAIL\r\n"  # 30 unacked + 80 > 100
    host.transport.kernel.room = None
    m.tick(0.02)
    assert m.at("AT+QISACK=0") == b"\r\n+QISACK: 60, 60, 0\r\n" + OK


def test_killed_socket_freezes_acks_and_heals():
    m = Module()
    m.ready(mux=1)
    host, _ = m.open(0)
    m.at("AT+QISDE=0")
    sock = m.proto.ctx.socket(False, 0)
    sock.kill()
    m.at("AT+QISEND=0,4")
    assert m.send(b"ping") == b"\r\nSEND OK\r\n"
    host.send(b"reply")
    assert m.tick(1) == b""  # no data: silently dead
    assert host.received == b""
    assert m.at("AT+QISACK=0") == b"\r\n+QISACK: 4, 0, 4\r\n" + OK
    sock.heal()
    assert host.received == b"ping"
    assert m.tick(0.02) == b"\r\n+RECEIVE: 0, 5\r\nreply"
    assert m.at("AT+QISACK=0") == b"\r\n+QISACK: 4, 4, 0\r\n" + OK
    sock.kill()
    host.close()
    assert m.tick(1) == b""  # no CLOSED while dead
    sock.heal()
    assert m.tick() == b"\r\n0, CLOSED\r\n"


def test_pull_mode_qirdi_qird_and_drain():
    m = Module()
    m.ready(mux=1, indi=1)
    host, _ = m.open(2)
    host.send(NASTY)
    assert m.tick() == b"\r\n+QIRDI: 0,1,2\r\n"
    host.send(b"more")
    assert m.tick() == b""  # only announced when the buffer was empty
    assert m.at("AT+QIRD=0,1,2,10") == b"\r\n+QIRD: 127.0.0.1:5000,TCP,10\r\n" + NASTY[:10] + b"\r\nOK\r\n"
    rest = NASTY[10:] + b"more"
    assert m.at("AT+QIRD=0,1,2,1500") == (
        b"\r\n+QIRD: 127.0.0.1:5000,TCP,%d\r\n" % len(rest) + rest + b"\r\nOK\r\n")
    assert m.at("AT+QIRD=0,1,2,1500") == OK
    assert m.at("AT+QIRD=0,1,2,1501") == ERROR
    host.send(b"x")
    assert m.tick() == b"\r\n+QIRDI: 0,1,2\r\n"


def test_pull_mode_2_reports_packets_and_close_then_error_after_drain():
    m = Module()
    m.ready(mux=1, indi=2)
    host, _ = m.open(0)
    host.send(b"12345")
    assert m.tick() == b"\r\n+QIRDI: 0,1,0,1,5,5\r\n"
    host.close()
    assert m.tick() == b"\r\n0, CLOSED\r\n"
    assert m.at("AT+QIRD=0,1,0,1500") == b"\r\n+QIRD: 127.0.0.1:5000,TCP,5\r\n12345\r\nOK\r\n"
    assert m.at("AT+QIRD=0,1,0,1500") == ERROR
    assert m.at("AT+QISTATE").count(b'"CLOSED"') == 1
    assert m.at("AT+QICLOSE=0") == b"\r\n0, CLOSE OK\r\n"


def test_push_mode_receive_frames_and_close_after_data():
    m = Module()
    m.ready(mux=1)
    host, _ = m.open(1)
    host.send(NASTY)
    host.close()
    assert m.tick() == b"\r\n+RECEIVE: 1, %d\r\n" % len(NASTY) + NASTY + b"\r\n1, CLOSED\r\n"


def test_push_mode_headers():
    m = Module()
    m.ready(mux=1)
    host, _ = m.open(0)
    m.at("AT+QIHEAD=1")
    m.at("AT+QISHOWRA=1")
    host.send(b"hi")
    assert m.tick() == b"\r\n+RECEIVE: 0, 2\r\nRECV FROM:127.0.0.1:5000\r\nIPD2:hi"


def test_single_link_push_is_raw_or_ipd_prefixed():
    m = Module()
    m.ready()
    host, _ = m.open(index=None)
    host.send(b"raw")
    assert m.tick() == b"raw"
    m.at("AT+QIHEAD=1")
    m.at("AT+QISHOWPT=1")
    host.send(b"abc")
    assert m.tick() == b"IPD3TCP:abc"
    host.close()
    assert m.tick() == b"\r\nCLOSED\r\n"


def test_push_paused_while_uart_backlog_is_high():
    m = Module()
    m.ready(mux=1)
    host, _ = m.open(0)
    m.proto.reports.pauseProducing()
    host.send(b"z" * 3000)
    assert m.tick() == b""
    assert m.proto.ctx.socket(False, 0).rx_buffered == 3000
    m.proto.reports.resumeProducing()
    out = m.output()
    assert out == (b"\r\n+RECEIVE: 0, 1460\r\n" + b"z" * 1460 + b"\r\n+RECEIVE: 0, 1460\r\n" + b"z" * 1460
                   + b"\r\n+RECEIVE: 0, 80\r\n" + b"z" * 80)


def test_receive_buffer_full_pauses_host_reading():
    m = Module(rx_buffer=1000)
    m.ready(mux=1, indi=1)
    host, _ = m.open(0)
    host.send(b"q" * 1000)
    m.tick()
    assert host.transport.producerState == "paused"
    m.at("AT+QIRD=0,1,0,600")
    assert host.transport.producerState == "producing"


def test_connect_fail_keeps_slot_until_qiclose():
    m = Module()
    m.ready(mux=1)
    assert m.at('AT+QIOPEN=4,"TCP","127.0.0.1",1') == OK
    m.refuse_connection()
    assert m.tick() == b"\r\n4, CONNECT FAIL\r\n"
    assert m.at('AT+QIOPEN=4,"TCP","127.0.0.1",1') == OK + b"\r\n4, CONNECT FAIL\r\n"
    assert m.at("AT+QICLOSE=4") == b"\r\n4, CLOSE OK\r\n"
    assert m.at("AT+QICLOSE=4") == ERROR


def test_connect_fail_fault_and_hostname_rules():
    m = Module(hosts={"echo.test": "127.0.0.1"})
    m.ready(mux=1)
    assert m.at('AT+QIOPEN=0,"TCP","echo.test",7') == ERROR  # QIDNSIP=0 wants a dotted IP
    assert m.at("AT+QIDNSIP=1") == OK
    m.proto.connect_fail_hosts.add("echo.test")
    assert m.at('AT+QIOPEN=0,"TCP","echo.test",7') == OK + b"\r\n0, CONNECT FAIL\r\n"
    m.proto.connect_fail_hosts.clear()
    m.at("AT+QICLOSE=0")
    assert m.at('AT+QIOPEN=0,"TCP","echo.test","7"') == OK
    assert m.reactor.tcpClients[-1][:2] == ("127.0.0.1", 7)


def test_dns_get_ip_ok_then_address():
    m = Module(hosts={"example.test": "127.0.0.9"})
    m.at("ATE0")
    assert m.at('AT+QIDNSGIP="example.test"') == OK + b"\r\n127.0.0.9\r\n"
    assert m.at('AT+QIDNSCFG="1.1.1.1"') == OK
    assert m.at("AT+QIDNSCFG?") == b"\r\nPrimaryDns:1.1.1.1\r\n\r\nSecondaryDns:0.0.0.0\r\n" + OK


@pytest.mark.parametrize("arguments", ['"dns.google"', '""', '"1.1.1.1","8.8.8"', "1", '"1.1.1.256"',
                                       '"1.1.1.1","8.8.8.8","9.9.9.9"'])
def test_dns_servers_must_be_dotted_addresses(arguments):
    """A bad argument answers ERROR (docs/at-dialect.md §6) and keeps the servers as they were."""
    m = Module()
    m.at("ATE0")
    assert m.at('AT+QIDNSCFG="1.1.1.1","8.8.8.8"') == OK
    assert m.at(f"AT+QIDNSCFG={arguments}") == ERROR
    assert m.at("AT+QIDNSCFG?") == b"\r\nPrimaryDns:1.1.1.1\r\n\r\nSecondaryDns:8.8.8.8\r\n" + OK


def test_implicit_activation_from_ip_initial():
    m = Module(act_delay=1.0)
    m.at("ATE0")
    assert m.at('AT+QIOPEN="TCP","127.0.0.1",80') == OK
    assert m.proto.ctx.reported_state == "IP CONFIG"
    m.tick(1.0)
    m.accept_connection()
    assert m.tick() == b"\r\nCONNECT OK\r\n"


def test_qistate_mux_lists_every_slot_then_ok():
    m = Module()
    m.ready(mux=1)
    m.open(1)
    out = m.at("AT+QISTATE")
    assert out == (OK + b"\r\nSTATE: IP PROCESSING\r\n"
                   b'\r\n+QISTATE: 0,"","",,"INITIAL"\r\n'
                   b'\r\n+QISTATE: 1,"TCP","127.0.0.1",5000,"CONNECTED"\r\n'
                   + b"".join(b'\r\n+QISTATE: %d,"","",,"INITIAL"\r\n' % i for i in range(2, 6)) + OK)


def test_pdp_deact_closes_everything_until_qideact():
    from bridge.sim.cmd_general import lose_contexts

    m = Module()
    m.ready(mux=1)
    host, _ = m.open(0)
    lose_contexts(m.proto)
    assert m.output() == b"\r\n+PDP DEACT\r\n"
    assert host.transport.aborted
    assert m.at("AT+QISTATE").startswith(OK + b"\r\nSTATE: PDP DEACT\r\n")
    assert m.at('AT+QIOPEN=0,"TCP","127.0.0.1",5000') == ERROR
    assert m.at("AT+QIDEACT") == b"\r\nDEACT OK\r\n"
    assert m.at("AT+QIREGAPP") == OK


def _context_up(m, cid):
    """AT+QIFGCNT=cid and that context in mux mode, active, with its local IP shown."""
    for cmd in (f"AT+QIFGCNT={cid}", "AT+QIMUX=1", "AT+QIREGAPP", "AT+QIACT"):
        assert m.at(cmd) == OK
    return m.at("AT+QILOCIP")


def test_one_context_lost_alone_leaves_the_other_and_its_sockets_alone():
    from bridge.sim.cmd_general import lose_contexts

    m = Module()
    m.at("ATE0")
    assert _context_up(m, 0) == b"\r\n10.100.0.2\r\n"
    first, _ = m.open(0)
    assert _context_up(m, 1) == b"\r\n10.101.0.2\r\n"
    second, _ = m.open(1)
    lose_contexts(m.proto, 0)
    assert m.output() == b"\r\n+PDP DEACT\r\n"  # once, naming no context
    assert first.transport.aborted and not second.transport.aborted
    assert m.at("AT+QISTATE").startswith(OK + b"\r\nSTATE: IP PROCESSING\r\n")  # context 1
    second.send(b"still here")
    assert m.tick() == b"\r\n+RECEIVE: 1, 10\r\nstill here"
    assert m.at("AT+QIFGCNT=0") == OK
    assert m.at("AT+QISTATE").startswith(OK + b"\r\nSTATE: PDP DEACT\r\n")
    assert m.at("AT+QIDEACT") == b"\r\nDEACT OK\r\n"  # the foreground context only
    assert m.at("AT+QIREGAPP") == OK and m.at("AT+QIACT") == OK
    assert [ctx.reported_state for ctx in m.proto.contexts] == ["IP GPRSACT", "IP PROCESSING"]


def test_two_active_contexts_exclude_transparent_mode():
    m = Module()
    m.at("ATE0")
    for cmd in ("AT+QIMODE=1", "AT+QIREGAPP", "AT+QIACT", "AT+QIFGCNT=1", "AT+QIREGAPP"):
        assert m.at(cmd) == OK
    assert m.at("AT+QIACT") == ERROR  # app note §7.2
    assert m.at("AT+QIFGCNT=0") == OK and m.at("AT+QIDEACT") == b"\r\nDEACT OK\r\n"
    assert m.at("AT+QIMODE=0") == OK and m.at("AT+QIREGAPP") == OK and m.at("AT+QIACT") == OK
    assert m.at("AT+QIFGCNT=1") == OK and m.at("AT+QIACT") == OK


def test_server_socket_addressing():
    m = Module()
    m.ready(mux=1, indi=1)
    assert m.at('AT+QILPORT="TCP",0') == OK
    assert m.at("AT+QISERVER=0,3") == OK + b"\r\nSERVER OK\r\n"
    assert m.at("AT+QISSTAT") == OK + b"\r\nS: LISTENNING\r\n"
    client = m.client_connects(40000)
    assert m.tick() == b"\r\n0, REMOTE IP: 127.0.0.1\r\n"
    client.send(b"up")
    assert m.tick() == b"\r\n+QIRDI: 0,2,0\r\n"
    assert m.at("AT+QIRD=0,2,0,100") == b"\r\n+QIRD: 127.0.0.1:40000,TCP,2\r\nup\r\nOK\r\n"
    assert m.at("AT+QISEND=0,2") == ERROR  # QISRVC=1 addresses client sockets
    assert m.at("AT+QISRVC=2") == OK
    assert m.at("AT+QISEND=0,2") == b"\r\n> "
    assert m.send(b"dn") == b"dn\r\nSEND OK\r\n"
    assert client.received == b"dn"
    assert m.at("AT+QICLOSE=0") == b"\r\n0, CLOSE OK\r\n"
    assert m.at("AT+QICLOSE") == b"\r\nCLOSE OK\r\n"


def test_qiautos_sends_what_was_typed_when_the_timer_expires():
    m = Module()
    m.ready()
    host, _ = m.open(index=None)
    m.at("AT+QISDE=0")
    assert m.at("AT+QIAUTOS=1,2") == OK
    m.at("AT+QISEND")
    assert m.send(b"tick") == b""
    assert m.tick(2) == b"\r\nSEND OK\r\n"
    assert host.received == b"tick"
    m.at("AT+QISEND")
    assert m.tick(2) == b"\r\nSEND FAIL\r\n"


def test_qiprompt_zero_has_no_prompt():
    m = Module()
    m.ready()
    m.open(index=None)
    m.at("AT+QISDE=0")
    m.at("AT+QIPROMPT=0")
    assert m.at("AT+QISEND=2") == b""
    assert m.send(b"ab") == b"\r\nSEND OK\r\n"
