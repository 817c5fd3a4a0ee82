"""`bench/concurrency.py`'s workload in plain AutoGen: what one Python process does at best.

100 runs at once, each the same two-agent chat (a user proxy that answers "continue", an
assistant) making 4 LLM calls to a scripted server that answers every call after 500 ms (in a
process of its own, so that it takes none of this process's CPU): the ideal wall time is 2 s.
Here there is no server at all: 100 threads of this process each run `initiate_chat`, with one
shared HTTP client and nothing printed (AutoGen at its best, as in `bench/overhead.py`), and
nothing is stored or streamed.

It prints wall time against the ideal, p50/p99 time to the assistant's first reply over the LLM's
latency, and the CPU the process used per run: the same figures `concurrency.py` prints for the
server, with the same goals (wall under 1.5x the ideal, p99 first reply under 1 s over the LLM),
so that the two tell what the server adds and what the GIL costs AutoGen itself.

    python bench/autogen_concurrency.py [--runs 100] [--latency 0.5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from autogen import AssistantAgent, UserProxyAgent  # noqa: E402
from autogen.io.base import IOStream  # noqa: E402
from concurrency import CALLS_PER_RUN, percentile, respond, verdict  # noqa: E402
from llm_process import LLMProcess  # noqa: E402
from overhead import Quiet, SharedClient, ends_with_terminate, llm_config  # noqa: E402


def one_run(base_url: str, client: SharedClient, gate: threading.Barrier) -> dict[str, float]:
    gate.wait()
    t0 = time.perf_counter()
    first: list[float] = []
    assistant = AssistantAgent("primary_assistant", llm_config=llm_config(base_url, client))
    proxy = UserProxyAgent(
        "userproxy",
        human_input_mode="NEVER",
        max_consecutive_auto_reply=10,
        default_auto_reply="continue",
        code_execution_config=False,
        llm_config=False,
        is_termination_msg=ends_with_terminate,
    )

    def seen(*_args: Any, **_kwargs: Any) -> tuple[bool, None]:
        if not first:  # the proxy's first turn: the assistant's first reply has arrived
            first.append(time.perf_counter() - t0)
        return False, None

    proxy.register_reply([AssistantAgent, None], seen, position=0)
    with IOStream.set_default(Quiet()):
        result = proxy.initiate_chat(assistant, message="task", silent=True)
    calls = sum(1 for m in result.chat_history if m.get("name") == "primary_assistant")
    return {"first": first[0] if first else float("nan"), "done": time.perf_counter() - t0, "calls": calls}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--latency", type=float, default=0.5)
    args = parser.parse_args()
    llm = LLMProcess(respond, args.latency)  # forked before this process starts any thread
    base_url = llm.base_url
    client = SharedClient()
    try:
        one_run(base_url, client, threading.Barrier(1))  # warm up: imports, first connection
        gate = threading.Barrier(args.runs)
        cpu0, t0 = time.process_time(), time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.runs) as pool:
            results = list(pool.map(lambda _: one_run(base_url, client, gate), range(args.runs)))
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    finally:
        llm.stop()
    ideal = CALLS_PER_RUN * args.latency
    wrong = sum(1 for r in results if r["calls"] != CALLS_PER_RUN)
    replies = [r["first"] - args.latency for r in results]
    p99 = percentile(replies, 99)
    print(
        f"plain AutoGen, {args.runs} runs at once in one process, {CALLS_PER_RUN} LLM calls each, LLM latency {args.latency * 1000:.0f} ms"
    )
    print(
        f"wall: {wall:.2f} s (ideal {ideal:.2f} s, {wall / ideal:.2f}x; goal < 1.5x: {verdict(wall / ideal < 1.5)})"
    )
    print(f"runs without {CALLS_PER_RUN} calls: {wrong}")
    print(
        f"first agent reply, over the LLM's {args.latency * 1000:.0f} ms: p50 {statistics.median(replies) * 1000:6.0f} ms  "
        f"p99 {p99 * 1000:6.0f} ms (goal p99 < 1000 ms: {verdict(p99 < 1)})"
    )
    print(
        f"CPU: {cpu:.2f} s in all, {cpu / args.runs * 1000:.0f} ms per run (this process, its {args.runs} threads)"
    )


if __name__ == "__main__":
    main()
