"""What ``bridge.service.Components`` asks of this package: the factory behind a tcp profile.

UDP profiles and ``[server:NAME]`` sections are not provided yet, so the service tree refuses them
at start (``NotSupported``, exit 1) instead of running without them.

``reopen = yes`` is refused on a tcp profile for the same reason. Issue 5 scopes it to "UDP
sessions, persistent links": a link whose module socket can be re-established under the same
local flow. A tcp profile has no such link. Its module socket exists for one local connection,
and when the link dies that connection is reset because bytes were lost: a byte stream with a
hole cannot be resumed on a new remote connection. The next local connection already gets a fresh
module socket. Reopening with nobody attached would carry nothing, and quietly splicing a new
remote connection under the old local one would corrupt the app's stream. So the only honest
meaning of ``reopen`` belongs to the UDP profiles that do not exist yet.
"""

from weakref import WeakKeyDictionary

from bridge.errors import NotSupported
from bridge.keepalive import KeepaliveTimings
from bridge.proxy.dispatch import Dispatcher
from bridge.proxy.stream import StreamFactory

_dispatchers = WeakKeyDictionary()  # modem -> its Dispatcher: profiles share the module's sockets


def dispatcher_for(modem, clock, modem_config) -> Dispatcher:
    if modem not in _dispatchers:
        _dispatchers[modem] = Dispatcher(clock, modem, modem_config.send_window,
                                         KeepaliveTimings.from_config(modem_config))
    return _dispatchers[modem]


def make_stream_factory(profile, modem_service, root) -> StreamFactory:
    """The factory of one tcp profile's listener, on the modem service's shared dispatcher."""
    modem_config = root.config.modems[profile.modem]
    if modem_config.mode != "mux":
        raise NotSupported(f"[modem:{modem_config.name}] mode = {modem_config.mode} is not "
                           "supported yet (use mode = mux)")
    if profile.reopen:
        raise NotSupported(f"[profile:{profile.name}] reopen = yes is not supported for a tcp "
                           "profile: a reset TCP stream cannot be resumed, and each new local "
                           "connection gets a fresh module socket anyway (reopen is meant for "
                           "UDP sessions, which are not supported yet)")
    dispatcher = dispatcher_for(modem_service, root.reactor, modem_config)
    return StreamFactory(dispatcher, profile)
