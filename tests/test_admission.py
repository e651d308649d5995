"""Admission of local connections to module sockets, against the real Modem on transcripts: the
six sockets shared by every profile, ``max_links``, the bounded FIFO and its timeout."""

import dataclasses

import pytest
from twisted.internet.error import ConnectionLost
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure

from bridge.proxy.admission import Admission
from tests.modem_harness import OK, PLAIN, ModemHarness
from tests.socket_bench import PROFILE, ModemBench

PROFILE = dataclasses.replace(PROFILE, queue=1, queue_timeout=5.0)


class Bench(ModemBench):
    def __init__(self, tmp_path, profile=PROFILE):
        super().__init__(tmp_path)
        self.admission = Admission(profile, self.modem)

    def connect(self, admission=None):
        side = (admission or self.admission).buildProtocol(None)
        side.makeConnection(StringTransport())
        return side

    def open_all(self):
        """Answer every AT+QIDNSIP and AT+QIOPEN the modem writes, with CONNECT OK."""
        for _ in range(100):  # six opens of two commands each, at most
            wire = self.wire()
            if not wire:
                return
            if wire.startswith(b"AT+QIDNSIP="):
                self.module(OK)
            elif wire.startswith(b"AT+QIOPEN="):
                n = int(wire[len(b"AT+QIOPEN="):][:1])
                self.module(OK + b"\r\n%d, CONNECT OK\r\n" % n)
            else:
                raise AssertionError(f"unexpected {wire!r}")
        raise AssertionError("the modem kept writing")


def slots(bench):
    return sorted(s.slot for s in bench.admission.sockets)


def test_six_links_then_the_seventh_waits_paused_and_is_served_when_one_closes(tmp_path):
    bench = Bench(tmp_path)
    sides = [bench.connect() for _ in range(6)]
    bench.open_all()
    assert slots(bench) == [0, 1, 2, 3, 4, 5]
    seventh = bench.connect()
    assert seventh.module is None and seventh.transport.producerState == "paused"
    assert bench.admission.stats()["waiting"] == 1
    sides[2].connectionLost()  # local close of slot 2: AT+QICLOSE, then the slot is free
    assert bench.wire() == b"AT+QICLOSE=2\r"
    assert seventh.module is None
    bench.module(b"\r\n2, CLOSE OK\r\n")
    assert bench.wire() == b"AT+QIDNSIP=0\r"
    bench.module(OK)
    assert bench.wire() == b'AT+QIOPEN=2,"TCP","10.1.2.3",80\r'
    bench.module(OK + b"\r\n2, CONNECT OK\r\n")
    assert seventh.module.transport.slot == 2
    assert seventh.transport.producerState == "producing"


def test_past_the_queue_bound_a_connection_is_refused(tmp_path):
    bench = Bench(tmp_path, dataclasses.replace(PROFILE, max_links=1, queue=1))
    bench.connect()
    waiting, refused = bench.connect(), bench.connect()
    assert not waiting.transport.disconnecting
    assert refused.transport.disconnected  # abortConnection: a reset, not an empty reply


def test_a_waiting_connection_is_reset_after_queue_timeout(tmp_path):
    bench = Bench(tmp_path, dataclasses.replace(PROFILE, max_links=1))
    bench.connect()
    bench.open_all()
    waiting = bench.connect()
    with capturedLogs() as events:
        bench.clock.advance(4.875)
        assert not waiting.transport.disconnecting
        bench.clock.advance(0.125)
    assert waiting.transport.disconnected and bench.admission.stats()["waiting"] == 0
    assert any("no module socket free within 5 s" in formatEvent(e) for e in events)


def test_a_waiting_connection_that_goes_away_leaves_the_queue_and_its_timer(tmp_path):
    bench = Bench(tmp_path, dataclasses.replace(PROFILE, max_links=1))
    bench.connect()
    timers = len(bench.clock.getDelayedCalls())
    waiting = bench.connect()
    assert len(bench.clock.getDelayedCalls()) == timers + 1  # its queue_timeout
    waiting.connectionLost()
    assert bench.admission.stats()["waiting"] == 0
    assert len(bench.clock.getDelayedCalls()) == timers


def test_a_profile_at_max_links_does_not_hold_up_another_profile_while_slots_are_free(tmp_path):
    bench = Bench(tmp_path, dataclasses.replace(PROFILE, name="a", max_links=1, queue=2))
    other = Admission(dataclasses.replace(PROFILE, name="b", queue=2), bench.modem)
    bench.connect()
    a_waiting = [bench.connect(), bench.connect()]
    b_sides = [bench.connect(other), bench.connect(other)]
    bench.open_all()
    assert [s.module.transport.slot for s in b_sides] == [1, 2]  # served beside a's waiters
    assert all(s.module is None for s in a_waiting)
    assert bench.modem.sockets.waiting() == 2


def test_waiters_are_served_first_in_first_out_per_profile_when_slots_free(tmp_path):
    bench = Bench(tmp_path, dataclasses.replace(PROFILE, name="a", max_links=1, queue=2))
    other = Admission(dataclasses.replace(PROFILE, name="b", queue=2), bench.modem)
    first_a = bench.connect()
    b_sides = [bench.connect(other) for _ in range(5)]
    bench.open_all()
    a_waiting = [bench.connect(), bench.connect()]
    b_waiting = bench.connect(other)  # all six slots taken: it waits as well
    assert bench.modem.sockets.waiting() == 3
    b_sides[0].connectionLost()  # slot 1 frees: a is still at max_links, so b's waiter goes
    assert bench.wire() == b"AT+QICLOSE=1\r"
    bench.module(b"\r\n1, CLOSE OK\r\n")
    bench.open_all()
    assert b_waiting.module.transport.slot == 1 and all(s.module is None for s in a_waiting)
    first_a.connectionLost()  # slot 0 frees: the oldest a waiter, not the newer one
    assert bench.wire() == b"AT+QICLOSE=0\r"
    bench.module(b"\r\n0, CLOSE OK\r\n")
    bench.open_all()
    assert a_waiting[0].module.transport.slot == 0 and a_waiting[1].module is None


def test_bytes_from_a_connection_without_a_module_socket_reset_it_and_are_logged(tmp_path):
    bench = Bench(tmp_path)
    side = bench.connect()  # opening: not connected yet
    with capturedLogs() as events:
        side.dataReceived(b"orphan")
    assert side.transport.disconnected  # aborted, not a silent drop
    assert any("6 bytes from a local connection with no module socket" in formatEvent(e)
               for e in events)


def test_connections_wait_for_the_modem_to_become_ready(tmp_path):
    harness = ModemHarness(tmp_path / "state", health_interval=1e9).start()
    admission = Admission(PROFILE, harness.modem)
    side = admission.buildProtocol(None)
    side.makeConnection(StringTransport())
    harness.play(PLAIN)  # the whole bring-up: no socket command slips in before it ends
    assert harness.modem.ready and side.module is None
    assert harness.take() == b"AT+QIDNSIP=0\r"


def test_modem_down_resets_every_link(tmp_path):
    bench = Bench(tmp_path)
    sides = [bench.connect() for _ in range(2)]
    bench.open_all()
    bench.module(b"\r\n+PDP DEACT\r\n")
    assert all(s.transport.disconnected for s in sides) and not bench.admission.sockets


def test_port_lost_with_a_close_in_flight_and_a_connection_waiting_does_not_reenter(tmp_path):
    """The unplug fails the AT+QICLOSE in flight; the slot it frees must not be handed to the
    waiter, whose open would fail at once and free it again, and again (this once made 110
    links and a RecursionError). The modem is down before its commands fail."""
    bench = Bench(tmp_path)
    sides = [bench.connect() for _ in range(6)]
    bench.open_all()
    waiter = bench.connect()
    sides[3].connectionLost()
    assert bench.wire() == b"AT+QICLOSE=3\r"
    bench.modem.protocol.connectionLost(Failure(ConnectionLost("unplugged")))
    assert not bench.modem.ready and bench.modem.slots_in_use == frozenset()
    assert all(s.transport.disconnected for s in sides if s is not sides[3])
    assert waiter.module is None and not waiter.transport.disconnecting  # still waiting
    assert bench.modem.sockets.waiting() == 1
    assert bench.wire() == b""  # no open was tried on the dead port
    assert bench.admission.served == 6


def test_udp_servers_and_udp_profiles_are_built(tmp_path):
    from twisted.internet.testing import MemoryReactorClock

    from bridge.config import load_config
    from bridge.proxy.datagram import DatagramRelay
    from bridge.proxy.reverse_datagram import DatagramForwarding
    from bridge.service import make_service

    path = tmp_path / "bridge.ini"
    head = f"[cellbridge]\nstate_dir = {tmp_path}\n[modem:main]\nport = sim\n"
    path.write_text(head + "[server:s]\nprotocol = udp\nport = 2020\nforward = udp:127.0.0.1:22\n")
    root = make_service(load_config(str(path)), MemoryReactorClock(), environ={})
    assert root.getServiceNamed("server:s").forwarding is DatagramForwarding
    path.write_text(head + "[profile:u]\nlisten = udp:5353\nremote = udp:10.0.0.1:53\n")
    root = make_service(load_config(str(path)), MemoryReactorClock(), environ={})
    listener = root.getServiceNamed("profile:u")
    assert isinstance(listener.args[1], DatagramRelay)
    assert listener.args[1].modem is root.getServiceNamed("modem:main")
    assert root.config.modems["main"].receive == "push"  # auto, with a udp profile
