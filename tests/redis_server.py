"""Test-owned redis-servers on their own ports: fault tests stop and start them, never the shared
one. One server, a Redis Cluster (primaries with replicas, built by `redis-cli --cluster
create`), or a primary with a replica and sentinels."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tests.procs import free_port

WAIT_S = 30.0
CLUSTER_NODE_ARGS = (
    *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
    *("--cluster-node-timeout", "1000", "--cluster-require-full-coverage", "no"),
)
# Replicas sync at once (the default waits 5 s for more replicas before a diskless sync).
REPLICATION_ARGS = ("--repl-diskless-sync-delay", "0")


def _binary(name: str) -> str:
    binary = shutil.which(name)
    if binary is None:
        raise RuntimeError(f"{name} is not installed (.ci/run installs redis-server)")
    return binary


def redis_cli(port: int, *args: str, timeout: float = 30) -> str:
    out = subprocess.run(
        [_binary("redis-cli"), "-p", str(port), *args],
        capture_output=True, text=True, timeout=timeout, check=True,
    )  # fmt: skip
    return out.stdout


def wait_until(check: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, subprocess.SubprocessError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"gave up waiting for {what}")


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too and below the ephemeral range."""
    for _ in range(200):
        port = free_port()
        if port > 22000:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair")


class RedisServer:
    def __init__(
        self,
        *extra: str,
        workdir: Path | None = None,
        sentinel: bool = False,
        port: int | None = None,
    ) -> None:
        self.binary = _binary("redis-server")
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.extra = extra
        self.workdir = workdir
        self.sentinel = sentinel
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        if self.sentinel:
            assert self.workdir is not None
            conf = self.workdir / f"sentinel-{self.port}.conf"
            if not conf.exists():
                conf.write_text("\n".join(self.extra) + "\n")
            cmd = [self.binary, str(conf), "--sentinel", "--port", str(self.port),
                   "--bind", "127.0.0.1"]  # fmt: skip
        else:
            cmd = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no", *self.extra]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd, cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise TimeoutError(f"redis-server on port {self.port} did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def info(self, section: str) -> dict[str, str]:
        text = redis_cli(self.port, "info", section)
        pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
        return {k: v.strip() for k, v in pairs}


class RedisClusterServers:
    """`shards` primaries with `replicas` replicas each; `cluster-node-timeout` 1 s so a killed
    primary is replaced by its replica within a few seconds."""

    def __init__(self, shards: int = 3, replicas: int = 1) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="kuda-redis-cluster-")
        self.dir = Path(self._tmp.name)
        self.replicas = replicas
        self.nodes: list[RedisServer] = []
        for i in range(shards * (1 + replicas)):
            workdir = self.dir / str(i)
            workdir.mkdir()
            args = (*CLUSTER_NODE_ARGS, *REPLICATION_ARGS)
            self.nodes.append(RedisServer(*args, workdir=workdir, port=cluster_port()))

    @property
    def url(self) -> str:
        """REDIS_URL for REDIS_MODE=cluster: every node as a seed."""
        return ",".join(f"redis://127.0.0.1:{n.port}" for n in self.nodes)

    def start(self) -> RedisClusterServers:
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> RedisClusterServers:
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
        replicas = ("--cluster-replicas", str(self.replicas), "--cluster-yes")
        redis_cli(self.nodes[0].port, "--cluster", "create", *addresses, *replicas, timeout=60)
        self.wait_ok()
        # A replica that never synced refuses to fail over: wait for every link.
        wait_until(self._replicas_synced, "every replica to sync")
        return self

    def _replicas_synced(self) -> bool:
        roles = [n.info("replication") for n in self.live()]
        replicas = [r for r in roles if r.get("role") == "slave"]
        synced = [r for r in replicas if r.get("master_link_status") == "up"]
        return len(replicas) == len(self.nodes) - len(self.nodes) // (1 + self.replicas) and (
            len(synced) == len(replicas)
        )

    def live(self) -> list[RedisServer]:
        return [n for n in self.nodes if n.proc is not None]

    def wait_ok(self, timeout: float = WAIT_S) -> None:
        """Every live node sees the whole slot space served (after create or a failover)."""

        def ok() -> bool:
            for node in self.live():
                text = redis_cli(node.port, "cluster", "info")
                if "cluster_state:ok" not in text or "cluster_slots_ok:16384" not in text:
                    return False
            return True

        wait_until(ok, "cluster_state:ok on every node", timeout)

    def primary_for(self, key: str) -> RedisServer:
        """The live node that serves `key`'s slot."""
        slot = int(redis_cli(self.nodes[0].port, "cluster", "keyslot", key).strip())
        for node in self.live():
            for line in redis_cli(node.port, "cluster", "nodes").splitlines():
                fields = line.split()
                if "myself" not in fields[2] or "master" not in fields[2]:
                    continue
                for span in fields[8:]:
                    lo, _, hi = span.partition("-")
                    if lo.isdigit() and int(lo) <= slot <= int(hi or lo):
                        return node
        raise LookupError(f"no live primary serves {key}")

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()
        self._tmp.cleanup()


class RedisSentinelServers:
    """A primary, one replica and three sentinels watching them as `service` (quorum 2)."""

    def __init__(self, service: str = "kuda-test") -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="kuda-redis-sentinel-")
        self.dir = Path(self._tmp.name)
        self.service = service
        self.primary = RedisServer(*REPLICATION_ARGS, workdir=self.dir)
        self.replica = RedisServer(
            "--replicaof", "127.0.0.1", str(self.primary.port), *REPLICATION_ARGS, workdir=self.dir
        )
        conf = (
            f"sentinel monitor {service} 127.0.0.1 {self.primary.port} 2",
            f"sentinel down-after-milliseconds {service} 1000",
            f"sentinel failover-timeout {service} 5000",
            f"sentinel parallel-syncs {service} 1",
        )
        self.sentinels = [RedisServer(*conf, workdir=self.dir, sentinel=True) for _ in range(3)]

    @property
    def url(self) -> str:
        """REDIS_URL for REDIS_MODE=sentinel: the sentinels."""
        return ",".join(f"redis://127.0.0.1:{s.port}" for s in self.sentinels)

    def start(self) -> RedisSentinelServers:
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> RedisSentinelServers:
        self.primary.start()
        self.replica.start()
        wait_until(
            lambda: self.replica.info("replication").get("master_link_status") == "up",
            "the replica to sync",
        )
        for sentinel in self.sentinels:
            sentinel.start()
        wait_until(self._watching, "sentinels to see the replica and each other")
        return self

    def _watching(self) -> bool:
        for sentinel in self.sentinels:
            fields = redis_cli(sentinel.port, "sentinel", "master", self.service).splitlines()
            values = dict(zip(fields[::2], fields[1::2], strict=False))
            if values.get("num-slaves") != "1" or values.get("num-other-sentinels") != "2":
                return False
        return True

    def current_primary_port(self) -> int:
        out = redis_cli(self.sentinels[0].port, "sentinel", "get-master-addr-by-name", self.service)
        return int(out.split()[1])

    def stop(self) -> None:
        for server in [*self.sentinels, self.replica, self.primary]:
            server.kill()
        self._tmp.cleanup()
