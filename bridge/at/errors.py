"""Typed failures of AT commands, so callers branch on classes, not on strings."""

from typing import Optional


class ATEngineError(Exception):
    """Base of everything the AT engine fails a command with."""


class CommandError(ATEngineError):
    """The module answered a command with an error result code.

    :ivar command: the command line we sent (secrets are never part of ``str()``)
    :ivar line: the module's final line
    """

    def __init__(self, command: str, line: str) -> None:
        super().__init__(f"{command}: {line}")
        self.command = command
        self.line = line


class ATError(CommandError):
    """Plain ``ERROR`` (what QI* commands use for every failure, docs/at-dialect.md §6)."""


class SendRefused(ATError):
    """``ERROR`` instead of the ``> `` prompt: the socket is not connected; no payload was sent."""


class CmeError(CommandError):
    """``+CME ERROR: <code|text>`` (AT+CMEE=1 gives a code, =2 a text)."""

    def __init__(self, command: str, line: str, code: Optional[int], text: str) -> None:
        super().__init__(command, line)
        self.code = code
        self.text = text


class CmsError(CmeError):
    """``+CMS ERROR: <code|text>`` (SMS-side errors, seen during boot)."""


class SelectionFailed(ATEngineError):
    """The selecting command a socket command needed first (AT+QIFGCNT, AT+QISRVC) failed; the
    socket command was not written: it would have addressed another socket."""

    def __init__(self, command: str, selector: str, error: Exception) -> None:
        super().__init__(f"{command}: not sent, {selector} failed first: {error}")
        self.command = command


class CommandTimeout(ATEngineError):
    """No final result in time; ``queued`` says whether the command ever reached the wire."""

    def __init__(self, command: str, timeout: float, queued: bool) -> None:
        where = "in the queue" if queued else "on the wire"
        super().__init__(f"{command}: no answer after {timeout:g} s {where}")
        self.command = command
        self.timeout = timeout
        self.queued = queued


class LinkLost(ATEngineError):
    """The UART connection went away; nothing outstanding can complete."""


class ModuleRestarted(ATEngineError):
    """The module restarted while the command was on the wire: no answer will come."""


class ResyncFailed(ATEngineError):
    """The module did not answer ``AT`` after an in-flight timeout; queued work is abandoned."""
