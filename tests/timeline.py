"""task.Clock stepping for transcript tests: ``Clock.advance(n)`` runs every call due within n
seconds but at the *final* time, so callbacks would all see one timestamp. These helpers stop at
each due call, so every recorded event carries its own time."""


def run_until(clock, when):
    """Advance ``clock`` call by call up to the absolute time ``when``."""
    while True:
        due = [call.getTime() for call in clock.getDelayedCalls() if call.getTime() <= when]
        if not due:
            break
        clock.advance(max(0.0, min(due) - clock.seconds()))
    clock.advance(max(0.0, when - clock.seconds()))


def advance(clock, seconds):
    """Like ``clock.advance(seconds)``, but call by call (see the module docstring)."""
    run_until(clock, clock.seconds() + seconds)
