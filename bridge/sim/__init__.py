"""A Quectel M95-dialect GSM module simulator on a pty (imports nothing from bridge.at / bridge.modem).

Public API: `Simulator(reactor, SimOptions(...))` (bridge.sim.simulator), CLI `bridge.sim.cli.main`.
Layout: ptyport (pty pair) -> uart (paced line) -> dialect (input states, dispatch to cmd_general /
cmd_ipconfig / cmd_socket, payload, transparent) -> stack (PDP contexts, slots, listener) ->
sockets (host sockets behind shaping.RadioPipe, delivery.DeliveryMeter for QISACK) -> reports
(URCs, pushed data); control, commandlog, chaos, cellular, resolver, settings around them.

Choices made where docs/at-dialect.md marks a fact [inferred] or open (§11), each a hypothesis:

Framing and general
 1. ATE1 echoes the raw input bytes as they arrive (CR and LF included), for every command line.
 2. Lines without "AT" are ignored without a reply; characters before a line's "AT" are skipped,
    so the `+++` a host types to learn whether it still is in data mode does not spoil the
    command after it (app note §6.3 follows it with AT+QIDEACT); the command log records the
    line from its "AT" on. ESC on a command line discards it; BS deletes a character; lines
    are cut at 1024 characters.
 3. ATV0: only OK/CONNECT/ERROR become numeric (`0\\r`, `1\\r`, `4\\r`); other results stay text,
    information lines become `text\\r\\n`.
 4. `+CME ERROR` (per AT+CMEE) only for SIM errors (16 wrong PIN, 3 PIN not needed); syntax errors,
    unknown commands and every QI* failure answer plain `ERROR`.
 5. The IPR is fixed (115200) at power-up, so `RDY` is shown; AT+IPR=0&W makes later boots silent
    about RDY. AT+IPR only stores the value; the real line rate is --baud.
 6. Boot URCs are written at once: RDY, +CFUN: 1, +CPIN: <state>, Call Ready, SMS Ready. After a
    correct AT+CPIN, `OK` then Call Ready and SMS Ready (no +CPIN: READY URC). AT+QIURC=0 only
    silences Call Ready within the same power cycle (settings return to defaults at each boot).
 7. Registration (CREG and CGREG alike) starts when the SIM is ready and CFUN=1, takes
    --register-delay, GPRS attaches automatically once registered; AT+CGATT=1 while not registered
    answers ERROR. CFUN=0/4 drop the contexts (`+PDP DEACT` if one was up); CFUN=1 brings back
    Call Ready/SMS Ready; AT+CFUN=1,1 answers OK and reboots.
 8. AT+QPOWD=1 (`NORMAL POWER DOWN`) and =0 (`OK`) leave the module off until the `reboot` fault
    (the PWRKEY); ATI = Quectel_Ltd / Quectel_M95 / Revision: M95FAR02A08, IMEI 861234567890125,
    AT+CSQ = 25,0.
 9. AT&D default 1, AT&C default 1. A pty carries no DTR: its level is ModuleProtocol.set_dtr()
    (control `dtr on|off`), ON at start and kept across reboots. ON->OFF in data mode: AT&D1
    command mode + OK, AT&D2 the link closed (what the UART buffer held is handed to the
    socket first) + OK, AT&D0 nothing. Outside data mode a DTR drop does nothing, also with
    AT&D2 in command mode after `+++`.
10. Commands typed while AT+QIACT or AT+QIDEACT run are held and executed afterwards.
11. Chaos URCs are Call Ready, SMS Ready, +CREG: 1, +CGREG: 1 (the last two only when registered),
    chance 0.5 before each final result code (including delayed ones such as CONNECT OK, SEND OK,
    DEACT OK, the QILOCIP address and the QISTAT STATE line); never in data mode and never inside a
    framed unit (a QIRD response or a +RECEIVE frame is one unit).
12. Mute: input and output are both dropped for the given time.

Bearer and stack
13. Contexts 0 and 1 each have their own APN, state, QIMUX, QIMODE, sockets and listener; UART
    settings (QINDI, QISDE, QIHEAD, ...) are global. Local IPs are 10.100.0.2 / 10.101.0.2.
    Socket indices 0-5 are per context, so the same index can be live on both: URCs that name
    an index and no context (`n, CLOSED`, `+RECEIVE: n, len`, `n, CONNECT OK`) are then
    ambiguous, and the simulator does not help the host to tell them apart. AT+QIDEACT,
    AT+QISTAT/QISTATE act on the foreground context only.
14. AT+QIACT runs --act-delay (IP CONFIG, then IP IND half-way). AT+QIDEACT answers DEACT OK in
    any state after --deact-delay, closing everything without CLOSED URCs.
15. Multi-link STATE is IP PROCESSING while any slot is allocated (app note figure 4).
16. AT+QIMUX=1 with QIMODE=1 (and the reverse) answers ERROR.
17. Defaults: QISDE=1 (payload echoed), QITCFG=3,2,1460,1 (ranges 3-8, 1-10, 1-1460, 0-1),
    QIDNSCFG 0.0.0.0 / 0.0.0.0, QILPORT TCP 2020 / UDP 3030 (port 0 = any free port).
18. QIPROMPT 2 = prompt without SEND OK, 3 = neither (SEND FAIL is still reported).

Sockets
19. QIOPEN is accepted in IP INITIAL / IP STATUS / IP CLOSE (single) or IP INITIAL / IP STATUS /
    IP PROCESSING (multi), otherwise ERROR; from IP INITIAL it needs GPRS attach (else ERROR) and
    runs QIREGAPP+QIACT itself before connecting.
20. A host name with QIDNSIP=0 answers ERROR; with QIDNSIP=1 dotted IPs still work; an
    unresolvable name gives OK then CONNECT FAIL. CONNECT OK/FAIL arrive one RTT after the host
    connect completes or fails (or after --connect-timeout). Transparent failure is `CONNECT FAIL`.
21. QIOPEN on an allocated multi-link index (connected, failed or closed but not QICLOSEd) gives
    OK then `<n>, CONNECT FAIL` (as one driver reports, docs/at-dialect.md §4.3) and leaves the
    slot alone; a single link after CLOSED or CONNECT FAIL is simply replaced by the new QIOPEN.
22. The prompt is `\\r\\n> `; ESC cancelling a variable-length QISEND answers OK; variable-length
    input beyond 1460 bytes is dropped; with QIMUX=1, `AT+QISEND=<n>` is variable length on socket
    n (app note 5.2.2.1); QISEND in transparent mode's command state answers ERROR; a socket closed
    while its payload was typed gives ERROR after the payload. AT+QIAUTOS time range is 1-100 s.
23. SEND FAIL when unacked + len > 7300 (TCP); UDP has no acks and no such limit.
24. QISACK: UDP reports `sent, 0, 0`; an unused slot `0, 0, 0`; counters restart at QIOPEN and are
    kept after a remote close until QICLOSE, frozen at what the peer had when the close came in
    (bytes still queued then, which an RST discards, stay unacked). As from a real peer, an ack is
    never visible later than the reply data or `CLOSED` that followed it (both travel RTT/2).
25. QICLOSE after a remote close or CONNECT FAIL answers `[<n>, ]CLOSE OK`; on a free slot ERROR.
    A local close is graceful: bytes already accepted are still delivered, then FIN.
26. `+QIRDI` is announced only when data lands in an empty buffer (QINDI=1 and 2); QINDI=2's
    num/len/tlen are buffered packets / first packet length / total bytes, where a packet is a
    radio segment of <= 1460 bytes (TCP) or one datagram (UDP).
27. QIRD: UDP returns at most one datagram per read; a live socket with nothing buffered (also
    with QINDI=0) answers OK; a missing slot ERROR; after the peer closed and the buffer drained
    ERROR. Header `+QIRD: <ip>:<port>,<TCP|UDP>,<len>` with one space after the colon.
28. Push frames carry <= 1460 bytes: `\\r\\n+RECEIVE: <n>, <len>\\r\\n`, then `RECV FROM:<ip>:<port>\\r\\n`
    (QISHOWRA), `TO:<local ip>\\r\\n` (QISHOWLA), `IPD<len>[TCP|UDP]:` (QIHEAD, QISHOWPT single only),
    then the bytes with no CRLF after them. Single-link push is the same without the +RECEIVE line.
    `CLOSED` comes after all pushed data of that socket.
29. Receive buffer 7300 bytes per socket: a TCP host socket stops being read while it (plus bytes
    in flight on the radio) is full; UDP datagrams that do not fit are dropped.
30. Multi-link QISTATE lines: `+QISTATE: <n>,"<proto>","<ip>",<port>,"<state>"` with INITIAL /
    CONNECTING / CONNECTED / CLOSED, empty slot `+QISTATE: <n>,"","",,"INITIAL"`, then a final OK.
    QISTAT behaves as QISTATE in multi-link mode and vice versa in single-link mode.
31. QISSTAT answers OK then `S: LISTENNING` (the vendor's spelling) or `S: INITIAL`.
32. QISERVER: OK then SERVER OK; type 0 listens on the TCP QILPORT, type 1 on the UDP one, each at
    most once at a time (a second of the same type answers ERROR; one of each may run); listens on
    127.0.0.1 only; single link accepts 1 client at a time (choice 42), the multi-link execution
    form 5; an accepted client takes the lowest index free for both kinds. QILPORT? answers
    `TCP: <p>` and `UDP: <p>` lines then OK. In single-link mode client and server socket may
    coexist (stats key "server"; not in transparent mode, choice 41). A UDP server's peer (address,
    port) becomes a server socket, announced with `[n, ]REMOTE IP: ip` only when its first datagram
    arrives (app note §3.2); its datagrams are then received like any socket's (nothing of a
    socket, pushed data or +QIRDI, comes before its REMOTE IP or CONNECT OK), AT+QISEND on it sends
    one datagram to that peer, and a new peer past the max clients is dropped without a word.
    AT+QICLOSE on the server side without an index closes every listener and the UDP server's
    sockets (they have no host socket of their own), without CLOSED URCs.
33. QIDNSGIP prints one address line; failure is ERROR after the OK. QIDNSCFG takes one or two
    dotted IPv4 addresses (anything else answers ERROR and changes nothing); the one-address form
    keeps the secondary server. The servers are only stored: lookups use --hosts and the system.

Transparent mode
34. `+++` needs --escape-guard (default 0.5 s, the app note's minimum) of silence before and after
    and less than 20 ms between the '+'; the answer is OK. ATO without a live link answers ERROR.
    Received data waits in the buffer while in command mode (no URC). Remote close shows `CLOSED`
    in the stream and returns to command mode; `+PDP DEACT` likewise. A remote close while in
    command mode after `+++` is a `CLOSED` URC at once; ATO then answers ERROR, and what waited
    for ATO stays readable with AT+QIRD until AT+QICLOSE. The command log records an accepted
    escape as `+++` and a DTR drop that left data mode as `DTR drop` (stats `data_mode` says
    which mode the UART is in).
35. Uplink bytes wait in the module's UART receive buffer (--uart-rx-buffer, default 4096) and go
    out packetised per QITCFG: a packet at SendSz bytes or a full buffer, the rest after WaitTm;
    while the socket's send buffer is full they stay. With flow control (the default, as if
    RTS/CTS were wired) a full buffer stops the UART until half of it is free, so the host's
    writes block; with --no-flow-control the UART takes bytes at the line rate and drops those
    that do not fit (stats `uart.overrun`), as a real UART overruns. AT+IFC is only stored: the
    reference says nothing of the module's flow control, so the default keeps what the
    simulator always did. What the buffer holds when an escape ends data mode still goes out
    in command mode; an ended link drops it.

UDP
36. A UDP datagram is never split: each push frame and each AT+QIRD carries exactly one. One
    larger than 1460 bytes (what one push frame carries, choice 28) is dropped on arrival, like
    one that does not fit the receive buffer (choice 29); both count in the socket's `dropped`
    (control `stats`).
Two contexts
37. The network can drop one context alone (fault `pdp_deact(context)`): its sockets and
    listener go as with both, `+PDP DEACT` comes once and names no context (app note §2.2), and
    only that context reads `STATE: PDP DEACT`; the other context and its sockets carry on.
38. Two contexts exclude transparent mode (app note §7.2): AT+QIACT (or an implicit activation)
    answers ERROR while the other context is active or activating and either has QIMODE=1.
Faults
39. A killed socket (fault `kill`) dies at the radio: nothing new reaches the host kernel (bytes
    still on the radio or waiting for kernel room are never delivered), nothing comes down, no
    URC. Bytes the kernel already took cannot be recalled: they still reach the peer, and their
    acks still count until the kernel's queue is settled; then acked stops moving by itself. So
    a killed socket's final acked is exactly what the peer received (freezing it at the kill
    would undercount bytes the peer still gets, whose ACK a loopback peer may delay ~40 ms).
Transparent mode: pins and the one link
40. A pty carries no DCD: its level is ModuleProtocol.carrier (stats `carrier`), changes are told
    to ModuleProtocol.carrier_observers. AT&C1: ON while a TCP or UDP socket of either context
    is connected, in either QIMODE (app note §5.6.2 describes it for transparent mode); it goes
    OFF when the module learns of the close, maybe before the peer's last bytes have left the
    UART. AT&C0: ON. OFF whenever the module is off.
41. In transparent mode AT+QISACK, AT+QICLOSE and ATO address the one link, client or
    server-accepted, whatever AT+QISRVC says (app note §4.2 uses them on a server's link
    without it); AT+QICLOSE with no link closes the listeners. AT+QIOPEN while a server's link
    is up answers ALREADY CONNECT, and a listener takes no client while a link is up or
    opening (Twisted closes that connection at once).
42. A listener keeps listening after its client has gone: in single-link mode a server socket that
    is over (CLOSED reported, nothing left to read) is replaced by the next client, as a new
    QIOPEN replaces a single link (choice 21); in transparent mode that client is announced with
    `REMOTE IP: <ip>` and `CONNECT` like the first.

SIM and network identity (docs/at-dialect.md §13)
43. AT+QCCID answers the ICCID 89860012345678901234 as a bare line (the M95 manual's form),
    AT+CCID as `+CCID: "89860012345678901234"` (prefixed and quoted, as other firmware does),
    AT+CIMI the IMSI 001010123456789 bare (TS 27.007); all three answer `+CME ERROR: 11` while
    the SIM wants its PIN. AT+COPS? is `+COPS: 0,0,"CELLBRIDGE HOME"` while registered at home,
    `+COPS: 0,0,"CELLBRIDGE ABROAD"` while roaming, `+COPS: 0` while not registered.
44. Roaming (--roaming, control `roaming on|off`, stats `roaming`; kept across reboots): once
    registered, CREG and CGREG report stat 5 instead of 1, and a change while registered is
    reported like any other (`+CREG: <stat>` / `+CGREG: <stat>` when AT+CREG / AT+CGREG is 1
    or 2). Chaos's `+CREG: 1` is not adjusted: it is noise.
"""

from .options import SimOptions
from .simulator import Simulator

__all__ = ["Simulator", "SimOptions"]
