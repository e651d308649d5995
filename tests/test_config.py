"""bridge.config: the INI contract, AT-bound values, the keepalive and recovery keys."""

import dataclasses
import pathlib
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.endpoints import _parse

from bridge.config import (NOTHING_CARRIED, SCHEMA, ConfigError, Listen, ModemConfig, Remote,
                           config_warnings, load_config, reference_markdown)
from bridge.config_values import Invalid, endpoint_fields

CONFIGS = sorted((pathlib.Path(__file__).parent.parent / "configs").glob("*.ini"))

MODEM = "[modem:main]\nport = /dev/ttyUSB0\n"


def write(tmp_path, text, name="c.ini"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), newline="")
    return str(path)


def problems(tmp_path, text):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    prefix = path + ": "
    assert all(line.startswith(prefix) for line in caught.value.problems)
    assert str(caught.value) == "\n".join(caught.value.problems)
    return [line[len(prefix):] for line in caught.value.problems]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    config = load_config(path)
    assert config.modems and config.profiles
    for profile in config.profiles.values():
        assert profile.listen.interface == "127.0.0.1"


def test_minimal_config_gets_every_default(tmp_path):
    config = load_config(write(tmp_path, MODEM + """
        [profile:web]
        listen = tcp:8080
        remote = tcp:example.com:80
        """))
    assert config.general.log_level == "info"
    assert config.general.state_dir == "/var/lib/cellbridge"
    assert config.general.control is None
    assert config.modems["main"] == ModemConfig(name="main", port="/dev/ttyUSB0")
    modem = config.modems["main"]
    assert (modem.baudrate, modem.rtscts, modem.pin, modem.mode, modem.receive) == (
        115200, False, None, "mux", "pull")
    assert (modem.keepalive_first, modem.keepalive_interval, modem.keepalive_retries,
            modem.keepalive_idle) == (5, 10, 12, 480)
    assert (modem.sleep, modem.reset_command, modem.send_window, modem.sim_args,
            modem.registration_timeout, modem.timeouts) == (False, None, 5840, (), 180, ())
    profile = config.profiles["web"]
    assert profile.listen == Listen("tcp", "tcp:8080:interface=127.0.0.1", 8080, "127.0.0.1")
    assert profile.remote == Remote("TCP", "example.com", 80)
    assert (profile.modem, profile.max_links, profile.queue, profile.queue_timeout,
            profile.linger, profile.probe, profile.reopen) == ("main", 6, 16, 30, 2, b"", False)


def test_every_key_set(tmp_path):
    config = load_config(write(tmp_path, r"""
        [cellbridge]
        control = unix:/run/cellbridge/control.sock
        log_level = debug
        state_dir = state

        [modem:a]
        port = /dev/ttyS1
        baudrate = 9600
        rtscts = yes
        apn = web.example
        username = me
        password = p%ss ;not a comment # either
        pin = 00001234
        mode = transparent
        packet_wait = 1.2
        packet_size = 512
        dtr_escape = yes
        dcd = yes
        receive = push
        keepalive_first = 0.5
        keepalive_interval = 1.25
        keepalive_retries = 0
        keepalive_idle = 60
        sleep = on
        reset_command = /usr/local/bin/power-cycle --gpio 17
        send_window = 0
        sim_args = --baud 115200 --hosts "/tmp/my hosts"
        registration_timeout = 2.5
        timeouts = qiopen=75  qiact=240.5

        [modem:b]
        port = sim

        [profile:dns]
        listen = udp:5353:interface=127.0.0.2
        remote = udp:192.0.2.1:53
        modem = b
        max_links = 1
        queue = 0
        queue_timeout = 0.5
        linger = 0
        probe = PING\r\n\x00\xff\\
        reopen = true

        [server:ssh]
        modem = a
        protocol = tcp
        port = 2020
        forward = tcp:127.0.0.1:22
        max_clients = 3
        """))
    assert config.general.control == "unix:/run/cellbridge/control.sock"
    assert config.general.state_dir == str(tmp_path / "state")
    a = config.modems["a"]
    assert a.password == "p%ss ;not a comment # either"
    assert "p%ss" not in repr(a) and "00001234" not in repr(a)
    assert (a.pin, a.mode, a.receive, a.rtscts, a.sleep) == ("00001234", "transparent", "push",
                                                             True, True)
    assert (a.packet_wait, a.packet_size, a.dtr_escape, a.dcd) == (1.2, 512, True, True)
    assert (a.keepalive_first, a.keepalive_interval, a.keepalive_retries) == (0.5, 1.25, 0)
    assert a.sim_args == ("--baud", "115200", "--hosts", "/tmp/my hosts")
    assert a.reset_command == "/usr/local/bin/power-cycle --gpio 17"
    assert (a.send_window, a.registration_timeout) == (0, 2.5)
    assert a.timeouts == (("qiact", 240.5), ("qiopen", 75.0))  # sorted: one spelling, one value
    assert hash(a) == hash(dataclasses.replace(a))
    dns = config.profiles["dns"]
    assert dns.listen == Listen("udp", "udp:5353:interface=127.0.0.2", 5353, "127.0.0.2")
    assert dns.remote == Remote("UDP", "192.0.2.1", 53)
    assert dns.probe == b"PING\r\n\x00\xff\\"
    assert (dns.modem, dns.max_links, dns.queue, dns.linger, dns.reopen) == ("b", 1, 0, 0, True)
    ssh = config.servers["ssh"]
    assert (ssh.modem, ssh.protocol, ssh.port, ssh.forward, ssh.max_clients) == (
        "a", "tcp", 2020, "tcp:127.0.0.1:22", 3)


def test_value_with_semicolon_and_hash_is_kept_verbatim_but_whole_line_comments_go(tmp_path):
    config = load_config(write(tmp_path, """
        # a comment
        [modem:main]
        ; another comment
            ; an indented comment line
        port = /dev/ttyUSB0
        password = secret ;still the password # and this
        """))
    assert config.modems["main"].password == "secret ;still the password # and this"


def test_trailing_comment_on_a_validated_value_fails_loudly(tmp_path):
    assert problems(tmp_path, """
        [modem:main]
        port = /dev/ttyUSB0
        baudrate = 115200   ; fast
        """) == ["[modem:main] baudrate: not a whole number (got '115200   ; fast')"]


def test_unknown_key_suggests_the_closest(tmp_path):
    assert problems(tmp_path, MODEM + "keepalive_intervall = 3\n") == [
        "[modem:main] keepalive_intervall: unknown key (did you mean 'keepalive_interval'?)"]


def test_unknown_section_suggests_the_closest(tmp_path):
    assert problems(tmp_path, MODEM + "[profiel:web]\nlisten = tcp:1\n") == [
        "[profiel:web]: unknown section; expected [cellbridge], [modem:NAME], [profile:NAME] "
        "or [server:NAME] (did you mean [profile:web]?)"]


def test_default_section_is_not_special(tmp_path):
    assert problems(tmp_path, "[DEFAULT]\nbaudrate = 9600\n" + MODEM) == [
        "[DEFAULT]: unknown section; expected [cellbridge], [modem:NAME], [profile:NAME] or "
        "[server:NAME] ([DEFAULT] is not special here: set keys in each section)"]


def test_missing_port_and_missing_modem(tmp_path):
    assert problems(tmp_path, "[modem:main]\nbaudrate = 9600\n") == [
        "[modem:main] port: required key is missing"]
    assert problems(tmp_path, "[cellbridge]\n") == [
        "no [modem:NAME] section: cellbridge needs a modem"]


def test_missing_file_names_the_file(tmp_path):
    path = str(tmp_path / "nope.ini")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.problems == [f"{path}: cannot read the config file: No such file or "
                                     "directory"]
    assert caught.value.exit_status == 78


@pytest.mark.parametrize("text, message", [
    ("tcp:80x", "port '80x' is not a number"),
    ("tcp:8080:iface=1", "unknown option 'iface' (did you mean 'interface'?)"),
    ("tcp:8080:mode=1", "unknown option 'mode' (one of interface, backlog)"),
    ("tcp:8080:backlog=0", "backlog: must be at least 1"),
    ("tcp:8080:9090", "expected tcp:PORT, then NAME=VALUE options only"),
    ("tcp6", "expected tcp6:PORT"),
    ("tcp:8080\\", "ends in a lone backslash"),
    ("ssl:8443:privateKey=/nonexistent/key.pem", "not a valid server endpoint: cannot read "
                                                  "/nonexistent/key.pem: No such file or directory"),
    ("unix:/run/x.sock:mod=600", "not a valid server endpoint: unknown option 'mod'"),
    ("unix", "not a valid server endpoint: missing 'address'"),
    ("unix:/run/x.sock:backlog=x", "not a valid server endpoint: 'x' is not a number"),
    ("tcp:8080:interface=1.2.3.4.5", "interface '1.2.3.4.5' is not an IP address"),
    ("tcp:70000", "port 70000 is out of range"),
    ("tcp6:8080:interface=127.0.0.1", "interface '127.0.0.1' is not an IPv6 address"),
    ("sctp:80", "not a valid server endpoint: Unknown endpoint type: 'sctp'"),
    ("port=8080", "expected tcp:PORT, udp:PORT or another Twisted server endpoint string"),
    ("udp:53:iface=1", "expected udp:PORT or udp:PORT:interface=ADDR"),
    ("udp:5x", "port '5x' is not a number"),
])
def test_bad_listen_endpoint(tmp_path, text, message):
    assert problems(tmp_path, MODEM + f"[profile:p]\nlisten = {text}\nremote = tcp:h:1\n") == [
        f"[profile:p] listen: {message} (got {text!r})"]


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=":=\\a1", max_size=12))
def test_endpoint_strings_are_split_as_twisted_splits_them(text):
    """The fields we check are the ones Twisted's strports will use at start (the oracle is its
    private tokenizer, fine in a test)."""
    try:
        expected = _parse(text)
    except RuntimeError:  # a trailing backslash ends Twisted's tokenizer with StopIteration
        with pytest.raises(Invalid, match="lone backslash"):
            endpoint_fields(text)
    else:
        assert endpoint_fields(text) == (expected[0], expected[1])


@pytest.mark.parametrize("text, endpoint, interface", [
    ("tcp:8080", "tcp:8080:interface=127.0.0.1", "127.0.0.1"),
    ("tcp:8080:interface=0.0.0.0", "tcp:8080:interface=0.0.0.0", "0.0.0.0"),
    ("tcp6:8080", r"tcp6:8080:interface=\:\:1", "::1"),
    (r"tcp6:8080:interface=\:\:", r"tcp6:8080:interface=\:\:", "::"),
])
def test_listen_binds_loopback_unless_told_otherwise(tmp_path, text, endpoint, interface):
    config = load_config(write(tmp_path, MODEM + f"[profile:p]\nlisten = {text}\nremote = tcp:h:1\n"))
    assert config.profiles["p"].listen == Listen("tcp", endpoint, 8080, interface)


def test_unix_listen_is_accepted_as_a_stream_endpoint(tmp_path):
    config = load_config(write(tmp_path, MODEM + "[profile:p]\nlisten = unix:/run/x.sock\n"
                                                 "remote = tcp:h:1\n"))
    assert config.profiles["p"].listen == Listen("tcp", "unix:/run/x.sock", 0, "")


@pytest.mark.parametrize("value, message", [
    ('tcp:exa"mple.com:80', "contains a quote, which would end the AT command's string early"),
    ("tcp:exa'mple.com:80", "contains a quote, which would end the AT command's string early"),
    ("tcp:example.com\r:80", "contains a CR or LF, which would end the AT command early"),
    ("tcp:exa\x1bmple.com:80", "contains a control character, which cannot go into an AT command"),
    ("tcp:exämple.com:80", "contains non-ASCII characters, which the module's character set lacks"),
    ("tcp:-bad.example:80", "not a valid host name (letters, digits, hyphens; dot-separated labels)"),
    ("tcp:under_score:80", "not a valid host name (letters, digits, hyphens; dot-separated labels)"),
    ("tcp:1.2.3.256:80", "not a valid dotted IPv4 address"),
    ("tcp:example.com", "expected tcp:HOST:PORT or udp:HOST:PORT"),
    ("tcp:example.com:http", "port 'http' is not a number"),
    ("tcp:example.com:0", "port 0 is out of range"),
    ("http:example.com:80", "expected tcp:HOST:PORT or udp:HOST:PORT"),
])
def test_bad_remote(tmp_path, value, message):
    assert problems(tmp_path, MODEM + f"[profile:p]\nlisten = tcp:1\nremote = {value}\n") == [
        f"[profile:p] remote: {message} (got {value!r})"]


@pytest.mark.parametrize("key, value, message", [
    ("apn", 'inter"net', "contains a quote, which would end the AT command's string early"),
    ("username", "me\rAT+CFUN=0", "contains a CR or LF, which would end the AT command early"),
    ("apn", "a\tb", "contains a control character, which cannot go into an AT command"),
])
def test_values_reaching_at_commands_are_checked(tmp_path, key, value, message):
    assert problems(tmp_path, MODEM + f"{key} = {value}\n") == [
        f"[modem:main] {key}: {message} (got {value!r})"]


@pytest.mark.parametrize("value, servers", [
    ("", ()), ("9.9.9.9", ("9.9.9.9",)), ("1.1.1.1   8.8.8.8", ("1.1.1.1", "8.8.8.8"))])
def test_dns_servers(tmp_path, value, servers):
    assert load_config(write(tmp_path, MODEM + f"dns = {value}\n")).modems["main"].dns == servers


def test_secret_values_are_not_echoed(tmp_path):
    assert problems(tmp_path, MODEM + 'password = my"secret\npin = 12a4\npassword1 = a"b\n') == [
        "[modem:main] password: contains a quote, which would end the AT command's string early "
        "(value hidden)",
        "[modem:main] pin: a PIN is 4 to 8 digits (value hidden)",
        "[modem:main] password1: contains a quote, which would end the AT command's string early "
        "(value hidden)"]


def test_the_second_context_has_its_own_credentials_and_is_chosen_per_profile(tmp_path):
    config = load_config(write(tmp_path, MODEM + "apn = one\napn1 = two\nusername1 = u\n"
                                                 "password1 = s3cond\n"
                               "[profile:a]\nlisten = tcp:1\nremote = tcp:1.2.3.4:5\n"
                               "[profile:b]\nlisten = tcp:2\nremote = tcp:1.2.3.4:5\ncontext = 1\n"
                               "[server:s]\nport = 7\nforward = tcp:127.0.0.1:8\ncontext = 1\n"))
    modem = config.modems["main"]
    assert (modem.apn, modem.apn1, modem.username1, modem.password1) == ("one", "two", "u", "s3cond")
    assert "s3cond" not in repr(modem)
    assert config.profiles["a"].context == 0 and config.profiles["b"].context == 1
    assert config.servers["s"].context == 1


def test_the_second_context_is_refused_in_transparent_mode(tmp_path):
    assert problems(tmp_path, MODEM + "mode = transparent\n"
                    "[modem:other]\nport = /dev/ttyUSB1\nmode = transparent\n"
                    "[profile:a]\nmodem = main\nlisten = tcp:1\nremote = tcp:1.2.3.4:5\n"
                    "context = 1\n"
                    "[server:s]\nmodem = other\nport = 7\nforward = tcp:127.0.0.1:8\n"
                    "context = 1\n") == [
        "[profile:a] context: the second PDP context needs mode = mux; [modem:main] has "
        "mode = transparent (app note §7.2) (got '1')",
        "[server:s] context: the second PDP context needs mode = mux; [modem:other] has "
        "mode = transparent (app note §7.2) (got '1')"]


def test_a_context_is_0_or_1(tmp_path):
    assert problems(tmp_path, MODEM + "[profile:a]\nlisten = tcp:1\nremote = tcp:1.2.3.4:5\n"
                    "context = 2\n") == ["[profile:a] context: must be at most 1 (got '2')"]


@pytest.mark.parametrize("pin", ["123", "123456789", "12 4", "+1234"])
def test_bad_pin(tmp_path, pin):
    assert problems(tmp_path, MODEM + f"pin = {pin}\n") == [
        "[modem:main] pin: a PIN is 4 to 8 digits (value hidden)"]


NOT_DOTTED = "is not a dotted IPv4 address (separate two with a blank)"
PACKET_WAIT_STEPS = "must be 0.2 to 2.0 in steps of 0.2 (the module counts it in 200 ms units)"


@pytest.mark.parametrize("key, value, message", [
    ("rtscts", "maybe", "not a boolean (use yes or no)"),
    ("sleep", "", "not a boolean (use yes or no)"),
    ("baudrate", "115201", "not a rate the module supports (1200, 2400, 4800, 9600, 14400, "
                           "19200, 28800, 38400, 57600, 115200, 230400, 460800)"),
    ("mode", "MUX", "must be one of mux, transparent"),
    ("receive", "poll", "must be one of auto, pull, push"),
    ("keepalive_first", "0", "must be more than 0"),
    ("keepalive_interval", "-1", "must be more than 0"),
    ("keepalive_idle", "nan", "not a finite number"),
    ("keepalive_retries", "1.5", "not a whole number"),
    ("send_window", "7301", "must be at most 7300"),
    ("registration_timeout", "3m", "not a number"),
    ("sim_args", '--hosts "x', "cannot split into words: No closing quotation"),
    ("sim_args", "--baud 9600 --bogus", "unrecognized arguments: --bogus"),  # the sim's parser
    ("sim_args", "--baud fast", "argument --baud: invalid int value: 'fast'"),
    ("sim_args", "--chaos", "argument --chaos: expected one argument"),
    ("sim_args", "--help", "--help would print the simulator's help instead of starting it"),
    ("sim_args", "--exit 1", "--exit-with-parent is cellbridge's to set (its own process id)"),
    ("reset_command", "'", "cannot split into words: No closing quotation"),
    ("port", "ttyUSB0", "expected a device path (/dev/...), tcp:HOST:PORT or sim"),
    ("port", "tcp:ser2net.local", "expected tcp:HOST:PORT"),
    ("dns", "1.1.1.1 8.8.8.8 9.9.9.9", "at most two DNS servers (primary and secondary)"),
    ("dns", "1.1.1.1,8.8.8.8", f"'1.1.1.1,8.8.8.8' {NOT_DOTTED}"),
    ("dns", "dns.google", f"'dns.google' {NOT_DOTTED}"),
    ("dns", "1.1.1.256", f"'1.1.1.256' {NOT_DOTTED}"),
    ("dns", '1.1.1.1"\rAT+CFUN=0', f"'1.1.1.1\"' {NOT_DOTTED}"),  # never reaches AT+QIDNSCFG
    ("dns", '8.8.8.8 1.1.1.1",', f"'1.1.1.1\",' {NOT_DOTTED}"),
    ("timeouts", "qiatc=150", "unknown timeout 'qiatc' (did you mean 'qiact'?)"),
    ("timeouts", "zzz=1", "unknown timeout 'zzz' (one of simple, pin, attach, regapp, qiact, "
                          "qideact, qiopen, connect, prompt, send, qisack, qiclose, qird, dns)"),
    ("timeouts", "qiact=0", "qiact: must be more than 0"),
    ("timeouts", "qideact=-40", "qideact: must be more than 0"),
    ("timeouts", "qiact=2m", "qiact: not a number"),
    ("timeouts", "qiact=inf", "qiact: not a finite number"),
    ("packet_wait", "0.5", PACKET_WAIT_STEPS),
    ("packet_wait", "0.1", PACKET_WAIT_STEPS),
    ("packet_wait", "0", PACKET_WAIT_STEPS),
    ("packet_wait", "-0.4", PACKET_WAIT_STEPS),
    ("packet_wait", "2.2", PACKET_WAIT_STEPS),
    ("packet_wait", "200ms", "not a number"),
    ("packet_wait", "inf", "not a finite number"),
    ("packet_size", "0", "must be at least 1"),
    ("packet_size", "1461", "must be at most 1460"),
    ("packet_size", "512.0", "not a whole number"),
    ("dtr_escape", "2", "not a boolean (use yes or no)"),
    ("dcd", "wired", "not a boolean (use yes or no)"),
])
def test_bad_modem_values(tmp_path, key, value, message):
    text = MODEM if key != "port" else "[modem:main]\n"
    assert problems(tmp_path, text + f"{key} = {value}\n") == [
        f"[modem:main] {key}: {message} (got {value!r})"]


def test_timeouts_report_one_line_per_bad_pair_showing_that_pair(tmp_path):
    assert problems(tmp_path, MODEM + "timeouts = qiact=x qiopen=75 dsn=15 qiact=1 150\n") == [
        "[modem:main] timeouts: qiact: not a number (got 'qiact=x')",
        "[modem:main] timeouts: unknown timeout 'dsn' (did you mean 'dns'?) (got 'dsn=15')",
        "[modem:main] timeouts: qiact is given twice (got 'qiact=1')",
        "[modem:main] timeouts: not NAME=SECONDS (got '150')"]


@pytest.mark.parametrize("key, value, message", [
    ("max_links", "0", "must be at least 1"),
    ("max_links", "7", "must be at most 6"),
    ("queue", "-1", "must be at least 0"),
    ("queue_timeout", "0", "must be more than 0"),
    ("linger", "-0.5", "must be at least 0"),
    ("probe", r"\q", r"bad escape (use \n \r \t \0 \\ or \xHH)"),
    ("probe", r"\x4", r"bad escape (use \n \r \t \0 \\ or \xHH)"),
    ("probe", "é", "character 'é' must be written as a \\xHH escape"),
    ("reopen", "2", "not a boolean (use yes or no)"),
    ("reopen_max_delay", "0", "must be more than 0"),
    ("reopen_timeout", "soon", "not a number"),
])
def test_bad_profile_values(tmp_path, key, value, message):
    assert problems(tmp_path, MODEM + f"[profile:p]\nlisten = tcp:1\nremote = tcp:h:1\n"
                                      f"{key} = {value}\n") == [
        f"[profile:p] {key}: {message} (got {value!r})"]


def test_a_tcp_profile_may_reopen_with_its_timings(tmp_path):
    config = load_config(write(tmp_path, MODEM + "[profile:p]\nlisten = tcp:1\nremote = tcp:h:1\n"
                                        "reopen = yes\nreopen_max_delay = 10\n"
                                        "reopen_timeout = 90\n"))
    profile = config.profiles["p"]
    assert (profile.reopen, profile.reopen_max_delay, profile.reopen_timeout) == (True, 10, 90)


def test_reopen_refuses_a_probe_on_a_tcp_profile_only(tmp_path):
    keys = "reopen = yes\nprobe = \\n\n"
    assert problems(tmp_path, MODEM + "[profile:p]\nlisten = tcp:1\nremote = tcp:h:1\n" + keys) == [
        "[profile:p] probe: must be empty with reopen = yes: a reopen resends the stream's "
        "unacknowledged bytes by count, and probe bytes would be counted as the stream's "
        "(got '\\\\n')"]
    assert load_config(write(tmp_path, MODEM + "[profile:p]\nlisten = udp:1\nremote = udp:h:1\n"
                                       + keys)).profiles["p"].reopen


def test_every_problem_is_reported_at_once(tmp_path):
    assert problems(tmp_path, """
        [cellbridge]
        log_level = verbose
        [modem:main]
        port = sim
        baudrate = fast
        [profile:p]
        remote = udp:h:1
        [server:s]
        port = 22
        forward = udp:127.0.0.1:22
        max_clients = 6
        """) == [
        "[cellbridge] log_level: must be one of debug, info, warn, error, critical "
        "(got 'verbose')",
        "[modem:main] baudrate: not a whole number (got 'fast')",
        "[profile:p] listen: required key is missing",
        "[server:s] max_clients: must be at most 5 (got '6')",
        "[server:s] forward: must be tcp:HOST:PORT for a tcp server (got 'udp:127.0.0.1:22')",
    ]


def test_duplicate_listen_port(tmp_path):
    assert problems(tmp_path, MODEM + """
        [profile:a]
        listen = tcp:8080
        remote = tcp:h:1
        [profile:b]
        listen = tcp:8080:interface=127.0.0.1
        remote = tcp:h:2
        [profile:c]
        listen = tcp:8080:interface=0.0.0.0
        remote = tcp:h:3
        [profile:d]
        listen = udp:8080
        remote = udp:h:4
        [profile:e]
        listen = tcp:8080:interface=127.0.0.2
        remote = tcp:h:5
        """) == [
        "[profile:b] listen: same tcp port as [profile:a] (got 'tcp:8080:interface=127.0.0.1')",
        "[profile:c] listen: same tcp port as [profile:a] (got 'tcp:8080:interface=0.0.0.0')",
        "[profile:c] listen: same tcp port as [profile:b] (got 'tcp:8080:interface=0.0.0.0')",
        "[profile:e] listen: same tcp port as [profile:c] (got 'tcp:8080:interface=127.0.0.2')",
    ]


def test_port_zero_listeners_do_not_clash(tmp_path):
    config = load_config(write(tmp_path, MODEM + """
        [profile:a]
        listen = tcp:0
        remote = tcp:h:1
        [profile:b]
        listen = tcp:0
        remote = tcp:h:2
        """))
    assert sorted(config.profiles) == ["a", "b"]


def test_listen_and_remote_kinds_must_match(tmp_path):
    assert problems(tmp_path, MODEM + "[profile:p]\nlisten = udp:53\nremote = tcp:h:53\n") == [
        "[profile:p] remote: a udp listener needs a udp: remote (got 'tcp:h:53')"]


def test_profile_modem_must_exist_and_is_needed_with_two_modems(tmp_path):
    assert problems(tmp_path, """
        [modem:main]
        port = sim
        [modem:spare]
        port = /dev/ttyUSB1
        [profile:a]
        listen = tcp:1
        remote = tcp:h:1
        [profile:b]
        listen = tcp:2
        remote = tcp:h:1
        modem = mian
        """) == [
        "[profile:a] modem: required when there is more than one modem (one of main, spare)",
        "[profile:b] modem: no such [modem:NAME] section (did you mean 'main'?) (got 'mian')",
    ]


@pytest.mark.parametrize("text, expected", [
    ("[modem:main]\nport = sim\n[modem:main]\n", "[modem:main]: duplicate section (line 3)"),
    ("[modem:main]\nport = sim\nPort = x\n", "[modem:main] port: duplicate key (line 3)"),
    ("port = sim\n", "line 1: text before the first [section] (got 'port = sim')"),
    ("[modem:main]\nport = sim\njust words\n", "line 3: not a 'key = value' line (got 'just words')"),
    ("[modem:]\nport = sim\n", "[modem:]: bad modem name '' (letters, digits, '_', '.', '-')"),
    ("[modem:main]\nport = sim\napn = a\n  b\n",
     "[modem:main] apn: a value is one line (an indented line continues the previous value) "
     "(got 'a\\nb')"),
])
def test_syntax_errors(tmp_path, text, expected):
    assert expected in problems(tmp_path, text)


def test_crlf_files_load(tmp_path):
    config = load_config(write(tmp_path, "[modem:main]\r\nport = sim\r\napn = internet\r\n"))
    assert config.modems["main"].apn == "internet"


def test_sleep_warning_for_transports_without_dtr(tmp_path):
    config = load_config(write(tmp_path, """
        [modem:pty]
        port = sim
        sleep = yes
        [modem:net]
        port = tcp:127.0.0.1:2000
        sleep = yes
        sim_args = --baud 9600
        [modem:uart]
        port = /dev/ttyS0
        sleep = yes
        """))
    path = config.path
    assert config_warnings(config) == [
        f"{path}: warning: {NOTHING_CARRIED}",
        f"{path}: [modem:pty] sleep: warning: port = sim cannot drive the DTR line (a pty or a "
        "TCP socket has none), so sleep control will not work",
        f"{path}: [modem:net] sleep: warning: port = tcp:127.0.0.1:2000 cannot drive the DTR line "
        "(a pty or a TCP socket has none), so sleep control will not work",
        f"{path}: [modem:net] sim_args: warning: ignored because port is not sim",
    ]


def test_readme_carries_the_generated_reference_table():
    readme = (pathlib.Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    assert reference_markdown() in readme


def test_reference_table_lists_every_key():
    table = reference_markdown()
    for kind, keys in SCHEMA.items():
        for key in keys:
            assert f"| `{key}` |" in table
    assert "| `[modem:NAME]` | `send_window` | 5840 |" in table
    assert "| `[modem:NAME]` | `port` | (required) |" in table
    assert "built in: simple=5 pin=10 attach=90 regapp=10 qiact=150 qideact=40 qiopen=10 " in table


UDP_PROFILE = "[profile:u]\nlisten = udp:5353\nremote = udp:h:53\n"
TCP_PROFILE = "[profile:t]\nlisten = tcp:8080\nremote = tcp:h:80\n"


@pytest.mark.parametrize("sections, receive, resolved", [
    (TCP_PROFILE, "auto", "pull"),
    (TCP_PROFILE + UDP_PROFILE, "auto", "push"),
    ("[server:s]\nprotocol = udp\nport = 3030\nforward = udp:127.0.0.1:53\n", "auto", "push"),
    (TCP_PROFILE, "push", "push"),
    (UDP_PROFILE, "push", "push"),
    ("", None, "pull"),
])
def test_receive_auto_is_push_exactly_when_the_modem_carries_udp(tmp_path, sections, receive,
                                                                 resolved):
    line = f"receive = {receive}\n" if receive else ""
    config = load_config(write(tmp_path, MODEM + line + sections))
    assert config.modems["main"].receive == resolved


def test_receive_pull_on_a_modem_carrying_udp_is_an_error_saying_why(tmp_path):
    assert problems(tmp_path, MODEM + "receive = pull\n" + TCP_PROFILE + UDP_PROFILE) == [
        "[modem:main] receive: pull cannot carry udp ([profile:u]): an AT+QIRD may return "
        "several buffered datagrams at once (app note §5.3.2), while push keeps one +RECEIVE "
        "per datagram; use auto or push (got 'pull')"]


def test_udp_idle_is_a_profile_duration(tmp_path):
    config = load_config(write(tmp_path, MODEM + UDP_PROFILE + "udp_idle = 2.5\n"))
    assert config.profiles["u"].udp_idle == 2.5
    assert load_config(write(tmp_path, MODEM + UDP_PROFILE)).profiles["u"].udp_idle == 60.0
    assert problems(tmp_path, MODEM + UDP_PROFILE + "udp_idle = 0\n") == [
        "[profile:u] udp_idle: must be more than 0 (got '0')"]


@pytest.mark.parametrize("written, loaded", [
    ("unix:c.sock", "unix:{dir}/c.sock"),
    ("unix:run/c.sock:mode=660", "unix:{dir}/run/c.sock:mode=660"),
    ("unix:address=c.sock:lockfile=1", "unix:address={dir}/c.sock:lockfile=1"),
    ("unix:/run/cellbridge/control.sock", "unix:/run/cellbridge/control.sock"),
    ("tcp:9464:interface=127.0.0.1", "tcp:9464:interface=127.0.0.1")])
def test_a_relative_unix_control_or_metrics_path_is_taken_from_the_config_files_directory(
        tmp_path, written, loaded):
    """The daemon and ``cellbridge status`` may run in different working directories."""
    path = tmp_path / "c.ini"
    path.write_text(f"[cellbridge]\ncontrol = {written}\nmetrics = {written}\n"
                    "[modem:m]\nport = sim\n")
    general = load_config(str(path)).general
    assert general.control == general.metrics == loaded.format(dir=tmp_path)
