"""run_reset_command with real processes on the real reactor (each bounded by a short timeout)."""

import os

import pytest
import pytest_twisted
from twisted.internet import reactor, task
from twisted.internet.defer import CancelledError, inlineCallbacks

from bridge.modem.recovery import ResetCommandFailed, ResetCommandTimeout, run_reset_command

OUTER_BOUND = 15.0  # generous: only to keep a broken test from hanging, never asserted on


def bounded(d):
    return d.addTimeout(OUTER_BOUND, reactor)


def process_gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@inlineCallbacks
def wait_until_gone(pid):
    for _ in range(int(OUTER_BOUND / 0.05)):
        if process_gone(pid):
            return
        yield task.deferLater(reactor, 0.05, lambda: None)


def read_pid(path):
    return int(path.read_text()) if path.exists() and path.read_text().strip() else None


@pytest_twisted.inlineCallbacks
def test_exit_status_zero_succeeds():
    result = yield bounded(run_reset_command(reactor, ["/bin/true"], timeout=10))
    assert result is None


@pytest_twisted.inlineCallbacks
def test_nonzero_exit_fails_with_status_and_output():
    with pytest.raises(ResetCommandFailed) as raised:
        yield bounded(run_reset_command(reactor, ["/bin/false"], timeout=10))
    assert "exit code 1" in str(raised.value)
    with pytest.raises(ResetCommandFailed) as raised:
        yield bounded(run_reset_command(
            reactor, ["/bin/sh", "-c", "echo gpio line busy >&2; exit 3"], timeout=10))
    assert "exit code 3" in str(raised.value) and "gpio line busy" in str(raised.value)


@pytest_twisted.inlineCallbacks
def test_arguments_are_not_interpreted_by_a_shell(tmp_path):
    target = tmp_path / "out"
    yield bounded(run_reset_command(reactor, ["/bin/sh", "-c", 'printf %s "$1" > "$2"', "sh",
                                              "$HOME; rm -rf x", str(target)], timeout=10))
    assert target.read_text() == "$HOME; rm -rf x"


@pytest_twisted.inlineCallbacks
def test_missing_program_fails():
    with pytest.raises(ResetCommandFailed):
        yield bounded(run_reset_command(reactor, ["/nonexistent/cellbridge-reset"], timeout=10))


@pytest_twisted.inlineCallbacks
def test_overrunning_command_is_killed_and_fails_with_timeout(tmp_path):
    pidfile = tmp_path / "pid"
    with pytest.raises(ResetCommandTimeout) as raised:
        yield bounded(run_reset_command(
            reactor, ["/bin/sh", "-c", 'echo $$ > "$0"; exec sleep 30', str(pidfile)], timeout=0.3))
    assert "timed out after 0.3 s" in str(raised.value)
    assert process_gone(read_pid(pidfile))  # the Deferred fires only once the process is reaped


@pytest_twisted.inlineCallbacks
def test_cancelling_kills_the_process(tmp_path):
    pidfile = tmp_path / "pid"
    d = run_reset_command(reactor, ["/bin/sh", "-c", 'echo $$ > "$0"; exec sleep 30', str(pidfile)],
                          timeout=OUTER_BOUND)
    for _ in range(int(OUTER_BOUND / 0.05)):
        if read_pid(pidfile):
            break
        yield task.deferLater(reactor, 0.05, lambda: None)
    d.cancel()
    with pytest.raises(CancelledError):
        yield d
    yield wait_until_gone(read_pid(pidfile))
    assert process_gone(read_pid(pidfile))
