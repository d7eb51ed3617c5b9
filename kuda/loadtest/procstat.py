"""CPU and memory of processes on this host, from /proc (Linux)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int, reaped_children: bool = False) -> float:
    """utime + stime of one process (0 when it is gone). With `reaped_children`, also the
    cutime + cstime of the children it has reaped: for a parent that forks short-lived workers
    (PostgreSQL's postmaster and its backends), what exited still counts."""
    last = 15 if reaped_children else 13  # after the command: utime, stime, cutime, cstime
    with contextlib.suppress(OSError, IndexError, ValueError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return sum(int(v) for v in fields[11:last]) / CLK_TCK
    return 0.0


def rss_kib(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def descendants(roots: Iterable[int], exclude: Iterable[int] = ()) -> list[int]:
    """The roots and every process below them (uvicorn --workers forks), but for the subtrees
    of `exclude` (the servers the tool spawned are its children, not the tool)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
    skip = set(exclude)
    out, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        if pid in skip:
            continue
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def listener_pid(port: int) -> int | None:
    """The process listening on a local TCP port (IPv4 or IPv6), found through its socket
    inode; None when it is not on this host or not visible to us."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:  # LISTEN
                    inodes.add(cols[9])
    if not inodes:
        return None
    targets = {f"socket:[{inode}]" for inode in inodes}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{entry}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{entry}/fd/{fd}") in targets:
                        return int(entry)
    return None


def named(names: Collection[str]) -> list[int]:
    """Every process on this host whose command name (`/proc/<pid>/comm`) is in `names`."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{entry}/comm").read_text().strip() in names:
                    out.append(int(entry))
    return out


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(values[:8])
    return total - values[3] - values[4], total


@dataclass
class Sample:
    cpu_s: float
    rss_kib: int


class Group:
    """A named set of processes (servers, the tool's own) measured together."""

    def __init__(self, name: str, pids: Sequence[int], exclude: Sequence[int] = ()) -> None:
        self.name = name
        self.roots = list(pids)
        self.exclude = list(exclude)

    def sample(self) -> Sample:
        pids = descendants(self.roots, self.exclude)
        return Sample(sum(cpu_seconds(p) for p in pids), sum(rss_kib(p) for p in pids))


class Named(Group):
    """Every process of these command names on this host (`postgres`, `redis-server`): the
    stores the servers share, whoever started them. Exited processes count through their
    parent's reaped-children time."""

    def __init__(self, name: str, names: Collection[str]) -> None:
        super().__init__(name, [])
        self.names = set(names)

    def sample(self) -> Sample:
        pids = named(self.names)
        cpu = sum(cpu_seconds(p, reaped_children=True) for p in pids)
        return Sample(cpu, sum(rss_kib(p) for p in pids))
