"""Review of the operations change: each test shows one defect found at a seam between its parts
(reload, stop, control, accounting, usage, dumps). They fail until the defect is fixed."""

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
from bridge.counters import Counters
from bridge.modem.socket import SocketSettings
from bridge.modem.usage import DataUsage, UsageStore
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
    """The trace joins the Modem objects there are when it starts; a reload that restarts
    ``[modem:main]`` puts a new Modem (new ``traffic_observers``) in the tree, and the trace
    goes silent for it (and keeps the stopped Modem alive) until the client reconnects."""
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
    assert old.traffic_observers == []  # nothing keeps the stopped modem


# -- reload x stop ------------------------------------------------------------------------------

def test_a_stop_during_a_reload_leaves_nothing_running(tmp_path):
    """SIGTERM while a SIGHUP's reload waits for a modem to stop: the stop runs at once
    (bridge.shutdown does not wait for the reload), then the reload resumes and starts the new
    modem and its profile's pieces in a tree that has stopped."""
    root, parts, config = started(tmp_path, ini())
    parts.hold_stop = True
    reloaded = []
    reload(root, config, ini(modem="send_window = 2920")).addBoth(reloaded.append)
    assert reloaded == [] and len(parts.held) == 1  # waits for modem:main's stop
    stopping = root.stopService()
    assert stopping.called
    parts.held[0].callback(None)
    assert reloaded == [None]
    assert [child.name for child in root if child.running] == []


# -- reload x links ------------------------------------------------------------------------------

def test_a_tcp_profile_made_udp_by_a_reload_still_ends_its_links_at_stop(tmp_path):
    """``[profile:web]`` turned udp: its tcp listener is stopped and replaced, and nothing ends
    the old admission's open link: it is out of the tree, so status does not show it and the
    stop neither finishes nor aborts it (it is cut when the process exits)."""
    dns = "[profile:dns]\nmodem = main\nlisten = udp:5353\nremote = udp:10.0.0.1:53\n"
    root, parts, config = started(tmp_path, ini(profiles=dns))  # its modem already takes udp
    udp = ini(profiles=dns).replace("listen = tcp:8080", "listen = udp:8080").replace(
        "remote = tcp:10.0.0.1:80", "remote = udp:10.0.0.1:80")
    assert reload(root, config, udp).called
    assert root.config.profiles["web"].listen.kind == "udp"
    assert parts.events == []  # no modem restarted: the link's module socket lives on
    assert root.stopService().called
    assert ("finish", "web") in parts.events


def test_a_tcp_profile_whose_new_address_cannot_be_bound_keeps_its_links_in_the_tree(tmp_path):
    """``listen`` moved to a busy port: the old listener is stopped first, the new one cannot
    bind, and the profile leaves the tree with its admission: the old port is gone too, and its
    open links are neither shown by status nor ended at stop."""
    root, parts, config = started(tmp_path, ini())
    root.reactor.taken = (8088,)
    assert reload(root, config, ini().replace("listen = tcp:8080", "listen = tcp:8088")).called
    assert "profile:web" in root.namedServices and root.getServiceNamed("profile:web").running
    assert root.stopService().called
    assert ("finish", "web") in parts.events


def test_the_link_accounting_follows_the_modem_a_reload_retargets_a_profile_to(tmp_path):
    """A restarted (or another) modem brings its own Counters; ``Admission.retarget`` moves the
    endpoint but the Ledger still counts in the old modem's, which status and metrics no longer
    read: ``cellbridge_links_closed_total`` loses every link closed after the reload."""
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
    """Modem.stopService flushes its UsageStore and then closes the port, but leaves
    ``usage.on_change`` armed: a payload counted on the old engine after the flush (the port
    still open) starts a 60 s timer on a modem that has stopped. A reload's new Modem has loaded
    the file meanwhile and saved more; the old timer then writes its smaller figure over it."""
    clock = Clock()
    old_usage = DataUsage()
    old = UsageStore(clock, str(tmp_path), "main", old_usage, interval=60.0)
    old.load()
    old_usage.count_sent(100)
    old.flush()  # the old modem stops: 100 written
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
    """``utc_stamp`` rounds the milliseconds (999.6 ms -> 1000) and wraps them to 000 without
    carrying into the second (the fix ``iso_timestamp`` got in ring.py, not copied here): the
    newer dump's name sorts before the older one's, and pruning removes the newer."""
    dumps = DumpFiles(str(tmp_path), "modem-main", keep=1)
    dumps.write("older", "pdp_lost", 1_000_000.5)
    newest = dumps.write("newer", "pdp_lost", 1_000_000.9996)
    assert dumps.files() == [newest]
    assert os.path.basename(newest) == "modem-main-19700112T134641.000Z-pdp_lost.log"


# -- layering ------------------------------------------------------------------------------------

def test_the_at_engine_does_not_import_the_modem_package():
    """bridge.at is the AT engine under bridge.modem; bridge/at/protocol.py now imports
    bridge.modem.usage for a default DataUsage."""
    offenders = []
    for path in sorted((BRIDGE / "at").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bridge.modem"):
                offenders.append(f"{path.name}: from {node.module} import ...")
            elif isinstance(node, ast.Import):
                offenders += [f"{path.name}: import {alias.name}" for alias in node.names
                              if alias.name.startswith("bridge.modem")]
    assert offenders == []
