"""bridge.systemd: notify datagrams on a real AF_UNIX socket, watchdog timing on task.Clock."""

import os
import socket
import uuid

import pytest
from twisted.internet.task import Clock
from twisted.logger import capturedLogs

from bridge.systemd import SystemdNotifier, sd_notify, watchdog_interval


@pytest.fixture
def notify_socket(tmp_path):
    """A bound datagram socket standing in for systemd; yields (socket, NOTIFY_SOCKET value)."""
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.setblocking(False)
        yield sock, path


def received(sock):
    """Every datagram queued so far (sending is synchronous, so nothing is in flight)."""
    messages = []
    while True:
        try:
            messages.append(sock.recv(4096).decode())
        except BlockingIOError:
            return messages


def test_sd_notify_sends_one_datagram(notify_socket):
    sock, path = notify_socket
    assert sd_notify("READY=1\nSTATUS=up", {"NOTIFY_SOCKET": path}) is True
    assert received(sock) == ["READY=1\nSTATUS=up"]


def test_sd_notify_abstract_namespace():
    name = f"cellbridge-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.setblocking(False)
        assert sd_notify("WATCHDOG=1", {"NOTIFY_SOCKET": "@" + name}) is True
        assert received(sock) == ["WATCHDOG=1"]


def test_sd_notify_outside_systemd_is_a_no_op():
    assert sd_notify("READY=1", {}) is False


def test_sd_notify_logs_instead_of_raising_when_systemd_is_gone(tmp_path):
    with capturedLogs() as events:
        assert sd_notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "absent")}) is False
    assert [e["log_format"] for e in events] == ["cannot notify systemd at {address!r}: {error}"]


@pytest.mark.parametrize("environ, expected", [
    ({"WATCHDOG_USEC": "30000000"}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
    ({}, None),
])
def test_watchdog_interval_is_half_of_watchdog_usec_and_ours_only(environ, expected):
    assert watchdog_interval(environ, pid=4242) == expected


def test_watchdog_pings_at_half_interval_only_while_healthy(notify_socket):
    sock, path = notify_socket
    clock, health = Clock(), {"ok": True}
    environ = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid())}
    notifier = SystemdNotifier(clock, lambda: health["ok"], environ)
    notifier.startService()
    assert received(sock) == ["WATCHDOG=1"]
    clock.advance(4.9)
    assert received(sock) == []
    clock.advance(0.1)
    assert received(sock) == ["WATCHDOG=1"]

    health["ok"] = False
    with capturedLogs() as events:
        clock.advance(5)
        clock.advance(5)
    assert received(sock) == []
    assert [e["log_format"] for e in events] == ["unhealthy: withholding systemd watchdog pings"]

    health["ok"] = True
    clock.advance(5)
    assert received(sock) == ["WATCHDOG=1"]

    notifier.stopService()
    assert received(sock) == ["STOPPING=1"]
    clock.advance(50)
    assert received(sock) == []
    assert clock.getDelayedCalls() == []


def test_a_crashing_health_check_withholds_the_ping(notify_socket):
    sock, path = notify_socket
    clock = Clock()
    notifier = SystemdNotifier(clock, lambda: 1 / 0, {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2"})
    with capturedLogs() as events:
        notifier.startService()
    assert received(sock) == []
    assert any(e.get("log_failure") is not None for e in events)
    notifier.stopService()


def test_no_watchdog_loop_without_watchdog_usec(notify_socket):
    sock, path = notify_socket
    clock = Clock()
    notifier = SystemdNotifier(clock, lambda: True, {"NOTIFY_SOCKET": path})
    notifier.startService()
    notifier.ready("listening: 1 listener(s)")
    notifier.status("registered, PDP up, 2 links")
    assert clock.getDelayedCalls() == []
    assert received(sock) == ["READY=1\nSTATUS=listening: 1 listener(s)",
                              "STATUS=registered, PDP up, 2 links"]
