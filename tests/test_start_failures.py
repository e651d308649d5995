"""Start-up failures that only the running system can tell: one line and exit 1, under twistd as
under ``cellbridge run``; ``cellbridge --help`` and the README give the same twistd command line."""

import os
import re
import socket
import subprocess
import sys

from tests.test_cli import REPO, cellbridge

TWISTD = [sys.executable, "-c", "import sys; from twisted.scripts.twistd import run; "
                                "sys.argv[0] = 'twistd'; run()"]


def test_a_listener_that_cannot_bind_is_one_line_and_exit_1_under_twistd_as_under_run(tmp_path):
    path = tmp_path / "busy.ini"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path.write_text(f"[cellbridge]\nstate_dir = {tmp_path}\n[modem:main]\nport = sim\n"
                        f"[profile:web]\nlisten = tcp:{port}\nremote = tcp:127.0.0.1:8000\n")
        twistd = subprocess.run(TWISTD + ["-n", "--pidfile=", "cellbridge", "-c", str(path)],
                                capture_output=True, text=True, cwd=tmp_path, timeout=60,
                                env=dict(os.environ, PYTHONPATH=str(REPO)))
        run = cellbridge("run", "-c", str(path))
    line = (f"cellbridge: [profile:web] listen: Couldn't listen on 127.0.0.1:{port}: "
            "[Errno 98] Address already in use.\n")
    assert (twistd.returncode, twistd.stderr) == (1, line)
    assert "Traceback" not in twistd.stdout
    assert (run.returncode, run.stderr.splitlines(keepends=True)[-1]) == (1, line)


def test_help_and_readme_give_the_same_twistd_command_line():
    command = "twistd -n --pidfile= cellbridge -c FILE"
    assert command in cellbridge("--help").stdout
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert set(re.findall(r"`(twistd [^`]*)`", readme)) == {command}


def test_a_unix_listener_in_a_missing_directory_is_one_line_and_exit_1(tmp_path):
    """What only the running system can tell (here: a directory that is not there yet) is exit 1,
    not the config's 78, and no traceback."""
    path = tmp_path / "unix.ini"
    path.write_text(f"[cellbridge]\nstate_dir = {tmp_path}\n[modem:main]\nport = sim\n"
                    f"[profile:web]\nlisten = unix:{tmp_path}/absent/web.sock\n"
                    "remote = tcp:127.0.0.1:8000\n")
    assert cellbridge("check", "-c", str(path)).returncode == 0
    run = cellbridge("run", "-c", str(path))
    assert (run.returncode, run.stderr.splitlines()[-1]) == (
        1, "cellbridge: [profile:web] listen: cannot listen: No such file or directory")
    assert "Traceback" not in run.stderr
