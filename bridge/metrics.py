"""Prometheus metrics: ``[cellbridge] metrics = ENDPOINT`` serves ``/metrics``.

The exposition is prometheus-client's (its encoders, and its choice between the text format and
OpenMetrics by the scraper's ``Accept``), over a :class:`~prometheus_client.CollectorRegistry` of
the daemon's own: a test may build several trees in one process. One custom collector reads the
live state when scraped: each modem's counters (:mod:`bridge.counters`), readiness, ``info`` and
``usage``, and the profiles' and servers' ledgers (:mod:`bridge.proxy.accounting`) and relays.
Nothing is counted twice for metrics' sake.

A scrape is answered on the reactor thread, where that state changes: not through
``prometheus_client.twisted.MetricsResource``, whose WSGI app runs the collector in the global
reactor's thread pool. Reading Twisted's state from a thread would need a hop back to the reactor
(``blockingCallFromThread``), and a scrape caught by the reactor's shutdown would then hang the
thread pool's join. Building the exposition costs the reactor about 10 us a line (0.5 ms for one
modem and one profile, about 4 ms for 350 lines).
"""

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from twisted.application import strports
from twisted.web.resource import Resource
from twisted.web.server import Site

from bridge.proxy.accounting import DIRECTIONS, SERIES
from bridge.proxy.admission import Admission
from bridge.proxy.datagram import DatagramRelay
from bridge.proxy.service import behind

#: Every metric: name -> (type, help). Counters end in ``_total``, sizes are in bytes.
METRICS = {
    "cellbridge_module_up": ("gauge", "1 while the modem is ready (brought up, data on), else 0"),
    "cellbridge_registration": (
        "gauge", "1 for the network registration the modem last reported (state: home, "
        "roaming, ...)"),
    "cellbridge_signal_dbm": ("gauge", "received signal strength (AT+CSQ), in dBm"),
    "cellbridge_data_bytes_total": (
        "counter", "payload bytes the module carried for the bridge (metered SIMs), by direction"),
    "cellbridge_at_commands_total": (
        "counter", "AT commands that ended, by command name and result (ok, error, timeout, "
        "queue_timeout, lost, restarted, abandoned, not_sent)"),
    "cellbridge_link_dead_total": ("counter", "module sockets found dead, by cause"),
    "cellbridge_pdp_lost_total": ("counter", "PDP context losses (+PDP DEACT)"),
    "cellbridge_module_resets_total": ("counter", "module restarts seen"),
    "cellbridge_port_lost_total": ("counter", "serial port losses"),
    "cellbridge_recoveries_total": (
        "counter", "recoveries that brought the modem back, by the step that did"),
    "cellbridge_recovery_steps_started_total": ("counter", "recovery steps started, by step"),
    "cellbridge_recovery_steps_total": (
        "counter", "recovery steps finished, by step and outcome"),
    "cellbridge_link_reopens_total": ("counter", "persistent links reopened, by cause"),
    "cellbridge_link_reopen_timeouts_total": (
        "counter", "persistent links given up after reopen_timeout"),
    "cellbridge_link_bytes_total": (
        "counter", "bytes a profile's links carried, by direction (uplink: out through the "
        "module)"),
    "cellbridge_links_open": ("gauge", "a profile's links now open (udp: sessions)"),
    "cellbridge_links_closed_total": (
        "counter", "a tcp profile's connections that ended, by cause (remote, local, dead, "
        "modem_down, connect_failed, queue_full)"),
    "cellbridge_connections_waiting": (
        "gauge", "a profile's connections (udp: sessions) waiting for a module socket"),
    "cellbridge_datagrams_total": ("counter", "datagrams a udp profile carried, by direction"),
    "cellbridge_datagrams_dropped_total": (
        "counter", "datagrams a udp profile dropped, by cause"),
    "cellbridge_server_listening": ("gauge", "1 while the module listens for the server"),
    "cellbridge_server_bytes_total": (
        "counter", "bytes a module-side server's clients carried, by direction (uplink: out "
        "through the module, to the clients)"),
    "cellbridge_server_links_open": ("gauge", "a module-side server's clients now forwarded"),
    "cellbridge_server_links_closed_total": (
        "counter", "a module-side server's clients that ended, by cause (as for profiles; "
        "idle for udp)"),
    "cellbridge_server_clients_accepted_total": ("counter", "module-side clients accepted"),
    "cellbridge_server_clients_refused_total": (
        "counter", "module-side clients refused, by cause"),
    "cellbridge_server_listen_failures_total": ("counter", "failed attempts to listen"),
    "cellbridge_server_datagrams_dropped_total": (
        "counter", "datagrams a udp server's clients dropped, by cause"),
}

#: A modem's counter series -> its metric; one not listed is ``cellbridge_<name>_total``.
COUNTERS = {
    "at_command": "cellbridge_at_commands_total",
    "link_dead": "cellbridge_link_dead_total",
    "pdp_lost": "cellbridge_pdp_lost_total",
    "module_reset": "cellbridge_module_resets_total",
    "port_lost": "cellbridge_port_lost_total",
    "recovered": "cellbridge_recoveries_total",
    "recovery_step_started": "cellbridge_recovery_steps_started_total",
    "recovery_step_result": "cellbridge_recovery_steps_total",
    "link_reopened": "cellbridge_link_reopens_total",
    "link_reopen_timeout": "cellbridge_link_reopen_timeouts_total",
    "link_closed": "cellbridge_links_closed_total",
    "server_link_closed": "cellbridge_server_links_closed_total",
    "server_accepted": "cellbridge_server_clients_accepted_total",
    "server_refused": "cellbridge_server_clients_refused_total",
    "server_listen_failed": "cellbridge_server_listen_failures_total",
    "server_datagrams_dropped": "cellbridge_server_datagrams_dropped_total",
}
#: Bytes the ledgers count: closed links' in the counters, open links' on the links; the
#: profile and server readers report the sum.
LEDGER_BYTES = {bytes_series for _, bytes_series in SERIES.values()}


class Samples:
    """One scrape's samples by metric name; ``families()`` makes them prometheus-client's."""

    def __init__(self) -> None:
        self._samples = {}

    def add(self, name: str, value, **labels) -> None:
        self._samples.setdefault(name, []).append((labels, value))

    def families(self) -> list:
        families = []
        for name, samples in self._samples.items():
            counted = name.removeprefix("cellbridge_").removesuffix("_total")
            kind, text = METRICS.get(name, ("counter", f"times {counted} was counted"))
            names = list(dict.fromkeys(label for labels, _ in samples for label in labels))
            family = (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(
                name, text, labels=names)
            for labels, value in samples:
                family.add_metric([str(labels.get(label, "")) for label in names], value)
            families.append(family)
        return families


def add_modem(samples: Samples, name: str, modem) -> None:
    """A ``modem:NAME`` child (:class:`~bridge.modem.modem.Modem`)."""
    samples.add("cellbridge_module_up", int(bool(modem.ready)), modem=name)
    if modem.info.get("registration"):
        samples.add("cellbridge_registration", 1, modem=name, state=modem.info["registration"])
    if modem.info.get("signal_dbm") is not None:
        samples.add("cellbridge_signal_dbm", modem.info["signal_dbm"], modem=name)
    usage = modem.usage
    for direction, carried in zip(DIRECTIONS, (usage.sent, usage.received)):
        samples.add("cellbridge_data_bytes_total", carried, modem=name, direction=direction)
    for (series, labels), count in sorted(modem.counters.snapshot().items()):
        if series not in LEDGER_BYTES:
            samples.add(COUNTERS.get(series, f"cellbridge_{series}_total"), count, modem=name,
                        **dict(labels))


def add_profile(samples: Samples, name: str, listener) -> None:
    """A ``profile:NAME`` child: a tcp profile's :class:`~bridge.proxy.admission.Admission` or a
    udp profile's :class:`~bridge.proxy.datagram.DatagramRelay` behind its listener."""
    protocol = behind(listener)
    if isinstance(protocol, Admission):
        labels = {"modem": protocol.profile.modem, "profile": name}
        for direction, carried in protocol.ledger.carried().items():
            samples.add("cellbridge_link_bytes_total", carried, direction=direction, **labels)
        samples.add("cellbridge_links_open", len(protocol.ledger.open), **labels)
        samples.add("cellbridge_connections_waiting", protocol.modem.sockets.waiting(name),
                    **labels)
    elif isinstance(protocol, DatagramRelay):
        labels = {"modem": protocol.profile.modem, "profile": name}
        stats = protocol.stats()
        for direction, way in zip(DIRECTIONS, ("up", "down")):
            samples.add("cellbridge_link_bytes_total", stats[f"bytes_{way}"], direction=direction,
                        **labels)
            samples.add("cellbridge_datagrams_total", stats[f"datagrams_{way}"],
                        direction=direction, **labels)
        samples.add("cellbridge_links_open", stats["sessions"], **labels)
        samples.add("cellbridge_connections_waiting", stats["waiting"], **labels)
        for cause, count in stats["drops"].items():
            samples.add("cellbridge_datagrams_dropped_total", count, cause=cause, **labels)


def add_server(samples: Samples, name: str, server) -> None:
    """A ``server:NAME`` child (:class:`~bridge.proxy.reverse.ModuleServer`)."""
    ledger = getattr(server, "ledger", None)
    if ledger is None:
        return
    labels = {"modem": server.server.modem, "server": name}
    samples.add("cellbridge_server_listening", int(bool(server.listening)), **labels)
    for direction, carried in ledger.carried().items():
        samples.add("cellbridge_server_bytes_total", carried, direction=direction, **labels)
    samples.add("cellbridge_server_links_open", len(ledger.open), **labels)


READERS = {"modem": add_modem, "profile": add_profile, "server": add_server}


class BridgeCollector:
    """Reads the tree ``root`` (:class:`~bridge.service.CellbridgeService`) at scrape time."""

    def __init__(self, root) -> None:
        self.root = root

    def describe(self) -> list:
        """Nothing to declare up front (the series follow the tree); registering must not
        scrape."""
        return []

    def collect(self) -> list:
        """Every metric family, read now."""
        samples = Samples()
        for child_name, child in list(self.root.namedServices.items()):
            kind, _, name = child_name.partition(":")
            if kind in READERS:
                READERS[kind](samples, name, child)
        return samples.families()


class MetricsSite(Site):
    """A Site that writes no access log line: a scrape every few seconds is no news."""

    noisy = False

    def log(self, request) -> None:
        """Not logged."""


class MetricsPage(Resource):
    """``GET /metrics``: ``registry`` in the format the scraper accepts."""

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.registry = registry

    def render_GET(self, request) -> bytes:
        accept = request.getHeader(b"accept")
        encode, content_type = choose_encoder(accept.decode("latin-1") if accept else "")
        request.setHeader(b"content-type", content_type.encode("ascii"))
        return encode(self.registry)


def metrics_site(root) -> Site:
    """``/metrics`` over a registry holding the tree's collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BridgeCollector(root))
    top = Resource()
    top.putChild(b"metrics", MetricsPage(registry))
    return MetricsSite(top)


def make_metrics_service(root):
    """The ``metrics`` child of the tree (not yet added), or None when the key is empty.
    Like the tcp listeners, a ``strports.service``: a port that cannot be bound stops start-up
    with one line."""
    endpoint = root.config.general.metrics
    if not endpoint:
        return None
    service = strports.service(endpoint, metrics_site(root), reactor=root.reactor)
    return service
