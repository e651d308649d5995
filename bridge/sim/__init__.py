"""A Quectel M95-dialect module simulator on a pty (imports nothing from bridge.at or bridge.modem).

Public API: `Simulator(reactor, SimOptions(...))`, see bridge.sim.simulator; CLI in bridge.sim.cli.
"""

from .options import SimOptions
from .simulator import Simulator

__all__ = ["Simulator", "SimOptions"]
