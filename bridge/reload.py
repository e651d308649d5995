"""SIGHUP (``systemctl reload``): read the config again and apply what changed, leaving the rest
alone.

- A config with problems is refused: one error line per problem, as ``cellbridge check`` prints
  them, and the daemon runs on as it was (a typo never takes a working gateway down).
- A profile or server that did not change keeps its listener and its links.
- An added profile starts (a port that cannot be bound is logged; the rest applies); a removed
  one stops accepting and its links end as at a stop (:func:`bridge.shutdown.end_links`).
- A changed tcp profile applies to new links: its listener's factory is retargeted, open links
  keep their remote; a new listen address is bound anew (accepted connections stay). A changed
  udp profile is replaced: its sessions end.
- A changed ``[modem:NAME]`` restarts that modem alone, with its servers; its tcp profiles keep
  their listeners, their links reset with the module. So does a change in which PDP contexts its
  profiles use (bring-up activates them), or in its servers: AT+QICLOSE without an index closes
  every listener of the module at once (app note §3.4), and the sockets kept free for servers'
  clients are set before the modem starts.
- ``log_level`` applies at once; a ``[cellbridge]`` key with a child (``control``, ``metrics``)
  replaces that child (:meth:`~bridge.service.CellbridgeService.rebuild_general_child`); any
  other key applies at the next start, and says so.

systemd hears RELOADING=1 first and READY=1 last, whatever happened in between.
"""

import dataclasses
import signal

from twisted.internet.defer import DeferredLock, inlineCallbacks
from twisted.logger import Logger

from bridge.config import load_config
from bridge.errors import CellbridgeError, ConfigError
from bridge.service import build_listener, build_modem, build_server, contexts_in_use
from bridge.shutdown import admission_of, end_links
from bridge.traffic import set_traffic_logging

log = Logger()
#: ``[cellbridge]`` keys that configure another key's child (the control socket's group).
CHILD_OF_KEY = {"control_group": "control"}


def servers_of(config, modem_name):
    """The ``[server:NAME]`` sections on one modem, by name."""
    return {name: server for name, server in config.servers.items() if server.modem == modem_name}


def modems_to_restart(old, new):
    """The modems in both configs that must start again (see the module docstring)."""
    return {name for name in old.modems.keys() & new.modems.keys()
            if old.modems[name] != new.modems[name]
            or contexts_in_use(old, name) != contexts_in_use(new, name)
            or servers_of(old, name) != servers_of(new, name)}


class Reload:
    """The reloads of one root, one at a time (a second SIGHUP waits for the first)."""

    def __init__(self, root) -> None:
        self.root = root
        self._lock = DeferredLock()
        self._applied = []

    def settled(self):
        """Fires once the reload under way (if any) is done."""
        return self._lock.acquire().addCallback(lambda lock: lock.release())

    @classmethod
    def of(cls, root):
        if getattr(root, "reloads", None) is None:
            root.reloads = cls(root)
        return root.reloads

    def run(self, path):
        """Re-read ``path``, apply it -> Deferred (never fails: what goes wrong is logged)."""
        return self._lock.run(self._run, path)

    @inlineCallbacks
    def _run(self, path):
        root = self.root
        if not root.running:
            return  # stopping: nothing to reload into
        if root.notifier is not None:
            root.notifier.reloading()
        try:
            try:
                new = load_config(path)
            except ConfigError as error:
                problems = str(error).splitlines()
                for problem in problems:
                    log.error("{problem}", problem=problem)
                log.error("reload refused: {n} problem(s) in {path}; running on as before",
                          n=len(problems), path=path)
                return
            self._applied = []
            yield self._apply(root.config, new)
            set_traffic_logging(root, new.general.log_level == "debug")  # the level may change
            log.info("reloaded {path}: {changes}", path=path,
                     changes="; ".join(self._applied) or "nothing changed")
        except Exception:
            log.failure("reload of {path} failed part way", path=path)
        finally:
            root.announce_ready()

    def applied(self, what: str, level=None) -> None:
        """One line per applied change, and a part of the summary."""
        (level or log.info)("reload: {what}", what=what)
        self._applied.append(what)

    def not_listening(self, error) -> None:
        """A child that could not bind: logged at error, and the reload goes on."""
        self.applied(f"{error} (not listening; the rest applies)", level=log.error)

    @inlineCallbacks
    def _apply(self, old, new):
        root = self.root
        restart = modems_to_restart(old, new)
        replaced = restart | (old.modems.keys() - new.modems.keys())  # modem objects that go
        modems = {name: root.getServiceNamed(f"modem:{name}") for name in old.modems}

        def rebuilt(name):  # this profile's listener must be built anew
            profile, before = new.profiles.get(name), old.profiles.get(name)
            if profile is None or before is None:
                return True
            if f"profile:{name}" not in root.namedServices:
                return True  # it could not bind before: try again
            if profile.listen.kind == "udp" or before.listen.kind == "udp":
                return profile != before or profile.modem in replaced
            return False

        rebuild = {name for name in old.profiles.keys() | new.profiles.keys() if rebuilt(name)}

        # 1. What goes: removed profiles (their links end in the background), listeners to be
        # built anew, servers of the modems that go, removed servers, then those modems.
        for name in old.profiles:
            if name in rebuild:
                yield self._stop_profile(name, gone=name not in new.profiles)
        for name, server in old.servers.items():
            if name not in new.servers or server.modem in replaced:
                yield root.stop_child(root.getServiceNamed(f"server:{name}"))
                if name not in new.servers:
                    self.applied(f"[server:{name}] removed")
        counts = {}  # a restarted modem keeps its counts: Prometheus counters only go up
        for name in sorted(replaced):
            modem = modems.pop(name)
            counts[name] = getattr(modem, "counters", None)
            root.remove_health_check(getattr(modem, "healthy", None))  # make_modem_service added it
            yield root.stop_child(modem)
            if name not in new.modems:
                self.applied(f"[modem:{name}] removed")

        # 2. What comes: the new config, modems (their servers built before they start: a server
        # sets what its modem keeps free), profiles, servers. state_dir waits for the next start
        # (_general says so): a restarted modem keeps its PIN record, usage and dumps.
        root.config = dataclasses.replace(new, general=dataclasses.replace(
            new.general, state_dir=old.general.state_dir))
        servers = []
        starting = [name for name in new.modems if name not in modems]
        for name in starting:
            modems[name] = build_modem(root, new.modems[name])
            if counts.get(name) is not None:
                modems[name].counters = counts[name]
            servers += [build_server(root, server, modems[name])
                        for server in servers_of(new, name).values()]
        for name in starting:
            root.start_child(modems[name])
            what = "restarted: its links reset" if name in restart else "added"
            self.applied(f"[modem:{name}] {what}")
        for name, profile in new.profiles.items():
            yield self._profile(name, old.profiles.get(name), profile, modems, name in rebuild,
                                profile.modem in replaced)
        for server in servers:  # a server changes only with its modem (modems_to_restart)
            root.start_child(server)
            if server.name[len("server:"):] not in old.servers:
                self.applied(f"[{server.name}] added")
        yield self._general(old.general, new.general)

    @inlineCallbacks
    def _stop_profile(self, name, gone):
        """Stop accepting; the links of a tcp profile removed (or turned udp) end as at a stop,
        without holding up the reload (a stop meanwhile still ends or aborts them)."""
        listener = self.root.namedServices.get(f"profile:{name}")
        if listener is None:  # it could not bind: nothing listens, nothing to end
            return
        yield self.root.stop_child(listener)
        admission = admission_of(listener)
        what = "removed" if gone else "replaced"
        if admission is None:  # a udp profile: its sessions ended with its port
            if gone:
                self.applied(f"[profile:{name}] removed: port closed, its sessions ended")
            return
        links = len(admission.sockets)
        self.applied(f"[profile:{name}] {what}: listener closed, {links} link(s) ending")
        if links:
            self.retire(f"[profile:{name}] {what}", admission)

    def retire(self, label, admission) -> None:
        """End the links of ``admission``, which has left the tree, in the background."""
        root = self.root
        root.retiring.append(admission)

        def ended(counts):
            root.retiring.remove(admission)
            log.info("{label}: {closed} link(s) closed, {aborted} aborted", label=label,
                     closed=counts[0], aborted=counts[1])
        end_links(root.reactor, [admission]).addCallback(ended)

    @inlineCallbacks
    def _profile(self, name, before, profile, modems, rebuilt, modem_replaced):
        """Start, retarget or rebind one profile of the new config."""
        root, label = self.root, f"profile:{name}"
        modem = modems[profile.modem]
        if not rebuilt and before == profile and not modem_replaced:
            return
        listener, admission = root.namedServices.get(label), None
        if listener is not None:  # a tcp profile that stays
            admission = admission_of(listener)
            if admission is not None:  # new links follow the new profile
                open_links = len(admission.sockets)
                admission.retarget(profile, modem)
                if before.listen == profile.listen:
                    if before != profile:
                        self.applied(f"[{label}] changed: new links follow it, {open_links} "
                                     "open link(s) keep theirs")
                    return
            yield root.stop_child(listener)
        try:
            root.start_child(build_listener(root, profile, modem, admission))
        except CellbridgeError as error:
            self.not_listening(error)
            if listener is not None:  # back where it was, links and all, as the config it runs
                modem = modems.get(before.modem, modem)
                admission.retarget(before, modem)
                root.start_child(build_listener(root, before, modem, admission))
                root.config = dataclasses.replace(root.config,
                                                  profiles={**root.config.profiles, name: before})
                self.applied(f"[{label}] unchanged: still listening on {before.listen.endpoint}",
                             level=log.warn)
            return
        what = "added" if before is None else "changed" if before != profile else "restarted"
        self.applied(f"[{label}] {what}: listening on {profile.listen.endpoint}")

    @inlineCallbacks
    def _general(self, before, general):
        """``[cellbridge]``: the level at once, a child's keys replace its child (once), the rest
        waits for the next start."""
        root = self.root
        rebuilt = set()
        for key in sorted(vars(general)):
            old_value, value = getattr(before, key), getattr(general, key)
            child = CHILD_OF_KEY.get(key, key)
            unbound = (child in root.general_children and getattr(general, child)
                       and child not in root.namedServices)  # it could not bind: try again
            if (old_value == value and not unbound) or child in rebuilt:
                continue
            if key == "log_level" and root.set_log_level is not None:
                root.set_log_level(value)
                self.applied(f"log_level {old_value} -> {value}")
            elif child in root.general_children:
                rebuilt.add(child)
                try:
                    what = yield root.rebuild_general_child(child)
                except CellbridgeError as error:
                    self.not_listening(error)
                else:
                    self.applied(f"{child}: {what}")
            else:
                self.applied(f"[cellbridge] {key} changed: applies at the next start",
                             level=log.warn)


def install_reload_signal(reactor, root, path):
    """``kill -HUP`` (``systemctl reload``) reloads ``path`` in the reactor (a signal handler
    may interrupt it anywhere)."""
    signal.signal(signal.SIGHUP, lambda signum, frame: reactor.callFromThread(root.reload, path))
