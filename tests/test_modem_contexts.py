"""Transcripts of a modem that uses both PDP contexts (app note §7): bring-up of the second
context, and a ``+PDP DEACT`` that took one context (the modem asks which) or both."""


from bridge.at import commands
from bridge.errors import ModemDown
from bridge.modem.bringup import BringUpResult
from tests.modem_harness import IDENTITY, OK, REGISTERED, SIM_READY, SYNC
from tests.test_modem_recovery import RecoveryHarness

DEACT = b"\r\nDEACT OK\r\n"


def context_up(context, ip, apn=b'"internet","",""'):
    """Bring-up's steps for one context after the first (``BringUp.bring_up_context``)."""
    return [(b"AT+QIFGCNT=%d" % context, OK), (b"AT+QIDEACT", DEACT),
            (b"AT+QICSGP=1," + apn, OK), (b"AT+QIMODE=0", OK), (b"AT+QIMUX=1", OK),
            (b"AT+QIREGAPP", OK), (b"AT+QIACT", OK), (b"AT+QILOCIP", b"\r\n%s\r\n" % ip)]


SECOND_APN = b'"wap","u1","pw1"'
TWO_CONTEXTS = (SYNC + IDENTITY + SIM_READY + REGISTERED + [
    (b"AT+CGATT=1", OK),
    (b"AT+QIFGCNT=0", OK),  # the engine selects context 0 for the stack commands that follow
    (b"AT+QIMUX?", b"\r\n+QIMUX: 0\r\n" + OK),
    (b"AT+QISTAT", OK + b"\r\nSTATE: IP INITIAL\r\n"), (b"AT+QIDEACT", DEACT),
    (b'AT+QICSGP=1,"internet","",""', OK), (b"AT+QIMODE=0", OK), (b"AT+QIMUX=1", OK),
    (b"AT+QINDI=1", OK), (b"AT+QIREGAPP", OK), (b"AT+QIACT", OK),
    (b"AT+QILOCIP", b"\r\n10.0.0.2\r\n")]
    + context_up(1, b"10.0.1.2", SECOND_APN) + [(b"AT+CSQ", b"\r\n+CSQ: 25,0\r\n" + OK)])


def qistate(state: bytes, *connected: int) -> bytes:
    lines = b"".join(b'+QISTATE: %d,"TCP","127.0.0.1",5000,"CONNECTED"\r\n' % n if n in connected
                     else b'+QISTATE: %d,"","",,"INITIAL"\r\n' % n for n in range(6))
    return OK + b"\r\nSTATE: " + state + b"\r\n" + lines + OK


def pdp_deact(h, first: bytes, second: bytes) -> None:
    """``+PDP DEACT``, and the modem's question to each context: which one is down?"""
    h.recv(b"\r\n+PDP DEACT\r\n")
    h.play([(b"AT+QIFGCNT=0", OK), (b"AT+QISTATE", first),
            (b"AT+QIFGCNT=1", OK), (b"AT+QISTATE", second)])


class Link:
    """Stands in for a module socket: records what the modem tells it."""

    server = False  # a client socket's

    def __init__(self):
        self.down = []

    def socket_event(self, event):
        pass

    def modem_down(self, reason):
        self.down.append(reason)


class TwoContexts(RecoveryHarness):
    def __init__(self, state_dir):
        super().__init__(state_dir, apn1="wap", username1="u1", password1="pw1")
        self.modem.contexts_in_use = {0, 1}
        self.context_events = []
        self.modem.add_context_listener(
            lambda context, state, reason: self.context_events.append((context, state, reason)))
        self.links = {}

    def link(self, index, context):
        self.links[index] = Link()
        self.modem.attach_socket(index, self.links[index], context)


def up(tmp_path) -> TwoContexts:
    h = TwoContexts(tmp_path / "state").up(TWO_CONTEXTS)
    h.link(0, 0)
    h.link(1, 1)
    return h


def test_bring_up_activates_the_second_context_with_its_own_apn(tmp_path):
    h = up(tmp_path)
    modem = h.modem
    assert modem.local_ip == "10.0.0.2"
    assert modem.local_ips == {0: "10.0.0.2", 1: "10.0.1.2"}
    assert modem.info["local_ip1"] == "10.0.1.2"
    assert [modem.stacks[c].state for c in (0, 1)] == ["IP STATUS", "IP STATUS"]
    assert "pw1" not in modem.protocol.ring.dump()


def test_a_modem_on_context_0_alone_never_selects_one(tmp_path):
    h = RecoveryHarness(tmp_path / "state").up()  # exactly today's PLAIN transcript
    assert h.modem.local_ips == {0: "10.0.0.2"}


def test_pdp_deact_of_the_first_context_recovers_it_alone_while_the_second_carries_on(tmp_path):
    h = up(tmp_path)
    pdp_deact(h, qistate(b"PDP DEACT"), qistate(b"IP PROCESSING", 1))
    assert h.links[0].down == ["context 0 lost: PDP context deactivated by the network "
                               "(+PDP DEACT)"]
    assert h.links[1].down == []
    assert h.modem.ready and h.states == [("ready", "local IP 10.0.0.2")]
    assert h.context_events == [(0, "down", h.links[0].down[0])]
    refused = []
    h.modem.open_socket(2, "TCP", "127.0.0.1", 5000, context=0).addErrback(refused.append)
    assert refused[0].check(ModemDown)
    h.expect(b"AT+QIFGCNT=0", OK)
    h.expect(b"AT+QIDEACT")
    # a command of the second context's link, queued meanwhile, selects its context first,
    # and the recovery selects context 0 again
    acks = h.modem.issue(commands.qisack(socket=1).addressing(h.modem.selection(1)))
    h.recv(DEACT)
    h.play([(b"AT+QIFGCNT=1", OK), (b"AT+QISACK=1", b"\r\n+QISACK: 5, 5, 0\r\n" + OK),
            (b"AT+QIFGCNT=0", OK)])
    assert acks.called
    h.play(context_up(0, b"10.0.0.3")[2:])
    assert h.context_events[-1] == (0, "ready", "local IP 10.0.0.3")
    assert h.modem.local_ips == {0: "10.0.0.3", 1: "10.0.1.2"} and h.modem.local_ip == "10.0.0.3"
    assert h.modem.contexts_down == set()
    assert h.counter("pdp_lost") == 1 and h.counter("recovered", step="reactivate-context") == 1
    assert h.states == [("ready", "local IP 10.0.0.2")]  # the modem itself never went down


def test_a_context_the_module_shows_otherwise_inactive_counts_as_lost(tmp_path):
    h = up(tmp_path)
    pdp_deact(h, qistate(b"IP PROCESSING", 0), qistate(b"IP INITIAL"))
    assert h.links[1].down and not h.links[0].down
    assert h.context_events[0][:2] == (1, "down")
    h.play(context_up(1, b"10.0.1.3", SECOND_APN))
    assert h.context_events[-1] == (1, "ready", "local IP 10.0.1.3")


def test_a_failed_context_recovery_is_retried_alone_after_a_backoff(tmp_path):
    h = up(tmp_path)
    pdp_deact(h, qistate(b"IP PROCESSING"), qistate(b"PDP DEACT"))
    h.play(context_up(1, b"", SECOND_APN)[:6] + [(b"AT+QIACT", b"\r\nERROR\r\n")])
    failed_at = h.clock.seconds()
    h.play(context_up(1, b"10.0.1.3", SECOND_APN))
    assert 5.0 * 0.75 <= h.times[-8] - failed_at <= 5.0
    assert h.modem.ready and h.states == [("ready", "local IP 10.0.0.2")]
    assert h.context_events[-1] == (1, "ready", "local IP 10.0.1.3")


def test_both_contexts_lost_recover_the_whole_modem(tmp_path):
    h = up(tmp_path)
    pdp_deact(h, qistate(b"PDP DEACT"), qistate(b"PDP DEACT"))
    assert not h.modem.ready and h.links[0].down and h.links[1].down
    assert h.states[-1] == ("down", "context lost: PDP context deactivated by the network "
                                    "(+PDP DEACT)")
    assert h.context_events == []
    # The question left AT+QIFGCNT=1 in force: the stack steps act on the foreground context
    # (app note §7), so context 0 is selected before AT+QIDEACT.
    h.play([(b"AT+QIFGCNT=0", OK), (b"AT+QIDEACT", DEACT), (b"AT+QIREGAPP", OK),
            (b"AT+QIACT", OK), (b"AT+QILOCIP", b"\r\n10.0.0.3\r\n")]
           + context_up(1, b"10.0.1.3", SECOND_APN))
    assert h.modem.ready and h.modem.local_ips == {0: "10.0.0.3", 1: "10.0.1.3"}
    assert h.counter("recovered", step="reactivate") == 1


def test_an_unanswered_query_recovers_the_whole_modem(tmp_path):
    h = up(tmp_path)
    h.recv(b"\r\n+PDP DEACT\r\n")
    h.play([(b"AT+QIFGCNT=0", OK), (b"AT+QISTATE", b"\r\nERROR\r\n")])
    assert not h.modem.ready and h.links[0].down and h.links[1].down
    h.play([(b"AT+QIFGCNT=0", OK),  # the modem went down: the engine selects afresh
            (b"AT+QIDEACT", DEACT)])


def test_a_lost_context_while_the_other_recovers_takes_the_whole_way(tmp_path):
    h = up(tmp_path)
    pdp_deact(h, qistate(b"IP PROCESSING"), qistate(b"PDP DEACT"))
    h.expect(b"AT+QIFGCNT=1", OK)
    h.modem.supervisor.context_down(0, "+PDP DEACT")
    assert not h.modem.ready and h.links[0].down
    assert h.states[-1][0] == "down"


def test_after_a_mute_spell_the_ladder_checks_both_contexts(tmp_path):
    h = up(tmp_path)
    h.modem.issue(commands.csq()).addErrback(lambda _: None)
    h.expect(b"AT+CSQ")
    h.silent(3)  # the engine's resync fails: the ladder starts
    h.expect(b"\x1bAT", OK)  # its resync step: the module answers again
    h.play([(b"AT", OK), (b"AT+CMEE?", b"\r\n+CMEE: 2\r\n" + OK),
            (b"AT+QIFGCNT=0", OK), (b"AT+QISTATE", qistate(b"IP STATUS")),
            (b"AT+QIFGCNT=1", OK), (b"AT+QISTATE", qistate(b"IP PROCESSING", 1)),
            (b"AT+QICLOSE=1", b"\r\n1, CLOSE OK\r\n")])
    assert h.modem.ready and h.modem.local_ips == {0: "10.0.0.2", 1: "10.0.1.2"}
    assert h.counter("recovered", step="resync") == 1


def test_a_context_lost_while_bring_up_activates_the_other_is_asked_about_once_it_is_up(tmp_path):
    """AT+QIACT of the second context may take 150 s: a +PDP DEACT meanwhile is about contexts
    bring-up has not finished with, so the modem asks which one is gone once it is ready."""
    h = TwoContexts(tmp_path / "state")
    h.start()
    qiact_of_context_1 = len(TWO_CONTEXTS) - 3  # ... AT+QIACT, AT+QILOCIP, AT+CSQ
    h.play(TWO_CONTEXTS[:qiact_of_context_1])
    h.expect(b"AT+QIACT")
    h.recv(b"\r\n+PDP DEACT\r\n")  # the network drops context 0 meanwhile
    h.recv(OK)
    h.play(TWO_CONTEXTS[qiact_of_context_1 + 1:])
    assert h.modem.ready and h.states == [("ready", "local IP 10.0.0.2")]
    h.play([(b"AT+QIFGCNT=0", OK), (b"AT+QISTATE", qistate(b"PDP DEACT")),
            (b"AT+QIFGCNT=1", OK), (b"AT+QISTATE", qistate(b"IP GPRSACT"))])
    assert h.context_events == [(0, "down", "context 0 lost: PDP context deactivated by the "
                                            "network (+PDP DEACT)")]
    h.play(context_up(0, b"10.0.0.3"))
    assert h.context_events[-1] == (0, "ready", "local IP 10.0.0.3")
    assert h.modem.contexts_down == set() and not h.modem.supervisor.recovering


def test_a_context_lost_again_during_its_own_recovery_is_brought_back_again(tmp_path):
    """Context 1 drops again while its AT+QIACT runs: asked then, the module would show
    context 1 still activating; its recovery ends with AT+QILOCIP, then the modem asks, and
    context 1 goes down and comes back once more."""
    h = up(tmp_path)
    pdp_deact(h, qistate(b"IP PROCESSING"), qistate(b"PDP DEACT"))
    h.play(context_up(1, b"", SECOND_APN)[:6])
    h.expect(b"AT+QIACT")
    h.recv(b"\r\n+PDP DEACT\r\n")
    h.recv(OK)
    h.play([(b"AT+QILOCIP", b"\r\n10.0.1.3\r\n")])
    assert h.context_events[-1] == (1, "ready", "local IP 10.0.1.3")
    pdp_deact_answers = [(b"AT+QIFGCNT=0", OK), (b"AT+QISTATE", qistate(b"IP PROCESSING")),
                         (b"AT+QIFGCNT=1", OK), (b"AT+QISTATE", qistate(b"PDP DEACT"))]
    h.play(pdp_deact_answers)
    assert h.context_events[-1][:2] == (1, "down") and h.modem.contexts_down == {1}
    h.play(context_up(1, b"10.0.1.4", SECOND_APN))
    assert h.context_events[-1] == (1, "ready", "local IP 10.0.1.4")
    assert h.counter("pdp_lost") == 2 and h.states == [("ready", "local IP 10.0.0.2")]


def test_a_context_lost_while_the_others_retry_waits_comes_back_first_then_the_other(tmp_path):
    """Context 1's re-activation failed (after AT+QIACT: the module shows it active) and waits
    for its retry; context 0 is lost alone now: it is brought back, and context 1 right after
    (its retry is not dropped), the modem ready all along."""
    h = up(tmp_path)
    pdp_deact(h, qistate(b"IP PROCESSING"), qistate(b"PDP DEACT"))
    h.play(context_up(1, b"", SECOND_APN)[:7] + [(b"AT+QILOCIP", b"\r\nERROR\r\n")])
    assert h.modem.contexts_down == {1} and h.modem.supervisor.job is None
    pdp_deact(h, qistate(b"PDP DEACT"), qistate(b"IP GPRSACT"))
    assert h.modem.contexts_down == {0, 1}
    h.play(context_up(0, b"10.0.0.3"))
    assert h.context_events[-1] == (0, "ready", "local IP 10.0.0.3")
    h.play(context_up(1, b"10.0.1.3", SECOND_APN))
    assert h.context_events[-1] == (1, "ready", "local IP 10.0.1.3")
    assert h.modem.contexts_down == set() and not h.modem.supervisor.recovering
    assert h.modem.local_ips == {0: "10.0.0.3", 1: "10.0.1.3"}
    assert h.states == [("ready", "local IP 10.0.0.2")]


def test_an_answer_from_before_the_modem_came_back_is_not_applied(tmp_path):
    """The modem went down and came up again while it asked which context +PDP DEACT took:
    the answer describes the module before that recovery, which covered every context."""
    h = up(tmp_path)
    h.recv(b"\r\n+PDP DEACT\r\n")
    h.play([(b"AT+QIFGCNT=0", OK), (b"AT+QISTATE", qistate(b"PDP DEACT")),
            (b"AT+QIFGCNT=1", OK)])
    h.expect(b"AT+QISTATE")
    h.modem.mark_down("the module restarted (RDY)")  # what the supervisor's hooks do
    h.modem.came_up(BringUpResult("10.0.0.3", True, {}, {0: "10.0.0.3", 1: "10.0.1.3"}))
    h.recv(qistate(b"IP GPRSACT"))
    assert h.transport.value() == b"" and h.context_events == []
    assert h.modem.contexts_down == set() and not h.modem.supervisor.recovering


def test_when_ready_for_a_context_down_alone_waits_for_that_context(tmp_path):
    h = up(tmp_path)
    pdp_deact(h, qistate(b"IP PROCESSING", 0), qistate(b"PDP DEACT"))
    assert h.modem.ready and h.modem.contexts_down == {1}
    first, second, cancelled = [], [], h.modem.when_ready(1)
    h.modem.when_ready(0).addCallback(first.append)
    h.modem.when_ready(1).addCallback(second.append)
    cancelled.addErrback(lambda _: None)
    cancelled.cancel()
    assert first == [None] and second == []
    h.play(context_up(1, b"10.0.1.3", SECOND_APN))
    assert second == [None]
