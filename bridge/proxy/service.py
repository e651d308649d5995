"""What ``bridge.service.Components`` asks of this package: the factory behind a tcp profile,
the protocol behind a udp profile and the service behind a module-side server."""

from twisted.application import internet

from bridge.proxy.admission import Admission
from bridge.proxy.datagram import DatagramRelay
from bridge.proxy.reverse import ModuleServer

def make_stream_factory(profile, modem_service, root) -> Admission:
    """The factory of one tcp profile's listener, on the modem service's sockets (on a
    transparent modem, its one session)."""
    return Admission(profile, modem_service)


def make_datagram_protocol(profile, modem_service, root) -> DatagramRelay:
    """The protocol of one udp profile's port, on the modem service's sockets."""
    return DatagramRelay(profile, modem_service)


def make_server_service(server, modem_service, root) -> ModuleServer:
    """The service of one ``[server:NAME]``. A mux modem addresses socket commands to a side
    (AT+QISRVC) and keeps its servers' ``max_clients`` free (app note §3.4), from before it
    starts; on a transparent modem the server's client is the one session (app note §4.2)."""
    modem_service.serves = True
    if modem_service.mux:  # a transparent modem's one session is the server's client
        modem_service.sockets.reserve_for_servers(sum(
            other.max_clients for other in root.config.servers.values()
            if other.modem == server.modem))
    return ModuleServer(server, modem_service, root.reactor, server.context)


def behind(listener):
    """What a profile's listener serves: the Admission (tcp) or the DatagramRelay (udp) the
    functions above made (status, metrics and the stop look there)."""
    if isinstance(listener, internet.UDPServer):
        return listener.args[1]  # UDPServer(port, protocol)
    return getattr(listener, "factory", None)
