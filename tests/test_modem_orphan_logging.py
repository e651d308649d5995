"""Modem: events for a socket with no link are logged without their payload."""

from twisted.logger import LogLevel, capturedLogs, formatEvent

from tests.modem_harness import ModemHarness

SECRET = b"user secret: correct horse battery staple"


def test_data_for_a_socket_with_no_link_is_a_warning_with_length_and_prefix_only(tmp_path):
    h = ModemHarness(tmp_path).up()
    with capturedLogs() as events:
        h.recv(b"\r\n+RECEIVE: 3, %d\r\n" % len(SECRET) + SECRET)
        h.recv(b"\r\n3, CLOSED\r\n")
    mine = [e for e in events if "no link" in e["log_format"]]
    assert [e["log_level"] for e in mine] == [LogLevel.warn, LogLevel.debug]
    assert formatEvent(mine[0]) == (f"modem:main: dropped data for socket 3, which has no link: "
                                    f"[{len(SECRET)} bytes {SECRET[:16].hex()}...]")
    assert formatEvent(mine[1]) == "modem:main: event for socket 3 with no link: Closed(socket=3)"
    assert not any(b"horse" in repr(e).encode() for e in events)
