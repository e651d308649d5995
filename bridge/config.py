"""The cellbridge INI file -> validated, frozen dataclasses. No other module reads the INI.

Syntax rules, decided once rather than left to configparser's defaults (``%`` interpolation, a
``[DEFAULT]`` section that leaks into every other):

- Comments are whole lines starting with ``;`` or ``#``. A value runs verbatim to the end of its
  line (leading/trailing blanks stripped): ``password = a ;b`` is the password ``a ;b``.
- No interpolation (``%`` is an ordinary character), no multi-line values, no ``[DEFAULT]`` magic
  (it is an unknown section like any other), duplicate sections and keys are errors.
- Unknown sections and keys are errors with a "did you mean"; every problem in the file is reported,
  one line each: ``FILE: [section] key: what is wrong (got 'value')``. Secret values are not echoed.

Every key, its default and its meaning are in :data:`SCHEMA`; the defaults themselves live on the
dataclasses below (one source of truth). :func:`reference_markdown` renders the table for the README.
The grammar of each value (endpoints, hosts, AT-safe text ...) is in :mod:`bridge.config_values`.
"""

import ast
import codecs
import configparser
import dataclasses
import difflib
import os
import re
from dataclasses import dataclass, field
from typing import Callable, Optional

from bridge.at.commands import DEFAULT_TIMEOUTS, MAX_PACKET_SIZE
from bridge.config_values import (BAUDRATES, MAX_MODULE_SOCKETS, MAX_SEND_WINDOW,
                                  MAX_WHILE_SERVING, Invalid, Listen, Remote, at_text, baudrate,
                                  boolean, choice, command_line, control_endpoint, count,
                                  did_you_mean, directory, dns_servers, endpoint_fields,
                                  exposed_interface, forward, group, group_id, ip_port, is_ipv4,
                                  listen, log_level, networks, optional_file, optional_host,
                                  packet_wait, pin, plain_text, probe_bytes, public_key_pins, remote,
                                  seconds, seconds_or_zero, serial_port, simulator_arguments,
                                  timeout_overrides, unix_address_from)
from bridge.errors import ConfigError
from bridge.tls.files import TLSFileError, certificates, identity, private_key, readable_by_others

__all__ = [
    "Config", "General", "ModemConfig", "ProfileConfig", "ServerConfig", "Listen", "Remote",
    "ConfigError", "load_config", "config_warnings", "SCHEMA", "reference_markdown",
]


@dataclass(frozen=True)
class General:
    control: Optional[str] = None
    control_group: Optional[str] = None
    metrics: Optional[str] = None
    log_level: str = "info"
    state_dir: str = "/var/lib/cellbridge"


@dataclass(frozen=True)
class ModemConfig:
    name: str
    port: str  # device path | "tcp:HOST:PORT" | "sim"
    baudrate: int = 115200
    rtscts: bool = False
    apn: str = ""
    username: str = ""
    password: str = field(default="", repr=False)
    dns: tuple = ()  # DNS servers set with AT+QIDNSCFG; empty = the network's
    apn1: str = ""
    username1: str = ""
    password1: str = field(default="", repr=False)
    pin: Optional[str] = field(default=None, repr=False)
    mode: str = "mux"  # "mux" | "transparent"
    packet_wait: float = 0.4  # transparent: AT+QITCFG WaitTm in seconds (power-up 2 x 200 ms)
    packet_size: int = MAX_PACKET_SIZE  # transparent: AT+QITCFG SendSz (power-up 1460)
    dtr_escape: bool = False  # transparent: leave data mode by a DTR drop (AT&D1), +++ off
    dcd: bool = False  # transparent: DCD wired, follows the link (AT&C1)
    receive: str = "auto"  # "auto" | "pull" | "push"; load_config resolves auto
    keepalive_first: float = 5.0
    keepalive_interval: float = 10.0
    keepalive_retries: int = 12
    keepalive_idle: float = 480.0
    sleep: bool = False
    reset_command: Optional[str] = None
    send_window: int = 5840
    sim_args: tuple = ()
    registration_timeout: float = 180.0
    roaming: bool = True  # no: data only while registered at home (bridge.modem.roaming)
    timeouts: tuple = ()  # ((name, seconds), ...) over DEFAULT_TIMEOUTS

    def __post_init__(self):
        # load_config resolves auto from the profiles and servers the modem carries; a config
        # built on its own carries no udp, so auto is pull there (downstream sees pull or push).
        if self.receive == "auto":
            object.__setattr__(self, "receive", "pull")


@dataclass(frozen=True)
class ProfileConfig:
    name: str
    listen: Listen
    remote: Remote
    modem: str = ""  # resolved by load_config: never empty in a loaded Config
    max_links: int = MAX_MODULE_SOCKETS
    queue: int = 16
    queue_timeout: float = 30.0
    linger: float = 2.0
    probe: bytes = b""
    reopen: bool = False
    reopen_max_delay: float = 60.0
    reopen_timeout: float = 300.0
    udp_idle: float = 60.0
    context: int = 0
    tls: bool = False
    tls_hostname: str = ""  # empty = remote.host
    tls_ca: Optional[str] = None  # absolute paths, from load_config
    tls_pin: tuple = ()  # "sha256//BASE64", ...
    tls_cert: Optional[str] = None
    tls_key: Optional[str] = None
    tls_timeout: float = 30.0


@dataclass(frozen=True)
class ServerConfig:
    name: str
    port: int
    forward: str  # "tcp|udp:HOST:PORT", the local service the module's clients reach
    modem: str = ""  # resolved by load_config
    protocol: str = "tcp"  # "tcp" | "udp"
    max_clients: int = 1
    context: int = 0
    allow: tuple = ()  # IPv4Network, ...: module-side peers allowed; empty = any
    udp_idle: float = 60.0
    tls: bool = False
    tls_cert: Optional[str] = None  # absolute paths, from load_config
    tls_key: Optional[str] = None
    tls_ca: Optional[str] = None
    tls_timeout: float = 30.0


@dataclass(frozen=True)
class Config:
    path: str
    general: General
    modems: dict
    profiles: dict
    servers: dict


# -- the schema ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Key:
    parse: Callable
    doc: str
    secret: bool = False


def _show_default(value):
    if value is dataclasses.MISSING:
        return "(required)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value in (None, "", b"", ()):
        return "(empty)"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _timeouts_doc():
    defaults = " ".join(f"{f.name}={_show_default(getattr(DEFAULT_TIMEOUTS, f.name))}"
                        for f in dataclasses.fields(DEFAULT_TIMEOUTS))
    return ("space-separated NAME=SECONDS overrides of the per-command limits "
            f"(docs/at-dialect.md §7), e.g. qiact=240 qideact=60; built in: {defaults}. qiopen is "
            "the wait for AT+QIOPEN's OK, connect the wait for the CONNECT OK or FAIL after it "
            "(docs/at-dialect.md §4.3). send and qird grow by the time their payload needs at "
            "baudrate (10 bits per byte; an AT+QIRD counts the length it asks for plus its header "
            "and OK), prompt by that of the command and of every byte the module sends before its "
            "> prompt")


RELATIVE = "a relative path is relative to the config file"
CERTIFICATE_FILE = "PEM file, leaf certificate first, then its chain; " + RELATIVE
KEY_DOC = ("the private key of tls_cert, an unencrypted PEM file (the daemon starts unattended) "
           "that other users cannot read (check warns otherwise); " + RELATIVE)
TLS_TIMEOUT_DOC = ("seconds the TLS handshake may take once the module's connection is open "
                   "(over GPRS: a few round trips of 0.5-1 s each, plus the certificate chain at "
                   "about 6.7 kB/s)")

CONTEXT_DOC = ("the module's PDP context (AT+QIFGCNT, app note §7): 0 (apn, username, password) "
               "or 1 (apn1, username1, password1); 1 needs mode = mux")

SECTION_TYPES = {"cellbridge": General, "modem": ModemConfig, "profile": ProfileConfig,
                 "server": ServerConfig}

SCHEMA = {
    "cellbridge": {
        "control": Key(control_endpoint, "server endpoint of the control socket (cellbridge "
                       "status, cellbridge trace), e.g. unix:/run/cellbridge/control.sock (made "
                       "mode 0660; " + RELATIVE + "); empty = none"),
        "control_group": Key(group, "group given the unix control socket (the daemon must be in "
                             "it: SupplementaryGroups=); its members may use status and trace; "
                             "empty = the daemon's own group"),
        "metrics": Key(control_endpoint, "server endpoint serving Prometheus metrics at /metrics, "
                       "e.g. tcp:9464:interface=127.0.0.1; empty = none; " + RELATIVE),
        "log_level": Key(log_level, "debug, info, warn, error or critical"),
        "state_dir": Key(directory, "directory for state that must survive restarts (a rejected "
                         "PIN, data usage, AT traffic dumps); " + RELATIVE),
    },
    "modem": {
        "port": Key(serial_port, "device path (prefer /dev/serial/by-id/...), tcp:HOST:PORT for a "
                    "raw TCP serial export (ser2net), or sim for the built-in simulator"),
        "baudrate": Key(baudrate, "UART rate, one of " + ", ".join(map(str, BAUDRATES))),
        "rtscts": Key(boolean, "hardware flow control on both ends (AT+IFC=2,2)"),
        "apn": Key(at_text, "access point name (AT+QICSGP)"),
        "username": Key(at_text, "APN user name (AT+QICSGP)"),
        "password": Key(at_text, "APN password (AT+QICSGP)", secret=True),
        "dns": Key(dns_servers, "one or two DNS server addresses (dotted IPv4, primary first) set "
                   "with AT+QIDNSCFG after each context activation; empty = the servers the "
                   "network gives"),
        "apn1": Key(at_text, "access point name of the second PDP context (AT+QIFGCNT=1, "
                    "AT+QICSGP), for profiles and servers with context = 1"),
        "username1": Key(at_text, "APN user name of the second PDP context"),
        "password1": Key(at_text, "APN password of the second PDP context", secret=True),
        "pin": Key(pin, "SIM PIN, 4-8 digits; empty = the SIM needs none. A rejected PIN is "
                   "never sent again until this value changes", secret=True),
        "mode": Key(choice("mux", "transparent"), "mux (AT+QIMUX=1, six sockets) or transparent "
                    "(AT+QIMUX=0, AT+QIMODE=1: the UART carries the raw bytes of one TCP "
                    "connection, app note §4). A transparent modem carries one session at a time: "
                    "its tcp profiles queue for it (max_links means nothing there), or it has one "
                    "tcp server and no profiles; it takes no udp, no reopen, no probe, no "
                    "context = 1 and no port = tcp:"),
        "packet_wait": Key(packet_wait, "transparent mode: seconds without new input after "
                           "which the module sends what it holds as a radio packet (AT+QITCFG "
                           "WaitTm), 0.2 to 2.0 in steps of 0.2"),
        "packet_size": Key(count(1, MAX_PACKET_SIZE), "transparent mode: bytes waiting at "
                           "which the module sends a packet at once (AT+QITCFG SendSz), 1-1460"),
        "dtr_escape": Key(boolean, "transparent mode, DTR wired and drivable: the bridge leaves "
                          "data mode by dropping DTR (AT&D1) and +++ is switched off (AT+QITCFG), "
                          "so no payload can ever be taken for an escape; no = guard silence, "
                          "+++, guard silence (app note §4). Needs a serial device port"),
        "dcd": Key(boolean, "transparent mode, DCD wired: AT&C1 makes it follow the connection "
                   "(app note §5.6.2), so the bridge tells a remote close from payload that "
                   "reads CLOSED. Needs a serial device port"),
        "receive": Key(choice("auto", "pull", "push"), "pull (AT+QINDI=1 + AT+QIRD; "
                       "back-pressure) or push (+RECEIVE, one per datagram); auto = push if the "
                       "modem carries a udp profile or server, else pull. pull with udp is an "
                       "error: an AT+QIRD may return several datagrams at once (app note §5.3.2)"),
        "keepalive_first": Key(seconds, "seconds from SEND OK to the first AT+QISACK check"),
        "keepalive_interval": Key(seconds, "seconds between AT+QISACK checks while bytes are unacked"),
        "keepalive_retries": Key(count(0), "checks after the first before a link without ack "
                                 "progress is dead (0 or more)"),
        "keepalive_idle": Key(seconds, "seconds without traffic before a profile's probe is sent"),
        "sleep": Key(boolean, "AT+QSCLK=1 and DTR sleep control while no link is open (needs a "
                     "real serial port)"),
        "reset_command": Key(command_line, "external program that power-cycles the module, last "
                             "step of the recovery ladder; empty = none"),
        "send_window": Key(count(0, MAX_SEND_WINDOW), "bytes sent but not yet acked per link "
                           "(AT+QISACK), 0-7300; 0 = stop-and-wait"),
        "sim_args": Key(simulator_arguments, "extra simulator options when port = sim, e.g. "
                        "--baud 115200"),
        "registration_timeout": Key(seconds, "seconds to wait for network registration"),
        "roaming": Key(boolean, "no: data only while registered at home; while roaming, links "
                       "are refused and data waits (metered SIMs)"),
        "timeouts": Key(timeout_overrides([f.name for f in dataclasses.fields(DEFAULT_TIMEOUTS)]),
                        _timeouts_doc()),
    },
    "profile": {
        "listen": Key(listen, "tcp:PORT[:interface=ADDR] or any Twisted server endpoint string; "
                      "udp:PORT[:interface=ADDR]. No interface = 127.0.0.1"),
        "remote": Key(remote, "tcp:HOST:PORT or udp:HOST:PORT the module connects to"),
        "modem": Key(plain_text, "name of the [modem:NAME] to use; optional with one modem"),
        "max_links": Key(count(1, MAX_MODULE_SOCKETS), "module sockets this profile may hold at "
                         "once (1-6)"),
        "queue": Key(count(0), "local connections that may wait for a free module socket; udp: "
                     "datagrams of one session, and new sources, that may wait for one"),
        "queue_timeout": Key(seconds, "seconds a local connection (udp: a datagram) may wait in "
                             "the queue"),
        "linger": Key(seconds_or_zero, "seconds a half-closed link stays open without traffic "
                      "(less once idle 0.2 s while another connection waits for a socket)"),
        "probe": Key(probe_bytes, r"bytes sent on a link idle for keepalive_idle (escapes \n \r "
                     r"\t \0 \\ \xHH); empty = never inject"),
        "reopen": Key(boolean, "tcp: a link whose module socket is lost (the keepalive finds "
                      "it dead, +PDP DEACT, module reboot, port lost; not a remote close) is "
                      "carried on a new connection to the same remote: the local connection "
                      "stays open, unread meanwhile, and the new connection starts with exactly "
                      "the bytes AT+QISACK never showed acknowledged. Only for protocols where a "
                      "new connection may continue the byte stream (see Persistent TCP links); "
                      "needs probe empty and tls = no. udp: a session whose module socket is "
                      "lost (the same, or a remote close) opens a new one"),
        "reopen_max_delay": Key(seconds, "with reopen: open attempts start 1 s after the loss, "
                                "then the delay doubles up to this many seconds"),
        "reopen_timeout": Key(seconds, "tcp profiles with reopen: seconds a lost link may go "
                              "without carrying a byte again (not reopened, or reopened onto a "
                              "remote that takes nothing) before its local connection is reset"),
        "udp_idle": Key(seconds, "udp profiles only: seconds without a datagram either way "
                        "before a session ends and frees its module socket"),
        "context": Key(count(0, 1), CONTEXT_DOC),
        "tls": Key(boolean, "tcp profiles: the bridge is the TLS client of remote over the "
                   "module link, and verifies it (system trust store or tls_ca, and "
                   "tls_hostname; or tls_pin), while the local app keeps speaking plain TCP to "
                   "listen (like stunnel's client mode). Needs probe empty and reopen = no"),
        "tls_hostname": Key(optional_host, "the name remote's certificate must carry, also sent "
                            "as SNI: a DNS name or a dotted IPv4 address; empty = remote's host"),
        "tls_ca": Key(optional_file, "CAs to trust instead of the system trust store (PEM "
                      "file); " + RELATIVE),
        "tls_pin": Key(public_key_pins, "public keys remote may have, as curl's --pinnedpubkey "
                       "takes them: sha256//BASE64 (base64 of the SHA-256 of the DER public "
                       "key), several separated by ;. Without tls_ca a pin alone decides (the "
                       "name and the expiry are not checked: fit for a self-signed server); "
                       "with tls_ca the chain, the name and a pin must all pass"),
        "tls_cert": Key(optional_file, "client certificate for mutual TLS, with tls_key: "
                        + CERTIFICATE_FILE),
        "tls_key": Key(optional_file, KEY_DOC),
        "tls_timeout": Key(seconds, TLS_TIMEOUT_DOC),
    },
    "server": {
        "modem": Key(plain_text, "name of the [modem:NAME] to use; optional with one modem"),
        "protocol": Key(choice("tcp", "udp"), "tcp or udp"),
        "port": Key(ip_port, "port the module listens on (AT+QISERVER)"),
        "forward": Key(forward, "tcp:HOST:PORT or udp:HOST:PORT of the local service (udp: HOST "
                       "an IPv4 address, to which each peer's local socket is connected)"),
        "max_clients": Key(count(1, MAX_WHILE_SERVING), "module-side clients accepted at "
                           "once (1-5); kept free for them: a modem's client links plus its "
                           "servers' max_clients are at most 5 (app note §3.4)"),
        "allow": Key(networks, "space-separated IPv4 ADDR[/BITS] of the module-side peers "
                     "allowed to connect (from the module's REMOTE IP); empty = any, with a "
                     "warning: the local service is then open to the carrier network"),
        "context": Key(count(0, 1), CONTEXT_DOC),
        "udp_idle": Key(seconds, "udp servers only: seconds without a datagram either way "
                        "before a module-side peer is forgotten: its module socket is closed "
                        "and its local socket released"),
        "tls": Key(boolean, "tcp servers: the module's clients speak TLS, which the bridge "
                   "ends, forwarding plain TCP to forward (like stunnel's server mode); needs "
                   "tls_cert and tls_key"),
        "tls_cert": Key(optional_file, "the server's certificate, required with tls = yes: "
                        + CERTIFICATE_FILE),
        "tls_key": Key(optional_file, KEY_DOC),
        "tls_ca": Key(optional_file, "CAs for mutual TLS (PEM file): a client must present a "
                      "certificate signed by one of them; empty = no client certificate is "
                      "asked for; " + RELATIVE),
        "tls_timeout": Key(seconds, TLS_TIMEOUT_DOC),
    },
}


def _default(kind, key):
    for f in dataclasses.fields(SECTION_TYPES[kind]):
        if f.name == key:
            return f.default
    raise KeyError(key)


def _required(kind):
    return [key for key in SCHEMA[kind] if _default(kind, key) is dataclasses.MISSING]


def reference_markdown():
    """The config reference table (README), straight from :data:`SCHEMA` and the defaults."""
    rows = ["| section | key | default | meaning |", "|---|---|---|---|"]
    for kind, keys in SCHEMA.items():
        section = "[cellbridge]" if kind == "cellbridge" else f"[{kind}:NAME]"
        for key, spec in keys.items():
            default = _show_default(_default(kind, key))
            rows.append(f"| `{section}` | `{key}` | {default} | {spec.doc} |")
    return "\n".join(rows)


# -- loading ------------------------------------------------------------------------------------

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_NO_DEFAULT_SECTION = "\0cellbridge: [DEFAULT] is an ordinary (unknown) section"


class _Problems:
    """Collects problem lines for one file, in the contract's format."""

    def __init__(self, path):
        self.path = path
        self.lines = []

    def add(self, section, key, what, value=None, secret=False):
        where = f"[{section}] {key}" if key else f"[{section}]"
        got = "" if value is None else " (value hidden)" if secret else f" (got {value!r})"
        self.lines.append(f"{self.path}: {where}: {what}{got}")

    def add_file(self, what):
        self.lines.append(f"{self.path}: {what}")


def _read(path, problems):
    parser = configparser.ConfigParser(
        interpolation=None, inline_comment_prefixes=None, comment_prefixes=("#", ";"),
        strict=True, empty_lines_in_values=False, default_section=_NO_DEFAULT_SECTION)
    try:
        with open(path, "rb") as handle:
            data = handle.read().removeprefix(codecs.BOM_UTF8)  # as Windows editors may write
        text = data.decode("utf-8")
        # Only LF ends a line: a stray CR inside a value must reach validation (AT injection),
        # not silently start a new line. CRLF files still work: values are stripped.
        parser.read_file((line + "\n" for line in text.split("\n")), source=path)
    except OSError as error:
        problems.add_file(f"cannot read the config file: {error.strerror or error}")
    except UnicodeDecodeError as error:
        lineno = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        problems.add_file(f"line {lineno}: not UTF-8 text (byte 0x{data[error.start]:02x} at "
                          f"column {column}); save the file as UTF-8")
    except configparser.DuplicateSectionError as error:
        problems.add(error.section, None, f"duplicate section (line {error.lineno})")
    except configparser.DuplicateOptionError as error:
        problems.add(error.section, error.option, f"duplicate key (line {error.lineno})")
    except configparser.MissingSectionHeaderError as error:
        problems.add_file(f"line {error.lineno}: text before the first [section] "
                          f"(got {error.line.strip()!r})")
    except configparser.ParsingError as error:
        for lineno, quoted_line in error.errors:  # configparser stores repr(line)
            line = ast.literal_eval(quoted_line).strip()
            problems.add_file(f"line {lineno}: not a 'key = value' line (got {line!r})")
    else:
        return parser
    return None


def _section_kind(section, problems):
    kind, sep, name = section.partition(":")
    if section == "cellbridge":
        return kind, None
    if sep and kind in SCHEMA and kind != "cellbridge":
        if _NAME.match(name):
            return kind, name
        problems.add(section, None, f"bad {kind} name {name!r} (letters, digits, '_', '.', '-')")
        return None, None
    hint = ""
    guess = difflib.get_close_matches(kind, list(SCHEMA), n=1)
    if guess:
        hint = f" (did you mean [{guess[0]}{':' + name if sep and guess[0] != 'cellbridge' else ''}]?)"
    elif section == "DEFAULT":
        hint = " ([DEFAULT] is not special here: set keys in each section)"
    problems.add(section, None, "unknown section; expected [cellbridge], [modem:NAME], "
                 "[profile:NAME] or [server:NAME]" + hint)
    return None, None


def _section_values(parser, section, kind, problems):
    """Parse every key of one section; returns {key: value} for the keys that parsed."""
    values, keys = {}, SCHEMA[kind]
    for key, raw in parser.items(section):
        spec = keys.get(key)
        if spec is None:
            problems.add(section, key, "unknown key" + did_you_mean(key, list(keys)))
            continue
        if "\n" in raw:
            problems.add(section, key, "a value is one line (an indented line continues the "
                         "previous value)", raw, spec.secret)
            continue
        try:
            values[key] = spec.parse(raw)
        except Invalid as error:
            for what, got in error.faults or [(str(error), raw)]:
                problems.add(section, key, what, got, spec.secret)
    for key in _required(kind):
        if key not in values and not parser.has_option(section, key):
            problems.add(section, key, "required key is missing")
    return values


def _resolve_modem(section, values, modem_names, problems):
    """The modem a profile or server uses (explicit, or the only one); None after a problem."""
    name = values.get("modem") or None
    if name is None:
        if len(modem_names) == 1:
            return modem_names[0]
        if modem_names:
            problems.add(section, "modem", "required when there is more than one modem "
                         f"(one of {', '.join(sorted(modem_names))})")
        return None
    if name not in modem_names:
        problems.add(section, "modem", "no such [modem:NAME] section"
                     + did_you_mean(name, modem_names), name)
        return None
    return name


def _check_context(section, values, modem, modem_values, problems):
    """The second context shares the UART only in mux mode (app note §7.2)."""
    if values.get("context") == 1 and modem_values.get("mode") == "transparent":
        problems.add(section, "context", f"the second PDP context needs mode = mux; "
                     f"[modem:{modem}] has mode = transparent (app note §7.2)", "1")


def _check_transparent_port(section, values, parser, problems):
    """Transparent data mode ends on a guarded +++ or a DTR drop (app note §4): the port must keep
    the silence around +++ intact, and carry the lines dtr_escape and dcd rely on."""
    if values.get("mode") != "transparent" or "port" not in values:
        return
    port = values["port"]
    if port.startswith("tcp:"):
        problems.add(section, "port", "a TCP serial export has no DTR and its coalescing can "
                     "close the silence around +++, so data could escape; use a serial device "
                     "or mode = mux", port)
    elif port == "sim":
        for key in ("dtr_escape", "dcd"):
            if values.get(key):
                problems.add(section, key, "port = sim runs the simulator on a pty, which has no "
                             "DTR or DCD line", parser.get(section, key))


def _check_transparent_stream(parser, section, values, modem, modem_values, udp, problems):
    """A transparent modem carries the bytes of one TCP connection and nothing else (app note
    §4): no datagrams, no reopen onto a new connection, no probe bytes of the bridge's own."""
    if modem_values.get("mode") != "transparent":
        return
    kind = section.partition(":")[0]
    if udp:
        key = "listen" if kind == "profile" else "protocol"
        problems.add(section, key, f"[modem:{modem}] has mode = transparent, which carries one "
                     "TCP stream; udp needs mode = mux", parser.get(section, key))
    for key, why in (("reopen", "a reopen resends what AT+QISACK has not seen acknowledged"),
                     ("probe", "a probe injects bytes into the stream")):
        if values.get(key):
            problems.add(section, key, f"{why}: needs mode = mux; [modem:{modem}] has mode = "
                         "transparent", parser.get(section, key))


def _check_transparent_sessions(modem_values, profiles, servers, problems):
    """A transparent modem carries one session at a time (app note §4): its client profiles queue
    for it, or it has a server (one tcp server at most: ``_check_server_capacity``)."""
    for modem, values in modem_values.items():
        clients = [f"[profile:{p.name}]" for p in profiles.values()
                   if p.modem == modem and p.listen.kind == "tcp"]
        if values.get("mode") != "transparent" or not clients:
            continue
        for server in servers.values():
            if server.modem == modem and server.protocol == "tcp":
                problems.add(f"server:{server.name}", "modem", f"[modem:{modem}] has mode = "
                             "transparent, one session: either client profiles or one server "
                             f"(it has {', '.join(clients)})")


def _wildcard(interface):
    return interface in ("", "0.0.0.0", "::")


def _check_listen_clashes(profiles, problems):
    seen = []
    for section, listen_ in profiles:
        for other_section, other in seen:
            same_port = listen_.port and listen_.port == other.port and listen_.kind == other.kind
            overlapping = (listen_.interface == other.interface or _wildcard(listen_.interface)
                           or _wildcard(other.interface))
            same_socket_path = not listen_.interface and listen_.endpoint == other.endpoint
            if (same_port and overlapping) or same_socket_path:
                problems.add(section, "listen", f"same {listen_.kind} port as [{other_section}]",
                             listen_.endpoint)
        seen.append((section, listen_))


def _check_server_capacity(parsed, profiles, servers, problems):
    """The module listens on one TCP and one UDP port (AT+QILPORT), and while it listens carries
    at most five client plus server connections (app note §3.4): each server's ``max_clients``
    are kept free, so a profile's explicit ``max_links`` must fit in what is left."""
    sections = {(kind, name): section for kind in ("profile", "server")
                for section, name, _ in parsed[kind]}
    explicit_links = {name for section, name, values in parsed["profile"] if "max_links" in values}
    for modem in {server.modem for server in servers.values()}:
        reserved, seen = 0, {}
        for server in (s for s in servers.values() if s.modem == modem):
            section = sections["server", server.name]
            if server.protocol in seen:
                problems.add(section, "protocol", f"[modem:{modem}] already has a "
                             f"{server.protocol} server, [server:{seen[server.protocol]}] (the "
                             f"module has one {server.protocol.upper()} listening port, "
                             "AT+QILPORT)", server.protocol)
                continue
            seen[server.protocol] = server.name
            reserved += server.max_clients
            if reserved > MAX_WHILE_SERVING:
                problems.add(section, "max_clients", f"the servers of [modem:{modem}] would keep "
                             f"{reserved} connections free, more than the module's "
                             f"{MAX_WHILE_SERVING} while it listens (app note §3.4)",
                             str(server.max_clients))
        left = MAX_WHILE_SERVING - reserved
        for profile in profiles.values():
            if (profile.modem == modem and profile.name in explicit_links
                    and profile.max_links > left):
                problems.add(sections["profile", profile.name], "max_links", f"must be at most "
                             f"{max(left, 0)}: [modem:{modem}]'s servers keep {reserved} of the "
                             f"module's {MAX_WHILE_SERVING} connections free for their clients "
                             "(app note §3.4)", str(profile.max_links))


def _absolute(config_path, path):
    """A path the config names; a relative one is taken from the config file's directory."""
    if os.path.isabs(path):
        return path
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(config_path)), path))


def _check_tls(parser, section, values, udp, config_path, problems):
    """TLS keys need ``tls = yes``, which needs a byte stream the bridge alone writes: no udp, no
    probe injected below TLS, no reopen splicing a second connection into one session."""
    kind = section.partition(":")[0]
    if not values.get("tls"):
        if "tls" in values or not parser.has_option(section, "tls"):  # else tls is bad itself
            for key in values:
                if key.startswith("tls_"):
                    problems.add(section, key, "needs tls = yes", parser.get(section, key))
        return
    if udp:
        problems.add(section, "tls", f"TLS needs a tcp stream: a udp {kind} cannot have it "
                     "(DTLS is not supported)", parser.get(section, "tls"))
    if values.get("probe"):
        problems.add(section, "probe", "must be empty with tls = yes: bytes injected below TLS "
                     "would corrupt its stream", parser.get(section, "probe"))
    if values.get("reopen") and not udp:
        problems.add(section, "reopen", "must be no with tls = yes: a new connection cannot "
                     "continue a TLS session's byte stream", parser.get(section, "reopen"))
    _check_tls_files(parser, section, values, kind == "server", config_path, problems)


def _check_reopen(parser, section, values, udp, problems):
    """A tcp link reopens by resending what AT+QISACK has not seen acknowledged, counted in
    bytes: the probe's bytes would be counted as the stream's."""
    if values.get("reopen") and values.get("probe") and not udp:
        problems.add(section, "probe", "must be empty with reopen = yes: a reopen resends the "
                     "stream's unacknowledged bytes by count, and probe bytes would be counted "
                     "as the stream's", parser.get(section, "probe"))


def _check_tls_files(parser, section, values, identity_required, config_path, problems):
    """Makes the file keys absolute and reads them with the very code the service uses, so
    files that pass ``check`` load at start. A certificate and a key are read on their own
    first, so each file's fault is reported on its own key."""
    def raw(key):
        return parser.get(section, key, fallback="")

    def readable(key, read, *paths):
        try:
            read(*paths)
        except TLSFileError as error:
            problems.add(section, key, str(error), raw(key))
            return False
        return True

    for key in ("tls_ca", "tls_cert", "tls_key"):
        if values.get(key):
            values[key] = _absolute(config_path, values[key])
    if values.get("tls_ca"):
        readable("tls_ca", certificates, values["tls_ca"])
    cert, key = values.get("tls_cert"), values.get("tls_key")
    if cert and key:
        cert_read = readable("tls_cert", certificates, cert)
        if readable("tls_key", private_key, key) and cert_read:
            readable("tls_key", identity, cert, key)  # does the key fit the certificate?
    for missing, other in (("tls_cert", "tls_key"), ("tls_key", "tls_cert")):
        if raw(missing):
            continue
        if identity_required:
            problems.add(section, missing, "required with tls = yes")
        elif raw(other):
            problems.add(section, missing, f"required with {other}")


def load_config(path):
    """Read and validate one INI file.

    :param path: the config file; it appears verbatim at the start of each problem line.
    :returns: a :class:`Config`.
    :raises ConfigError: listing every problem found.
    """
    path = os.fspath(path)
    problems = _Problems(path)
    parser = _read(path, problems)
    if parser is None:
        raise ConfigError(problems.lines)

    parsed = {"cellbridge": [], "modem": [], "profile": [], "server": []}
    for section in parser.sections():
        kind, name = _section_kind(section, problems)
        if kind is not None:
            parsed[kind].append((section, name, _section_values(parser, section, kind, problems)))

    general = General(**parsed["cellbridge"][0][2]) if parsed["cellbridge"] else General()
    here = os.path.dirname(os.path.abspath(path))
    general = dataclasses.replace(general, state_dir=_absolute(path, general.state_dir),
                                  control=unix_address_from(here, general.control),
                                  metrics=unix_address_from(here, general.metrics))

    modem_values, modem_names = {}, [name for _, name, _ in parsed["modem"]]
    for section, name, values in parsed["modem"]:
        _check_transparent_port(section, values, parser, problems)
        if "port" in values:
            modem_values[name] = values
    if not parsed["modem"]:
        problems.add_file("no [modem:NAME] section: cellbridge needs a modem")

    profiles, listens = {}, []
    for section, name, values in parsed["profile"]:
        modem = _resolve_modem(section, values, modem_names, problems)
        _check_context(section, values, modem, modem_values.get(modem, {}), problems)
        udp = "listen" in values and values["listen"].kind == "udp"
        _check_tls(parser, section, values, udp, path, problems)
        _check_reopen(parser, section, values, udp, problems)
        _check_transparent_stream(parser, section, values, modem, modem_values.get(modem, {}),
                                  udp, problems)
        if "listen" in values:
            listens.append((section, values["listen"]))
        if "listen" in values and "remote" in values:
            if values["listen"].kind.upper() != values["remote"].proto:
                problems.add(section, "remote", f"a {values['listen'].kind} listener needs a "
                             f"{values['listen'].kind}: remote", parser.get(section, "remote"))
            elif modem in modem_values:
                values["modem"] = modem
                profiles[name] = ProfileConfig(name=name, **values)
    _check_listen_clashes(listens, problems)

    servers = {}
    for section, name, values in parsed["server"]:
        modem = _resolve_modem(section, values, modem_names, problems)
        _check_context(section, values, modem, modem_values.get(modem, {}), problems)
        protocol = values.get("protocol", "tcp")
        _check_tls(parser, section, values, protocol == "udp", path, problems)
        _check_transparent_stream(parser, section, values, modem, modem_values.get(modem, {}),
                                  protocol == "udp", problems)
        if "forward" in values and not values["forward"].startswith(protocol + ":"):
            problems.add(section, "forward", f"must be {protocol}:HOST:PORT for a {protocol} server",
                         values["forward"])
        elif (protocol == "udp" and "forward" in values
              and not is_ipv4(remote(values["forward"]).host)):
            problems.add(section, "forward", "a udp server forwards to an IPv4 address (each "
                         "peer's local socket is connected to it, and a connect takes no name)",
                         values["forward"])
        elif modem in modem_values and "port" in values and "forward" in values:
            values["modem"] = modem
            servers[name] = ServerConfig(name=name, **values)
    _check_server_capacity(parsed, profiles, servers, problems)
    _check_transparent_sessions(modem_values, profiles, servers, problems)

    modems = {}
    for name, values in modem_values.items():
        values["receive"] = _receive_mode(name, values.get("receive", "auto"), profiles, servers,
                                          problems)
        modems[name] = ModemConfig(name=name, **values)

    if problems.lines:
        raise ConfigError(problems.lines)
    return Config(path, general, modems, profiles, servers)


def _receive_mode(modem, receive, profiles, servers, problems):
    """``auto`` -> push for a modem that carries udp, else pull; pull with udp is a problem."""
    udp = [f"[profile:{p.name}]" for p in profiles.values()
           if p.modem == modem and p.listen.kind == "udp"]
    udp += [f"[server:{s.name}]" for s in servers.values()
            if s.modem == modem and s.protocol == "udp"]
    if udp and receive == "pull":
        problems.add(f"modem:{modem}", "receive", f"pull cannot carry udp ({', '.join(udp)}): "
                     "an AT+QIRD may return several buffered datagrams at once (app note §5.3.2), "
                     "while push keeps one +RECEIVE per datagram; use auto or push", receive)
    if receive == "auto":
        return "push" if udp else "pull"
    return receive


def _cannot_drive_dtr(modem):
    return modem.port == "sim" or modem.port.startswith("tcp:")


def config_warnings(config):
    """Things that load but will not do what the user probably wants, one line each."""
    warnings = []
    if not config.profiles and not config.servers:
        warnings.append(f"{config.path}: warning: {NOTHING_CARRIED}")
    secrets = [f"[modem:{modem.name}] {key}" for modem in config.modems.values()
               for key in SECRET_MODEM_KEYS if getattr(modem, key)]
    if secrets and readable_by_others(config.path):
        warnings.append(f"{config.path}: warning: every local user can read this file, and it "
                        f"holds secrets ({', '.join(secrets)}); chmod 600 it (or 640 with the "
                        "service user's group, e.g. dialout, as the README's install step does)")
    metrics = config.general.metrics
    exposed = exposed_interface(metrics) if metrics else None
    if exposed:
        warnings.append(f"{config.path}: [cellbridge] metrics: warning: {metrics} listens on "
                        f"{exposed}: whoever reaches it reads the modem's state and every link's "
                        "counts; add interface=127.0.0.1")
    for modem in config.modems.values():
        where = f"{config.path}: [modem:{modem.name}]"
        if modem.sleep and _cannot_drive_dtr(modem):
            warnings.append(f"{where} sleep: warning: port = {modem.port} cannot drive the DTR "
                            "line (a pty or a TCP socket has none), so sleep control will not work")
        if modem.sim_args and modem.port != "sim":
            warnings.append(f"{where} sim_args: warning: ignored because port is not sim")
        warnings += [f"{where} {line}" for line in _transparent_warnings(modem)]
    warnings += control_warnings(config)
    for server in config.servers.values():
        if not server.allow:
            warnings.append(f"{config.path}: [server:{server.name}] allow: warning: "
                            f"{open_server_warning(server)}")
    for kind, sections in (("profile", config.profiles), ("server", config.servers)):
        for section in sections.values():
            if section.tls_key and readable_by_others(section.tls_key):
                warnings.append(f"{config.path}: [{kind}:{section.name}] tls_key: warning: "
                                f"{section.tls_key} is readable by every local user; chmod 0640 "
                                "it (group of the service user) or use systemd's "
                                "LoadCredential=")
    return warnings


def control_warnings(config):
    """A control socket anyone local can use, and a group that cannot apply."""
    general, where = config.general, f"{config.path}: [cellbridge]"
    if not general.control:
        return []
    kind = endpoint_fields(general.control)[0][0]
    warnings = []
    if kind != "unix":
        warnings.append(f"{where} control: warning: every local user can connect to a {kind} "
                        "endpoint and read the status and the AT trace (no file permissions "
                        "apply); prefer unix:/run/cellbridge/control.sock")
    if general.control_group and kind != "unix":
        warnings.append(f"{where} control_group: warning: ignored because control is not a unix "
                        "socket")
    elif general.control_group and group_id(general.control_group) is None:
        warnings.append(f"{where} control_group: warning: no group {general.control_group} on "
                        "this machine (the daemon will not start)")
    return warnings


TRANSPARENT_KEYS = ("packet_wait", "packet_size", "dtr_escape", "dcd")
NOTHING_CARRIED = ("no [profile:NAME] and no [server:NAME]: the modem is brought up but "
                   "carries nothing")
SECRET_MODEM_KEYS = tuple(key for key, spec in SCHEMA["modem"].items() if spec.secret)


def _transparent_warnings(modem):
    """``key: warning: ...`` lines about a modem's transparent-mode keys."""
    if modem.mode != "transparent":
        return [f"{key}: warning: ignored because mode is not transparent"
                for key in TRANSPARENT_KEYS if getattr(modem, key) != _default("modem", key)]
    if not modem.rtscts and modem.port != "sim":  # a pty blocks the writer by itself
        return ["rtscts: warning: without RTS/CTS nothing stops the bridge from overrunning the "
                "module's buffer in data mode when the radio is slower than the line"]
    return []


def open_server_warning(server):
    """What an empty ``allow`` means, for ``check`` and the log at start."""
    return (f"empty, so any peer that reaches the module's port {server.port} gets to "
            f"{server.forward}: the local service is exposed to the carrier network")
