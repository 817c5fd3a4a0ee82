"""Two versions of the server side by side, paired request by request: what one change saves.

On a shared machine the speed drifts from minute to minute (here by up to 40%), more than many
changes save, so two whole runs of `overhead.py` an hour apart tell little. This starts two
servers at once on one scripted LLM process at 0 ms: the checkout's `src/` and another copy of
it (`--old-src`, e.g. a `git worktree` of the commit before), and alternates their requests, old
then new, so that both see the same load. It prints, for each, the median time of a request and
the server's CPU per request (`/proc`, gunicorn's master and worker), for the 1-call chat and the
4-call group chat of `overhead.py` and for `GET /api/health` (the HTTP front alone).

    git worktree add /tmp/before HEAD~1
    python bench/paired.py --old-src /tmp/before/src [-n 300]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import overhead  # noqa: E402
from concurrency import cpu_seconds  # noqa: E402
from llm_process import LLMProcess  # noqa: E402

from tests.support.server import RunningServer, start_server  # noqa: E402


def start_from(src: Path | None, env: dict[str, str]) -> RunningServer:
    """A server of the checkout (`src` None) or of another copy of `src/`: a folder holding it
    as `autobots`, first on the path, stands in front of the editable install."""
    if src is None:
        return start_server(Path(tempfile.mkdtemp()), env=env)
    shim = Path(tempfile.mkdtemp())
    (shim / "autobots").symlink_to(src.resolve(), target_is_directory=True)
    previous = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(shim)
    try:
        return start_server(Path(tempfile.mkdtemp()), env=env)
    finally:
        if previous is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = previous


def alternate(servers: dict[str, RunningServer], request: Callable[[RunningServer], object], n: int) -> None:
    ms: dict[str, list[float]] = {name: [] for name in servers}
    cpu = dict.fromkeys(servers, 0.0)
    for _ in range(n):
        for name, server in servers.items():
            c0, t0 = cpu_seconds(server.process.pid), time.perf_counter()
            request(server)
            ms[name].append((time.perf_counter() - t0) * 1000)
            cpu[name] += cpu_seconds(server.process.pid) - c0
    for name in servers:
        print(
            f"    {name}: median {statistics.median(ms[name]):7.2f} ms   server CPU {cpu[name] / n * 1000:6.2f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--old-src", type=Path, required=True, help="the other version's src/ folder")
    parser.add_argument("-n", type=int, default=300, help="requests of each server, per workload")
    args = parser.parse_args()
    if not (args.old_src / "__init__.py").exists():
        raise SystemExit(f"{args.old_src} is not a src/ folder of autobots")
    llm = LLMProcess(overhead.scripted_answer)
    env = {"OPENAI_API_KEY": overhead.KEY, "OPENAI_BASE_URL": llm.base_url}
    servers: dict[str, RunningServer] = {}
    try:
        servers["old"] = start_from(args.old_src, env)
        servers["new"] = start_from(None, env)
        print(f"old: {args.old_src}, new: {ROOT / 'src'}; {args.n} requests each, alternated")
        for workload in overhead.WORKLOADS:

            def run(server: RunningServer, w: overhead.Workload = workload) -> None:
                overhead.post(server, w, w.calls)

            for server in servers.values():  # warm up: imports, first connections
                for _ in range(10):
                    run(server)
            print(f"  {workload.name}")
            alternate(servers, run, args.n)
        print("  GET /api/health")
        alternate(servers, lambda server: server.get("/api/health"), 2 * args.n)
    finally:
        for server in servers.values():
            server.stop()
        llm.stop()


if __name__ == "__main__":
    main()
