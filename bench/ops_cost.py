"""What Prometheus metrics and JSON logs cost a run: `bench/overhead.py` with them off and on.

`overhead.py` times a one-LLM-call chat over HTTP against the scripted LLM at 0 ms latency (the
server's own time). It is run as it is, with its servers set through AUTOBOTS_TEST_SERVER_ENV
(tests/support/server.py), in four configurations: both off (text logs, `metrics.enabled`
false), metrics only, JSON logs only, both on. Each round runs all four in a rotated order
(paired: the machine's drift affects them alike); a configuration's cost is the median over
rounds of (its median ms/run - the same round's "off" median).

On a shared machine that difference drowns in the noise of other processes, so the same work
is also timed in-process, many times over (the best of several repeats): what one such run adds
to the server, on this CPU: the metrics of its stored events, its LLM call and its request (in
multiprocess mode, into files, as `serve` counts), and its two log lines (the request, the run's
end) as JSON rather than text.

    python bench/ops_cost.py [--rounds 3] [-n 40] [--skip-overhead]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OVERHEAD = ROOT / "bench" / "overhead.py"
CONFIGS: dict[str, dict[str, str]] = {
    "off": {"AUTOBOTS_METRICS__ENABLED": "false", "AUTOBOTS_LOG_FORMAT": "text"},
    "metrics": {"AUTOBOTS_METRICS__ENABLED": "true", "AUTOBOTS_LOG_FORMAT": "text"},
    "json logs": {"AUTOBOTS_METRICS__ENABLED": "false", "AUTOBOTS_LOG_FORMAT": "json"},
    "both": {"AUTOBOTS_METRICS__ENABLED": "true", "AUTOBOTS_LOG_FORMAT": "json"},
}
# overhead.py prints, per workload: a header, the server's median ms/run, its CPU per LLM call.
HEADER = re.compile(r"^(\S[^:\n]*): \d+ runs each", re.M)
SERVED = re.compile(r"autobots over HTTP[^:]*:\s+median\s+([\d.]+) ms/run")
SERVER_CPU = re.compile(r"server ([\d.]+) ms \(/proc")


def served(config: dict[str, str], n: int) -> dict[str, float]:
    """One run of overhead.py: per workload, the server's median ms/run (wall) and, where it
    prints one, its CPU ms per LLM call."""
    env = {**os.environ, "AUTOBOTS_TEST_SERVER_ENV": json.dumps(config)}
    out = subprocess.run(
        [sys.executable, str(OVERHEAD), "-n", str(n)], env=env, capture_output=True, text=True, check=True
    ).stdout
    figures: dict[str, float] = {}
    headers = list(HEADER.finditer(out))
    for i, header in enumerate(headers):
        section = out[header.end() : headers[i + 1].start() if i + 1 < len(headers) else len(out)]
        if wall := SERVED.search(section):
            figures[f"{header.group(1)}: ms/run"] = float(wall.group(1))
        if cpu := SERVER_CPU.search(section):
            figures[f"{header.group(1)}: server CPU ms/call"] = float(cpu.group(1))
    if not figures:  # an older overhead.py: one chat, no header
        wall = SERVED.search(out)
        if wall is None:
            raise SystemExit(f"overhead.py printed no server figure:\n{out}")
        figures["chat: ms/run"] = float(wall.group(1))
    return figures


def best_us(fn: Callable[[], None], loops: int = 2000, repeats: int = 7) -> float:
    """The best of `repeats` timings of `loops` calls, in microseconds per call."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(loops):
            fn()
        best = min(best, (time.perf_counter() - started) / loops)
    return best * 1e6


def in_process() -> None:
    """The observing one run of overhead.py's workload costs, timed in this process."""
    # As `serve` does: the multiprocess dir before prometheus_client is imported.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="autobots-bench-metrics-")
    sys.path.insert(0, str(ROOT))
    from autobots import logs
    from autobots.services import metrics

    assert metrics.multiprocess()
    run = "run-0123456789abcdef"
    reply = {"message": {"content": "4", "metadata": {"timing": {"duration_s": 0.04}, "usage": {}}}}
    events = [
        (run, 1, "status", {"status": "queued"}),
        (run, 2, "status", {"status": "running"}),
        (run, 3, "llm_call", {"model": "gpt-4o-mini", "prompt_tokens": 30, "completion_tokens": 2}),
        (
            run,
            4,
            "message",
            {"sender": "userproxy", "recipient": "primary_assistant", "content": "What is 2+2?"},
        ),
        (
            run,
            5,
            "message",
            {"sender": "primary_assistant", "recipient": "userproxy", "content": "4 TERMINATE"},
        ),
        (run, 6, "final", reply),
        (run, 7, "status", {"status": "completed"}),
    ]
    call = {
        "model": "gpt-4o-mini",
        "prompt_tokens": 30,
        "completion_tokens": 2,
        "cost_usd": "0.0000057",
        "cached": False,
        "error": None,
        "latency_s": 0.004,
    }
    observer = metrics.RunMetrics(repo=None)  # type: ignore[arg-type]  # a run with an answer reads no row

    def count() -> None:
        observer.events(events)
        observer.call(call)
        metrics.observe_request("POST", "/api/messages", 200, 0.04)

    sink = open(os.devnull, "w")  # noqa: SIM115
    http, runs = logging.getLogger("bench.http"), logging.getLogger("bench.runs")
    http.propagate = runs.propagate = False

    def lines(formatter: logging.Formatter) -> Callable[[], None]:
        handler = logging.StreamHandler(sink)
        handler.setFormatter(formatter)
        for logger in (http, runs):
            logger.handlers[:] = [handler]

        def write() -> None:
            fields = {"method": "POST", "path": "/api/messages", "status": 200, "duration_ms": 41.2}
            with logs.bound(logs.request_id, "0123456789abcdef0123456789abcdef"):
                http.info("request", extra={"fields": fields})
            runs.info("run ended", extra={"run_id": run, "fields": {"status": "completed"}})

        return write

    metrics_us = best_us(count, loops=500)
    text_us = best_us(lines(logs.TextFormatter()))
    json_us = best_us(lines(logs.JsonFormatter()))
    print("\nin-process, per run of that workload (7 events, 1 LLM call, 1 request), best of 7:")
    print(f"metrics (multiprocess files):  {metrics_us:7.1f} us/run")
    print(f"log lines as text:             {text_us:7.1f} us/run")
    print(
        f"log lines as JSON:             {json_us:7.1f} us/run  (JSON over text: {json_us - text_us:+.1f} us/run)"
    )
    print(f"both on over both off:         {metrics_us + json_us - text_us:7.1f} us/run")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("-n", type=int, default=40, help="runs of each kind per overhead.py run")
    parser.add_argument("--skip-overhead", action="store_true", help="only the in-process figures")
    args = parser.parse_args()
    if not args.skip_overhead:
        over_http(args.rounds, args.n)
    in_process()


def over_http(rounds: int, n: int) -> None:
    names = list(CONFIGS)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            runs[name].append(served(CONFIGS[name], n))
        print(f"round {r + 1} done", flush=True)
    print(f"\n{rounds} paired rounds of bench/overhead.py -n {n}; cost = median over rounds of (on - off)")
    for figure in runs["off"][0]:
        off = [round_[figure] for round_ in runs["off"]]
        print(f"{figure}\n  {'off':10s} {statistics.median(off):8.2f}")
        for name in names[1:]:
            on = [round_[figure] for round_ in runs[name]]
            deltas = [a - b for a, b in zip(on, off, strict=True)]
            cost = statistics.median(deltas)
            print(
                f"  {name:10s} {statistics.median(on):8.2f}   cost {cost:+7.2f} "
                f"({cost / statistics.median(off) * 100:+5.1f}%)  per round: {', '.join(f'{d:+.2f}' for d in deltas)}"
            )


if __name__ == "__main__":
    main()
