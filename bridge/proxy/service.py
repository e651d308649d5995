"""What ``bridge.service.Components`` asks of this package: the factory behind a tcp profile,
the protocol behind a udp profile and the service behind a module-side server."""

from bridge.errors import NotSupported
from bridge.proxy.admission import Admission
from bridge.proxy.datagram import DatagramRelay
from bridge.proxy.reverse import ModuleServer

def _require_mux(section, root) -> None:
    modem_config = root.config.modems[section.modem]
    if modem_config.mode != "mux":
        raise NotSupported(f"[modem:{modem_config.name}] mode = {modem_config.mode} is not "
                           "supported yet (use mode = mux)")


def make_stream_factory(profile, modem_service, root) -> Admission:
    """The factory of one tcp profile's listener, on the modem service's sockets (on a
    transparent modem, its one session)."""
    return Admission(profile, modem_service)


def make_datagram_protocol(profile, modem_service, root) -> DatagramRelay:
    """The protocol of one udp profile's port, on the modem service's sockets."""
    _require_mux(profile, root)
    return DatagramRelay(profile, modem_service)


def make_server_service(server, modem_service, root) -> ModuleServer:
    """The service of one ``[server:NAME]``. Its modem addresses socket commands to a side
    (AT+QISRVC) and keeps its servers' ``max_clients`` free (app note §3.4), from before it
    starts."""
    _require_mux(server, root)
    modem_service.serves = True
    modem_service.sockets.reserve_for_servers(sum(
        other.max_clients for other in root.config.servers.values()
        if other.modem == server.modem))
    return ModuleServer(server, modem_service, root.reactor, server.context)
