"""Shared by bench/concurrency.py and bench/scale.py: the distributed mode started as users run
it, and CPU time per kind of process read from /proc.

The cluster is `python -m autobots serve` API processes and `python -m autobots worker` Celery
workers (tests/support/cluster.py), each a separate OS process, on a fresh PostgreSQL database
(127.0.0.1:5432, dropped afterwards) and the machine's Redis (127.0.0.1:6379) with database
number 14, flushed first (the test suite owns 11 to 13). Heartbeat and dead-worker settings are
the defaults, not the tests' fast ones.

CPU time is utime + stime from /proc/<pid>/stat over a process tree: every live process of the
tree, plus cutime + cstime (children that exited and were waited for), so gunicorn's master and
its worker, and PostgreSQL's postmaster with every backend (even one that came and went), count
whole. Not filtered by database: PostgreSQL's figure includes whatever else the machine's
PostgreSQL served meanwhile; `machine_busy()` tells how much CPU the whole machine used, to
compare with what the processes listed account for.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tests.support.cluster import Worker, cluster_env, start_api, start_worker
from tests.support.server import RunningServer
from tests.test_postgres import fresh_database

BENCH_REDIS_DB = 14  # not 11/12/13: the test suite's
REDIS_URL = f"redis://127.0.0.1:6379/{BENCH_REDIS_DB}"
KEY = "sk-bench"
TICK = os.sysconf("SC_CLK_TCK")


# CPU and memory from /proc ----------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str]:
    # The command name may hold spaces and parentheses: split after the last ")".
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                found.extend(int(c) for c in (task / "children").read_text().split())
    return found


def tree(pid: int) -> list[int]:
    """`pid` and all its descendants alive now."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo.extend(_children(p))
    return pids


def tree_cpu_s(pid: int) -> float:
    """CPU seconds used by the tree rooted at `pid`, including its children that exited."""
    ticks = 0
    for p in tree(pid):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, IndexError):
            f = _stat_fields(p)
            # fields after the name: [11] utime [12] stime [13] cutime [14] cstime
            ticks += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
    return ticks / TICK


def tree_rss_kib(pid: int) -> int:
    total = 0
    for p in tree(pid):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def self_cpu_s() -> float:
    """This process (the benchmark's clients and the scripted LLM, which runs in its threads)."""
    t = os.times()
    return t.user + t.system


def machine_busy() -> tuple[float, float]:
    """(busy CPU seconds, wall-clock CPU seconds) of the whole machine so far, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # without guest time, counted in user already
    return (total - idle) / TICK, total / TICK


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _ppid(pid: int) -> int:
    try:
        return int(_stat_fields(pid)[1])
    except (OSError, IndexError, ValueError):
        return 0


def redis_pids() -> list[int]:
    """The machine's redis-server (the one on 6379; private test servers on other ports are not
    it)."""
    pids = [int(p) for p in os.listdir("/proc") if p.isdigit() and _comm(int(p)) == "redis-server"]
    on_6379 = [p for p in pids if b"6379" in Path(f"/proc/{p}/cmdline").read_bytes()]
    return on_6379 or pids


def postgres_roots() -> list[int]:
    """PostgreSQL's postmaster(s): postgres processes whose parent is not one."""
    pids = [int(p) for p in os.listdir("/proc") if p.isdigit() and _comm(int(p)) == "postgres"]
    return [p for p in pids if _comm(_ppid(p)) != "postgres"]


@dataclass
class CpuMeter:
    """CPU seconds per kind of process between `start()` and `stop()`."""

    kinds: dict[str, list[int]]  # kind -> root pids of its process trees
    include_self: bool = True
    self_label: str = "bench client + LLM"  # this process: its clients and, here, the scripted LLM
    used: dict[str, float] = field(default_factory=dict)
    busy_s: float = 0.0  # the whole machine's busy CPU seconds meanwhile
    _before: dict[str, float] = field(default_factory=dict)
    _machine: float = 0.0

    def _read(self) -> dict[str, float]:
        now = {kind: sum(tree_cpu_s(p) for p in pids) for kind, pids in self.kinds.items()}
        if self.include_self:
            now[self.self_label] = self_cpu_s()
        return now

    def start(self) -> None:
        self._before = self._read()
        self._machine = machine_busy()[0]

    def stop(self) -> None:
        after = self._read()
        self.busy_s = machine_busy()[0] - self._machine
        self.used = {kind: after[kind] - self._before[kind] for kind in after}

    @property
    def others_s(self) -> float:
        """Machine CPU that none of the measured processes account for (other users' load)."""
        return max(0.0, self.busy_s - sum(self.used.values()))


class PeakRss:
    """Samples the summed RSS of some process trees every 50 ms; `peak` after `stop()`."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.idle = self.peak = self.read()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def read(self) -> int:
        return sum(tree_rss_kib(p) for p in self.pids)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.read())
            self._stop.wait(0.05)

    def start(self) -> PeakRss:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


# the cluster ---------------------------------------------------------------------------------


@dataclass
class BenchCluster:
    root: Path
    env: dict[str, str]
    apis: list[RunningServer] = field(default_factory=list)
    workers: list[Worker] = field(default_factory=list)

    def add_api(self) -> RunningServer:
        api = start_api(self.root / f"api{len(self.apis) + 1}", self.env)
        self.apis.append(api)
        return api

    def add_worker(self, concurrency: int) -> Worker:
        worker = start_worker(self.root / f"worker{len(self.workers) + 1}", self.env, concurrency)
        self.workers.append(worker)
        return worker

    def cpu_meter(self) -> CpuMeter:
        return CpuMeter(
            {
                "API processes": [a.process.pid for a in self.apis],
                "workers": [w.process.pid for w in self.workers],
                "Redis": redis_pids(),
                "PostgreSQL": postgres_roots(),
            }
        )

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop(timeout=30)
        for api in self.apis:
            api.stop()


@contextlib.contextmanager
def bench_cluster(llm_base_url: str, extra_env: dict[str, str] | None = None) -> Iterator[BenchCluster]:
    """An empty cluster on a fresh database and Redis db 14 (flushed); add APIs and workers."""
    redis.Redis.from_url(REDIS_URL).flushdb()
    root = Path(tempfile.mkdtemp(prefix="autobots-bench-"))
    root.chmod(0o755)  # the local sandbox's uid must reach the work dirs
    try:
        with fresh_database() as pg_url:
            env = cluster_env(pg_url, REDIS_URL, llm_base_url, KEY)
            # The defaults of a deployment, not the tests' fast dead-worker detection.
            env.pop("AUTOBOTS_RUNS__WORKER_HEARTBEAT_S", None)
            env.pop("AUTOBOTS_RUNS__DEAD_AFTER_S", None)
            env.update(extra_env or {})
            cluster = BenchCluster(root, env)
            try:
                yield cluster
            finally:
                cluster.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
        redis.Redis.from_url(REDIS_URL).flushdb()
