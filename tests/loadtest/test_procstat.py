"""The tool's CPU must not count the servers it spawned (they are its children)."""

from __future__ import annotations

import os
import subprocess
import sys

from kuda.loadtest.procstat import descendants


def test_descendants_leave_out_the_excluded_subtrees() -> None:
    # A stand-in for a spawned server that forks a worker of its own.
    script = (
        "import subprocess, sys, time; "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']); time.sleep(30)"
    )
    server = subprocess.Popen([sys.executable, "-c", script])
    try:
        for _ in range(100):  # until the server has started its own child
            if len(descendants([server.pid])) == 2:
                break
            subprocess.run(["sleep", "0.05"], check=True)
        tree = descendants([server.pid])
        assert len(tree) == 2
        everything = descendants([os.getpid()])
        assert set(tree) <= set(everything)
        tool = descendants([os.getpid()], exclude=[server.pid])
        assert os.getpid() in tool
        assert not set(tree) & set(tool)
    finally:
        for pid in descendants([server.pid])[::-1]:
            os.kill(pid, 9)
        server.wait()
