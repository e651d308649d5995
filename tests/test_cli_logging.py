"""bridge.logs: the log_level filter, and journald priority prefixes under systemd."""

import io

from twisted.logger import Logger

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
