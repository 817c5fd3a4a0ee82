"""100 runs at once through /api/runs, each making 4 LLM calls to a scripted server that answers
every call after 500 ms: the ideal wall time is 2 s. The scripted server runs in a process of its
own (`llm_process.py`): in this one it would share the 100 clients' interpreter lock.

Prints wall time against the ideal, p50/p99 time from POST to the first event and to the first
agent reply (over the LLM's own 500 ms), errors, and server memory per concurrent run.
Goals on 2 cores: wall under 1.5x the ideal, zero errors, p99 first event under 1 s over the
LLM's latency.

With `--distributed`, the same workload runs twice, in the default mode (one `serve` process on
SQLite, as above) and in the distributed mode: 2 API processes (`python -m autobots serve`, one
gunicorn worker each) and 2 Celery workers (`python -m autobots worker --concurrency 64`, so that
all 100 runs can be in flight) as separate OS processes on a fresh PostgreSQL database and Redis
database 14 (see bench/distributed.py). Run i is submitted to API process i mod 2 and its events
are streamed from the other one. The two are printed side by side, each figure with its goal,
with the CPU seconds each kind of process used (to tell which one is CPU-bound) and how much of
the machine's CPU other load took meanwhile (the machine is shared).

`bench/autogen_concurrency.py` runs the same workload in plain AutoGen, in one process with no
server, for comparison.

"First agent reply" is the first `llm_call` event a run's SSE stream delivers, timed from the
POST, minus the LLM's latency: what the server adds before the first answer reaches the client.

    python bench/concurrency.py [--runs 100] [--latency 0.5]
    python bench/concurrency.py --distributed [--worker-concurrency 64] [--skip-default]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
from llm_process import LLMProcess  # noqa: E402

from tests.support import workflows as wf  # noqa: E402
from tests.support.server import start_server  # noqa: E402
from tests.support.sse import read_events  # noqa: E402

CALLS_PER_RUN = 4


def rss_kib(pid: int) -> int:
    """Resident memory of the server: gunicorn's master and its worker together."""
    total = 0
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for proc in [pid, *map(int, children)]:
        for line in Path(f"/proc/{proc}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def cpu_seconds(pid: int) -> float:
    """CPU time used by the server (master and worker), to tell CPU-bound from waiting."""
    total = 0
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for proc in [pid, *map(int, children)]:
        fields = Path(f"/proc/{proc}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


@dataclass
class Outcome:
    """One mode's measurement: per-run results and what the processes used."""

    mode: str
    runs: int
    latency: float
    wall: float
    results: list[dict[str, Any]]
    served: int
    idle_kib: int
    peak_kib: int
    cpu: dict[str, float] = field(default_factory=dict)  # kind of process -> CPU seconds
    others_cpu: float | None = None  # machine CPU seconds not accounted for (other load)
    load: str = ""

    @property
    def ideal(self) -> float:
        return CALLS_PER_RUN * self.latency

    @property
    def ok(self) -> list[dict[str, Any]]:
        return [r for r in self.results if not r["error"]]

    @property
    def errors(self) -> list[str]:
        return [r["error"] for r in self.results if r["error"]]

    @property
    def counted(self) -> int:
        return sum(r.get("calls", 0) for r in self.results)

    @property
    def all_calls(self) -> bool:
        # A fast wall time with fewer calls means nothing.
        return self.served == self.counted == CALLS_PER_RUN * self.runs

    @property
    def wall_met(self) -> bool:
        return self.wall < 1.5 * self.ideal and self.all_calls and not self.errors

    @property
    def firsts(self) -> list[float]:
        return [r["first"] for r in self.ok]

    @property
    def replies(self) -> list[float]:
        return [r["first_reply"] - self.latency for r in self.ok if r["first_reply"] is not None]


def flow_config() -> dict[str, Any]:
    return wf.autonomous(
        wf.assistant(), sender=wf.userproxy(default_auto_reply="continue", max_consecutive_auto_reply=10)
    )


def respond(body: dict[str, Any]) -> str:
    """The scripted LLM's answer: call k of a run sees 2k messages (system, task, then
    reply/auto-reply pairs)."""
    return "Done. TERMINATE" if len(body["messages"]) >= 2 * CALLS_PER_RUN else "Working on it."


def workload(submit: list[str], stream: list[str], runs: int, flow: dict[str, Any]) -> list[dict[str, Any]]:
    """`runs` clients at once: run i is POSTed to submit[i % n] and streamed from stream[i % n]."""
    start_gate = threading.Barrier(runs)

    def one(i: int) -> dict:
        try:
            return follow_one(i)
        except Exception as exc:  # a crash is an error in the report, not a traceback
            return {"error": f"{type(exc).__name__}: {str(exc)[:80]}"}

    def follow_one(i: int) -> dict:
        session = requests.Session()
        start_gate.wait()
        t0 = time.perf_counter()
        body = {"message": wf.message(f"bench-{i}@example.com", f"task {i}"), "flow_config": flow}
        r = session.post(submit[i % len(submit)] + "/api/runs", json=body, timeout=60)
        accepted = time.perf_counter() - t0
        if r.status_code != 202:
            return {"error": f"POST {r.status_code}"}
        run_id = r.json()["data"]["run_id"]
        first = first_reply = None
        status = None
        calls = 0
        for event in read_events(f"{stream[i % len(stream)]}/api/runs/{run_id}/events", timeout=120):
            now = time.perf_counter() - t0
            first = first if first is not None else now
            if event.type == "llm_call":
                calls += 1
                first_reply = first_reply if first_reply is not None else now
            if event.type == "status":
                status = event.data["status"]
        error = None
        if status != "completed":
            error = f"status {status}"
        elif calls != CALLS_PER_RUN:
            error = f"{calls} LLM calls, not {CALLS_PER_RUN}"
        return {
            "accepted": accepted,
            "first": first,
            "first_reply": first_reply,
            "done": time.perf_counter() - t0,
            "calls": calls,
            "error": error,
        }

    with ThreadPoolExecutor(max_workers=runs) as pool:
        return list(pool.map(one, range(runs)))


def load_average() -> str:
    one, five, fifteen = Path("/proc/loadavg").read_text().split()[:3]
    return f"load average {one}, {five}, {fifteen}"


class Spy:
    """`--profile`: py-spy samples the server's worker (the thread holding the GIL) during the
    workload; the table (overhead.py's components and paths) is scaled to the CPU a run cost."""

    def __init__(self, pid: int, keep: str | None = None, rate: int = 100) -> None:
        import shutil
        import subprocess

        spy = shutil.which("py-spy", path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
        if spy is None:
            raise SystemExit("--profile needs py-spy (pip install -r requirements-dev.txt)")
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        self._tmp = tempfile.TemporaryDirectory()
        self._raw = Path(keep) if keep else Path(self._tmp.name) / "raw.txt"
        # --nonblocking: py-spy reads the stacks without pausing the server (a paused server
        # under 100 runs slowed to a third of its pace, and the profile was of another workload).
        cmd = [spy, "record", "--pid", children[0] if children else str(pid), "--gil", "--nonblocking"]
        cmd += ["--rate", str(rate)]
        self._proc = subprocess.Popen(
            [*cmd, "--full-filenames", "--format", "raw", "-o", str(self._raw)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(1.0)  # attached

    def report(self, cpu_ms: float) -> None:
        import signal

        from overhead import PATHS, parse_raw

        self._proc.send_signal(signal.SIGINT)
        self._proc.communicate(timeout=60)
        with self._tmp:
            if not self._raw.exists():
                print("py-spy recorded nothing")
                return
            by_component, by_path, total = parse_raw(self._raw)
        total = max(total, 1)
        print(f"where the server's CPU went ({total} busy samples; {cpu_ms:.1f} ms of CPU a run, profiled)")
        for name, count in by_component.most_common():
            print(f"  {name:<52}{count / total * 100:6.1f}%{count / total * cpu_ms:9.2f}")
        for name, _ in PATHS:
            count = by_path.get(name, 0)
            print(f"  {name:<52}{count / total * 100:6.1f}%{count / total * cpu_ms:9.2f}")


# the default mode: one process ------------------------------------------------------------------


def measure_default(args: argparse.Namespace, llm: LLMProcess, flow: dict[str, Any]) -> Outcome:
    load = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp), env={"OPENAI_API_KEY": "sk-bench", "OPENAI_BASE_URL": llm.base_url})
        pid = server.process.pid
        try:
            # Warm up: imports, first client, SQLite pages.
            warm = server.post("/api/messages", {"message": wf.message("warm", "hi"), "flow_config": flow})
            assert warm.status_code == 200, warm.text
            llm.reset()
            idle = rss_kib(pid)
            peak = [idle]
            stop = threading.Event()

            def sample() -> None:
                while not stop.is_set():
                    peak[0] = max(peak[0], rss_kib(pid))
                    time.sleep(0.05)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            if args.distributed:  # side by side: the same accounting as the distributed mode's
                from distributed import CpuMeter

                meter = CpuMeter({"server": [pid], "scripted LLM": [llm.pid]}, self_label="bench client")
                meter.start()
            spy = Spy(pid, args.profile_raw, args.rate) if args.profile else None
            cpu0 = cpu_seconds(pid)
            t0 = time.perf_counter()
            results = workload([server.url], [server.url], args.runs, flow)
            wall = time.perf_counter() - t0
            server_cpu = cpu_seconds(pid) - cpu0
            if spy is not None:
                spy.report(server_cpu / args.runs * 1000)
            if args.distributed:
                meter.stop()
            stop.set()
            sampler.join()
        finally:
            server.stop()
    served = llm.served.value  # what the scripted LLM answered during the timed part
    outcome = Outcome(
        "default (1 process)",
        args.runs,
        args.latency,
        wall,
        results,
        served,
        idle,
        peak[0],
        {"server": server_cpu},
    )
    outcome.load = load
    if args.distributed:
        outcome.cpu.update({k: v for k, v in meter.used.items() if k != "server"})
        outcome.others_cpu = meter.others_s
    return outcome


def print_default(o: Outcome) -> None:
    """The default mode's report, as this script has always printed it."""
    print(f"runs: {o.runs} at once, {CALLS_PER_RUN} LLM calls each, LLM latency {o.latency * 1000:.0f} ms")
    expected = CALLS_PER_RUN * o.runs
    print(
        f"wall: {o.wall:.2f} s (ideal {o.ideal:.2f} s, {o.wall / o.ideal:.2f}x; goal < 1.5x with every call made: "
        f"{verdict(o.wall_met)})"
    )
    print(
        f"LLM calls: {o.served} served by the scripted LLM, {o.counted} reported as llm_call events "
        f"(expected {expected}: {'ok' if o.all_calls else 'MISMATCH'})"
    )
    errors = o.errors
    print(f"errors: {len(errors)} {sorted(set(errors)) if errors else ''}(goal 0: {verdict(not errors)})")
    firsts, replies = o.firsts, o.replies
    if firsts:
        print(
            f"POST -> first event:      p50 {statistics.median(firsts) * 1000:6.0f} ms  p99 {percentile(firsts, 99) * 1000:6.0f} ms"
        )
    if replies:
        p99 = percentile(replies, 99)
        print(
            f"POST -> first agent reply, over the LLM's {o.latency * 1000:.0f} ms: "
            f"p50 {statistics.median(replies) * 1000:6.0f} ms  p99 {p99 * 1000:6.0f} ms "
            f"(goal p99 < 1000 ms: {verdict(p99 < 1)})"
        )
    server_cpu = o.cpu["server"]
    print(f"server CPU: {server_cpu:.2f} s in all, {server_cpu / o.runs * 1000:.0f} ms per run (one process)")
    per_run_mib = (o.peak_kib - o.idle_kib) / 1024 / max(1, o.runs)
    print(
        f"server memory: idle {o.idle_kib / 1024:.0f} MiB, peak {o.peak_kib / 1024:.0f} MiB, {per_run_mib:.2f} MiB per concurrent run"
    )


# the distributed mode: 2 API processes, 2 workers ---------------------------------------------


def measure_distributed(args: argparse.Namespace, llm: LLMProcess, flow: dict[str, Any]) -> Outcome:
    from distributed import PeakRss, bench_cluster

    with bench_cluster(llm.base_url) as cluster:
        for _ in range(args.apis):
            cluster.add_api()
        for _ in range(args.workers):
            cluster.add_worker(args.worker_concurrency)
        urls = [a.url for a in cluster.apis]
        # Warm up every API process and (most likely) every worker: a few runs at once on each.
        warm = workload(urls, urls[1:] + urls[:1], 4 * len(urls), flow)
        assert not any(r["error"] for r in warm), warm
        time.sleep(1)  # the warm runs' last writes
        llm.reset()
        load = load_average()
        rss = PeakRss(
            [a.process.pid for a in cluster.apis] + [w.process.pid for w in cluster.workers]
        ).start()
        meter = cluster.cpu_meter()
        meter.kinds["scripted LLM"], meter.self_label = [llm.pid], "bench client"
        meter.start()
        t0 = time.perf_counter()
        results = workload(urls, urls[1:] + urls[:1], args.runs, flow)
        wall = time.perf_counter() - t0
        meter.stop()
        rss.stop()
        served = llm.served.value
    return Outcome(
        f"distributed ({args.apis} API + {args.workers} workers)",
        args.runs,
        args.latency,
        wall,
        results,
        served,
        rss.idle,
        rss.peak,
        meter.used,
        meter.others_s,
        load,
    )


def print_side_by_side(outcomes: list[Outcome]) -> None:
    first = outcomes[0]
    print(
        f"\n{first.runs} runs at once, {CALLS_PER_RUN} LLM calls each at {first.latency * 1000:.0f} ms "
        f"(ideal wall {first.ideal:.2f} s); {os.cpu_count()} cores"
    )
    width = 30
    label = 46

    def row(name: str, cells: list[str]) -> None:
        print(f"{name:<{label}}" + "".join(f"{c:<{width}}" for c in cells))

    row("", [o.mode for o in outcomes])
    row("load before the run", [o.load.replace("load average ", "") for o in outcomes])
    row(
        "wall (goal < 1.5x ideal, every call made)",
        [f"{o.wall:.2f} s = {o.wall / o.ideal:.2f}x  {verdict(o.wall_met)}" for o in outcomes],
    )
    row(
        "LLM calls served / as events / expected",
        [f"{o.served} / {o.counted} / {CALLS_PER_RUN * o.runs}" for o in outcomes],
    )
    row("errors (goal 0)", [f"{len(o.errors)}  {verdict(not o.errors)}" for o in outcomes])
    row(
        "POST answered (202) p50 / p99",
        [
            f"{statistics.median([r['accepted'] for r in o.ok]) * 1000:.0f} / "
            f"{percentile([r['accepted'] for r in o.ok], 99) * 1000:.0f} ms"
            if o.ok
            else "-"
            for o in outcomes
        ],
    )
    row(
        "first event p50 / p99",
        [
            f"{statistics.median(o.firsts) * 1000:.0f} / {percentile(o.firsts, 99) * 1000:.0f} ms"
            if o.firsts
            else "-"
            for o in outcomes
        ],
    )
    row(
        f"first agent reply - {first.latency * 1000:.0f} ms: p50",
        [f"{statistics.median(o.replies) * 1000:.0f} ms" if o.replies else "-" for o in outcomes],
    )
    row(
        "    p99 (goal < 1000 ms)",
        [
            f"{percentile(o.replies, 99) * 1000:.0f} ms  {verdict(percentile(o.replies, 99) < 1)}"
            if o.replies
            else "-  NOT met"
            for o in outcomes
        ],
    )
    row(
        "run done (POST -> final status) p50 / p99",
        [
            f"{statistics.median([r['done'] for r in o.ok]):.2f} / {percentile([r['done'] for r in o.ok], 99):.2f} s"
            if o.ok
            else "-"
            for o in outcomes
        ],
    )
    kinds = list(dict.fromkeys(k for o in outcomes for k in o.cpu))
    for kind in kinds:
        row(
            f"CPU: {kind}",
            [
                f"{o.cpu[kind]:.2f} s = {o.cpu[kind] / o.wall * 100:.0f}% of a core" if kind in o.cpu else "-"
                for o in outcomes
            ],
        )
    row(
        "CPU: other load on the machine",
        [f"{o.others_cpu:.2f} s" if o.others_cpu is not None else "(not measured)" for o in outcomes],
    )
    row(
        "memory of server processes idle / peak",
        [f"{o.idle_kib / 1024:.0f} / {o.peak_kib / 1024:.0f} MiB" for o in outcomes],
    )
    for o in outcomes:
        if o.errors:
            print(f"{o.mode} errors: {sorted(set(o.errors))}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--distributed", action="store_true", help="also the distributed mode, side by side")
    parser.add_argument("--apis", type=int, default=2, help="API processes (--distributed)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (--distributed)")
    parser.add_argument(
        "--worker-concurrency", type=int, default=64, help="threads per worker (--distributed)"
    )
    parser.add_argument("--skip-default", action="store_true", help="with --distributed: only that mode")
    parser.add_argument("--profile", action="store_true", help="where the server's CPU goes (py-spy)")
    parser.add_argument("--profile-raw", help="with --profile: keep py-spy's raw stacks in this file")
    parser.add_argument("--rate", type=int, default=100, help="with --profile: py-spy's samples a second")
    args = parser.parse_args()

    llm = LLMProcess(respond, args.latency)  # its own process: it shares no GIL with the clients
    flow = flow_config()
    try:
        if not args.distributed:
            print_default(measure_default(args, llm, flow))
            return
        outcomes = []
        if not args.skip_default:
            outcomes.append(measure_default(args, llm, flow))
            llm.reset()
        outcomes.append(measure_distributed(args, llm, flow))
    finally:
        llm.stop()
    print_side_by_side(outcomes)


if __name__ == "__main__":
    main()
