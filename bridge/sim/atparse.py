"""Parse one AT command line into command records.

`AT+QIOPEN=0,"TCP", "1.2.3.4",80` -> Command("+QIOPEN", "set", ("0", "TCP", "1.2.3.4", "80")).
Basic commands may be chained (`ATE0V1`); an extended command stands alone on its line, except
for the `&W` suffix of `AT+IPR=115200&W`.
"""

import re
from dataclasses import dataclass
from typing import Optional, Tuple

_BASIC = re.compile(r"(&?[A-Z])(\d*)")
_EXTENDED = re.compile(r"(\+[A-Z&]+)(=\?|\?|=)?(.*)$", re.S)


class ParseError(ValueError):
    """The line is not a well-formed command."""


@dataclass(frozen=True)
class Command:
    name: str  #: "+QIOPEN", "E", "&D", or "" for a bare "AT"
    kind: str  #: "exec", "set", "read" or "test"
    args: Tuple[str, ...] = ()
    save: bool = False  #: trailing "&W"

    def int_arg(self, i: int, lo: int, hi: int) -> int:
        """Argument `i` as an int in [lo, hi]; ParseError otherwise."""
        try:
            value = int(self.args[i])
        except (IndexError, ValueError):
            raise ParseError(f"argument {i}") from None
        if not lo <= value <= hi:
            raise ParseError(f"argument {i} out of range")
        return value


def split_args(text: str) -> Tuple[str, ...]:
    """Comma-separated values; quotes are removed, spaces around values ignored."""
    args, current, quoted = [], [], False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            args.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    if quoted:
        raise ParseError("unbalanced quote")
    args.append("".join(current).strip())
    return tuple(args)


def command_text(line: str) -> Optional[str]:
    """The line from its `AT` prefix on, or None when it has none (the module ignores it).

    Characters before the prefix are skipped, so the `+++` a host types in command mode to find
    out whether it still is in data mode (app note §6.3) does not spoil the command after it.
    """
    start = line.upper().find("AT")
    return None if start < 0 else line[start:].strip()


def parse_line(text: str) -> list:
    """Commands on a line that starts with `AT` (see command_text)."""
    body = text[2:]
    if not body:
        return [Command("", "exec")]
    if body[0] == "+":
        return [_extended(body)]
    commands, upper, pos = [], body.upper(), 0
    while pos < len(upper):
        match = _BASIC.match(upper, pos)
        if not match:
            raise ParseError(body)
        digits = match.group(2)
        commands.append(Command(match.group(1), "set" if digits else "exec", (digits,) if digits else ()))
        pos = match.end()
    return commands


def _extended(body: str) -> Command:
    save = False
    if body.upper().endswith("&W"):
        body, save = body[:-2], True
    upper_name = re.match(r"\+[A-Za-z&]+", body)
    if not upper_name:
        raise ParseError(body)
    match = _EXTENDED.match(upper_name.group(0).upper() + body[upper_name.end():])
    name, op, rest = match.group(1), match.group(2), match.group(3)
    if op is None:
        if rest.strip():
            raise ParseError(body)
        return Command(name, "exec", save=save)
    if op == "?":
        return Command(name, "read", save=save)
    if op == "=?":
        return Command(name, "test", save=save)
    return Command(name, "set", split_args(rest), save=save)
