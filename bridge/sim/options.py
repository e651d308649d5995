"""Simulator knobs: one frozen record shared by the CLI, the in-process API and the tests."""

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class SimOptions:
    """Everything that shapes the simulated module.

    Timings are seconds, rates bit/s; 0 means "instant" / "unlimited".  The defaults favour a
    realistic feel for interactive use; tests pass short timings.
    """

    baud: int = 0  #: UART pacing, both directions, 10 bits per byte; 0 = unpaced
    up_bps: int = 0  #: radio uplink rate (module -> network)
    down_bps: int = 0  #: radio downlink rate (network -> module)
    rtt_ms: int = 0  #: radio round trip; RTT/2 each way, acks visible RTT/2 after delivery
    hosts_file: Optional[str] = None  #: "IP name" lines consulted before the system resolver
    chaos_seed: Optional[int] = None  #: seeded harmless URCs before final results
    pin: Optional[str] = None  #: SIM PIN required at boot (None = SIM READY)
    register_delay: float = 0.0  #: seconds from SIM ready until CREG/CGREG report registered
    register_deny: bool = False  #: registration denied (stat 3) forever
    roaming: bool = False  #: registered on a visited network (stat 5), as a SIM abroad
    act_delay: float = 0.5  #: AT+QIACT (and implicit activation) duration
    deact_delay: float = 0.2  #: AT+QIDEACT duration
    dns_delay: float = 0.05  #: AT+QIDNSGIP / name lookup duration on top of the resolver
    connect_timeout: float = 75.0  #: QIOPEN gives up with CONNECT FAIL after this
    escape_guard: float = 0.5  #: "+++" silence required before and after (app note: >= 500 ms)
    escape_gap: float = 0.02  #: maximum gap between the three '+' (app note: < 20 ms)
    send_buffer: int = 7300  #: per-socket unacked bytes allowed before SEND FAIL
    rx_buffer: int = 7300  #: per-socket receive buffer; the host socket is paused when full
    uart_high_water: int = 4096  #: stop feeding pushed data while this much UART output is queued
    uart_rx_buffer: int = 4096  #: transparent uplink bytes the module holds waiting for the radio
    flow_control: bool = True  #: RTS/CTS wired: a full UART buffer blocks the host, else overrun
