"""bridge.logs: the log_level filter, and journald priority prefixes under systemd."""

import io

from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger, globalLogPublisher
from twisted.python import log as legacy

from bridge.logs import make_observer


def emit(observer):
    log = Logger(namespace="cellbridge.test", observer=observer)
    log.debug("debug {n}", n=1)
    log.info("info {n}", n=2)
    log.warn("warn {n}", n=3)
    log.error("error {n}", n=4)


def test_journald_lines_carry_a_syslog_priority_and_no_timestamp():
    out = io.StringIO()
    emit(make_observer("info", out, {"JOURNAL_STREAM": "8:1234"}))
    assert out.getvalue() == ("<6>[cellbridge.test#info] info 2\n"
                              "<4>[cellbridge.test#warn] warn 3\n"
                              "<3>[cellbridge.test#error] error 4\n")


def test_terminal_lines_are_filtered_by_level():
    out = io.StringIO()
    emit(make_observer("warn", out, {}))
    lines = out.getvalue().splitlines()
    assert [line.split("] ", 1)[1] for line in lines] == ["warn 3", "error 4"]


def test_twisted_port_and_factory_lines_are_debug_only():
    """What Twisted logs for every port it opens or closes (legacy ``log.msg`` text) and for a
    noisy factory: hidden at info, shown at debug; other lines are untouched."""
    lines = {}
    for level in ("info", "debug"):
        out = io.StringIO()
        observer = make_observer(level, out, {})
        globalLogPublisher.addObserver(observer)
        try:
            for text in ("Admission starting on 8080", "(TCP Port 8080 Closed)",
                         "(UDP Port 41234 Closed)", "_Side starting on 41234",
                         "(UNIX Port /run/cellbridge/control.sock Closed)",
                         "Starting protocol <_Side object>", "port 8080 is open"):
                legacy.msg(text)
            Factory.forProtocol(Protocol).doStart()  # a noisy factory: "Starting factory <...>"
        finally:
            globalLogPublisher.removeObserver(observer)
        lines[level] = [line.split("] ", 1)[1] for line in out.getvalue().splitlines()]
    assert lines["info"] == ["port 8080 is open"]
    assert len(lines["debug"]) == 8 and lines["debug"][-1].startswith("Starting factory <")
