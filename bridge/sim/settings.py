"""Power-up defaults of the UART-level settings (docs/at-dialect.md §10)."""

from dataclasses import dataclass, field


@dataclass
class ModuleSettings:
    """Everything AT commands switch that is not per PDP context; rebuilt at every boot."""

    echo: bool = True  # ATE1
    verbose: bool = True  # ATV1
    cmee: int = 1  # +CME ERROR: <n>
    ifc: tuple = (0, 0)
    dtr_mode: int = 1  # AT&D
    dcd_mode: int = 1  # AT&C
    fgcnt: int = 0
    indi: int = 0
    head: int = 0
    showra: int = 0
    showpt: int = 0
    showla: int = 0
    dnsip: int = 0
    prompt: int = 1
    sde: int = 1
    srvc: int = 1
    urc: int = 1
    autos: tuple = (0, 0)
    tcfg: tuple = (3, 2, 1460, 1)
    qsclk: int = 0
    creg_n: int = 0
    cgreg_n: int = 0
    dns: list = field(default_factory=lambda: ["0.0.0.0", "0.0.0.0"])
