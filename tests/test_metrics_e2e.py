"""End to end: a bridge on the simulator serving ``/metrics`` on loopback, scraped over HTTP
while a transfer runs through its profile to a loopback echo server."""

import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.logger import formatEvent, globalLogPublisher
from twisted.web.client import Agent
from twisted.web.http_headers import Headers

from tests.e2e_bed import Bed, Client, Echo, open_link, salted, server, sha, troubles, until, within


class MetricsBed(Bed):
    general_keys = "metrics = tcp:0:interface=127.0.0.1\n"


async def get(bed, headers=None):
    """``GET /metrics`` -> (its content type, its body)."""
    url = f"http://127.0.0.1:{bed.metrics_port}/metrics".encode()
    response = await within(Agent(reactor).request(b"GET", url, Headers(headers or {})),
                            "the metrics answer")
    assert response.code == 200
    body = Client()  # collects the body; fires ``closed`` with it at its end
    response.deliverBody(body)
    text = (await within(body.closed, "the metrics body")).decode()
    return response.headers.getRawHeaders(b"content-type")[0].decode(), text


async def scrape(bed) -> dict:
    """``/metrics`` over HTTP -> {(sample name, ((label, value), ...)): value}."""
    content_type, text = await get(bed)
    assert content_type.startswith("text/plain")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def link(samples, name, **labels):
    return samples.get((name, tuple(sorted({"modem": "main", "profile": "p", **labels}.items()))))


def sends(samples) -> float:
    return samples[("cellbridge_at_commands_total",
                    (("command", "+QISEND"), ("modem", "main"), ("result", "ok")))]


@pytest_twisted.ensureDeferred
async def test_a_scrape_sees_a_transfers_bytes_grow_and_its_close_counted(tmp_path):
    payload = salted(64 * 1024, seed=11)
    async with await MetricsBed.start(tmp_path, server(Echo)) as bed:
        assert bed.metrics_port
        client = await open_link(bed)  # 6 bytes each way
        first = await scrape(bed)
        assert first[("cellbridge_module_up", (("modem", "main"),))] == 1
        assert link(first, "cellbridge_links_open") == 1
        assert link(first, "cellbridge_link_bytes_total", direction="uplink") == 6
        assert link(first, "cellbridge_link_bytes_total", direction="downlink") == 6

        client.transport.write(payload)
        await until(lambda: len(client.received) >= 6 + len(payload), what="the echo")
        assert sha(client.received[6:]) == sha(payload)
        second = await scrape(bed)
        total = 6 + len(payload)
        assert link(second, "cellbridge_link_bytes_total", direction="uplink") == total
        assert link(second, "cellbridge_link_bytes_total", direction="downlink") == total
        assert sends(second) > sends(first)

        local = client.transport.getHost()
        closes = []

        def observe(event):
            if "closed (" in (event.get("log_format") or ""):
                closes.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        try:
            with troubles() as seen:
                client.transport.loseConnection()
                await until(bed.idle, what="the module socket to be freed")
                await until(lambda: closes, what="the close line")
        finally:
            globalLogPublisher.removeObserver(observe)
        assert seen == []
        remote = bed.remote.getHost().port
        assert len(closes) == 1
        assert closes[0].startswith(f"[profile:p] link 127.0.0.1:{local.port} -> "
                                    f"127.0.0.1:{remote} closed (local) after ")
        assert closes[0].endswith(f" s: {total} bytes up, {total} bytes down")
        third = await scrape(bed)
        assert link(third, "cellbridge_links_open") == 0
        assert link(third, "cellbridge_links_closed_total", cause="local") == 1
        assert link(third, "cellbridge_link_bytes_total", direction="uplink") == total
        assert ("cellbridge_at_commands_total",
                (("command", "+QICLOSE"), ("modem", "main"), ("result", "ok"))) in third


@pytest_twisted.ensureDeferred
async def test_a_scrape_writes_nothing_to_the_log_and_openmetrics_is_served_when_asked(tmp_path):
    async with await MetricsBed.start(tmp_path, server(Echo)) as bed:
        logged = []
        globalLogPublisher.addObserver(logged.append)
        try:
            samples = await scrape(bed)
        finally:
            globalLogPublisher.removeObserver(logged.append)
        assert samples[("cellbridge_module_up", (("modem", "main"),))] == 1
        lines = [formatEvent(event) for event in logged]
        assert [line for line in lines if "HTTP11ClientFactory" not in line] == []  # the test's
        content_type, text = await get(bed, {b"accept": [b"application/openmetrics-text"]})
        assert content_type.startswith("application/openmetrics-text")
        assert 'cellbridge_module_up{modem="main"} 1.0' in text and text.endswith("# EOF\n")
