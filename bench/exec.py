"""Latency of running a trivial code block (``print(1)``) in each sandbox.

Measures what a user waits for beyond the code itself: the Docker sandbox's first
block of a run (includes starting the container), its later blocks (an exec into
the running container), and a local bubblewrap block (a fresh sandbox each time).

    DOCKER_HOST=unix:///run/autobots-docker.sock python bench/exec.py [--runs 20]

A kind whose sandbox is unavailable here is reported as skipped, with the reason.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

from autogen.coding.base import CodeBlock

from autobots.execution import (
    ExecutionRequest,
    ExecutionSettings,
    ExecutionUnavailable,
    open_executor,
    session_workdir,
)

BLOCK = [CodeBlock(code="print(1)", language="python")]
GOALS_MS = {"docker later block": 150.0, "local block": 50.0}


def _timed(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return (time.perf_counter() - started) * 1000


def _run_block(executor: object) -> None:
    result = executor.execute_code_blocks(BLOCK)  # type: ignore[attr-defined]
    if result.exit_code != 0 or result.output.strip() != "1":
        raise RuntimeError(f"unexpected result: exit {result.exit_code}, output {result.output!r}")


def bench_docker(settings: ExecutionSettings, runs: int) -> dict[str, float | str]:
    """First-block (median over a few fresh runs) and later-block medians for Docker."""
    firsts: list[float] = []
    laters: list[float] = []
    for i in range(3):
        workdir = session_workdir(settings, f"bench-docker-{i}")
        try:
            executor = open_executor(ExecutionRequest(executor="docker"), workdir, settings, f"bench-{i}")
        except ExecutionUnavailable as exc:
            return {"docker first block": f"skipped: {exc}", "docker later block": "skipped"}
        try:
            firsts.append(_timed(lambda ex=executor: _run_block(ex)))
            if i == 0:
                _run_block(executor)  # warm-up
                laters = [_timed(lambda ex=executor: _run_block(ex)) for _ in range(runs)]
        finally:
            executor.close()
    return {"docker first block": statistics.median(firsts), "docker later block": statistics.median(laters)}


def bench_local(settings: ExecutionSettings, runs: int) -> dict[str, float | str]:
    """Median of a local bubblewrap block."""
    workdir = session_workdir(settings, "bench-local")
    try:
        executor = open_executor(ExecutionRequest(executor="local"), workdir, settings, "bench-local")
    except ExecutionUnavailable as exc:
        return {"local block": f"skipped: {exc}"}
    try:
        _run_block(executor)  # warm-up
        times = [_timed(lambda: _run_block(executor)) for _ in range(runs)]
    finally:
        executor.close()
    return {"local block": statistics.median(times)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="blocks per median (default 20)")
    args = parser.parse_args(argv)

    root = tempfile.mkdtemp(prefix="autobots-bench-")
    os.chmod(root, 0o755)  # the local sandbox's uid must be able to reach the work dir
    settings = ExecutionSettings(work_root=root, timeout_s=30)
    try:
        results = {**bench_docker(settings, args.runs), **bench_local(settings, args.runs)}
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(f"{'measure':<22} {'median ms':>10}  {'goal ms':>8}  met")
    all_met = True
    for name, value in results.items():
        goal = GOALS_MS.get(name)
        if isinstance(value, str):
            print(f"{name:<22} {value}")
            all_met = all_met and goal is None
            continue
        met = "-" if goal is None else ("yes" if value < goal else "NO")
        all_met = all_met and met != "NO"
        goal_text = "-" if goal is None else f"{goal:.0f}"
        print(f"{name:<22} {value:>10.1f}  {goal_text:>8}  {met}")
    return 0 if all_met else 1


if __name__ == "__main__":
    sys.exit(main())
