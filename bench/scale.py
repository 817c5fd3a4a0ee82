"""Runs per second at saturation in the distributed mode, with 1 and with 2 worker processes.

Two API processes (`python -m autobots serve`, one gunicorn worker each) and first one, then two
Celery workers (`python -m autobots worker --concurrency 16`), separate OS processes on a fresh
PostgreSQL database and Redis database 14 (bench/distributed.py). The scripted LLM answers at
0 ms with "Done. TERMINATE", so each run is one LLM call and what is measured is the machinery's
own cost. Both cases use the same two API processes, so that only the number of workers changes.

Saturation: `--clients` closed-loop clients (default 48, three times what one worker runs at
once) each POST /api/messages (the blocking API: the answer comes back when the run is over),
half of them to each API process (a client keeps to one, so that no kept-alive connection idles
into the server's keep-alive timeout), until `--runs` runs are done. Runs per second is
runs / wall time. Before each measurement, warm-up runs go through every process.

CPU ms per run is each kind of process's CPU time (utime + stime from /proc/<pid>/stat, whole
process trees: gunicorn's master and worker; PostgreSQL's postmaster and every backend; the
redis-server on 6379) over the measurement, divided by the runs. PostgreSQL and Redis are the
machine's own, so their figures include whatever else they served meanwhile; "other load" is
machine CPU (from /proc/stat) that none of the listed processes used. Goal: 2 workers at least
1.6x the runs per second of one.

A second table isolates the workers: with every worker stopped, `--drain` runs are queued through
POST /api/runs (nobody streams them); then 1 (or 2, started at once) workers start and empty
the queue. Runs per second is the runs that ended (`runs.ended_at` in the database) after the
last worker was ready, over the time from then to the last run's end; the CPU figures cover the
same window, when the API processes are idle. On a machine of 2 cores the first table is bound
by the machine's CPU shared by every process, the second one tells what the workers themselves
can do.

    python bench/scale.py [--runs 300] [--clients 48] [--worker-concurrency 16] [--drain 600]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import requests  # noqa: E402
from distributed import BenchCluster, CpuMeter, bench_cluster  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

from tests.support import workflows as wf  # noqa: E402
from tests.support.scripted_llm import ScriptedLLM  # noqa: E402


@dataclass
class Saturation:
    workers: int
    runs: int
    wall: float
    errors: list[str]
    latencies: list[float]
    served: int
    cpu: CpuMeter
    load: str

    @property
    def rate(self) -> float:
        return self.runs / self.wall


def load_average() -> str:
    return ", ".join(Path("/proc/loadavg").read_text().split()[:3])


def drive(urls: list[str], runs: int, clients: int, flow: dict, tag: str) -> tuple[list[str], list[float]]:
    """`clients` closed-loop clients make `runs` blocking runs in all; errors and latencies."""
    counter = iter(range(runs))
    lock = threading.Lock()
    errors: list[str] = []
    latencies: list[float] = []

    def client(c: int) -> None:
        session = requests.Session()
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            body = {
                "message": wf.message(f"scale-{tag}-{i % 64}@example.com", f"2+2? {tag} {i}"),
                "flow_config": flow,
            }
            t0 = time.perf_counter()
            try:
                r = session.post(urls[c % len(urls)] + "/api/messages", json=body, timeout=120)
                error = None if r.status_code == 200 else f"POST {r.status_code}: {r.text[:80]}"
            except requests.RequestException as exc:
                error = f"{type(exc).__name__}: {str(exc)[:80]}"
            with lock:
                latencies.append(time.perf_counter() - t0)
                if error:
                    errors.append(error)

    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(client, range(clients)))
    return errors, latencies


def saturate(cluster: BenchCluster, llm: ScriptedLLM, args: argparse.Namespace, flow: dict) -> Saturation:
    urls = [a.url for a in cluster.apis]
    warm_errors, _ = drive(urls, args.warmup, args.clients, flow, f"warm{len(cluster.workers)}")
    assert not warm_errors, warm_errors[:3]
    time.sleep(1)  # the warm-up's last writes
    llm.served.clear()
    load = load_average()
    meter = cluster.cpu_meter()
    meter.start()
    t0 = time.perf_counter()
    errors, latencies = drive(urls, args.runs, args.clients, flow, f"w{len(cluster.workers)}")
    wall = time.perf_counter() - t0
    meter.stop()
    return Saturation(len(cluster.workers), args.runs, wall, errors, latencies, len(llm.served), meter, load)


@dataclass
class Drain:
    workers: int
    runs: int  # runs that ended inside the window
    window: float
    per_worker: list[int]
    unfinished: int
    failed: int
    failures: list[str]
    cpu: CpuMeter
    load: str

    @property
    def rate(self) -> float:
        return self.runs / self.window if self.window > 0 else 0.0


def drain(
    cluster: BenchCluster, llm: ScriptedLLM, args: argparse.Namespace, flow: dict, workers: int
) -> Drain:
    """Queue `args.drain` runs with no worker running, then time `workers` workers emptying it."""
    for worker in cluster.workers:
        worker.stop(timeout=30)
    cluster.workers.clear()
    urls = [a.url for a in cluster.apis]
    tag = f"drain{workers}"

    def submit(i: int) -> str:
        body = {"message": wf.message(f"{tag}-{i % 64}@example.com", f"2+2? {tag} {i}"), "flow_config": flow}
        r = requests.post(urls[i % len(urls)] + "/api/runs", json=body, timeout=60)
        r.raise_for_status()
        return str(r.json()["data"]["run_id"])

    with ThreadPoolExecutor(max_workers=16) as pool:
        run_ids = list(pool.map(submit, range(args.drain)))
    time.sleep(1)
    llm.served.clear()
    load = load_average()
    with ThreadPoolExecutor(max_workers=workers) as pool:  # started at once, ready about together
        list(pool.map(lambda _: cluster.add_worker(args.worker_concurrency), range(workers)))
    ready = datetime.now(UTC)
    meter = cluster.cpu_meter()
    meter.start()
    engine = create_engine(cluster.env["AUTOBOTS_DATABASE_URL"])
    query = text("SELECT status, error, ended_at, worker_id FROM runs WHERE run_id = ANY(:ids)")
    try:
        deadline = time.monotonic() + 300
        while True:
            with engine.connect() as conn:
                rows = list(conn.execute(query, {"ids": run_ids}))
            if all(r.ended_at is not None for r in rows) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        meter.stop()
    finally:
        engine.dispose()
    ended = [r for r in rows if r.ended_at is not None]

    def aware(d: datetime) -> datetime:
        return d if d.tzinfo is not None else d.replace(tzinfo=UTC)

    in_window = [r for r in ended if aware(r.ended_at) >= ready]
    last = max((aware(r.ended_at) for r in in_window), default=ready)
    pids = [f":{w.process.pid}:" for w in cluster.workers]
    per_worker = [sum(1 for r in in_window if r.worker_id and pid in r.worker_id) for pid in pids]
    return Drain(
        workers,
        len(in_window),
        (last - ready).total_seconds(),
        per_worker,
        len(rows) - len(ended),
        sum(1 for r in rows if r.status != "completed"),
        sorted({f"{r.status}: {(r.error or '')[:100]}" for r in rows if r.status != "completed"}),
        meter,
        load,
    )


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def report(results: list[Saturation], args: argparse.Namespace) -> None:
    label, width = 40, 28

    def row(name: str, cells: list[str]) -> None:
        print(f"{name:<{label}}" + "".join(f"{c:<{width}}" for c in cells))

    print(
        f"\nsaturation: {args.runs} runs of 1 LLM call (scripted, 0 ms), {args.clients} clients at once, "
        f"2 API processes, workers at --concurrency {args.worker_concurrency}; {os.cpu_count()} cores"
    )
    row("", [f"{s.workers} worker{'s' if s.workers > 1 else ''}" for s in results])
    row("load before the run", [s.load for s in results])
    row("wall", [f"{s.wall:.2f} s" for s in results])
    row("runs per second", [f"{s.rate:.1f}" for s in results])
    row("errors", [f"{len(s.errors)}" for s in results])
    row(
        "LLM calls served (expected = runs)",
        [f"{s.served} ({'ok' if s.served == s.runs else 'MISMATCH'})" for s in results],
    )
    row(
        "run latency p50 / p99",
        [
            f"{statistics.median(s.latencies) * 1000:.0f} / {percentile(s.latencies, 99) * 1000:.0f} ms"
            for s in results
        ],
    )
    kinds = list(results[0].cpu.used)
    for kind in kinds:
        row(
            f"CPU ms per run: {kind}",
            [
                f"{s.cpu.used[kind] / s.runs * 1000:6.1f}  ({s.cpu.used[kind] / s.wall * 100:3.0f}% of a core)"
                for s in results
            ],
        )
    row(
        "CPU ms per run: all listed",
        [f"{sum(s.cpu.used.values()) / s.runs * 1000:6.1f}" for s in results],
    )
    row(
        "machine CPU busy / other load",
        [
            f"{s.cpu.busy_s / s.wall * 100:.0f}% / {s.cpu.others_s / s.wall * 100:.0f}% of a core"
            for s in results
        ],
    )
    for s in results:
        if s.errors:
            print(f"{s.workers} worker(s) errors: {sorted(set(s.errors))[:5]}")
    if len(results) == 2:
        ratio = results[1].rate / results[0].rate
        ok = ratio >= 1.6 and not any(s.errors for s in results)
        print(
            f"\n2 workers / 1 worker: {ratio:.2f}x (goal >= 1.6x with zero errors: {'met' if ok else 'NOT met'})"
        )


def report_drain(results: list[Drain], args: argparse.Namespace) -> None:
    label, width = 40, 28

    def row(name: str, cells: list[str]) -> None:
        print(f"{name:<{label}}" + "".join(f"{c:<{width}}" for c in cells))

    print(
        f"\nworkers alone: {args.drain} runs queued first (API idle), then the workers empty the queue; "
        f"--concurrency {args.worker_concurrency}"
    )
    row("", [f"{d.workers} worker{'s' if d.workers > 1 else ''}" for d in results])
    row("load before the run", [d.load for d in results])
    row("runs ended after the workers were ready", [f"{d.runs} in {d.window:.2f} s" for d in results])
    row("runs per second", [f"{d.rate:.1f}" for d in results])
    row("runs per worker", [" / ".join(map(str, d.per_worker)) for d in results])
    row("failed / never ended", [f"{d.failed} / {d.unfinished}" for d in results])
    for kind in results[0].cpu.used:
        row(
            f"CPU ms per run: {kind}",
            [
                f"{d.cpu.used[kind] / max(1, d.runs) * 1000:6.1f}  ({d.cpu.used[kind] / d.window * 100:3.0f}% of a core)"
                for d in results
            ],
        )
    row(
        "machine CPU busy / other load",
        [
            f"{d.cpu.busy_s / d.window * 100:.0f}% / {d.cpu.others_s / d.window * 100:.0f}% of a core"
            for d in results
        ],
    )
    for d in results:
        if d.failures:
            print(f"{d.workers} worker(s), runs not completed: {d.failures[:5]}")
    if len(results) == 2 and results[0].rate:
        ratio = results[1].rate / results[0].rate
        ok = ratio >= 1.6 and not any(d.failed or d.unfinished for d in results)
        print(
            f"\n2 workers / 1 worker, workers alone: {ratio:.2f}x (goal >= 1.6x: {'met' if ok else 'NOT met'})"
        )


def main() -> None:
    # The scripted LLM is http.server's ThreadingHTTPServer, whose listen backlog is 5: two
    # workers' 32 threads connecting at once overflow it and get "connection reset", a failure
    # of this stand-in that no real endpoint has. A deeper backlog, in this process only.
    ThreadingHTTPServer.request_queue_size = 256
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=40)
    parser.add_argument("--clients", type=int, default=48)
    parser.add_argument("--worker-concurrency", type=int, default=16)
    parser.add_argument(
        "--drain", type=int, default=600, help="runs queued for the workers-alone table (0: skip)"
    )
    args = parser.parse_args()
    llm = ScriptedLLM(responder=lambda _b: "Done. TERMINATE").start()
    flow = wf.autonomous(wf.assistant())
    results: list[Saturation] = []
    drains: list[Drain] = []
    try:
        with bench_cluster(llm.base_url) as cluster:
            cluster.add_api()
            cluster.add_api()
            for _ in range(2):
                cluster.add_worker(args.worker_concurrency)
                results.append(saturate(cluster, llm, args, flow))
            if args.drain:
                drains = [drain(cluster, llm, args, flow, n) for n in (1, 2)]
    finally:
        llm.stop()
    report(results, args)
    if drains:
        report_drain(drains, args)


if __name__ == "__main__":
    main()
