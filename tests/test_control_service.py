"""The control socket's access rules: mode 0660 whatever the umask, its group, a stale socket
and lock left by a killed daemon; and what ``check`` says about the ``control`` keys."""

import grp
import os
import socket
import stat
import subprocess
import textwrap
from types import SimpleNamespace

import pytest
import pytest_twisted
from twisted.application.service import MultiService
from twisted.internet import reactor

from bridge.config import config_warnings, control_warnings, load_config
from bridge.control.service import make_control_service
from bridge.errors import CellbridgeError, ConfigError


def root_with(control, group=None):
    general = SimpleNamespace(control=control, control_group=group)
    return RootStub(reactor, SimpleNamespace(general=general))


class RootStub(list):
    """What the control service asks of the root: reactor and config, and room for a child."""

    def __init__(self, clock, config):
        super().__init__()
        self.reactor, self.config = clock, config

    def addService(self, service):
        self.append(service)


@pytest.fixture
def started():
    services = []

    def start(root):
        service = make_control_service(root)
        services.append(service)
        service.privilegedStartService()
        return service

    yield start
    for service in services:
        service.stopService()


def test_no_control_endpoint_adds_no_child():
    root = root_with(None)
    assert make_control_service(root) is None and list(root) == []


def test_the_socket_is_0660_whatever_the_umask_and_a_mode_written_is_overridden(tmp_path,
                                                                                  started):
    umask = os.umask(0o077)
    try:
        service = started(root_with(f"unix:{tmp_path}/control.sock:mode=666"))
    finally:
        os.umask(umask)
    assert service.name == "control"
    assert stat.S_IMODE(os.stat(tmp_path / "control.sock").st_mode) == 0o660


def test_control_group_is_given_the_socket(tmp_path, started):
    other = next(g for g in grp.getgrall() if g.gr_gid != os.getegid())
    if os.geteuid() != 0 and other.gr_name not in grp.getgrgid(os.getegid()).gr_mem:
        pytest.skip("needs a second group this user may give files to")
    started(root_with(f"unix:{tmp_path}/control.sock", group=other.gr_name))
    assert os.stat(tmp_path / "control.sock").st_gid == other.gr_gid


def test_an_unknown_control_group_stops_start_up_with_one_line(tmp_path, started):
    with pytest.raises(CellbridgeError) as raised:
        started(root_with(f"unix:{tmp_path}/control.sock", group="no-such-group-here"))
    assert str(raised.value) == ("[cellbridge] control_group: no group no-such-group-here on this "
                                 "machine")


def stale_socket(path):
    """A socket file left behind: bound, never unlinked, nobody listening."""
    left = socket.socket(socket.AF_UNIX)
    left.bind(str(path))
    left.close()


def test_a_socket_and_lock_left_by_a_killed_daemon_do_not_stop_start_up(tmp_path, started):
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale_socket(tmp_path / "control.sock")
    os.symlink(str(dead.pid), tmp_path / "control.sock.lock")
    started(root_with(f"unix:{tmp_path}/control.sock"))
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(str(tmp_path / "control.sock"))  # listening again


def test_a_lock_naming_our_own_pid_is_stale(tmp_path, started):
    """A container restarted with the daemon as its PID 1 again: the lock looks alive."""
    stale_socket(tmp_path / "control.sock")
    os.symlink(str(os.getpid()), tmp_path / "control.sock.lock")
    started(root_with(f"unix:{tmp_path}/control.sock"))
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(str(tmp_path / "control.sock"))


def load(tmp_path, general):
    path = tmp_path / "c.ini"
    path.write_text(textwrap.dedent(general) + "[modem:main]\nport = /dev/ttyUSB0\n")
    return load_config(str(path))


def test_check_warns_that_a_tcp_control_endpoint_is_open_to_every_local_user(tmp_path):
    config = load(tmp_path, "[cellbridge]\ncontrol = tcp:7070:interface=127.0.0.1\n"
                            "control_group = cellbridge\n")
    assert control_warnings(config) == [
        f"{config.path}: [cellbridge] control: warning: every local user can connect to a tcp "
        "endpoint and read the status and the AT trace (no file permissions apply); prefer "
        "unix:/run/cellbridge/control.sock",
        f"{config.path}: [cellbridge] control_group: warning: ignored because control is not a "
        "unix socket"]
    assert set(control_warnings(config)) <= set(config_warnings(config))  # check shows them


def test_check_warns_of_a_control_group_this_machine_lacks(tmp_path):
    config = load(tmp_path, "[cellbridge]\ncontrol = unix:/run/c.sock\n"
                            "control_group = no-such-group-here\n")
    assert control_warnings(config) == [
        f"{config.path}: [cellbridge] control_group: warning: no group no-such-group-here on this "
        "machine (the daemon will not start)"]
    assert control_warnings(load(tmp_path, "[cellbridge]\ncontrol = unix:/run/c.sock\n"
                                           "control_group = 0\n")) == []


def test_a_control_group_that_is_not_a_group_name_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, "[cellbridge]\ncontrol_group = ops;rm\n")
    assert raised.value.problems == [
        f"{tmp_path / 'c.ini'}: [cellbridge] control_group: not a group name or number "
        "(got 'ops;rm')"]


@pytest_twisted.ensureDeferred
async def test_added_to_a_running_tree_it_binds_with_its_rules_and_stopping_frees_the_path(
        tmp_path):
    """How a reload brings a changed ``control``: a new child in the running tree."""
    root = MultiService()
    root.config = SimpleNamespace(general=SimpleNamespace(
        control=f"unix:{tmp_path}/control.sock", control_group=None))
    root.reactor = reactor
    root.startService()
    umask = os.umask(0o077)
    try:
        service = make_control_service(root)
        service.setServiceParent(root)
    finally:
        os.umask(umask)
    assert service.running and service.bound
    assert stat.S_IMODE(os.stat(tmp_path / "control.sock").st_mode) == 0o660
    await service.disownServiceParent()
    assert not os.path.exists(tmp_path / "control.sock")  # the next one binds it afresh
    again = make_control_service(root)
    again.setServiceParent(root)
    assert again.bound
    await root.stopService()
