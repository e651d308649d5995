"""Bearer and TCP/IP configuration: QIFGCNT ... QIDEACT, mode switches, DNS, local ports."""

from twisted.internet import task

from .atparse import ParseError
from .cmd_general import setting
from .resolver import is_ip


def qicsgp(module, cmd):
    ctx = module.ctx
    if cmd.kind != "set" or not 1 <= len(cmd.args) <= 4 or len(cmd.args) == 3:
        raise ParseError(cmd.name)
    ctx.bearer = cmd.int_arg(0, 0, 1)
    if len(cmd.args) > 1:
        ctx.apn = cmd.args[1]
        ctx.user, ctx.password = cmd.args[2:4] if len(cmd.args) == 4 else ("", "")
    module.r.ok()


def qiregapp(module, cmd):
    ctx = module.ctx
    if cmd.kind == "set" and len(cmd.args) == 3:
        ctx.apn, ctx.user, ctx.password = cmd.args
    elif cmd.kind != "exec":
        raise ParseError(cmd.name)
    _ok_or_error(ctx.register_app(), module)


def qiact(module, cmd):
    if cmd.kind != "exec":
        raise ParseError(cmd.name)
    return module.ctx.activate(module.cellular.attached).addCallback(_ok_or_error, module)


def _ok_or_error(ok, module):
    if ok:
        module.r.ok()
    else:
        module.r.error()


def qilocip(module, cmd):
    if cmd.kind != "exec":
        raise ParseError(cmd.name)
    ctx = module.ctx
    if ctx.show_ip():
        module.r.final(ctx.local_ip)
    else:
        module.r.error()


def qideact(module, cmd):
    if cmd.kind != "exec":
        raise ParseError(cmd.name)
    module.end_link()
    module.ctx.deactivate()
    return task.deferLater(module.reactor, module.options.deact_delay, module.r.final, "DEACT OK")


def stack_mode(attr, name):
    """QIMUX / QIMODE: only in IP INITIAL; transparent mode excludes multi-link."""
    other = "mode" if attr == "mux" else "mux"

    def allowed(module, value):
        ctx = module.ctx
        return ctx.state == "IP INITIAL" and not (value and getattr(ctx, other))
    return setting(attr, name, 1, owner=lambda module: module.ctx, test="(0,1)", allowed=allowed)


def qitcfg(module, cmd):
    if cmd.kind == "set" and len(cmd.args) == 4:
        module.settings.tcfg = (cmd.int_arg(0, 3, 8), cmd.int_arg(1, 1, 10), cmd.int_arg(2, 1, 1460),
                                cmd.int_arg(3, 0, 1))
    elif cmd.kind == "read":
        module.r.info("+QITCFG: {},{},{},{}".format(*module.settings.tcfg))
    else:
        raise ParseError(cmd.name)
    module.r.ok()


def qiautos(module, cmd):
    if cmd.kind == "set" and cmd.args:
        mode = cmd.int_arg(0, 0, 1)
        seconds = cmd.int_arg(1, 1, 100) if len(cmd.args) > 1 else 0
        module.settings.autos = (mode, seconds)
    elif cmd.kind == "read":
        module.r.info("+QIAUTOS: {},{}".format(*module.settings.autos))
    else:
        raise ParseError(cmd.name)
    module.r.ok()


def qidnscfg(module, cmd):
    """Primary [, secondary] DNS server, dotted IPv4 only: anything else is a bad argument."""
    if cmd.kind == "set" and 1 <= len(cmd.args) <= 2 and all(map(is_ip, cmd.args)):
        module.settings.dns = [cmd.args[0], cmd.args[1] if len(cmd.args) > 1 else module.settings.dns[1]]
    elif cmd.kind == "read":
        module.r.info(f"PrimaryDns:{module.settings.dns[0]}")
        module.r.info(f"SecondaryDns:{module.settings.dns[1]}")
    else:
        raise ParseError(cmd.name)
    module.r.ok()


def qidnsgip(module, cmd):
    """OK at once, then the address (or ERROR) as a line of its own."""
    if cmd.kind != "set" or len(cmd.args) != 1 or not cmd.args[0]:
        raise ParseError(cmd.name)
    ctx = module.ctx
    if ctx.state == "PDP DEACT" or not module.cellular.attached:
        module.r.error()
        return
    module.r.ok()
    outcome = ctx.bring_up(True).addCallback(
        lambda up: module.resolver.resolve(cmd.args[0]) if up else None)
    outcome.addCallbacks(lambda ip: module.r.final(ip) if ip else module.r.error(),
                         lambda _failure: module.r.error())


def qilport(module, cmd):
    ports = module.ctx.lports
    if cmd.kind == "set" and len(cmd.args) == 2 and cmd.args[0].upper() in ports:
        ports[cmd.args[0].upper()] = cmd.int_arg(1, 0, 65535)
    elif cmd.kind == "read":
        module.r.info(f"TCP: {ports['TCP']}")
        module.r.info(f"UDP: {ports['UDP']}")
    else:
        raise ParseError(cmd.name)
    module.r.ok()


HANDLERS = {
    "+QIFGCNT": setting("fgcnt", "+QIFGCNT", 1, test=None),
    "+QICSGP": qicsgp,
    "+QIREGAPP": qiregapp,
    "+QIACT": qiact,
    "+QILOCIP": qilocip,
    "+QIDEACT": qideact,
    "+QIMUX": stack_mode("mux", "+QIMUX"),
    "+QIMODE": stack_mode("mode", "+QIMODE"),
    "+QITCFG": qitcfg,
    "+QIPROMPT": setting("prompt", "+QIPROMPT", 3),
    "+QISDE": setting("sde", "+QISDE", 1),
    "+QIHEAD": setting("head", "+QIHEAD", 1),
    "+QISHOWRA": setting("showra", "+QISHOWRA", 1),
    "+QISHOWPT": setting("showpt", "+QISHOWPT", 1),
    "+QISHOWLA": setting("showla", "+QISHOWLA", 1),
    "+QINDI": setting("indi", "+QINDI", 2),
    "+QISRVC": setting("srvc", "+QISRVC", 2, lo=1),
    "+QIURC": setting("urc", "+QIURC", 1),
    "+QIAUTOS": qiautos,
    "+QIDNSIP": setting("dnsip", "+QIDNSIP", 1),
    "+QIDNSCFG": qidnscfg,
    "+QIDNSGIP": qidnsgip,
    "+QILPORT": qilport,
}
