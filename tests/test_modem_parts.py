"""PinStore and StackMachine on their own."""

import json
import os
import stat

import pytest_twisted
from twisted.internet import reactor
from twisted.logger import capturedLogs
from twisted.python.threadable import isInIOThread

from bridge.at.commands import StackState
from bridge.modem import pinstore
from bridge.modem.pinstore import REJECTED, UNCONFIRMED, PinStore
from bridge.modem.stack import StackMachine


@pytest_twisted.inlineCallbacks
def test_pin_record_is_a_private_salted_hash(tmp_path):
    store = PinStore(reactor, str(tmp_path / "new" / "dir"), "main")
    assert (yield store.refusal("1234")) is None
    yield store.remember("1234", REJECTED)
    assert (yield store.refusal("1234")) == REJECTED and (yield store.refusal("4321")) is None
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    record = json.loads(open(store.path).read())
    assert "1234" not in open(store.path).read() and len(record["salt"]) == 32
    other = PinStore(reactor, str(tmp_path / "new" / "dir"), "main")
    yield other.remember("1234", UNCONFIRMED)
    assert json.loads(open(store.path).read())["hash"] != record["hash"]  # fresh salt
    assert (yield store.refusal("1234")) == UNCONFIRMED and (yield store.refusal("4321")) is None
    store.forget()
    assert (yield store.refusal("1234")) is None


@pytest_twisted.inlineCallbacks
def test_the_pin_hash_runs_in_a_thread_not_on_the_reactor(tmp_path, monkeypatch):
    """scrypt takes tens of milliseconds by design: on the reactor it would stall every link."""
    on_reactor_thread = []

    def recording_hash(pin, salt):
        on_reactor_thread.append(isInIOThread())
        return pin_hash(pin, salt)

    pin_hash = pinstore.pin_hash
    monkeypatch.setattr(pinstore, "pin_hash", recording_hash)
    store = PinStore(reactor, str(tmp_path), "main")
    yield store.remember("1234", REJECTED)
    assert (yield store.refusal("1234")) == REJECTED
    assert isInIOThread() and on_reactor_thread == [False, False]


@pytest_twisted.inlineCallbacks
def test_a_record_without_a_verdict_is_a_rejection(tmp_path):
    store = PinStore(reactor, str(tmp_path), "main")
    yield store.remember("1234", UNCONFIRMED)
    record = json.loads(open(store.path).read())
    del record["verdict"]  # as written before verdicts existed
    with open(store.path, "w") as handle:
        json.dump(record, handle)
    assert (yield store.refusal("1234")) == REJECTED


@pytest_twisted.inlineCallbacks
def test_a_corrupt_pin_record_counts_as_a_rejection(tmp_path):
    store = PinStore(reactor, str(tmp_path), "main")
    with open(store.path, "w") as handle:
        handle.write("{not json")
    assert (yield store.refusal("1234")) == REJECTED


def test_stack_follows_steps_and_adopts_what_the_module_reports():
    stack = StackMachine()
    stack.step("QIDEACT")
    stack.step("QIREGAPP")
    stack.step("QIACT")
    stack.step("QILOCIP")
    assert stack.state == "IP STATUS" and stack.context_up
    with capturedLogs() as events:
        stack.observed(StackState("IP INITIAL"))
        stack.step("QIACT")  # not allowed from IP INITIAL
    assert stack.state == "IP GPRSACT"
    assert [e["log_level"].name for e in events] == ["info", "warn"]
    stack.step("PDP DEACT")
    assert not stack.context_up


def test_ip_processing_for_ip_status_is_no_surprise_worth_a_line():
    """A mux module says IP PROCESSING while a socket is in use (app note §5.6.1)."""
    stack = StackMachine()
    for step in ("QIDEACT", "QIREGAPP", "QIACT", "QILOCIP"):
        stack.step(step)
    with capturedLogs() as events:
        stack.observed(StackState("IP PROCESSING"))
        stack.observed(StackState("IP STATUS"))
        stack.observed(StackState("IP STATUS"))
    assert events == [] and stack.state == "IP STATUS"
