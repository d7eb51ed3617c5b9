"""The tool's CPU must not count the servers it spawned (they are its children)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from kuda.loadtest.procstat import (
    Named,
    cpu_seconds,
    descendants,
    named,
)


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


def test_a_named_group_keeps_the_cpu_of_children_that_exited(tmp_path: Path) -> None:
    """PostgreSQL's CPU is every `postgres` process on the host; a backend that exits must not
    take its CPU time with it (the postmaster reaps it: its cutime)."""
    # A stand-in for the postmaster, under a command name of its own, that reaps a child
    # which burned CPU.
    exe = tmp_path / "kuda-standin"
    exe.symlink_to(sys.executable)
    script = (
        "import subprocess, sys, time; "
        "subprocess.run([sys.executable, '-c', 'x = sum(range(30_000_000))'], check=True); "
        "print('reaped', flush=True); time.sleep(30)"
    )
    parent = subprocess.Popen([str(exe), "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None and parent.stdout.readline() == "reaped\n"
        assert named(["kuda-standin"]) == [parent.pid]
        reaped = cpu_seconds(parent.pid, reaped_children=True)
        assert reaped > 0.2  # the exited child's time, on top of the parent's own
        assert reaped > cpu_seconds(parent.pid) + 0.2
        assert Named("stand-in", ["kuda-standin"]).sample().cpu_s == reaped
    finally:
        parent.kill()
        parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()
