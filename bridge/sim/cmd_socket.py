"""Socket commands: QIOPEN, QISEND, QISACK, QICLOSE, QIRD, QISTAT/QISTATE/QISSTAT, QISERVER.

Argument rules per docs/at-dialect.md §12.10: with QIMUX=1 the socket index is required, with
QIMUX=0 it must be omitted; AT+QISRVC chooses client (1) or server-accepted (2) sockets, except
in transparent mode, where AT+QISACK and AT+QICLOSE address the one link (app note §4.2 uses
them on a server's link without AT+QISRVC).
"""

from .atparse import ParseError
from .resolver import is_ip
from .stack import LIVE, SLOTS

MAX_SEND = 1460
MAX_READ = 1500
OPEN_STATES_SINGLE = ("IP INITIAL", "IP STATUS", "IP CLOSE")
OPEN_STATES_MUX = ("IP INITIAL", "IP STATUS", "IP PROCESSING")


def qiopen(module, cmd):
    ctx = module.ctx
    want = 4 if ctx.mux else 3
    if cmd.kind != "set" or len(cmd.args) != want:
        raise ParseError(cmd.name)
    index = cmd.int_arg(0, 0, SLOTS - 1) if ctx.mux else 0
    proto, host = cmd.args[-3].upper(), cmd.args[-2]
    port = cmd.int_arg(want - 1, 1, 65535)
    if proto not in ("TCP", "UDP") or not host or (not is_ip(host) and not module.settings.dnsip):
        module.r.error()
        return
    existing = ctx.socket(False, index)
    live = existing if ctx.mode == 0 else ctx.transparent_link()
    if not ctx.mux and live is not None and live.state in LIVE:
        module.r.final("ALREADY CONNECT")
        return
    allowed = OPEN_STATES_MUX if ctx.mux else OPEN_STATES_SINGLE
    if ctx.reported_state not in allowed or (ctx.state == "IP INITIAL" and not module.cellular.attached):
        module.r.error()
        return
    module.r.ok()
    if ctx.mux and not ctx.index_free(index):
        module.r.final(f"{index}, CONNECT FAIL")
        return
    if existing is not None:
        ctx.close(existing)
    sock = ctx.reserve(index, proto, host, port)
    ctx.bring_up(True).addCallback(_resolve, module, sock, host).addCallback(_connect, module, ctx, sock)


def _resolve(up, module, sock, host):
    if not up or host in module.connect_fail_hosts:
        return None
    return module.resolver.resolve(host).addErrback(lambda _failure: None)


def _connect(ip, module, ctx, sock):
    if sock.state != "CONNECTING":
        return
    if ip is None or ip in module.connect_fail_hosts:
        sock.failed()
    else:
        ctx.connect(sock, ip)


def _client_or_server(module):
    return module.settings.srvc == 2


def qisend(module, cmd):
    ctx = module.ctx
    length = None
    if ctx.mux:
        if cmd.kind != "set" or len(cmd.args) not in (1, 2):
            raise ParseError(cmd.name)
        index = cmd.int_arg(0, 0, SLOTS - 1)
        if len(cmd.args) == 2:
            length = cmd.int_arg(1, 1, MAX_SEND)
    else:
        index = 0
        if cmd.kind == "set" and len(cmd.args) == 1:
            length = cmd.int_arg(0, 1, MAX_SEND)
        elif cmd.kind != "exec":
            raise ParseError(cmd.name)
    sock = ctx.socket(_client_or_server(module), index)
    if sock is None or sock.state != "CONNECTED" or ctx.mode == 1:
        module.r.error()
        return
    module.start_payload(sock, length)


def _indexed_socket(module, cmd):
    """The socket a QISACK/QICLOSE addresses, or raise ParseError for a wrong argument form."""
    ctx = module.ctx
    if ctx.mux:
        if cmd.kind != "set" or len(cmd.args) != 1:
            raise ParseError(cmd.name)
        index = cmd.int_arg(0, 0, SLOTS - 1)
    else:
        if cmd.kind != "exec":
            raise ParseError(cmd.name)
        index = 0
        if ctx.mode == 1:
            return index, ctx.transparent_link()
    return index, ctx.socket(_client_or_server(module), index)


def qisack(module, cmd):
    _, sock = _indexed_socket(module, cmd)
    sent, acked, unacked = (sock.sent, sock.acked, sock.unacked) if sock else (0, 0, 0)
    module.r.info(f"+QISACK: {sent}, {acked}, {unacked}")
    module.r.ok()


def qiclose(module, cmd):
    ctx = module.ctx
    if ctx.mux and cmd.kind == "exec":
        if _client_or_server(module) and ctx.close_listener():
            module.r.final("CLOSE OK")
        else:
            module.r.error()
        return
    index, sock = _indexed_socket(module, cmd)
    prefix = f"{index}, " if ctx.mux else ""
    if sock is not None:
        module.link_closed(sock)
        ctx.close(sock)
        module.r.final(f"{prefix}CLOSE OK")
    elif not ctx.mux and (_client_or_server(module) or ctx.mode == 1) and ctx.close_listener():
        module.r.final("CLOSE OK")
    else:
        module.r.error()


def qird(module, cmd):
    if cmd.kind != "set" or len(cmd.args) != 4:
        raise ParseError(cmd.name)
    cid, sc = cmd.int_arg(0, 0, 1), cmd.int_arg(1, 1, 2)
    sid, limit = cmd.int_arg(2, 0, SLOTS - 1), cmd.int_arg(3, 1, MAX_READ)
    sock = module.contexts[cid].socket(sc == 2, sid)
    if sock is None or (not sock.rx and sock.state == "CLOSED"):
        module.r.error()
        return
    if not sock.rx:
        module.r.ok()
        return
    data = sock.read(limit)
    host, port = sock.remote
    header = f"\r\n+QIRD: {host}:{port},{sock.proto},{len(data)}\r\n".encode()
    module.r.frame(header + data + b"\r\nOK\r\n")


def _slot_line(index, sock) -> str:
    if sock is None:
        return f'+QISTATE: {index},"","",,"INITIAL"'
    host, port = sock.remote
    state = "CLOSED" if sock.state == "CLOSED" else sock.state
    return f'+QISTATE: {index},"{sock.proto}","{host}",{port},"{state}"'


def qistat(module, cmd):
    """OK first, then the STATE line; multi-link adds one line per slot and a final OK."""
    if cmd.kind != "exec":
        raise ParseError(cmd.name)
    ctx = module.ctx
    module.r.ok()
    if not ctx.mux:
        module.r.final(f"STATE: {ctx.reported_state}")
        return
    module.r.info(f"STATE: {ctx.reported_state}")
    for index in range(SLOTS):
        module.r.info(_slot_line(index, ctx.socket(False, index) or ctx.socket(True, index)))
    module.r.ok()


def qisstat(module, cmd):
    if cmd.kind != "exec":
        raise ParseError(cmd.name)
    module.r.ok()
    module.r.final("S: LISTENNING" if module.ctx.listeners else "S: INITIAL")


def qiserver(module, cmd):
    ctx = module.ctx
    if cmd.kind == "exec":
        kind, clients = 0, 1 if not ctx.mux else 5
    elif cmd.kind == "set" and len(cmd.args) == 2:
        kind, clients = cmd.int_arg(0, 0, 1), cmd.int_arg(1, 1, 5)
    else:
        raise ParseError(cmd.name)
    proto = ("TCP", "UDP")[kind]
    if proto in ctx.listeners or ctx.state == "PDP DEACT" or not module.cellular.attached:
        module.r.error()
        return
    module.r.ok()

    def listen(up):
        if up and ctx.listen(proto, clients):
            module.r.final("SERVER OK")
        else:
            module.r.error()

    ctx.bring_up(True).addCallback(listen)


HANDLERS = {
    "+QIOPEN": qiopen,
    "+QISEND": qisend,
    "+QISACK": qisack,
    "+QICLOSE": qiclose,
    "+QIRD": qird,
    "+QISTAT": qistat,
    "+QISTATE": qistat,
    "+QISSTAT": qisstat,
    "+QISERVER": qiserver,
}
