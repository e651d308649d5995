"""Value grammars of the cellbridge config: text in, typed value out, or :class:`Invalid` saying
what is wrong. No INI here (bridge.config reads the file); each parser sees one value.
"""

import configparser
import os
import difflib
import grp
import ipaddress
import re
import shlex
from dataclasses import dataclass

from twisted.internet.endpoints import serverFromString

from bridge.at.commands import PACKET_WAIT_UNIT, PACKET_WAIT_UNITS
from bridge.modem.pool import WHILE_SERVING as MAX_WHILE_SERVING
from bridge.sim.cli import build_parser as simulator_parser
from bridge.tls.files import TLSFileError, parse_pins

DEFAULT_INTERFACE = "127.0.0.1"
"""A listener without ``interface=`` binds loopback: a gateway must not expose a bridge by accident."""

BAUDRATES = (1200, 2400, 4800, 9600, 14400, 19200, 28800, 38400, 57600, 115200, 230400, 460800)
"""Fixed rates of the M95-class UART (AT+IPR); autobaud (0) is not offered: we need a known rate."""

MAX_MODULE_SOCKETS = 6  # AT+QIMUX=1 gives sockets 0..5
MAX_SEND_WINDOW = 7300  # the module's per-socket send buffer (docs/at-dialect.md §4.4-4.5)


@dataclass(frozen=True)
class Listen:
    """Where a profile accepts local clients.

    ``endpoint`` is the listen text with ``interface=`` filled in (a Twisted server endpoint
    string for ``tcp`` (stream) listeners, ``udp:PORT:interface=ADDR`` for ``udp``): where it is
    bound, for status and the log. ``port`` is 0 and ``interface`` empty for stream endpoints that
    have neither (``unix:``, ``systemd:``).
    """

    kind: str  # "tcp" | "udp"
    endpoint: str
    port: int
    interface: str


@dataclass(frozen=True)
class Remote:
    """What the module connects to for a profile (AT+QIOPEN's protocol, host and port)."""

    proto: str  # "TCP" | "UDP"
    host: str
    port: int


class Invalid(ValueError):
    """Raised by a value parser; its text is the 'what is wrong' part of the problem line.

    :param faults: for a value made of several items (``timeouts``), one ``(what, item)`` per bad
        item: each becomes a problem line of its own, showing that item rather than the whole value.
    """

    def __init__(self, what, faults=()):
        super().__init__(what)
        self.faults = tuple(faults)


# -- value parsers: str -> value, or Invalid ---------------------------------------------------

def boolean(text):
    value = configparser.ConfigParser.BOOLEAN_STATES.get(text.lower())
    if value is None:
        raise Invalid("not a boolean (use yes or no)")
    return value


def _number(text, minimum, integer, minimum_included=True):
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        raise Invalid("not a whole number" if integer else "not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise Invalid("not a finite number")
    if value < minimum or (value == minimum and not minimum_included):
        raise Invalid(f"must be {'at least' if minimum_included else 'more than'} {minimum}")
    return value


def seconds(text):
    """A positive duration in seconds; fractions allowed."""
    return _number(text, 0, integer=False, minimum_included=False)


def packet_wait(text):
    """AT+QITCFG's WaitTm in seconds: whole units of 200 ms, 1 to 10 of them."""
    value = _number(text, float("-inf"), integer=False)
    units = round(value / PACKET_WAIT_UNIT)
    if units not in PACKET_WAIT_UNITS or abs(units * PACKET_WAIT_UNIT - value) > 1e-9:
        raise Invalid(f"must be {PACKET_WAIT_UNIT * PACKET_WAIT_UNITS[0]:.1f} to "
                      f"{PACKET_WAIT_UNIT * PACKET_WAIT_UNITS[-1]:.1f} in steps of "
                      f"{PACKET_WAIT_UNIT} (the module counts it in 200 ms units)")
    return round(units * PACKET_WAIT_UNIT, 1)


def did_you_mean(word, candidates):
    """`` (did you mean 'x'?)`` for the closest candidate, or empty."""
    match = difflib.get_close_matches(word, candidates, n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def timeout_overrides(names):
    """``NAME=SECONDS ...`` -> ``((name, seconds), ...)`` sorted by name (a canonical, hashable
    value); ``names`` are the limits that may be set. Every bad pair is reported, not just the
    first, so one edit fixes the line."""
    def parse(text):
        pairs, wrong = {}, []
        for word in text.split():
            name, sep, value = word.partition("=")
            if not sep:
                wrong.append(("not NAME=SECONDS", word))
            elif name not in names:
                hint = did_you_mean(name, names) or f" (one of {', '.join(names)})"
                wrong.append((f"unknown timeout {name!r}{hint}", word))
            elif name in pairs:
                wrong.append((f"{name} is given twice", word))
            else:
                try:
                    pairs[name] = seconds(value)
                except Invalid as error:
                    pairs[name] = None
                    wrong.append((f"{name}: {error}", word))
        if wrong:
            raise Invalid("; ".join(what for what, _ in wrong), wrong)
        return tuple(sorted(pairs.items()))
    return parse


def seconds_or_zero(text):
    return _number(text, 0, integer=False)


def count(minimum, maximum=None):
    def parse(text):
        value = _number(text, minimum, integer=True)
        if maximum is not None and value > maximum:
            raise Invalid(f"must be at most {maximum}")
        return value
    return parse


def choice(*options):
    def parse(text):
        if text not in options:
            raise Invalid(f"must be one of {', '.join(options)}")
        return text
    return parse


def baudrate(text):
    value = _number(text, 1, integer=True)
    if value not in BAUDRATES:
        raise Invalid(f"not a rate the module supports ({', '.join(map(str, BAUDRATES))})")
    return value


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def at_text(text):
    """Text that ends up inside an AT command string: a quote or line break would end the command
    early and let the rest be read as another command (AT injection)."""
    if "\r" in text or "\n" in text:
        raise Invalid("contains a CR or LF, which would end the AT command early")
    if _CONTROL.search(text):
        raise Invalid("contains a control character, which cannot go into an AT command")
    if '"' in text or "'" in text:
        raise Invalid("contains a quote, which would end the AT command's string early")
    if not text.isascii():
        raise Invalid("contains non-ASCII characters, which the module's character set lacks")
    return text


def pin(text):
    if not text:
        return None
    at_text(text)
    if not (text.isdigit() and 4 <= len(text) <= 8):
        raise Invalid("a PIN is 4 to 8 digits")
    return text


_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


def is_ipv4(text):
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def host(text):
    """A dotted IPv4 address or a host name of letters, digits and hyphens (the module resolves it)."""
    at_text(text)
    if not text:
        raise Invalid("no host given")
    labels = text.split(".")
    if labels[-1].isdigit():
        if not is_ipv4(text):
            raise Invalid("not a valid dotted IPv4 address")
        return text
    if len(text) > 253 or not all(_LABEL.match(label) for label in labels):
        raise Invalid("not a valid host name (letters, digits, hyphens; dot-separated labels)")
    return text


def optional_host(text):
    """Empty (a default the caller fills in) or a :func:`host`."""
    return host(text) if text else ""


def dns_servers(text):
    """Empty (the servers the network gives) or one or two dotted IPv4 addresses: primary, then
    secondary (AT+QIDNSCFG, app note §8.2). Only digits and dots reach the command line."""
    servers = tuple(text.split())
    if len(servers) > 2:
        raise Invalid("at most two DNS servers (primary and secondary)")
    wrong = [server for server in servers if not is_ipv4(server)]
    if wrong:
        raise Invalid(f"{wrong[0]!r} is not a dotted IPv4 address (separate two with a blank)")
    return servers


def _port_number(text, allow_zero=False):
    try:
        value = int(text)
    except ValueError:
        raise Invalid(f"port {text!r} is not a number") from None
    if not (0 if allow_zero else 1) <= value <= 65535:
        raise Invalid(f"port {value} is out of range")
    return value


def ip_port(text):
    return _port_number(text)


def _host_port(text, what):
    hostname, sep, port = text.rpartition(":")
    if not sep:
        raise Invalid(f"expected {what}")
    return host(hostname), _port_number(port)


def remote(text):
    """``tcp:HOST:PORT`` or ``udp:HOST:PORT``."""
    at_text(text)
    proto, sep, rest = text.partition(":")
    if proto not in ("tcp", "udp") or not sep:
        raise Invalid("expected tcp:HOST:PORT or udp:HOST:PORT")
    hostname, port = _host_port(rest, "tcp:HOST:PORT or udp:HOST:PORT")
    return Remote(proto.upper(), hostname, port)


def forward(text):
    remote(text)
    return text


def networks(text):
    """Space-separated IPv4 ``ADDR[/BITS]`` (host bits ignored: 10.1.2.3/8 is 10.0.0.0/8); empty
    = none listed."""
    found = []
    for word in text.split():
        try:
            found.append(ipaddress.IPv4Network(word, strict=False))
        except ValueError:
            raise Invalid(f"{word!r} is not an IPv4 ADDR or ADDR/BITS") from None
    return tuple(found)


def serial_port(text):
    """``sim``, ``tcp:HOST:PORT`` (a raw TCP serial export such as ser2net) or a device path."""
    if text == "sim":
        return text
    if text.startswith("tcp:"):
        _host_port(text[4:], "tcp:HOST:PORT")
        return text
    if not text.startswith("/") or _CONTROL.search(text):
        raise Invalid("expected a device path (/dev/...), tcp:HOST:PORT or sim")
    return text


def _interface(kind, text):
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise Invalid(f"interface {text!r} is not an IP address") from None
    if (kind == "tcp6") != (address.version == 6):
        raise Invalid(f"interface {text!r} is not an IPv{6 if kind == 'tcp6' else 4} address")


_LOOPBACK = {"tcp": DEFAULT_INTERFACE, "ssl": DEFAULT_INTERFACE, "tcp6": "::1"}
"""Where a listener of these kinds binds without ``interface=``."""
_TCP_OPTIONS = ("interface", "backlog")


def endpoint_fields(text):
    """``([positional, ...], {key: value})`` by the grammar of Twisted's endpoint strings (see
    ``serverFromString``): ``:`` separates fields, a field's first ``=`` splits a key from its
    value, and a backslash makes the next character literal."""
    fields, parts, chars = [], [""], iter(text)
    for char in chars:
        if char == "\\":
            escaped = next(chars, None)
            if escaped is None:
                raise Invalid("ends in a lone backslash")
            parts[-1] += escaped
        elif char == ":":
            fields.append(parts)
            parts = [""]
        elif char == "=" and len(parts) == 1:
            parts.append("")
        else:
            parts[-1] += char
    fields.append(parts)
    return ([parts[0] for parts in fields if len(parts) == 1],
            {parts[0]: parts[1] for parts in fields if len(parts) == 2})


def _escaped(value):
    return value.replace("\\", "\\\\").replace(":", "\\:")


def unix_socket_path(endpoint):
    """The socket path of a ``unix:`` endpoint string; None for other kinds (or none given)."""
    positional, named = endpoint_fields(endpoint)
    if positional[0] != "unix":
        return None
    return named.get("address") or (positional[1] if len(positional) > 1 else None)


def unix_address_from(base_dir, endpoint):
    """``endpoint`` with a ``unix:`` socket's relative path taken from ``base_dir`` (the config
    file's directory: the daemon and ``cellbridge status`` may run in different directories);
    any other endpoint unchanged."""
    address = unix_socket_path(endpoint) if endpoint else None
    if not address or os.path.isabs(address):
        return endpoint
    named = endpoint_fields(endpoint)[1]
    written = ("address=" if "address" in named else "") + _escaped(address)
    absolute = ("address=" if "address" in named else "") + _escaped(
        os.path.normpath(os.path.join(base_dir, address)))
    return "unix:" + endpoint[len("unix:"):].replace(written, absolute, 1)


class _ParseOnlyReactor:
    """What Twisted's endpoint parsers get as the reactor while a config is checked: they only
    keep it for a later ``listen()``, which checking never calls."""


def server_endpoint(text):
    """Let Twisted parse a server endpoint string (its own and plugin kinds know their options;
    ``ssl:`` also reads its key files), so a bad one fails at load, not at start."""
    try:
        serverFromString(_ParseOnlyReactor(), text)
    except Exception as error:  # TypeError/ValueError/IndexError/OSError, depending on the parser
        raise Invalid(f"not a valid server endpoint: {_endpoint_fault(error)}") from None


def _endpoint_fault(error):
    """What a Twisted endpoint parser found wrong, in the config's terms: its exceptions name
    its own functions and Python's types, which mean nothing to the user."""
    message = str(error)
    if isinstance(error, OSError):
        return f"cannot read {error.filename}: {error.strerror}" if error.filename else message
    if isinstance(error, TypeError):
        unknown = re.search(r"unexpected keyword argument '(\w+)'", message)
        missing = re.search(r"missing \d+ required positional arguments?: (.*)", message)
        if unknown:
            return f"unknown option {unknown.group(1)!r}"
        if missing:
            return f"missing {missing.group(1)}"
        return "wrong number of fields"
    if isinstance(error, (IndexError, KeyError)):
        return "names an inherited socket this process does not have (systemd socket activation)"
    number = re.fullmatch(r"invalid literal for int\(\) with base \d+: (.*)", message)
    if number:
        return f"{number.group(1)} is not a number"
    if type(error).__module__.startswith("OpenSSL"):
        return "a key or certificate file it names holds no usable PEM data"
    return message


def listen(text):
    """``udp:PORT[:interface=ADDR]`` (ours) or a Twisted server endpoint string; a tcp/ssl/tcp6
    endpoint without ``interface=`` is bound to loopback."""
    if text.startswith("udp:"):
        return _udp_listen(text)
    positional, options = endpoint_fields(text)
    if not positional:  # "a=b": an option with no kind before it
        raise Invalid("expected tcp:PORT, udp:PORT or another Twisted server endpoint string")
    kind = positional[0]
    if kind not in _LOOPBACK:
        server_endpoint(text)
        return Listen("tcp", text, 0, "")
    if len(positional) < 2:
        raise Invalid(f"expected {kind}:PORT")
    port = _port_number(positional[1], allow_zero=True)
    if "interface" not in options:
        options["interface"] = _LOOPBACK[kind]
        text = f"{text}:interface={_escaped(_LOOPBACK[kind])}"
    _interface(kind, options["interface"])
    if kind == "ssl":
        server_endpoint(text)  # its key files and other options are Twisted's to check
    else:
        _tcp_rest(kind, positional, options)
    return Listen("tcp", text, port, options["interface"])


def _tcp_rest(kind, positional, options):
    """After the port, Twisted's tcp: and tcp6: parsers take only ``_TCP_OPTIONS``."""
    if len(positional) > 2:
        raise Invalid(f"expected {kind}:PORT, then NAME=VALUE options only")
    for name in options:
        if name not in _TCP_OPTIONS:
            raise Invalid(f"unknown option {name!r}" + (did_you_mean(name, _TCP_OPTIONS) or
                                                        f" (one of {', '.join(_TCP_OPTIONS)})"))
    if "backlog" in options:
        try:
            count(1)(options["backlog"])
        except Invalid as error:
            raise Invalid(f"backlog: {error}") from None


def _udp_listen(text):
    positional, options = endpoint_fields(text)
    if len(positional) != 2 or set(options) - {"interface"}:
        raise Invalid("expected udp:PORT or udp:PORT:interface=ADDR")
    if "interface" not in options:
        text = f"{text}:interface={_escaped(DEFAULT_INTERFACE)}"
    interface = options.get("interface", DEFAULT_INTERFACE)
    _interface("udp", interface)
    return Listen("udp", text, _port_number(positional[1], allow_zero=True), interface)


def control_endpoint(text):
    if not text:
        return None
    server_endpoint(text)
    return text


def exposed_interface(text):
    """Where a tcp/tcp6 server endpoint listens when that is not loopback (``every interface``
    without ``interface=``: Twisted's default is all of them), else None (other kinds too)."""
    positional, options = endpoint_fields(text)
    if positional[0] not in ("tcp", "tcp6"):
        return None
    interface = options.get("interface")
    if interface is None:
        return "every interface"
    try:
        loopback = ipaddress.ip_address(interface).is_loopback
    except ValueError:
        loopback = False
    return None if loopback else interface


_ESCAPES = {"n": b"\n", "r": b"\r", "t": b"\t", "0": b"\0", "\\": b"\\"}


def probe_bytes(text):
    r"""Printable ASCII, plus the escapes \n \r \t \0 \\ and \xHH."""
    out, i = bytearray(), 0
    while i < len(text):
        char = text[i]
        if char != "\\":
            if not (char.isascii() and char.isprintable()):
                raise Invalid(f"character {char!r} must be written as a \\xHH escape")
            out += char.encode("ascii")
            i += 1
        elif text[i + 1:i + 2] in _ESCAPES:
            out += _ESCAPES[text[i + 1]]
            i += 2
        elif text[i + 1:i + 2] == "x" and re.fullmatch(r"[0-9A-Fa-f]{2}", text[i + 2:i + 4]):
            out.append(int(text[i + 2:i + 4], 16))
            i += 4
        else:
            raise Invalid(r"bad escape (use \n \r \t \0 \\ or \xHH)")
    return bytes(out)


def shell_words(text):
    try:
        return tuple(shlex.split(text))
    except ValueError as error:
        raise Invalid(f"cannot split into words: {error}") from None


def simulator_arguments(text):
    """Words for ``cellbridge sim``, checked by the simulator's own parser (without starting it),
    so a typo fails ``check`` instead of the simulator at every start."""
    words = shell_words(text)
    if "-h" in words or "--help" in words:
        raise Invalid("--help would print the simulator's help instead of starting it")
    parser = simulator_parser()
    parser.prog = "sim_args"

    def refuse(message):
        raise Invalid(message)

    parser.error = refuse
    if parser.parse_args(words).exit_with_parent is not None:
        raise Invalid("--exit-with-parent is cellbridge's to set (its own process id)")
    return words


def command_line(text):
    if not text:
        return None
    if not shell_words(plain_text(text)):
        raise Invalid("empty command")
    return text


def directory(text):
    if not text:
        raise Invalid("empty path")
    return plain_text(text)


def optional_file(text):
    """Empty (none) or a file path; bridge.config makes a relative one absolute."""
    return plain_text(text) if text else None


def public_key_pins(text):
    """Empty (none) or pins as :func:`bridge.tls.files.parse_pins` reads them."""
    if not text:
        return ()
    try:
        return parse_pins(text)
    except TLSFileError as error:
        raise Invalid(str(error)) from None


def log_level(text):
    return choice("debug", "info", "warn", "error", "critical")(text)


def group(text):
    """A group name or number (POSIX portable characters, or a Samba-style trailing ``$``)."""
    if not text:
        return None
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*\$?|\d+", text):
        raise Invalid("not a group name or number")
    return text


def group_id(name):
    """The id of group ``name`` (a name or a number) on this machine, or None."""
    if name.isdigit():
        return int(name)
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def plain_text(text):
    if _CONTROL.search(text):
        raise Invalid("contains a control character")
    return text
