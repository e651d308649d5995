"""Control channel: one command per line, one answer line (`ok`, `error: <why>`, or JSON)."""

import json

from twisted.internet import protocol
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver

USAGE = ("stats | kill N | heal N | close N | pdp-deact [CONTEXT] | reboot | garbage HEX | mute SECONDS | "
         "sendfail N [COUNT] | connectfail HOST|- | chaos SEED|off | dtr on|off | roaming on|off")
PIN_LEVELS = {"on": True, "off": False}  #: also roaming on|off


class ControlProtocol(LineOnlyReceiver):
    """Maps control lines onto the Simulator's fault methods."""

    delimiter = b"\n"
    log = Logger()

    def __init__(self, sim):
        self._sim = sim

    def lineReceived(self, line: bytes):
        words = line.decode("utf-8", "replace").strip().split()
        if not words:
            return
        try:
            answer = self.run(words[0].lower(), words[1:])
        except (ValueError, IndexError, KeyError) as e:
            answer = f"error: {e or 'bad arguments'}"
        except Exception as e:  # a fault must never take the simulator down
            self.log.failure("control command {line!r} failed", line=line)
            answer = f"error: {e}"
        self.sendLine(answer.encode("utf-8"))

    def run(self, verb: str, args: list) -> str:
        sim = self._sim
        simple = {"kill": sim.kill, "heal": sim.heal, "close": sim.remote_close}
        if verb == "stats":
            return json.dumps(sim.stats())
        if verb in simple:
            simple[verb](int(args[0]))
        elif verb == "pdp-deact":
            sim.pdp_deact(int(args[0]) if args else None)
        elif verb == "reboot":
            sim.reboot()
        elif verb == "garbage":
            sim.garbage(bytes.fromhex("".join(args)))
        elif verb == "mute":
            sim.mute(float(args[0]))
        elif verb == "sendfail":
            sim.send_fail(int(args[0]), int(args[1]) if len(args) > 1 else 1)
        elif verb == "connectfail":
            sim.connect_fail(None if args[0] == "-" else args[0])
        elif verb == "chaos":
            sim.chaos(None if args[0].lower() == "off" else int(args[0]))
        elif verb == "roaming":
            sim.set_roaming(PIN_LEVELS[args[0].lower()])
        elif verb == "dtr":  # the host's pin, for a bed whose host cannot drive it on a pty
            sim.module.set_dtr(PIN_LEVELS[args[0].lower()])
        else:
            raise ValueError(f"unknown command; use {USAGE}")
        return "ok"


class ControlFactory(protocol.Factory):
    noisy = False

    def __init__(self, sim):
        self._sim = sim

    def buildProtocol(self, addr):
        return ControlProtocol(self._sim)
