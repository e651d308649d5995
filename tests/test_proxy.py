"""Admission of local connections to module sockets, against the fake modem."""

import dataclasses

import pytest
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs, formatEvent

from bridge.config import Listen, ProfileConfig
from bridge.errors import NotSupported
from bridge.proxy.dispatch import Dispatcher
from bridge.proxy.service import make_stream_factory
from bridge.proxy.stream import StreamFactory
from tests.link_fakes import REMOTE, FakeModem

PROFILE = ProfileConfig("web", Listen("tcp", "tcp:0:interface=127.0.0.1", 0, "127.0.0.1"), REMOTE,
                        modem="main", queue=1, queue_timeout=5.0)


class Bench:
    def __init__(self, profile=PROFILE, ready=True):
        self.modem = FakeModem()
        self.modem.ready = ready
        self.dispatcher = Dispatcher(self.modem.clock, self.modem, window=5840)
        self.factory = StreamFactory(self.dispatcher, profile)

    def connect(self, factory=None):
        stream = (factory or self.factory).buildProtocol(None)
        stream.makeConnection(StringTransport())
        return stream

    def open_all(self):
        """Answer every pending AT+QIOPEN with OK and CONNECT OK."""
        for line in self.modem.wire().split(b"\r"):
            if line.startswith(b"AT+QIOPEN="):
                n = int(line[len(b"AT+QIOPEN="):][:1])
                self.modem.module(b"\r\nOK\r\n\r\n%d, CONNECT OK\r\n" % n)


def test_six_links_then_the_seventh_waits_paused_and_is_served_when_one_closes():
    bench = Bench()
    streams = [bench.connect() for _ in range(6)]
    for _ in range(6):
        bench.open_all()
    assert sorted(link.slot for link in bench.dispatcher.links) == [0, 1, 2, 3, 4, 5]
    seventh = bench.connect()
    assert seventh.link is None and seventh.transport.producerState == "paused"
    assert bench.dispatcher.stats()["waiting"] == 1
    streams[2].connectionLost()  # local close of slot 2: QICLOSE, then the slot is free
    assert bench.modem.wire() == b"AT+QICLOSE=2\r"
    assert seventh.link is None
    bench.modem.module(b"\r\n2, CLOSE OK\r\n")
    assert seventh.link is not None and seventh.link.slot == 2
    assert seventh.transport.producerState == "producing"
    assert bench.modem.wire() == b'AT+QIOPEN=2,"TCP","10.1.2.3",80\r'


def test_past_the_queue_bound_a_connection_is_refused():
    bench = Bench(dataclasses.replace(PROFILE, max_links=1, queue=1))
    bench.connect()
    waiting, refused = bench.connect(), bench.connect()
    assert not waiting.transport.disconnecting
    assert refused.transport.disconnected  # abortConnection: a reset, not an empty reply


def test_a_waiting_connection_is_reset_after_queue_timeout():
    bench = Bench(dataclasses.replace(PROFILE, max_links=1))
    bench.connect()
    waiting = bench.connect()
    bench.modem.clock.advance(4.9)
    assert not waiting.transport.disconnecting
    bench.modem.clock.advance(0.1)
    assert waiting.transport.disconnected and bench.dispatcher.stats()["waiting"] == 0


def test_a_waiting_connection_that_goes_away_leaves_the_queue():
    bench = Bench(dataclasses.replace(PROFILE, max_links=1))
    bench.connect()
    waiting = bench.connect()
    waiting.connectionLost()
    assert bench.dispatcher.stats()["waiting"] == 0
    assert not any("_timed_out" in repr(call) for call in bench.modem.clock.getDelayedCalls())


def test_a_profile_at_max_links_does_not_hold_up_another_profile_while_slots_are_free():
    bench = Bench(dataclasses.replace(PROFILE, name="a", max_links=1, queue=2))
    other = StreamFactory(bench.dispatcher, dataclasses.replace(PROFILE, name="b", queue=2))
    bench.connect()
    a_waiting = [bench.connect(), bench.connect()]
    b_streams = [bench.connect(other), bench.connect(other)]
    assert [s.link.slot for s in b_streams] == [1, 2]  # served at once, beside a's waiters
    assert all(s.link is None for s in a_waiting) and bench.dispatcher.stats()["waiting"] == 2


def test_waiters_are_served_first_in_first_out_per_profile_when_slots_free():
    bench = Bench(dataclasses.replace(PROFILE, name="a", max_links=1, queue=2))
    other = StreamFactory(bench.dispatcher, dataclasses.replace(PROFILE, name="b", queue=2))
    first_a = bench.connect()
    b_streams = [bench.connect(other) for _ in range(5)]
    for _ in range(6):
        bench.open_all()
    a_waiting = [bench.connect(), bench.connect()]
    b_waiting = bench.connect(other)  # all six slots taken: it waits as well
    assert bench.dispatcher.stats()["waiting"] == 3
    b_streams[0].connectionLost()  # slot 1 frees: a is still at max_links, so b's waiter goes
    assert bench.modem.wire() == b"AT+QICLOSE=1\r"
    bench.modem.module(b"\r\n1, CLOSE OK\r\n")
    assert b_waiting.link.slot == 1 and all(s.link is None for s in a_waiting)
    bench.open_all()
    first_a.connectionLost()  # slot 0 frees: the oldest a waiter, not the newer one
    assert bench.modem.wire() == b"AT+QICLOSE=0\r"
    bench.modem.module(b"\r\n0, CLOSE OK\r\n")
    assert a_waiting[0].link.slot == 0 and a_waiting[1].link is None


def test_bytes_from_a_connection_without_a_link_reset_it_and_are_logged():
    bench = Bench(ready=False)
    stream = bench.connect()
    with capturedLogs() as events:
        stream.dataReceived(b"orphan")
    assert stream.transport.disconnected  # aborted, not a silent drop
    assert any("6 bytes from a connection that has no module socket" in formatEvent(e)
               for e in events)


def test_connections_wait_for_the_modem_to_become_ready():
    bench = Bench(ready=False)
    stream = bench.connect()
    assert stream.link is None and bench.modem.wire() == b""
    bench.modem.set_state("ready")
    assert stream.link is not None and bench.modem.wire().startswith(b"AT+QIOPEN=0,")


def test_modem_down_resets_every_link():
    bench = Bench()
    streams = [bench.connect() for _ in range(2)]
    bench.open_all()
    bench.open_all()
    bench.modem.set_state("down", "PDP DEACT")
    assert all(s.transport.disconnected for s in streams) and not bench.dispatcher.links


class _Root:
    def __init__(self, mode):
        from bridge.config import ModemConfig
        self.config = type("C", (), {"modems": {"main": ModemConfig("main", "sim", mode=mode)}})
        self.reactor = FakeModem().clock


def test_transparent_mode_is_refused_at_start():
    with pytest.raises(NotSupported, match="transparent is not supported yet"):
        make_stream_factory(PROFILE, FakeModem(), _Root("transparent"))


def test_profiles_on_one_modem_share_its_dispatcher():
    modem, root = FakeModem(), _Root("mux")
    first = make_stream_factory(PROFILE, modem, root)
    second = make_stream_factory(dataclasses.replace(PROFILE, name="other"), modem, root)
    assert first.dispatcher is second.dispatcher


def test_udp_profiles_and_servers_are_refused_at_start(tmp_path):
    from twisted.internet.testing import MemoryReactorClock

    from bridge.config import load_config
    from bridge.service import make_service

    for extra, what in (("[profile:u]\nlisten = udp:5353\nremote = udp:10.0.0.1:53\n", "udp"),
                        ("[server:s]\nport = 2020\nforward = tcp:127.0.0.1:22\n", "server")):
        path = tmp_path / f"{what}.ini"
        path.write_text(f"[cellbridge]\nstate_dir = {tmp_path}\n[modem:main]\nport = sim\n"
                        + extra)
        with pytest.raises(NotSupported, match="not supported yet"):
            make_service(load_config(str(path)), MemoryReactorClock(), environ={})
