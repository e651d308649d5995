"""What ``bridge.service.Components`` asks of this package: the factory behind a tcp profile.

UDP profiles and ``[server:NAME]`` sections are not provided yet, so the service tree refuses them
at start (``NotSupported``, exit 1) instead of running without them.
"""

from weakref import WeakKeyDictionary

from bridge.errors import NotSupported
from bridge.proxy.dispatch import Dispatcher
from bridge.proxy.stream import StreamFactory

_dispatchers = WeakKeyDictionary()  # modem -> its Dispatcher: profiles share the module's sockets


def dispatcher_for(modem, clock, window: int) -> Dispatcher:
    if modem not in _dispatchers:
        _dispatchers[modem] = Dispatcher(clock, modem, window)
    return _dispatchers[modem]


def make_stream_factory(profile, modem_service, root) -> StreamFactory:
    """The factory of one tcp profile's listener, on the modem service's shared dispatcher."""
    modem_config = root.config.modems[profile.modem]
    if modem_config.mode != "mux":
        raise NotSupported(f"[modem:{modem_config.name}] mode = {modem_config.mode} is not "
                           "supported yet (use mode = mux)")
    dispatcher = dispatcher_for(modem_service, root.reactor, modem_config.send_window)
    return StreamFactory(dispatcher, profile)
