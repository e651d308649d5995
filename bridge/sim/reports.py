"""Socket and network events turned into URCs, and pushed receive data paced by the UART.

Pull mode (QINDI=1/2) announces `+QIRDI` when data lands in an empty buffer and leaves the bytes
for AT+QIRD.  Push mode (QINDI=0) writes each chunk (<= 1460 bytes) as one framed unit; while
the UART backlog is high the reporter is paused (it is the UART's registered producer), data
stays in the socket buffer and the socket stops reading its host connection.
"""

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

PUSH_CHUNK = 1460


@implementer(IPushProducer)
class SocketReporter:
    """Event receiver for every SimSocket of the module it reports for."""

    def __init__(self, module):
        self._module = module
        self._paused = False
        self._turn = 0

    # -- UART backpressure ---------------------------------------------------------------------

    def pauseProducing(self):
        self._paused = True

    def resumeProducing(self):
        self._paused = False
        self.pump()

    def stopProducing(self):
        self._paused = True

    # -- socket events -------------------------------------------------------------------------

    def _prefix(self, sock) -> str:
        return f"{sock.index}, " if self._module.contexts[sock.cid].mux else ""

    def connected(self, sock) -> None:
        module = self._module
        ctx = module.contexts[sock.cid]
        if sock.server:
            module.r.urc(f"{self._prefix(sock)}REMOTE IP: {sock.remote[0]}")
        if ctx.mode == 1:  # the only link there is (a listener takes no client while one lives)
            module.r.final("CONNECT")
            module.enter_data_mode(sock)
            self.pump()
        elif not sock.server:
            module.r.final(f"{self._prefix(sock)}CONNECT OK")
        module.check_carrier()

    def connect_failed(self, sock) -> None:
        sock.close_reported = True
        self._module.r.final(f"{self._prefix(sock)}CONNECT FAIL")

    def peer_closed(self, sock) -> None:
        if not self._pushes(sock) or not sock.rx:
            self._report_closed(sock)
        else:
            self.pump()
        self._module.check_carrier()

    def _report_closed(self, sock) -> None:
        if sock.close_reported:
            return
        sock.close_reported = True
        module = self._module
        module.link_closed(sock)
        module.r.urc(f"{self._prefix(sock)}CLOSED")

    def data_arrived(self, sock, was_empty: bool) -> None:
        module = self._module
        if sock.state == "CONNECTING":
            return  # not announced yet: its report of being connected announces the data too
        if self._pushes(sock):
            self.pump()
            return
        if module.contexts[sock.cid].mode == 1 or not was_empty:
            return
        sc = 2 if sock.server else 1
        if module.settings.indi == 2:
            first = len(sock.rx[0]) if sock.rx else 0
            module.r.urc(f"+QIRDI: {sock.cid},{sc},{sock.index},{len(sock.rx)},{first},{sock.rx_buffered}")
        else:
            module.r.urc(f"+QIRDI: {sock.cid},{sc},{sock.index}")

    def pdp_lost(self) -> None:
        module = self._module
        module.end_link()
        module.r.urc("+PDP DEACT")
        module.check_carrier()

    def registration_changed(self, stat: int) -> None:
        settings = self._module.settings
        if settings.creg_n:
            self._module.r.urc(f"+CREG: {stat}")
        if settings.cgreg_n:
            self._module.r.urc(f"+CGREG: {stat}")

    # -- push delivery ---------------------------------------------------------------------------

    def _pushes(self, sock) -> bool:
        """Does received data for `sock` go straight to the UART?"""
        module = self._module
        if module.data_mode is not None:
            return module.data_mode.sock is sock
        return module.contexts[sock.cid].mode == 0 and module.settings.indi == 0

    def pump(self) -> None:
        """Write pushed data, one framed chunk at a time, round robin, while the UART keeps up."""
        module = self._module
        while not self._paused and module.powered:
            candidates = [s for ctx in module.contexts for s in ctx.slots.values()
                          if self._pushes(s) and not s.dead and s.state != "CONNECTING"
                          and (s.rx or (s.state == "CLOSED" and not s.close_reported))]
            if not candidates:
                return
            sock = candidates[self._turn % len(candidates)]
            self._turn += 1
            if sock.rx:
                self._push(sock, sock.read(PUSH_CHUNK))
            if not sock.rx and sock.state == "CLOSED":
                self._report_closed(sock)

    def _push(self, sock, data: bytes) -> None:
        module = self._module
        if module.data_mode is not None:
            module.r.raw(data)
            return
        settings, ctx = module.settings, module.contexts[sock.cid]
        frame = bytearray()
        if ctx.mux:
            frame += f"\r\n+RECEIVE: {sock.index}, {len(data)}\r\n".encode()
        if settings.showra:
            frame += f"RECV FROM:{sock.remote[0]}:{sock.remote[1]}\r\n".encode()
        if settings.showla:
            frame += f"TO:{ctx.local_ip}\r\n".encode()
        if settings.head:
            proto = sock.proto if settings.showpt and not ctx.mux else ""
            frame += f"IPD{len(data)}{proto}:".encode()
        frame += data
        module.r.frame(bytes(frame))
