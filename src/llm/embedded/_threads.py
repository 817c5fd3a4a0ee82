"""How the managed model server's llama.cpp threads share a busy machine.

Runs in the model server process (``_server_main`` imports it as part of its private package:
that process cannot import autobots), so it imports nothing from autobots either.

Why: the llama.cpp bundled with llama-cpp-python 0.3.36 is built with OpenMP, so its
threads meet at an OpenMP barrier after every graph node (hundreds per token) and libgomp
*spins* there (``GOMP_SPINCOUNT``, 300,000 iterations by default) before sleeping.  On an
idle machine that is what makes it fast; with another busy process per core, one of the two
threads is regularly descheduled and the other burns its time slice spinning for it: on
2 cores generation fell from ~34 to ~5 tokens/s where a fair share would be ~17.  (ggml's own
thread pool, whose ``poll`` setting would govern that wait, is not used by an OpenMP build:
``ggml_barrier`` is ``#pragma omp barrier`` there.)

Policies (``embedded.thread_policy``):

* ``adaptive`` (default): spinning threads, but before each evaluation (one token, or one
  prompt batch) the thread count is set to the cores that other processes leave free,
  measured from ``/proc/stat`` minus this process's own CPU time over the last
  ``WINDOW_S``; never fewer than 1, never more than ``n_threads``.  One thread has no barrier
  to spin at, so on a busy machine it gets its scheduler share; on an idle one all threads
  run as before.
* ``spin``: always ``n_threads`` spinning threads (llama.cpp's default; fastest idle,
  collapses under load).
* ``sleep``: always ``n_threads`` threads that sleep at barriers (``OMP_WAIT_POLICY=PASSIVE``,
  set before llama.cpp is loaded); holds up under load but is ~30% slower idle.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

POLICIES = ("adaptive", "spin", "sleep")
# Shortest span the load is averaged over before the thread count is reconsidered: long
# enough for the kernel's tick-based CPU accounting (100 Hz) to be meaningful.
WINDOW_S = 0.3
# A span longer than this (the server sat idle between requests) says little about now:
# the count is kept and the measurement starts afresh.
STALE_S = 3.0


def configure_process(policy: str) -> None:
    """Set what must be set before llama.cpp (and libgomp) is loaded into this process."""
    if policy not in POLICIES:
        raise ValueError(f"unknown thread policy {policy!r}; known: {', '.join(POLICIES)}")
    if "llama_cpp" in sys.modules:
        raise RuntimeError("configure_process must run before llama_cpp is imported")
    if policy == "sleep":
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    elif os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE":
        # Inherited from the parent's environment: it would silently undo the policy.
        del os.environ["OMP_WAIT_POLICY"]


def threads_for(others_cores: float, cores: int, max_threads: int) -> int:
    """Threads to run when other processes keep ``others_cores`` cores busy."""
    free = cores - int(others_cores + 0.5)
    return max(1, min(max_threads, free))


class CpuSampler:
    """Cores used by processes other than this one, between successive calls."""

    def __init__(self) -> None:
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._last = self._sample()

    @staticmethod
    def _sample() -> tuple[float, int, int] | None:
        try:
            fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
            stat = Path("/proc/self/stat").read_text()
        except (OSError, ValueError):
            return None  # no /proc (not Linux): the count stays as configured
        rest = stat[stat.rfind(")") + 2 :].split()
        busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
        return time.monotonic(), busy, int(rest[11]) + int(rest[12])

    def others(self) -> float | None:
        """Cores used by others since the last call; None while the span is too short or stale."""
        now = self._sample()
        last = self._last
        if now is None or last is None:
            return None
        span = now[0] - last[0]
        if span < WINDOW_S:
            return None
        self._last = now
        if span > STALE_S:
            return None
        used = (now[1] - last[1]) - (now[2] - last[2])
        return max(0.0, used / self._tick / span)


def machine_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


class ThreadGovernor:
    """Chooses each llama.cpp context's thread count before each evaluation."""

    def __init__(self, policy: str, max_threads: int) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown thread policy {policy!r}; known: {', '.join(POLICIES)}")
        self.policy = policy
        self.max_threads = max_threads
        self.cores = machine_cores()
        self.current = max_threads
        self.changes = 0
        self.last_others: float | None = None
        self._sampler = CpuSampler() if policy == "adaptive" else None

    def before_eval(self, ctx: Any) -> None:
        """Called by the model (one thread at a time) before each llama_decode."""
        if self._sampler is None:
            return
        others = self._sampler.others()
        if others is None:
            return
        self.last_others = others
        wanted = threads_for(others, self.cores, self.max_threads)
        if wanted != self.current:
            import llama_cpp

            llama_cpp.llama_set_n_threads(ctx, wanted, wanted)
            self.current = wanted
            self.changes += 1

    def status(self, ctx: Any = None) -> dict[str, Any]:
        """What /autobots/health reports; with ``ctx``, the count llama.cpp itself holds."""
        report: dict[str, Any] = {
            "policy": self.policy,
            "max_threads": self.max_threads,
            "cores": self.cores,
            "threads": self.current,
            "changes": self.changes,
            "others_cores": None if self.last_others is None else round(self.last_others, 2),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default (spin)"),
        }
        if ctx is not None:
            import llama_cpp

            report["llama_n_threads"] = int(llama_cpp.llama_n_threads(ctx))
            report["llama_n_threads_batch"] = int(llama_cpp.llama_n_threads_batch(ctx))
        return report
