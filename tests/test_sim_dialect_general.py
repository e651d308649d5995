"""Transcript tests: general commands, framing, echo, power-up defaults, registration, errors."""

from sim_harness import Module

OK = b"\r\nOK\r\n"
ERROR = b"\r\nERROR\r\n"


def test_boot_urcs_in_the_documented_order():
    m = Module()
    assert m.boot == (b"\r\nRDY\r\n\r\n+CFUN: 1\r\n\r\n+CPIN: READY\r\n"
                      b"\r\nCall Ready\r\n\r\nSMS Ready\r\n")


def test_echo_on_at_power_up_echoes_raw_command_including_cr():
    m = Module()
    assert m.at("AT+GSN") == b"AT+GSN\r\r\n861234567890125\r\n" + OK
    assert m.at("ATE0") == b"ATE0\r" + OK
    assert m.at("AT") == OK


def test_lf_after_cr_is_ignored_and_command_may_arrive_in_pieces():
    m = Module()
    m.at("ATE0")
    assert m.send(b"A") == b""
    assert m.send(b"T+CSQ\r\n") == b"\r\n+CSQ: 25,0\r\n" + OK


def test_power_up_defaults_read_back():
    m = Module()
    m.at("ATE0")
    assert m.at("AT+CMEE?") == b"\r\n+CMEE: 1\r\n" + OK
    assert m.at("AT+QIMUX?") == b"\r\n+QIMUX: 0\r\n" + OK
    assert m.at("AT+QIMODE?") == b"\r\n+QIMODE: 0\r\n" + OK
    assert m.at("AT+QINDI?") == b"\r\n+QINDI: 0\r\n" + OK
    assert m.at("AT+QIDNSIP?") == b"\r\n+QIDNSIP: 0\r\n" + OK
    assert m.at("AT+QISDE?") == b"\r\n+QISDE: 1\r\n" + OK
    assert m.at("AT+QIPROMPT?") == b"\r\n+QIPROMPT: 1\r\n" + OK
    assert m.at("AT+QITCFG?") == b"\r\n+QITCFG: 3,2,1460,1\r\n" + OK
    assert m.at("AT+QIFGCNT?") == b"\r\n+QIFGCNT: 0\r\n" + OK


def test_identity_commands():
    m = Module()
    m.at("ATE0")
    assert m.at("ATI") == (b"\r\nQuectel_Ltd\r\n\r\nQuectel_M95\r\n\r\nRevision: M95FAR02A08\r\n" + OK)
    assert m.at("AT+GMR") == b"\r\nRevision: M95FAR02A08\r\n" + OK


def test_unknown_commands_and_typos_answer_error():
    m = Module()
    m.at("ATE0")
    assert m.at("AT+QIMOD=0") == ERROR
    assert m.at("AT+CGMI") == ERROR
    assert m.at("ATX") == ERROR
    assert m.at("AT+QIMUX=7") == ERROR


def test_non_at_lines_are_ignored_and_what_comes_before_at_is_skipped():
    m = Module()
    m.at("ATE0")
    assert m.at("hello") == b""
    assert m.send(b"+++") == b""  # app note §6.3: the `+++` of a host unsure of its mode ...
    assert m.at("AT+CSQ") == b"\r\n+CSQ: 25,0\r\n" + OK  # ... does not spoil the next command
    assert [entry["cmd"] for entry in m.proto.commands.entries()] == ["ATE0", "AT+CSQ"]


def test_basic_commands_chain_with_one_result_and_settings_commands():
    m = Module()
    assert m.at("ATE0V1") == b"ATE0V1\r" + OK
    for cmd in ("AT&D1", "AT&C1", "AT+IFC=2,2", "AT+QSCLK=1", "AT+IPR=115200&W", "AT+CMEE=2"):
        assert m.at(cmd) == OK, cmd
    assert m.at("AT+IPR?") == b"\r\n+IPR: 115200\r\n" + OK
    assert m.at("AT+IPR=12345") == ERROR


def test_numeric_results_with_atv0():
    m = Module()
    m.at("ATE0")
    assert m.at("ATV0") == b"0\r"
    assert m.at("AT+CSQ") == b"+CSQ: 25,0\r\n0\r"
    assert m.at("AT+FOO") == b"4\r"


def test_pin_required_then_entered():
    m = Module(pin="1234")
    assert b"+CPIN: SIM PIN" in m.boot and b"Call Ready" not in m.boot
    m.at("ATE0")
    assert m.at("AT+CPIN?") == b"\r\n+CPIN: SIM PIN\r\n" + OK
    assert m.at("AT+CREG?") == b"\r\n+CREG: 0,0\r\n" + OK
    assert m.at('AT+CPIN="0000"') == b"\r\n+CME ERROR: 16\r\n"
    assert m.at('AT+CPIN="1234"') == OK + b"\r\nCall Ready\r\n\r\nSMS Ready\r\n"
    assert m.at("AT+CREG?") == b"\r\n+CREG: 0,1\r\n" + OK


def test_registration_delay_with_urc_and_attach():
    m = Module(register_delay=10)
    m.at("ATE0")
    assert m.at("AT+CREG=1") == OK
    assert m.at("AT+CREG?") == b"\r\n+CREG: 1,2\r\n" + OK
    assert m.at("AT+CGATT?") == b"\r\n+CGATT: 0\r\n" + OK
    assert m.at("AT+CGATT=1") == ERROR
    assert m.tick(10) == b"\r\n+CREG: 1\r\n"
    assert m.at("AT+CGREG?") == b"\r\n+CGREG: 0,1\r\n" + OK
    assert m.at("AT+CGATT?") == b"\r\n+CGATT: 1\r\n" + OK


def test_registration_denied_blocks_activation():
    m = Module(register_deny=True)
    m.at("ATE0")
    assert m.at("AT+CREG?") == b"\r\n+CREG: 0,3\r\n" + OK
    assert m.at("AT+QIREGAPP") == OK
    assert m.at("AT+QIACT") == ERROR


def test_cfun_and_power_down():
    m = Module()
    m.at("ATE0")
    assert m.at("AT+CFUN?") == b"\r\n+CFUN: 1\r\n" + OK
    assert m.at("AT+CFUN=4") == OK
    assert m.at("AT+CSQ") == b"\r\n+CSQ: 99,99\r\n" + OK
    assert m.at("AT+CFUN=1") == OK + b"\r\nCall Ready\r\n\r\nSMS Ready\r\n"
    assert m.at("AT+QPOWD=1") == b"\r\nNORMAL POWER DOWN\r\n"
    assert m.at("AT") == b""


def test_cfun_reset_reboots_to_defaults():
    m = Module()
    m.at("ATE0")
    m.at("AT+QIMUX=1")
    out = m.at("AT+CFUN=1,1")
    assert out.startswith(OK) and out.endswith(b"\r\nSMS Ready\r\n")
    assert m.at("AT") == b"AT\r" + OK  # echo back on
    m.at("ATE0")
    assert m.at("AT+QIMUX?") == b"\r\n+QIMUX: 0\r\n" + OK


def test_command_log_has_monotonic_stamps_and_no_payload():
    m = Module()
    m.at("ATE0")
    m.proto.commands._now = iter([1.0, 2.0, 3.0]).__next__
    m.at("AT+CSQ")
    entries = m.proto.commands.entries()
    assert [e["cmd"] for e in entries] == ["ATE0", "AT+CSQ"]
    assert entries[1]["t"] == 1.0


def test_chaos_urcs_only_before_final_results_and_reproducible():
    def run(seed):
        from bridge.sim.chaos import Chaos

        m = Module()
        m.at("ATE0")
        m.proto.chaos_source = Chaos(seed).pick
        return [m.at("AT+CSQ") for _ in range(20)]

    first, again = run(7), run(7)
    assert first == again
    urcs = (b"\r\nCall Ready\r\n", b"\r\nSMS Ready\r\n", b"\r\n+CREG: 1\r\n", b"\r\n+CGREG: 1\r\n")
    assert any(out != b"\r\n+CSQ: 25,0\r\n" + OK for out in first)
    for out in first:
        assert out.startswith(b"\r\n+CSQ: 25,0\r\n") and out.endswith(OK)
        middle = out[len(b"\r\n+CSQ: 25,0\r\n"):-len(OK)]
        assert middle in (b"",) + urcs
