"""Name lookup for AT+QIDNSIP=1 and AT+QIDNSGIP: the --hosts file first, then the system."""

import ipaddress

from twisted.internet import defer, task


def is_ip(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
        return True
    except ValueError:
        return False


def read_hosts(path) -> dict:
    """Parse "IP name [name...]" lines; '#' starts a comment."""
    table = {}
    if not path:
        return table
    with open(path, encoding="utf-8") as f:
        for line in f:
            fields = line.split("#", 1)[0].split()
            if len(fields) >= 2 and is_ip(fields[0]):
                for name in fields[1:]:
                    table[name.lower()] = fields[0]
    return table


class Resolver:
    """Resolves host names to IPv4 text; a Deferred failing with KeyError/DNS errors when unknown.

    @param reactor: provides resolve() (IReactorCore) and callLater.
    @param hosts: name -> IP mapping.
    @param delay: extra lookup time, seconds.
    """

    def __init__(self, reactor, hosts: dict, delay: float):
        self._reactor = reactor
        self._hosts = hosts
        self._delay = delay

    def resolve(self, name: str):
        if is_ip(name):
            return defer.succeed(name)
        known = self._hosts.get(name.lower())
        if known is not None:
            result = defer.succeed(known)
        else:
            result = defer.maybeDeferred(self._reactor.resolve, name)
        return result.addCallback(self._after_delay)

    def _after_delay(self, ip):
        if self._delay <= 0:
            return ip
        return task.deferLater(self._reactor, self._delay, lambda: ip)
