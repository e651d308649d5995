"""The ``control`` child of the service tree: the control socket's listener and its access rules.

A unix socket is made mode 0660 whatever the umask (the systemd unit runs with ``UMask=0077``):
``mode=660`` goes into its endpoint string, and Twisted sets it between bind and listen, before
anyone can connect. With ``control_group`` the socket is then given to that group (the daemon
must be a member), so the daemon's user and that group's members can use it, nobody else. A
``mode=`` or ``lockfile=`` written in ``control`` is overridden.

Twisted's lock file (``lockfile=1``) lets a new daemon take over the socket file of one that
was killed. A lock left by a daemon that had our very PID (a container restarted with the daemon
as its PID 1) would look held by a live process; it is cleared first: we are not listening yet.
"""

import os
import stat
from typing import Optional

from twisted.application import strports
from twisted.application.service import MultiService

from bridge.config_values import group_id, unix_socket_path
from bridge.control.protocol import ControlFactory
from bridge.errors import CellbridgeError

#: What the unix control socket's endpoint string always gets.
UNIX_OPTIONS = ":mode=660:lockfile=1"


class ControlService(MultiService):
    """The listener (a ``strports`` service: a failed bind raises at start, naming it), and on a
    unix socket the group and stale-lock handling. Added to a tree that already runs (a new one
    after a reload), it binds when it starts."""

    def __init__(self, root, description: str, group: Optional[str]) -> None:
        super().__init__()
        self.bound = False
        self.path = unix_socket_path(description)
        self.group = group if self.path is not None else None
        if self.path is not None:
            description += UNIX_OPTIONS
        listener = strports.service(description, ControlFactory(root), reactor=root.reactor)
        listener.setServiceParent(self)

    def privilegedStartService(self) -> None:
        if self.path is not None:
            clear_own_lock(self.path)
        super().privilegedStartService()
        self.bound = True
        if self.group is not None:
            give_to_group(self.path, self.group)

    def startService(self) -> None:
        if not self.bound:
            self.privilegedStartService()
        super().startService()

    def stopService(self):
        self.bound = False
        return super().stopService()


def clear_own_lock(path: str) -> None:
    """Remove ``PATH.lock`` if it names this process, and the socket it guarded (see the module
    docstring): a fresh lock would not be taken for a stale one, and the old socket left."""
    lock = f"{path}.lock"
    try:
        if os.readlink(lock) != str(os.getpid()):
            return  # not ours to judge: Twisted's lock decides
        os.remove(lock)
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.remove(path)
    except OSError:
        pass  # no lock, or no socket left


def give_to_group(path: str, group: str) -> None:
    gid = group_id(group)
    if gid is None:
        raise CellbridgeError(f"[cellbridge] control_group: no group {group} on this machine")
    try:
        os.chown(path, -1, gid)
    except OSError as error:
        raise CellbridgeError(f"[cellbridge] control_group: cannot give {path} to group {group}: "
                              f"{error.strerror} (the daemon must be a member: "
                              "SupplementaryGroups=)") from None


def make_control_service(root) -> Optional[ControlService]:
    """The ``control`` child of ``root`` (not yet added); None without a ``control`` endpoint."""
    general = root.config.general
    if not general.control:
        return None
    service = ControlService(root, general.control, general.control_group)
    service.setName("control")
    return service
