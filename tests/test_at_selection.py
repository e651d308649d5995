"""ATProtocol transcripts: the selecting commands (AT+QIFGCNT, AT+QISRVC) the engine writes before
a socket command that addresses another context or the server-accepted sockets (app note §3.2,
§3.4, §7)."""

from bridge.at import commands as c
from bridge.at.commands import SackResult, Selection, SendResult
from bridge.at.errors import ATError, CommandTimeout, SelectionFailed
from tests.test_at_harness import Harness, error_of, value_of

SERVER = Selection(context=0, server=True)
CLIENT = Selection(context=0, server=False)


def test_a_command_without_selection_goes_out_alone():
    h = Harness()
    h.issue(c.qisack(socket=1))
    assert h.sent() == b"AT+QISACK=1\r"


def test_the_selection_goes_first_then_the_command():
    h = Harness()
    outcome = h.issue(c.qisack(socket=0).addressing(SERVER))
    assert h.sent() == b"AT+QIFGCNT=0\r"
    h.recv(b"\r\nOK\r\n")
    assert h.sent() == b"AT+QISRVC=2\r"
    h.recv(b"\r\nOK\r\n")
    assert h.sent() == b"AT+QISACK=0\r"
    h.recv(b"\r\n+QISACK: 5, 5, 0\r\n\r\nOK\r\n")
    assert value_of(outcome) == SackResult(5, 5, 0)


def test_a_selection_in_force_is_not_written_again():
    h = Harness()
    first = h.issue(c.qisack(socket=0).addressing(SERVER))
    for _ in range(2):
        h.sent()
        h.recv(b"\r\nOK\r\n")
    h.recv(b"\r\n+QISACK: 0, 0, 0\r\n\r\nOK\r\n")
    value_of(first)
    h.sent()
    h.issue(c.qiclose(socket=0).addressing(SERVER))
    assert h.sent() == b"AT+QICLOSE=0\r"


def test_switching_sides_writes_only_what_changes():
    h = Harness()
    h.issue(c.qisack(socket=0).addressing(SERVER))
    h.issue(c.qisack(socket=5).addressing(CLIENT))
    assert h.sent() == b"AT+QIFGCNT=0\r"
    h.recv(b"\r\nOK\r\n")
    assert h.sent() == b"AT+QISRVC=2\r"
    h.recv(b"\r\nOK\r\n")
    assert h.sent() == b"AT+QISACK=0\r"
    h.recv(b"\r\n+QISACK: 0, 0, 0\r\n\r\nOK\r\n")
    assert h.sent() == b"AT+QISRVC=1\r"
    h.recv(b"\r\nOK\r\n")
    assert h.sent() == b"AT+QISACK=5\r"


def test_the_engine_learns_from_selecting_commands_it_is_given():
    h = Harness()
    h.issue(c.qifgcnt(1))
    h.recv(b"\r\nOK\r\n")
    h.sent()
    h.issue(c.qisack(socket=3).addressing(Selection(context=1)))
    assert h.sent() == b"AT+QISACK=3\r"


def test_a_failed_selection_fails_the_command_unsent():
    h = Harness()
    outcome = h.issue(c.qisend(b"data", socket=0).addressing(SERVER))
    h.recv(b"\r\nOK\r\n")
    assert h.sent() == b"AT+QIFGCNT=0\rAT+QISRVC=2\r"
    h.recv(b"\r\nERROR\r\n")
    error = error_of(outcome)
    assert isinstance(error, SelectionFailed)
    assert "AT+QISRVC=2" in str(error)
    assert h.sent() == b""  # the payload never went out: it would have reached a client socket
    # the choice is unknown now: the next server command selects again
    h.issue(c.qisack(socket=0).addressing(SERVER))
    assert h.sent() == b"AT+QISRVC=2\r"


def test_a_selector_that_times_out_fails_its_command_and_resyncs():
    h = Harness()
    outcome = h.issue(c.qisack(socket=0).addressing(Selection(server=True)))
    assert h.sent() == b"AT+QISRVC=2\r"
    h.clock.advance(c.DEFAULT_TIMEOUTS.simple + 0.1)
    assert isinstance(error_of(outcome), SelectionFailed)
    assert h.sent() == b"\x1bAT\r"
    h.recv(b"\r\nOK\r\n")
    h.issue(c.qisack(socket=0).addressing(Selection(server=True)))
    assert h.sent() == b"AT+QISRVC=2\r"


def server_side_known() -> Harness:
    """An engine that wrote AT+QISRVC=2 and knows it to be in force."""
    h = Harness()
    h.issue(c.qisack(socket=0).addressing(Selection(server=True)))
    h.recv(b"\r\nOK\r\n", b"\r\n+QISACK: 0, 0, 0\r\n\r\nOK\r\n")
    assert h.sent() == b"AT+QISRVC=2\rAT+QISACK=0\r"
    return h


def selects_the_server_side_again(h: Harness) -> bool:
    h.issue(c.qisend(b"for the server client", socket=0).addressing(Selection(server=True)))
    return h.sent() == b"AT+QISRVC=2\r"


def test_a_module_restart_forgets_the_selection():
    h = server_side_known()
    h.recv(b"\r\nRDY\r\n")
    assert selects_the_server_side_again(h)


def test_a_control_command_that_jumps_ahead_brings_its_own_selection():
    h = Harness()
    send = h.issue(c.qisend(b"abc", socket=0).addressing(SERVER))  # bulk priority
    sack = h.issue(c.qisack(socket=4).addressing(CLIENT))  # control priority: goes first
    h.recv(b"\r\nOK\r\n", b"\r\nOK\r\n", b"\r\n+QISACK: 3, 3, 0\r\n\r\nOK\r\n")
    assert h.sent() == b"AT+QIFGCNT=0\rAT+QISRVC=1\rAT+QISACK=4\rAT+QISRVC=2\r"
    assert value_of(sack) == SackResult(3, 3, 0)
    h.recv(b"\r\nOK\r\n", b"\r\n> ")
    assert h.sent() == b"AT+QISEND=0,3\rabc"
    h.recv(b"\r\nSEND OK\r\n")
    assert value_of(send) == SendResult(True)


def test_a_failed_plain_command_does_not_disturb_the_selection():
    h = Harness()
    h.issue(c.qisack(socket=0).addressing(SERVER))
    h.recv(b"\r\nOK\r\n", b"\r\nOK\r\n", b"\r\nERROR\r\n")
    h.sent()
    outcome = h.issue(c.qiclose(socket=0).addressing(SERVER))
    assert h.sent() == b"AT+QICLOSE=0\r"
    h.recv(b"\r\nERROR\r\n")
    assert isinstance(error_of(outcome), ATError)
    assert not isinstance(error_of(outcome), (SelectionFailed, CommandTimeout))


def test_a_resync_forgets_the_selection():
    """The module answered the resync AT, but it may have restarted meanwhile without a word (an
    autobauding module prints no RDY, docs/at-dialect.md §2): the next server-side command
    selects again rather than trusting the record."""
    h = server_side_known()
    h.issue(c.csq())
    assert h.sent() == b"AT+CSQ\r"
    h.clock.advance(c.DEFAULT_TIMEOUTS.simple + 0.1)  # no answer: the module restarted
    assert h.sent() == b"\x1bAT\r"
    h.recv(b"\r\nOK\r\n")  # the restarted module (back at AT+QISRVC=1) answers
    assert selects_the_server_side_again(h)


def test_the_owner_can_make_the_engine_forget_the_selection():
    h = server_side_known()
    h.proto.forget_selection()
    assert selects_the_server_side_again(h)
