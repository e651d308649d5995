"""The status snapshot: everything ``cellbridge status`` shows, read from the running service
tree when it is asked (nothing is kept for it), as one JSON-ready dict. Its fields are a contract
(README, "Status and trace"): add fields, never rename or drop one without raising
:data:`VERSION`.

The tree's children are found by name, as :mod:`bridge.service` builds them: ``modem:NAME`` (the
:class:`~bridge.modem.modem.Modem`), ``profile:NAME`` (a tcp listener's ``factory`` is the
profile's :class:`~bridge.proxy.admission.Admission`; a udp ``UDPServer``'s protocol is its
:class:`~bridge.proxy.datagram.DatagramRelay`) and ``server:NAME`` (the
:class:`~bridge.proxy.reverse.ModuleServer`).
"""

from bridge.at.ring import iso_timestamp
from bridge.proxy.accounting import address_text
from bridge.proxy.service import behind

VERSION = 1
#: ``modem.info`` keys shown as they are (None until bring-up, or a module that does not say)
INFO_KEYS = ("model", "firmware", "imei", "iccid", "imsi", "operator", "registration",
             "signal_dbm", "csq")


def status_snapshot(root) -> dict:
    """The whole snapshot of the tree under ``root`` (the
    :class:`~bridge.service.CellbridgeService`)."""
    now = root.reactor.seconds()
    return {"version": VERSION, "time": timestamp(now),
            "modems": [modem_status(modem, now) for _, modem in children(root, "modem")],
            "profiles": [profile_status(profile, root.namedServices.get(f"profile:{name}"), now)
                         for name, profile in root.config.profiles.items()],
            "servers": [server_status(server) for _, server in children(root, "server")]}


def children(root, kind: str) -> list:
    """``(NAME, child)`` for each child named ``KIND:NAME``, in the tree's order."""
    prefix = f"{kind}:"
    return [(child.name[len(prefix):], child) for child in root
            if (child.name or "").startswith(prefix)]


def timestamp(seconds):
    """ISO local time with offset, like the log and the AT trace (None stays None)."""
    return None if seconds is None else iso_timestamp(seconds).decode()


def host_text(transport):
    """Our end of ``transport``; None once it is closed (a closed UDP port has no address)."""
    try:
        return address_text(transport.getHost())
    except (AttributeError, OSError):
        return None


def rounded(seconds):
    return None if seconds is None else round(seconds, 1)


def modem_status(modem, now: float) -> dict:
    record = modem.supervisor.last_recovery
    last = None if record is None else {
        "cause": record.cause, "started": timestamp(record.started),
        "recovered": timestamp(record.recovered),
        "seconds": None if record.recovered is None else rounded(record.recovered - record.started)}
    return {"name": modem.config.name, "port": modem.config.port,
            "state": modem.state, "state_reason": modem.state_reason,
            "state_since": timestamp(modem.state_since),
            "state_seconds": rounded(now - modem.state_since),
            "recovering": recovering(modem.supervisor),
            **{key: modem.info.get(key) for key in INFO_KEYS},
            "local_ips": local_ips(modem),
            "last_recovery": last,
            "data_sent": modem.usage.sent, "data_received": modem.usage.received,
            "counters": [{"name": name, "labels": dict(labels), "value": value}
                         for (name, labels), value in sorted(modem.counters.snapshot().items())]}


def local_ips(modem) -> dict:
    """The local IP of each context that carries data now. The modem keeps the last ones while
    data is down (a resync that finds the contexts still up carries on with them), but a
    context that is down has no address to show."""
    return {str(context): ip for context, ip in sorted(modem.local_ips.items())
            if modem.context_ready(context)}


def recovering(supervisor):
    """The procedure running, ``backoff`` while the next attempt waits, else None."""
    return supervisor.job or ("backoff" if supervisor.recovering else None)


def profile_status(profile, listener, now: float) -> dict:
    """One profile; ``listener`` None: its port could not be bound (a reload retries it)."""
    if listener is None:
        links, waiting = [], 0
    elif profile.listen.kind == "udp":
        relay = behind(listener)
        links, waiting = [session_link(session) for session in relay.sessions.values()], \
            relay.waiting()
    else:
        admission = behind(listener)
        links = [stream_link(socket, admission.local_of(socket)) for socket in admission.sockets]
        waiting = admission.modem.sockets.waiting(profile.name)
    return {"name": profile.name, "modem": profile.modem, "protocol": profile.listen.kind,
            "listen": profile.listen.endpoint,
            "listening": listener is not None and bool(listener.running),
            "remote": f"{profile.remote.host}:{profile.remote.port}",
            "links": links, "waiting": waiting}


def server_status(service) -> dict:
    server = service.server
    return {"name": server.name, "modem": server.modem, "protocol": server.protocol,
            "port": server.port, "forward": server.forward, "listening": service.listening,
            "links": [forwarded_link(forwarding)
                      for _, forwarding in sorted(service.clients.items())]}


def link(slot, local, remote, state, sent, received, unacked=None, age=None, idle=None) -> dict:
    """One link, with the fields every kind has (None where a kind has no such figure)."""
    return {"slot": slot, "local": local, "remote": remote, "state": state, "sent": sent,
            "received": received, "unacked": unacked, "age": rounded(age), "idle": rounded(idle)}


def stream_link(socket, local_side) -> dict:
    """A tcp profile's link: its module socket (or TLS over it, or a link that reopens)."""
    local = None
    if local_side is not None and local_side.transport is not None:
        local = address_text(local_side.transport.getPeer())
    return socket_link(socket.stats(), local, address_text(socket.getPeer()))


def socket_link(stats: dict, local, remote) -> dict:
    """A link from a stream socket's ``stats()``."""
    return link(stats["slot"], local, remote, stats["state"], stats["sent"], stats["received"],
                stats.get("unacked"), stats.get("age"), stats.get("idle"))


def session_link(session) -> dict:
    """A udp profile's session: one local source and its module socket."""
    counts, _ = session.tally()
    socket = session.socket
    host, port = session.source
    state = "waiting" if socket is None else ("open" if socket.open else "closed")
    return link(None if socket is None else socket.slot, f"{host}:{port}",
                f"{session.profile.remote.host}:{session.profile.remote.port}", state,
                counts["bytes_up"], counts["bytes_down"])


def forwarded_link(forwarding) -> dict:
    """A module-side server's client; ``local`` is our end of its connection to the local
    service."""
    transport = getattr(forwarding.local, "transport", forwarding.local)  # udp: the port itself
    local = None if transport is None else host_text(transport)
    stats = forwarding.socket.stats()
    if "open" not in stats:  # a stream socket
        return socket_link(stats, local, forwarding.ip)
    return link(stats["slot"], local, forwarding.ip, "open" if stats["open"] else "closed",
                stats.get("bytes_up", 0), stats.get("bytes_down", 0))
