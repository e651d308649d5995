"""What ``bridge.service.Components`` asks of this package: the factory behind a tcp profile and
the protocol behind a udp profile."""

from bridge.errors import NotSupported
from bridge.proxy.admission import Admission
from bridge.proxy.datagram import DatagramRelay


def _require_mux(profile, root) -> None:
    modem_config = root.config.modems[profile.modem]
    if modem_config.mode != "mux":
        raise NotSupported(f"[modem:{modem_config.name}] mode = {modem_config.mode} is not "
                           "supported yet (use mode = mux)")


def make_stream_factory(profile, modem_service, root) -> Admission:
    """The factory of one tcp profile's listener, on the modem service's sockets."""
    _require_mux(profile, root)
    if profile.reopen:
        raise NotSupported(f"[profile:{profile.name}] reopen = yes is not supported yet for a "
                           "tcp profile: a dead link resets its local connection")
    return Admission(profile, modem_service)


def make_datagram_protocol(profile, modem_service, root) -> DatagramRelay:
    """The protocol of one udp profile's port, on the modem service's sockets."""
    _require_mux(profile, root)
    return DatagramRelay(profile, modem_service)
