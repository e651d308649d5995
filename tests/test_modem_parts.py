"""PinStore and StackMachine on their own."""

import json
import os
import stat

from twisted.logger import capturedLogs

from bridge.at.commands import StackState
from bridge.modem.pinstore import REJECTED, UNCONFIRMED, PinStore
from bridge.modem.stack import StackMachine


def test_pin_record_is_a_private_salted_hash(tmp_path):
    store = PinStore(str(tmp_path / "new" / "dir"), "main")
    assert store.refusal("1234") is None
    store.remember("1234", REJECTED)
    assert store.refusal("1234") == REJECTED and store.refusal("4321") is None
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    record = json.loads(open(store.path).read())
    assert "1234" not in open(store.path).read() and len(record["salt"]) == 32
    other = PinStore(str(tmp_path / "new" / "dir"), "main")
    other.remember("1234", UNCONFIRMED)
    assert json.loads(open(store.path).read())["hash"] != record["hash"]  # fresh salt
    assert store.refusal("1234") == UNCONFIRMED and store.refusal("4321") is None
    store.forget()
    assert store.refusal("1234") is None


def test_a_record_without_a_verdict_is_a_rejection(tmp_path):
    store = PinStore(str(tmp_path), "main")
    store.remember("1234", UNCONFIRMED)
    record = json.loads(open(store.path).read())
    del record["verdict"]  # as written before verdicts existed
    with open(store.path, "w") as handle:
        json.dump(record, handle)
    assert store.refusal("1234") == REJECTED


def test_a_corrupt_pin_record_counts_as_a_rejection(tmp_path):
    store = PinStore(str(tmp_path), "main")
    with open(store.path, "w") as handle:
        handle.write("{not json")
    assert store.refusal("1234") == REJECTED


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
