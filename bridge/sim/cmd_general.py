"""General commands: V.25ter basics, identity, SIM, registration, attach, power.

Basic handlers (ATE0, AT&D1 ...) return True/False for OK/ERROR so a chained line gets one final
result, or None when they answered themselves.  Extended handlers write their own results.
"""

from .atparse import ParseError
from .cellular import STAT_ROAMING

MANUFACTURER = "Quectel_Ltd"
MODEL = "Quectel_M95"
REVISION = "Revision: M95FAR02A08"
IMEI = "861234567890125"
RATES = (0, 1200, 2400, 4800, 9600, 14400, 19200, 28800, 38400, 57600, 115200)
CSQ = "+CSQ: 25,0"
ICCID = "89860012345678901234"
IMSI = "001010123456789"
OPERATORS = {False: "CELLBRIDGE HOME", True: "CELLBRIDGE ABROAD"}  #: by roaming


def _flag(cmd, hi=1) -> int:
    return cmd.int_arg(0, 0, hi) if cmd.args else 0


def at(module, cmd):
    return True


def echo(module, cmd):
    module.settings.echo = bool(_flag(cmd))
    return True


def verbose(module, cmd):
    module.settings.verbose = bool(_flag(cmd))
    return True


def identify(module, cmd):
    for line in (MANUFACTURER, MODEL, REVISION):
        module.r.info(line)
    return True


def online(module, cmd):
    """ATO: back to transparent data mode if the link is still up."""
    sock = module.ctx.transparent_link()
    if sock is None or sock.state != "CONNECTED":
        module.r.error()
        return None
    module.r.final("CONNECT")
    module.enter_data_mode(sock)
    module.reports.pump()
    return None


def dtr_mode(module, cmd):
    module.settings.dtr_mode = _flag(cmd, 2)
    return True


def dcd_mode(module, cmd):
    module.settings.dcd_mode = _flag(cmd)
    return True


def save(module, cmd):
    return True


BASIC = {"": at, "E": echo, "V": verbose, "I": identify, "O": online, "&D": dtr_mode,
         "&C": dcd_mode, "&W": save}


# -- helpers for simple extended settings --------------------------------------------------------


def one_line(text):
    """Handler for an execution command answering one information line and OK."""
    def handler(module, cmd):
        if cmd.kind != "exec":
            raise ParseError(cmd.name)
        module.r.info(text)
        module.r.ok()
    return handler


def _settings(module):
    return module.settings


def setting(attr, name, hi, lo=0, *, owner=_settings, test="", read=None, allowed=None):
    """Handler for `AT+X=<v>` / `AT+X?` / `AT+X=?` on one integer setting.

    The value lives in `owner(module).<attr>`.  `test`: the `=?` range, `(lo-hi)` when empty,
    None when the command has no test form.  `read(module, value)`: the read form's info line,
    `+X: <v>` by default.  `allowed(module, value)`: False answers ERROR and keeps the value.
    """
    test_line = f"{name}: {test or f'({lo}-{hi})'}" if test is not None else None

    def handler(module, cmd):
        target = owner(module)
        if cmd.kind == "set" and len(cmd.args) == 1:
            value = cmd.int_arg(0, lo, hi)
            if allowed is not None and not allowed(module, value):
                module.r.error()
                return
            setattr(target, attr, value)
        elif cmd.kind == "read":
            value = getattr(target, attr)
            module.r.info(read(module, value) if read else f"{name}: {value}")
        elif cmd.kind == "test" and test_line is not None:
            module.r.info(test_line)
        else:
            raise ParseError(cmd.name)
        module.r.ok()
    return handler


# -- extended ------------------------------------------------------------------------------------


def ipr(module, cmd):
    if cmd.kind == "set" and len(cmd.args) == 1:
        rate = int(cmd.args[0]) if cmd.args[0].isdigit() else -1
        if rate not in RATES:
            raise ParseError("rate")
        if cmd.save:
            module.persisted_ipr = rate
        module.ipr = rate
    elif cmd.kind == "read":
        module.r.info(f"+IPR: {module.ipr}")
    elif cmd.kind == "test":
        module.r.info("+IPR: (),(" + ",".join(str(r) for r in RATES) + ")")
    else:
        raise ParseError(cmd.name)
    module.r.ok()


def ifc(module, cmd):
    if cmd.kind == "set" and len(cmd.args) == 2:
        module.settings.ifc = (cmd.int_arg(0, 0, 2), cmd.int_arg(1, 0, 2))
    elif cmd.kind == "read":
        module.r.info("+IFC: {},{}".format(*module.settings.ifc))
    else:
        raise ParseError(cmd.name)
    module.r.ok()


def cpin(module, cmd):
    cell = module.cellular
    if cmd.kind == "read":
        module.r.info(f"+CPIN: {cell.sim_state}")
        module.r.ok()
    elif cmd.kind == "set" and cmd.args:
        if cell.pin_ok:
            module.r.error(3)
        elif cell.enter_pin(cmd.args[0]):
            module.r.ok()
            module.sim_ready_urcs()
        else:
            module.r.error(16)
    else:
        raise ParseError(cmd.name)


def registration(name, attr):
    """AT+CREG / AT+CGREG: the read form adds the registration state (and the cell with n=2)."""
    def read(module, n):
        extra = ',"1A2B","3C4D"' if n == 2 and module.cellular.registered else ""
        return f"{name}: {n},{module.cellular.stat}{extra}"
    return setting(attr, name, 2, read=read)


def sim_identifier(prefix, value):
    """AT+QCCID / AT+CCID / AT+CIMI: one line with the SIM's identifier (choice 43), or
    `+CME ERROR: 11` while the SIM wants its PIN."""
    def handler(module, cmd):
        if cmd.kind != "exec":
            raise ParseError(cmd.name)
        if not module.cellular.pin_ok:
            module.r.error(11)
            return
        module.r.info(prefix + value)
        module.r.ok()
    return handler


def cops(module, cmd):
    """AT+COPS? -> `+COPS: 0,0,"<name>"` while registered, `+COPS: 0` otherwise (choice 43)."""
    if cmd.kind != "read":
        raise ParseError(cmd.name)
    cell = module.cellular
    if cell.registered:
        module.r.info(f'+COPS: 0,0,"{OPERATORS[cell.stat == STAT_ROAMING]}"')
    else:
        module.r.info("+COPS: 0")
    module.r.ok()


def cgatt(module, cmd):
    cell = module.cellular
    if cmd.kind == "read":
        module.r.info(f"+CGATT: {int(cell.attached)}")
    elif cmd.kind == "set" and len(cmd.args) == 1:
        if cmd.int_arg(0, 0, 1):
            if not cell.registered:
                module.r.error()
                return
            cell.attach_wanted = True
        else:
            cell.attach_wanted = False
            lose_contexts(module)
    else:
        raise ParseError(cmd.name)
    module.r.ok()


def lose_contexts(module, cid=None) -> None:
    """The network took the PDP contexts away (only context `cid` unless None): `+PDP DEACT`
    once if any was up. The URC names no context (app note §2.2)."""
    contexts = module.contexts if cid is None else [module.contexts[cid]]
    if any([ctx.lost() for ctx in contexts]):
        module.reports.pdp_lost()


def csq(module, cmd):
    if cmd.kind != "exec":
        raise ParseError(cmd.name)
    module.r.info(CSQ if module.cellular.cfun == 1 else "+CSQ: 99,99")
    module.r.ok()


def cfun(module, cmd):
    cell = module.cellular
    if cmd.kind == "read":
        module.r.info(f"+CFUN: {cell.cfun}")
        module.r.ok()
        return
    if cmd.kind != "set" or not cmd.args:
        raise ParseError(cmd.name)
    level = cmd.int_arg(0, 0, 4)
    reset = cmd.int_arg(1, 0, 1) if len(cmd.args) > 1 else 0
    if level not in (0, 1, 4):
        raise ParseError("fun")
    module.r.ok()
    if reset:
        module.reactor.callLater(0, module.power_on)
        return
    was = cell.cfun
    if level != 1:
        lose_contexts(module)
    cell.set_cfun(level)
    if level == 1 and was != 1 and cell.pin_ok:
        module.sim_ready_urcs()


def qpowd(module, cmd):
    if cmd.kind != "set":
        raise ParseError(cmd.name)
    if cmd.int_arg(0, 0, 1):
        module.r.final("NORMAL POWER DOWN")
    else:
        module.r.ok()
    module.power_off()


HANDLERS = {
    "+GMR": one_line(REVISION),
    "+GSN": one_line(IMEI),
    "+CMEE": setting("cmee", "+CMEE", 2),
    "+IPR": ipr,
    "+IFC": ifc,
    "+CPIN": cpin,
    "+CREG": registration("+CREG", "creg_n"),
    "+CGREG": registration("+CGREG", "cgreg_n"),
    "+CGATT": cgatt,
    "+QCCID": sim_identifier("", ICCID),
    "+CCID": sim_identifier("+CCID: ", f'"{ICCID}"'),
    "+CIMI": sim_identifier("", IMSI),
    "+COPS": cops,
    "+CSQ": csq,
    "+CFUN": cfun,
    "+QPOWD": qpowd,
    "+QSCLK": setting("qsclk", "+QSCLK", 2),
}
