"""The stop sequence (bridge.shutdown) on task time: listeners first, links within their budget
then aborted, AT+QIDEACT bounded, the modems last, one line with the counts."""

import pytest
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs

from bridge import shutdown
from bridge.service import CellbridgeService


class Links:
    """An Admission's link side: ``finish_links`` starts graceful ends that take ``ends_after``
    seconds each (None: never)."""

    def __init__(self, clock, ends_after, events):
        self.clock, self.ends_after, self.events = clock, ends_after, events
        self.sockets = []

    def finish_links(self):
        self.sockets = [f"link{i}" for i in range(len(self.ends_after))]
        for name, after in zip(list(self.sockets), self.ends_after):
            if after is not None:
                self.clock.callLater(after, self.sockets.remove, name)
        self.events.append(("finish", self.clock.seconds()))
        return len(self.sockets)

    def abort_links(self):
        aborted, self.sockets = len(self.sockets), []
        self.events.append(("abort", self.clock.seconds(), aborted))
        return aborted


class Child(Service):
    def __init__(self, name, events, factory=None):
        self.setName(name)
        self.events, self.factory = events, factory

    def stopService(self):
        super().stopService()
        self.events.append(("stop", self.name))


class Modem(Child):
    """A modem whose AT+QIDEACT is answered after ``answer_after`` seconds (None: never)."""

    ready = True
    contexts_in_use = {0}
    slots_in_use = frozenset()
    timeouts = type("Timeouts", (), {"qideact": 40.0})

    def __init__(self, name, events, clock, answer_after):
        super().__init__(name, events)
        self.clock, self.answer_after = clock, answer_after

    def selection(self, context):
        return None

    def issue(self, command):
        self.events.append(("issue", command.line, command.timeout, self.clock.seconds()))
        answer = Deferred()
        if self.answer_after is not None:
            self.clock.callLater(self.answer_after, answer.callback, None)
        return answer


def tree(ends_after, answer_after):
    clock, events = MemoryReactorClock(), []
    root = CellbridgeService(config=None, reactor=clock)
    modem = Modem("modem:main", events, clock, answer_after)
    modem.setServiceParent(root)
    Child("profile:web", events, Links(clock, ends_after, events)).setServiceParent(root)
    root.running = True
    for child in root:
        child.running = True
    return root, clock, events


@pytest.fixture
def logged():
    """The lines logged during the test, formatted (read them with ``lines()``)."""
    with capturedLogs() as events:
        yield events


def lines(events):
    return [event["log_format"].format(**event) for event in events]


def test_links_end_gracefully_then_the_context_is_deactivated_then_the_modem_stops(logged):
    root, clock, events = tree(ends_after=[0.5, 1.5], answer_after=0.4)
    done = root.stopService()
    assert events[:2] == [("stop", "profile:web"), ("finish", 0)]
    clock.pump([0.05] * 40)  # 2 s of task time
    assert done.called
    assert [event[0] for event in events] == ["stop", "finish", "issue", "stop"]
    _, line, timeout, at = events[2]
    assert (line, timeout) == (b"AT+QIDEACT", 40.0)
    assert 1.5 <= at < 1.5 + 2 * shutdown.POLL  # once the last link ended
    assert events[-1] == ("stop", "modem:main")
    assert lines(logged)[-1] == "stopped: 2 link(s) closed, 0 aborted, context deactivated in 0.4 s"


def test_links_still_open_at_the_budget_are_aborted(logged):
    root, clock, events = tree(ends_after=[1.0, None], answer_after=0.0)
    done = root.stopService()
    clock.advance(shutdown.LINK_BUDGET - 0.1)
    assert not any(event[0] == "abort" for event in events)
    clock.pump([0.05] * 4)
    [(_, at, aborted)] = [event for event in events if event[0] == "abort"]
    assert aborted == 1 and shutdown.LINK_BUDGET <= at < shutdown.LINK_BUDGET + shutdown.POLL
    clock.advance(0)
    assert done.called
    assert lines(logged)[-1] == ("stopped: 1 link(s) closed, 1 aborted, context deactivated in "
                                 "0.0 s")


def test_an_unanswered_qideact_holds_the_stop_for_its_budget_only(logged):
    root, clock, events = tree(ends_after=[], answer_after=None)
    done = root.stopService()
    clock.advance(shutdown.DEACT_BUDGET - 0.1)
    assert not done.called
    clock.advance(0.1)
    assert done.called
    assert events[-1] == ("stop", "modem:main")
    warning, summary = lines(logged)[-2:]
    assert warning == "modem:main: AT+QIDEACT at stop: no answer within 40 s"
    assert summary == "stopped: 0 link(s) closed, 0 aborted, 1 deactivation(s) failed in 40.0 s"


def test_qideact_waits_until_the_module_holds_no_socket_of_ours(logged):
    """A link's protocol hears of its end before its AT+QICLOSE is on the wire (a transparent
    session escapes first): AT+QIDEACT before it would reset what the close ends cleanly."""
    root, clock, events = tree(ends_after=[], answer_after=0.0)
    modem = root.getServiceNamed("modem:main")
    modem.slots_in_use = frozenset({0})
    clock.callLater(0.3, setattr, modem, "slots_in_use", frozenset())
    root.stopService()
    clock.pump([0.05] * 10)
    [(_, _, _, at)] = [event for event in events if event[0] == "issue"]
    assert 0.3 <= at < 0.3 + 2 * shutdown.POLL


def test_a_modem_not_ready_is_not_asked(monkeypatch, logged):
    root, clock, events = tree(ends_after=[], answer_after=0.0)
    monkeypatch.setattr(Modem, "ready", False)
    done = root.stopService()
    assert done.called and not any(event[0] == "issue" for event in events)
    assert lines(logged)[-1] == "stopped: 0 link(s) closed, 0 aborted, no context to deactivate"


def test_settled_polls_until_done_or_budget():
    clock = MemoryReactorClock()
    flag = []
    waiter = shutdown.settled(clock, lambda: bool(flag), 1.0)
    clock.advance(0.5)
    flag.append(True)
    clock.advance(shutdown.POLL)
    assert waiter.result is True
    assert shutdown.settled(clock, lambda: False, 0.0).result is False
