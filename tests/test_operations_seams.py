"""Where reload, stop, trace, link accounting, data usage and dump files meet: each part kept
its promise alone; these check that they keep it together."""

import ast
import json
import os
import pathlib
from types import SimpleNamespace

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectError
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from bridge.at.dumps import DumpFiles
from bridge.config import load_config
from bridge.control.protocol import ControlFactory
from bridge.counters import Counters, DataUsage
from bridge.modem.socket import SocketSettings
from bridge.modem.usage import UsageStore
from bridge.proxy.admission import Admission
from bridge.proxy.splice import LocalSide
from bridge.service import make_service
from tests.test_reload import Admission as StandInAdmission
from tests.test_reload import Parts, Reactor, ini

BRIDGE = pathlib.Path(__file__).resolve().parent.parent / "bridge"


# -- a tree of stand-in parts whose modems have what trace and stop look at ------------------------

class ReviewParts(Parts):
    """:class:`tests.test_reload.Parts` whose modems keep ``traffic_observers`` (as a Modem
    does), whose ``modem:main`` may hold its stop (``hold_stop``), and whose tcp profiles'
    admissions hold one open link each."""

    def __init__(self):
        super().__init__()
        self.hold_stop = False
        self.held = []  # the Deferreds of held stops
        self.admissions = []

    def modem_service(self, modem, root):
        service = super().modem_service(modem, root)
        service.traffic_observers = []
        if modem.name == "main":
            stop, parts = service.stopService, self

            def stopService():
                stop()
                if parts.hold_stop:
                    parts.held.append(Deferred())
                    return parts.held[-1]
            service.stopService = stopService
        return service

    def stream_factory(self, profile, modem_service, root):
        admission = LinkedAdmission(self.events, profile.name)
        self.admissions.append(admission)
        return admission


class LinkedAdmission(StandInAdmission):
    """A stand-in admission with one open link, which ``finish_links`` ends."""

    def __init__(self, events, name):
        super().__init__(events)
        self.name = name
        self.sockets = ["link"]

    def finish_links(self):
        self.events.append(("finish", self.name))
        ended, self.sockets = len(self.sockets), []
        return ended

    def abort_links(self):
        return 0


def started(tmp_path, text):
    config = tmp_path / "cellbridge.ini"
    config.write_text(text)
    parts = ReviewParts()
    root = make_service(load_config(str(config)), Reactor(), parts, environ={},
                        general_children={})
    root.privilegedStartService()
    root.startService()
    parts.events.clear()
    return root, parts, config


def reload(root, config, text):
    config.write_text(text)
    return root.reload(str(config))


# -- reload x control trace ---------------------------------------------------------------------

def test_a_trace_keeps_following_a_modem_that_a_reload_restarted(tmp_path):
    """A live trace watches the tree's TrafficTap, not the Modem objects of its start: a reload
    that restarts ``[modem:main]`` leaves it hearing the new Modem, and leaving keeps nothing."""
    root, _, config = started(tmp_path, ini())
    protocol = ControlFactory(root).buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(b'{"command": "trace"}\n')
    assert transport.value() == b'{"trace": ["main", "spare"]}\n'
    old = root.getServiceNamed("modem:main")
    assert reload(root, config, ini(modem="send_window = 2920")).called
    new = root.getServiceNamed("modem:main")
    assert new is not old
    transport.clear()
    for observer in list(new.traffic_observers):
        observer("2026-12-05T05:00:00.000+0000 > AT+QISTAT")
    assert transport.value() == (b'{"modem": "main", "entry": '
                                 b'"2026-12-05T05:00:00.000+0000 > AT+QISTAT"}\n')
    protocol.connectionLost(None)
    assert root.traffic.watchers == []  # the trace leaves nothing behind


# -- reload x stop ------------------------------------------------------------------------------

def test_a_stop_during_a_reload_leaves_nothing_running(tmp_path):
    """SIGTERM while a SIGHUP's reload waits for a modem to stop: the stop waits for the reload,
    then stops what it started, so nothing runs after the stop."""
    root, parts, config = started(tmp_path, ini())
    parts.hold_stop = True
    reloaded = []
    reload(root, config, ini(modem="send_window = 2920")).addBoth(reloaded.append)
    assert reloaded == [] and len(parts.held) == 1  # waits for modem:main's stop
    stopping = root.stopService()
    assert not stopping.called  # the stop waits for the reload
    parts.hold_stop = False
    parts.held[0].callback(None)
    assert reloaded == [None] and stopping.called
    assert [child.name for child in root if child.running] == []


# -- reload x links ------------------------------------------------------------------------------

def test_a_tcp_profile_made_udp_by_a_reload_still_ends_its_links_at_stop(tmp_path):
    """``[profile:web]`` turned udp: the tcp listener's open link ends as a removed profile's
    would, and no modem restarts for it."""
    dns = "[profile:dns]\nmodem = main\nlisten = udp:5353\nremote = udp:10.0.0.1:53\n"
    root, parts, config = started(tmp_path, ini(profiles=dns))  # its modem already takes udp
    udp = ini(profiles=dns).replace("listen = tcp:8080", "listen = udp:8080").replace(
        "remote = tcp:10.0.0.1:80", "remote = udp:10.0.0.1:80")
    assert reload(root, config, udp).called
    assert root.config.profiles["web"].listen.kind == "udp"
    assert ("finish", "web") in parts.events  # its links end, as a removed profile's
    assert [event for event in parts.events if event[0] == "modem"] == []  # no modem restarted


def test_a_tcp_profile_whose_new_address_cannot_be_bound_keeps_its_links_in_the_tree(tmp_path):
    """``listen`` moved to a busy port: the profile keeps its old listener (and its links), so a
    stop still ends them."""
    root, parts, config = started(tmp_path, ini())
    root.reactor.taken = (8088,)
    assert reload(root, config, ini().replace("listen = tcp:8080", "listen = tcp:8088")).called
    assert "profile:web" in root.namedServices and root.getServiceNamed("profile:web").running
    assert root.stopService().called
    assert ("finish", "web") in parts.events


def test_the_link_accounting_follows_the_modem_a_reload_retargets_a_profile_to(tmp_path):
    """Links opened after a reload retargets a profile are counted in the counters of the modem
    that carries them, which status and metrics read."""
    (tmp_path / "cellbridge.ini").write_text(ini())
    config = load_config(str(tmp_path / "cellbridge.ini"))
    profile = config.profiles["web"]
    old, new = fake_modem("main"), fake_modem("main")
    admission = Admission(profile, old)
    admission.retarget(profile, new)
    local = LocalSide(admission)
    local.transport = StringTransport()  # accepted, waiting for its module socket
    admission._failed(Failure(ConnectError(string="refused")), local)
    assert new.counters.get("link_closed", cause="connect_failed", profile="web") == 1
    assert old.counters.snapshot() == {}


def fake_modem(name):
    return SimpleNamespace(name=name, counters=Counters(), reactor=Clock(), mux=True,
                           socket_settings=SocketSettings)


# -- data usage across a modem restart ----------------------------------------------------------

def test_a_stopped_modems_usage_store_never_writes_over_its_successors_file(tmp_path):
    """A stopped modem's store hears no more counts: a byte its engine reads before the port
    closes must not arm a write over the file of the modem that replaced it."""
    clock = Clock()
    old_usage = DataUsage()
    old = UsageStore(clock, str(tmp_path), "main", old_usage, interval=60.0)
    old.load()
    old_usage.count_sent(100)
    old.close()  # the old modem stops: 100 written
    old_usage.count_received(10)  # a +RECEIVE read before its port closed
    new_usage = DataUsage()
    new = UsageStore(clock, str(tmp_path), "main", new_usage, interval=60.0)
    new.load()  # the restarted modem: 100 sent
    new_usage.count_sent(5000)
    new.flush()
    clock.advance(60.0)
    record = json.loads((tmp_path / "main.usage").read_text())
    assert record == {"sent": 5100, "received": 0}
    assert clock.getDelayedCalls() == []


# -- dump files ----------------------------------------------------------------------------------

def test_a_dump_in_the_last_half_millisecond_of_a_second_is_named_after_the_earlier_ones(
        tmp_path):
    """A dump 999.6 ms into a second is named after the next second (rounded as a whole), so
    names sort as the dumps happened and pruning keeps the newest."""
    dumps = DumpFiles(str(tmp_path), "modem-main", keep=1)
    dumps.write("older", "pdp_lost", 1_000_000.5)
    newest = dumps.write("newer", "pdp_lost", 1_000_000.9996)
    assert dumps.files() == [newest]
    assert os.path.basename(newest) == "modem-main-19700112T134641.000Z-pdp_lost.log"


# -- layering ------------------------------------------------------------------------------------

def test_the_at_engine_does_not_import_the_modem_package():
    """bridge.at is the AT engine under bridge.modem: it imports nothing of bridge.modem."""
    offenders = []
    for path in sorted((BRIDGE / "at").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bridge.modem"):
                offenders.append(f"{path.name}: from {node.module} import ...")
            elif isinstance(node, ast.Import):
                offenders += [f"{path.name}: import {alias.name}" for alias in node.names
                              if alias.name.startswith("bridge.modem")]
    assert offenders == []
