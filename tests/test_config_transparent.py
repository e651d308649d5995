"""bridge.config: a transparent-mode modem (app note §4): its AT+QITCFG, DTR and DCD keys, what
``check`` refuses on it (it carries one TCP stream of one session) and what it warns about."""

import pytest

from bridge.config import NOTHING_CARRIED, ModemConfig, config_warnings, load_config
from tests.test_cli import cellbridge
from tests.test_config import problems, write

TRANSPARENT = "[modem:main]\nport = /dev/ttyUSB0\nmode = transparent\nrtscts = yes\n"
TCP = "[profile:t]\nlisten = tcp:8080\nremote = tcp:h:80\n"
TCP2 = "[profile:t2]\nlisten = tcp:8081\nremote = tcp:h:81\n"
UDP = "[profile:u]\nlisten = udp:5353\nremote = udp:h:53\n"
SERVER = "[server:s]\nport = 2020\nforward = tcp:127.0.0.1:22\nallow = 10.0.0.0/8\n"
SERVER2 = "[server:s2]\nport = 2021\nforward = tcp:127.0.0.1:23\nallow = 10.0.0.0/8\n"
UDP_SERVER = ("[server:d]\nprotocol = udp\nport = 53\nforward = udp:127.0.0.1:53\n"
              "allow = 10.0.0.0/8\n")
ONE_SESSION = ("[server:s] modem: [modem:main] has mode = transparent, one session: either "
               "client profiles or one server (it has {taken})")


def test_defaults_are_the_modules_power_up_packetisation():
    """+QITCFG: 3,2,1460,1 at power-up: 2 x 200 ms, 1460 bytes, +++ on; DTR and DCD unused."""
    modem = ModemConfig(name="main", port="/dev/ttyUSB0")
    assert (modem.packet_wait, modem.packet_size, modem.dtr_escape, modem.dcd) == (
        0.4, 1460, False, False)


@pytest.mark.parametrize("text, seconds", [("0.2", 0.2), ("2", 2.0), ("1.4", 1.4),
                                           ("0.60", 0.6), ("1.0", 1.0)])
def test_packet_wait_is_whole_200_ms_units(tmp_path, text, seconds):
    config = load_config(write(tmp_path, TRANSPARENT + f"packet_wait = {text}\n" + TCP))
    assert config.modems["main"].packet_wait == seconds


@pytest.mark.parametrize("sections", [TCP + TCP2 + "max_links = 6\n", SERVER, ""])
def test_one_session_loads_client_profiles_or_one_server(tmp_path, sections):
    """Client profiles queue for the one session, so their max_links is left alone."""
    config = load_config(write(tmp_path, TRANSPARENT + "dtr_escape = yes\ndcd = yes\n"
                               + sections))
    assert config.modems["main"].mode == "transparent"
    assert config_warnings(config) == ([] if sections else
                                       [f"{config.path}: warning: {NOTHING_CARRIED}"])


@pytest.mark.parametrize("sections, taken", [
    (TCP + SERVER, "[profile:t]"),
    (SERVER + TCP + TCP2, "[profile:t], [profile:t2]"),
])
def test_one_session_refuses_a_server_beside_client_profiles(tmp_path, sections, taken):
    assert problems(tmp_path, TRANSPARENT + sections) == [ONE_SESSION.format(taken=taken)]


def test_a_second_server_is_refused_once(tmp_path):
    """Two tcp servers are refused on any modem (one TCP listening port), nothing more here."""
    assert problems(tmp_path, TRANSPARENT + SERVER + SERVER2) == [
        "[server:s2] protocol: [modem:main] already has a tcp server, [server:s] (the module "
        "has one TCP listening port, AT+QILPORT) (got 'tcp')"]


def test_udp_is_refused_on_its_own_line(tmp_path):
    """A udp server is not counted as a second session: its udp line alone says what to fix."""
    assert problems(tmp_path, TRANSPARENT + TCP + UDP + UDP_SERVER) == [
        "[profile:u] listen: [modem:main] has mode = transparent, which carries one TCP "
        "stream; udp needs mode = mux (got 'udp:5353')",
        "[server:d] protocol: [modem:main] has mode = transparent, which carries one TCP "
        "stream; udp needs mode = mux (got 'udp')"]


def test_reopen_and_probe_need_mux(tmp_path):
    assert problems(tmp_path, TRANSPARENT + TCP + "reopen = yes\n" + TCP2 + r"probe = \r\n"
                    + "\n") == [
        "[profile:t] reopen: a reopen resends what AT+QISACK has not seen acknowledged: needs "
        "mode = mux; [modem:main] has mode = transparent (got 'yes')",
        "[profile:t2] probe: a probe injects bytes into the stream: needs mode = mux; "
        "[modem:main] has mode = transparent (got '\\\\r\\\\n')"]


def test_only_the_transparent_modems_sections_are_refused(tmp_path):
    mux = "[modem:other]\nport = /dev/ttyUSB1\n"
    config = load_config(write(tmp_path, TRANSPARENT + mux + TCP + "modem = main\n"
                               + UDP + "modem = other\nreopen = yes\n"
                               + SERVER + "modem = other\n"))
    assert (config.profiles["u"].modem, config.servers["s"].modem) == ("other", "other")


def test_a_tcp_serial_export_is_refused(tmp_path):
    assert problems(tmp_path, "[modem:main]\nport = tcp:ser2net.lan:3001\nmode = transparent\n"
                    "dtr_escape = yes\n") == [
        "[modem:main] port: a TCP serial export has no DTR and its coalescing can close the "
        "silence around +++, so data could escape; use a serial device or mode = mux "
        "(got 'tcp:ser2net.lan:3001')"]


def test_dtr_and_dcd_are_refused_on_the_simulators_pty(tmp_path):
    assert load_config(write(tmp_path, "[modem:main]\nport = sim\nmode = transparent\n"
                             "dtr_escape = no\ndcd = no\n")).modems["main"].port == "sim"
    assert problems(tmp_path, "[modem:main]\nport = sim\nmode = transparent\n"
                    "dtr_escape = yes\ndcd = on\n") == [
        "[modem:main] dtr_escape: port = sim runs the simulator on a pty, which has no DTR or "
        "DCD line (got 'yes')",
        "[modem:main] dcd: port = sim runs the simulator on a pty, which has no DTR or DCD "
        "line (got 'on')"]


def test_warnings_rtscts_off_in_transparent_mode_and_transparent_keys_on_a_mux_modem(tmp_path):
    config = load_config(write(tmp_path, """
        [modem:uart]
        port = /dev/ttyUSB0
        mode = transparent
        [modem:pty]
        port = sim
        mode = transparent
        [modem:mux]
        port = /dev/ttyUSB1
        packet_wait = 0.6
        packet_size = 1460
        dtr_escape = yes
        dcd = no
        [modem:mux2]
        port = /dev/ttyUSB2
        packet_size = 512
        dcd = yes
        """))
    path = config.path
    assert config_warnings(config) == [
        f"{path}: warning: {NOTHING_CARRIED}",
        f"{path}: [modem:uart] rtscts: warning: without RTS/CTS nothing stops the bridge from "
        "overrunning the module's buffer in data mode when the radio is slower than the line",
        f"{path}: [modem:mux] packet_wait: warning: ignored because mode is not transparent",
        f"{path}: [modem:mux] dtr_escape: warning: ignored because mode is not transparent",
        f"{path}: [modem:mux2] packet_size: warning: ignored because mode is not transparent",
        f"{path}: [modem:mux2] dcd: warning: ignored because mode is not transparent",
    ]


def test_check_exits_78_on_a_transparent_refusal_and_prints_its_warnings(tmp_path):
    path = tmp_path / "t.ini"
    path.write_text(TRANSPARENT.replace("rtscts = yes", "rtscts = no") + TCP)
    result = cellbridge("check", "-c", str(path))
    assert (result.returncode, result.stderr) == (0, (
        f"{path}: [modem:main] rtscts: warning: without RTS/CTS nothing stops the bridge from "
        "overrunning the module's buffer in data mode when the radio is slower than the line\n"))
    path.write_text(TRANSPARENT + TCP + SERVER)
    result = cellbridge("check", "-c", str(path))
    assert (result.returncode, result.stdout) == (78, "")
    assert result.stderr == f"{path}: {ONE_SESSION.format(taken='[profile:t]')}\n"
