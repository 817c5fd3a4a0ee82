"""Idle listeners and slow clients against a real server: does `/api/health` still answer fast?

Opens N idle event-stream listeners on a run that waits for a human's input, and M connections
that send half a request line and then nothing, then times `/api/health` and the run's status
call. Then closes everything and times how long the server takes to let go of the connections.
Goal: health under 1 s with 1,000 listeners and 300 slow-header connections; connections freed
within 2 s of their clients closing.

    python bench/connections.py [--listeners 1000] [--slow 300] [-n 50]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from tests.support import workflows as wf  # noqa: E402
from tests.support.scripted_llm import ScriptedLLM  # noqa: E402
from tests.support.server import start_server  # noqa: E402
from tests.test_connections import server_side_connections  # noqa: E402


def connect(url: str, payload: bytes) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(payload)
    return sock


def timed(url: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        requests.get(url, timeout=30).raise_for_status()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--listeners", type=int, default=1000)
    p.add_argument("--slow", type=int, default=300)
    p.add_argument("-n", type=int, default=50)
    args = p.parse_args()
    llm = ScriptedLLM().start()
    llm.queue("Which city?")
    srv = start_server(
        Path(tempfile.mkdtemp()), env={"OPENAI_API_KEY": "sk-bench", "OPENAI_BASE_URL": llm.base_url}
    )
    try:
        flow = wf.autonomous(wf.assistant(), sender=wf.userproxy(human_input_mode="ALWAYS"))
        run = srv.post(
            "/api/runs", {"message": wf.message("bench@example.com", "Plan a trip"), "flow_config": flow}
        )
        run_id = run.json()["data"]["run_id"]
        while srv.get(f"/api/runs/{run_id}").json()["data"]["status"] != "awaiting_input":
            time.sleep(0.05)
        idle = timed(srv.url + "/api/health", args.n)
        stream = f"GET /api/runs/{run_id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
        socks = [connect(srv.url, stream) for _ in range(args.listeners)]
        socks += [
            connect(srv.url, b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n") for _ in range(args.slow)
        ]
        time.sleep(1)
        held = server_side_connections(srv)
        busy = timed(srv.url + "/api/health", args.n)
        status = timed(f"{srv.url}/api/runs/{run_id}", args.n)
        before = time.perf_counter()
        for s in socks:
            s.close()
        while server_side_connections(srv) > 2 and time.perf_counter() - before < 30:
            time.sleep(0.02)
        freed = time.perf_counter() - before
        ms = lambda xs: f"median {statistics.median(xs) * 1000:7.1f} ms  max {max(xs) * 1000:7.1f} ms"  # noqa: E731
        print(f"connections held by the server: {held} ({args.listeners} listeners + {args.slow} slow)")
        print(f"/api/health, idle server:      {ms(idle)}")
        print(
            f"/api/health, with all of them: {ms(busy)}   (goal < 1000 ms: {'met' if max(busy) < 1 else 'NOT met'})"
        )
        print(f"run status, with all of them:  {ms(status)}")
        print(
            f"all connections freed after:   {freed * 1000:7.1f} ms   (goal < 2000 ms: {'met' if freed < 2 else 'NOT met'})"
        )
    finally:
        srv.stop()
        llm.stop()


if __name__ == "__main__":
    main()
