"""Schedules and webhooks under load: how late firings and deliveries are.

A real server (gunicorn, SQLite, the default `schedules.tick_s` unless `--tick`) and the scripted
LLM at 0 ms; a webhook receiver on 127.0.0.1. `-n` schedules (`every_s: 10`, each with a webhook)
are created at once and left to fire `--firings` times each. Then, from what the API shows:
- how late each firing was: a run's `started_at` against its due time (created + 10 s * k);
- how late each webhook was: the receiver's arrival against the run's `ended_at`;
- that every due time fired exactly once and every run was told of exactly once.

    python bench/schedules.py [-n 50] [--firings 2] [--tick 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import workflows as wf  # noqa: E402
from tests.support.scripted_llm import ScriptedLLM  # noqa: E402
from tests.support.server import start_server  # noqa: E402
from tests.support.webhook_receiver import Receiver  # noqa: E402

EVERY_S = 10


def when(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def spread(name: str, values: list[float]) -> None:
    values = sorted(values)
    p95 = values[max(0, int(len(values) * 0.95) - 1)]
    print(
        f"{name}: n={len(values)}  p50 {statistics.median(values) * 1000:.0f} ms  "
        f"p95 {p95 * 1000:.0f} ms  max {values[-1] * 1000:.0f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=50, help="schedules")
    parser.add_argument("--firings", type=int, default=2, help="firings of each")
    parser.add_argument("--tick", type=float, default=None, help="schedules.tick_s (default: the server's)")
    args = parser.parse_args()

    llm = ScriptedLLM(responder=lambda _body: "ok TERMINATE").start()
    receiver = Receiver().start()
    arrived: dict[str, datetime] = {}
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            "OPENAI_API_KEY": "sk-bench",
            "OPENAI_BASE_URL": llm.base_url,
            "AUTOBOTS_WEBHOOKS__ALLOWED_HOSTS": '["127.0.0.1"]',
        }
        if args.tick is not None:
            env["AUTOBOTS_SCHEDULES__TICK_S"] = str(args.tick)
        srv = start_server(Path(tmp), env=env)
        try:
            flow = dict(wf.autonomous(wf.assistant()), name="bench schedule")
            users = [f"bench-{u}@example.com" for u in range(5)]
            workflows = {
                u: srv.post("/api/workflows", {"user_id": u, "workflow": flow}).json()["data"]["id"]
                for u in users
            }
            created = []
            for i in range(args.n):
                user = users[i % len(users)]
                body = {
                    "user_id": user,
                    "workflow_id": workflows[user],
                    "message": f"bench {i}",
                    "every_s": EVERY_S,
                    "webhook": {"url": receiver.url()},
                }
                r = srv.post("/api/schedules", body)
                assert r.status_code == 200, r.text
                created.append((user, r.json()["data"]))
            wanted = args.n * args.firings
            deadline = time.monotonic() + EVERY_S * args.firings + 60
            while len(receiver.received) < wanted and time.monotonic() < deadline:
                time.sleep(0.2)
            for user, schedule in created:  # no more firings: what was started is what is counted
                path = f"{srv.url}/api/schedules/{schedule['id']}"
                srv.http.patch(path, json={"user_id": user, "enabled": False}, timeout=60)
            time.sleep(3)  # the last runs end, their webhooks (and anything extra) arrive
            received = list(receiver.received)  # one snapshot for every figure below
            for got in received:
                arrived[json.loads(got.body)["run_id"]] = datetime.now(UTC) - timedelta(
                    seconds=time.monotonic() - got.at
                )
            firing_late, hook_late, runs_seen, windows_twice = [], [], 0, 0
            for user, schedule in created:
                origin = when(schedule["created_at"])
                runs = srv.get("/api/runs", user_id=user, limit=500).json()["data"]
                mine = sorted(
                    (r for r in runs if r["session_id"] == schedule["session_id"]),
                    key=lambda r: r["started_at"],
                )
                runs_seen += len(mine)
                # Two runs for one due time start close together; a late firing is not a repeat.
                starts = [when(r["started_at"]) for r in mine]
                windows_twice += sum(1 for a, b in pairwise(starts) if (b - a).total_seconds() < EVERY_S / 2)
                for k, run in enumerate(mine, start=1):
                    firing_late.append(
                        (when(run["started_at"]) - (origin + timedelta(seconds=EVERY_S * k))).total_seconds()
                    )
                    if run["run_id"] in arrived and run["ended_at"]:
                        hook_late.append((arrived[run["run_id"]] - when(run["ended_at"])).total_seconds())
            print(
                f"{args.n} schedules every {EVERY_S} s, {args.firings} firing(s) each; tick_s {args.tick or 'default'}"
            )
            print(
                f"runs started: {runs_seen} (due times fired twice: {windows_twice}); webhooks received: "
                f"{len(received)} for {len(arrived)} distinct runs"
            )
            told = [json.loads(g.body)["run_id"] for g in received]
            for run_id in sorted({r for r in told if told.count(r) > 1})[:3]:
                attempts = srv.get(f"/api/runs/{run_id}").json()["data"]["webhook"]["attempts"]
                print(f"  told twice: {run_id}: {attempts}")
            spread("firing lateness (run started - due time)", firing_late)
            if hook_late:
                spread("webhook lateness (received - run ended)", hook_late)
        finally:
            srv.stop()
            receiver.stop()
            llm.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
