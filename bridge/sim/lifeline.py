"""``--exit-with-parent PID``: as cellbridge's ``port = sim`` child the simulator must not outlive
the daemon, even one killed by SIGKILL, which gets no chance to stop it.

Linux sends a chosen signal to a process when its parent dies (``prctl(PR_SET_PDEATHSIG)``, see
prctl(2)); SIGTERM stops the simulator cleanly like any other SIGTERM. The request only covers a
parent still alive when it is made, so a parent that died before is caught by comparing
``getppid()`` with the PID we were given: we have been adopted by another process. The signal
follows the parent *thread*: cellbridge spawns from its reactor thread, which lives as long as
the daemon.
"""

import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def exit_with_parent(parent_pid: int) -> bool:
    """Ask for SIGTERM when our parent dies; False if ``parent_pid`` is already gone."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGTERM), ctypes.c_ulong(0),
                  ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"prctl(PR_SET_PDEATHSIG): {os.strerror(code)}")
    return os.getppid() == parent_pid
