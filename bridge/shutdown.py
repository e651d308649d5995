"""How the daemon stops (SIGTERM, ``systemctl stop``) without cutting what it carries.

In order: STOPPING=1; the listeners stop accepting; every link, a profile's or a module-side
server's tcp client, ends gracefully (the app's bytes are delivered and acked, then AT+QICLOSE,
then the app reads a clean EOF: :meth:`~bridge.proxy.admission.Admission.finish_links`) within
:data:`LINK_BUDGET`, and the links still open then are aborted; the servers stop (their
listeners closed); once the module holds no socket
of ours (every AT+QICLOSE answered, within :data:`RELEASE_BUDGET`: a link's protocol hears of its
end before the command is on the wire, and AT+QIDEACT first would reset what the close ends
cleanly), each modem deactivates its PDP contexts (AT+QIDEACT) within :data:`DEACT_BUDGET`; then
the modems stop and close their ports. One log line says what happened.

The unit's TimeoutStopSec (systemd/cellbridge.service) covers LINK_BUDGET + RELEASE_BUDGET +
DEACT_BUDGET and the port's close.
"""

from twisted.internet import defer
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.logger import Logger

from bridge.at import commands
from bridge.proxy.service import behind

#: How long the links have to end gracefully before they are aborted.
LINK_BUDGET = 20.0
#: How long the module sockets have to be released after that: AT+QICLOSE's default limit.
RELEASE_BUDGET = 10.0
#: How long the modems have to deactivate their contexts: AT+QIDEACT's default limit
#: (bridge.at.commands.DEFAULT_TIMEOUTS). It can take 2.5 min on a bad network; the app note
#: recommends giving up within a minute (app note §5.5, docs/at-dialect.md §4.1).
DEACT_BUDGET = 40.0
#: How often an ending is checked on.
POLL = 0.05

log = Logger()


def settled(clock, done, budget: float) -> Deferred:
    """Deferred(True) once ``done()`` is true, or (False) after ``budget`` seconds."""
    waiter = Deferred()
    deadline = clock.seconds() + budget

    def check():
        if done():
            waiter.callback(True)
        elif clock.seconds() >= deadline:
            waiter.callback(False)
        else:
            clock.callLater(POLL, check)
    check()
    return waiter


@inlineCallbacks
def end_links(clock, holders, budget: float = LINK_BUDGET):
    """End the links of ``holders`` (:func:`link_holder`) gracefully, abort those still open
    after ``budget`` -> (closed, aborted)."""
    ending = sum(holder.finish_links() for holder in holders)
    ended = yield settled(clock, lambda: not any(holder.sockets for holder in holders), budget)
    aborted = 0 if ended else sum(holder.abort_links() for holder in holders)
    return ending - aborted, aborted


def admission_of(listener):
    """The :class:`~bridge.proxy.admission.Admission` behind a ``profile:NAME`` listener, or
    None (a udp profile: its sessions end when its port closes)."""
    served = behind(listener)
    return served if hasattr(served, "finish_links") else None


def link_holder(child):
    """What ends the links of a child of the tree (``finish_links``, ``abort_links``,
    ``sockets``): a tcp profile's Admission, a module-side server itself; else None."""
    return child if hasattr(child, "finish_links") else admission_of(child)


@inlineCallbacks
def deactivate(modem, clock):
    """AT+QIDEACT on each PDP context the modem uses (app note §5.5: a context not used for long
    should be deactivated), within
    :data:`DEACT_BUDGET` -> True if every context answered DEACT OK, None if the modem had no
    context up (not ready: nothing to deactivate)."""
    if not getattr(modem, "ready", False):
        return None
    deadline = clock.seconds() + DEACT_BUDGET
    try:
        for context in sorted(modem.contexts_in_use):
            left = deadline - clock.seconds()
            command = commands.qideact(min(modem.timeouts.qideact, left))
            answer = Deferred()  # a wait that ends at the deadline, the command or not
            modem.issue(command.addressing(modem.selection(context))).chainDeferred(answer)
            yield answer.addTimeout(left, clock)
    except defer.TimeoutError:
        log.warn("{name}: AT+QIDEACT at stop: no answer within {budget:g} s", name=modem.name,
                 budget=DEACT_BUDGET)
        return False
    except Exception as error:  # an ERROR, the port gone: the stop goes on
        log.warn("{name}: AT+QIDEACT at stop: {error}", name=modem.name, error=error)
        return False
    return True


def describe_contexts(outcomes, seconds: float) -> str:
    """The deactivation part of the stop line (``outcomes``: :func:`deactivate`'s, per modem)."""
    done = sum(1 for outcome in outcomes if outcome)
    failed = sum(1 for outcome in outcomes if outcome is False)
    if not done and not failed:
        return "no context to deactivate"
    parts = []
    if done:
        parts.append("context deactivated" if done == 1 else f"contexts of {done} modems "
                     "deactivated")
    if failed:
        parts.append(f"{failed} deactivation(s) failed")
    return f"{' and '.join(parts)} in {seconds:.1f} s"


def stop_children(children) -> Deferred:
    """Stop those of ``children`` still running, together."""
    return defer.gatherResults([defer.maybeDeferred(child.stopService)
                                for child in children if child.running], consumeErrors=True)


@inlineCallbacks
def stop(root):
    """Stop ``root``'s children in the order this module describes -> Deferred."""
    clock = root.reactor
    if root.notifier is not None and root.notifier.running:
        yield defer.maybeDeferred(root.notifier.stopService)  # STOPPING=1 before anything closes
    yield root.reloads_settled()
    yield stop_children(root.children_named("profile:"))
    holders = [holder for holder in map(link_holder, root) if holder is not None]
    holders += root.retiring
    closed, aborted = yield end_links(clock, holders)
    yield stop_children(root.children_named("server:"))
    modems = root.children_named("modem:")
    yield settled(clock, lambda: not any(getattr(modem, "slots_in_use", ()) for modem in modems),
                  RELEASE_BUDGET)
    started = clock.seconds()
    outcomes = yield defer.gatherResults([deactivate(modem, clock) for modem in modems],
                                         consumeErrors=True)
    contexts = describe_contexts(outcomes, clock.seconds() - started)
    yield stop_children(reversed(list(root)))
    log.info("stopped: {closed} link(s) closed, {aborted} aborted, {contexts}", closed=closed,
             aborted=aborted, contexts=contexts)
