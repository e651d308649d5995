"""Is a TCP link still alive? The module will not say: GPRS drops links silently (app note §6).

While bytes are in flight the peer's acks are the evidence: an :class:`AckProgressWatch` runs the
AT+QISACK=n schedule from each SEND OK. While the link is idle nothing is in flight, so after
``keepalive_idle`` seconds without traffic an :class:`IdleProbe` either sends the profile's probe
bytes (their SEND OK starts the ack schedule like any data) or, without a probe, asks AT+QISTATE
whether the module still calls the socket CONNECTED. AT+QISTATE, not AT+QISACK: a socket the
module dropped answers QISACK with ``0, 0, 0`` or with its last counters (docs/at-dialect.md
§4.5; the simulator's choice 24 in bridge/sim/__init__.py), indistinguishable from a healthy idle
socket; QISTATE names its state. Its answer is a few hundred bytes every ``keepalive_idle``
seconds per idle link, nothing next to the data. UDP links get no liveness at all (no acks; the
caller never builds one).
"""

from typing import Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from bridge.keepalive import AckProgressWatch, IdleProbe, KeepaliveTimings

ALIVE_STATE = "CONNECTED"  #: the +QISTATE socket state of a usable link (docs/at-dialect.md §4.7)


class LinkLiveness:
    """The keepalive machinery of one TCP link on module socket ``slot``.

    :param query_acks: ``() -> Deferred[SackResult]`` (AT+QISACK=slot, shared with the window)
    :param query_stack: ``() -> Deferred[StackState]`` (AT+QISTATE, ``Modem.query_stack``)
    :param send_probe: ``send_probe(data)`` queues bytes on the uplink like local data
    :param on_dead: ``on_dead(reason, cause)``; called at most once, then this object is inert
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, slot: int, timings: KeepaliveTimings, probe: bytes,
                 query_acks: Callable[[], Deferred], query_stack: Callable[[], Deferred],
                 send_probe: Callable[[bytes], None],
                 on_dead: Callable[[str, str], None]) -> None:
        self._slot = slot
        self._timings = timings
        self._query_stack = query_stack
        self._send_probe = send_probe
        self._on_dead = on_dead
        self._stopped = False
        self._checking = False
        self._watch = AckProgressWatch(clock, query_acks, self._no_ack_progress,
                                       timings.first, timings.interval, timings.retries,
                                       link=str(slot))
        self._idle = IdleProbe(clock, timings.idle, self._probe, probe, self._check_state)

    def opened(self) -> None:
        self._idle.activity()

    def data_sent(self) -> None:
        """A SEND OK of data on this link."""
        self._watch.data_sent()
        self._idle.activity()

    def data_received(self) -> None:
        self._idle.activity()

    def stop(self) -> None:
        self._stopped = True
        self._watch.stop()
        self._idle.stop()

    def _probe(self, data: bytes) -> None:
        # Bytes in flight are already being watched: the link is not idle on the wire.
        if not self._watch.running:
            self.log.debug("link {slot}: idle {t:g} s, sending the probe", slot=self._slot,
                           t=self._timings.idle)
            self._send_probe(data)

    def _check_state(self) -> None:
        if self._watch.running or self._checking:
            return
        self._checking = True
        self._query_stack().addCallbacks(self._state_seen, self._state_unknown)

    def _state_seen(self, report) -> None:
        self._checking = False
        if self._stopped:
            return
        states = [line.state for line in report.sockets if line.socket == self._slot]
        if not states:
            self.log.info("link {slot}: AT+QISTATE has no line for this socket; not judged",
                          slot=self._slot)
        elif states[0] != ALIVE_STATE:
            self._dead(f"idle for {self._timings.idle:g} s and AT+QISTATE reports the socket "
                       f"{states[0]}", "idle_not_connected")

    def _state_unknown(self, failure: Failure) -> None:
        self._checking = False
        if not self._stopped:
            self.log.warn("link {slot}: AT+QISTATE failed ({why}); asked again when next idle",
                          slot=self._slot, why=failure.getErrorMessage())

    def _no_ack_progress(self, reason: str) -> None:
        self._dead(reason, "no_ack_progress")

    def _dead(self, reason: str, cause: str) -> None:
        if not self._stopped:
            self.stop()
            self._on_dead(reason, cause)
