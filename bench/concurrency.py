"""100 runs at once through /api/runs, each making 4 LLM calls to a scripted server that answers
every call after 500 ms: the ideal wall time is 2 s.

Prints wall time against the ideal, p50/p99 time from POST to the first event and to the first
agent reply (over the LLM's own 500 ms), errors, and server memory per concurrent run.
Goals on 2 cores: wall under 1.5x the ideal, zero errors, p99 first event under 1 s over the
LLM's latency.

    python bench/concurrency.py [--runs 100] [--latency 0.5]
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from tests.support import workflows as wf  # noqa: E402
from tests.support.scripted_llm import ScriptedLLM  # noqa: E402
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--latency", type=float, default=0.5)
    args = parser.parse_args()

    def respond(body: dict) -> str:
        # Call k of a run sees 2k messages (system, task, then reply/auto-reply pairs).
        return "Done. TERMINATE" if len(body["messages"]) >= 2 * CALLS_PER_RUN else "Working on it."

    llm = ScriptedLLM(latency=args.latency, responder=respond).start()
    flow = wf.autonomous(
        wf.assistant(), sender=wf.userproxy(default_auto_reply="continue", max_consecutive_auto_reply=10)
    )
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp), env={"OPENAI_API_KEY": "sk-bench", "OPENAI_BASE_URL": llm.base_url})
        pid = server.process.pid
        try:
            # Warm up: imports, first client, SQLite pages.
            warm = server.post("/api/messages", {"message": wf.message("warm", "hi"), "flow_config": flow})
            assert warm.status_code == 200, warm.text
            llm.served.clear()
            idle = rss_kib(pid)
            peak = [idle]
            stop = threading.Event()

            def sample() -> None:
                while not stop.is_set():
                    peak[0] = max(peak[0], rss_kib(pid))
                    time.sleep(0.05)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            start_gate = threading.Barrier(args.runs)

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
                r = session.post(server.url + "/api/runs", json=body, timeout=60)
                if r.status_code != 202:
                    return {"error": f"POST {r.status_code}"}
                run_id = r.json()["data"]["run_id"]
                first = first_reply = None
                status = None
                calls = 0
                for event in read_events(f"{server.url}/api/runs/{run_id}/events", timeout=120):
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
                    "first": first,
                    "first_reply": first_reply,
                    "done": time.perf_counter() - t0,
                    "calls": calls,
                    "error": error,
                }

            cpu0 = cpu_seconds(pid)
            t0 = time.perf_counter()
            with ThreadPoolExecutor(max_workers=args.runs) as pool:
                results = list(pool.map(one, range(args.runs)))
            wall = time.perf_counter() - t0
            server_cpu = cpu_seconds(pid) - cpu0
            stop.set()
            sampler.join()
        finally:
            server.stop()
            llm.stop()

    served = len(llm.served)  # what the scripted LLM answered during the timed part
    ok = [r for r in results if not r["error"]]
    errors = [r["error"] for r in results if r["error"]]
    ideal = CALLS_PER_RUN * args.latency
    firsts = [r["first"] for r in ok]
    replies = [r["first_reply"] - args.latency for r in ok if r["first_reply"] is not None]
    per_run_mib = (peak[0] - idle) / 1024 / max(1, args.runs)
    print(
        f"runs: {args.runs} at once, {CALLS_PER_RUN} LLM calls each, LLM latency {args.latency * 1000:.0f} ms"
    )
    counted = sum(r.get("calls", 0) for r in results)
    expected = CALLS_PER_RUN * args.runs
    all_calls = served == counted == expected  # a fast wall time with fewer calls means nothing
    met = wall < 1.5 * ideal and all_calls and not errors
    print(
        f"wall: {wall:.2f} s (ideal {ideal:.2f} s, {wall / ideal:.2f}x; goal < 1.5x with every call made: "
        f"{'met' if met else 'NOT met'})"
    )
    print(
        f"LLM calls: {served} served by the scripted LLM, {counted} reported as llm_call events "
        f"(expected {expected}: {'ok' if all_calls else 'MISMATCH'})"
    )
    print(
        f"errors: {len(errors)} {sorted(set(errors)) if errors else ''}(goal 0: {'met' if not errors else 'NOT met'})"
    )
    if firsts:
        print(
            f"POST -> first event:      p50 {statistics.median(firsts) * 1000:6.0f} ms  p99 {percentile(firsts, 99) * 1000:6.0f} ms"
        )
    if replies:
        p99 = percentile(replies, 99)
        print(
            f"POST -> first agent reply, over the LLM's {args.latency * 1000:.0f} ms: "
            f"p50 {statistics.median(replies) * 1000:6.0f} ms  p99 {p99 * 1000:6.0f} ms "
            f"(goal p99 < 1000 ms: {'met' if p99 < 1 else 'NOT met'})"
        )
    print(
        f"server CPU: {server_cpu:.2f} s in all, {server_cpu / args.runs * 1000:.0f} ms per run (one process)"
    )
    print(
        f"server memory: idle {idle / 1024:.0f} MiB, peak {peak[0] / 1024:.0f} MiB, {per_run_mib:.2f} MiB per concurrent run"
    )


if __name__ == "__main__":
    main()
