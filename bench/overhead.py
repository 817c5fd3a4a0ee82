"""How much the server adds to a run: plain AutoGen in-process vs the same workflow over HTTP.

Both run the same two-agent chat (a user proxy asks, the assistant answers with TERMINATE: one LLM
call) against the scripted OpenAI-compatible server at 0 ms latency, so what is measured is the
framework's and the server's own time. Goal: the server within 1.25x of plain AutoGen.

Plain AutoGen is timed twice: as its users usually write it (each run's agents build their own
OpenAI client, which loads the CA certificates) and at its best (one shared HTTP client, as the
server does). The goal is judged against the best.

    python bench/overhead.py [-n 50]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from autogen import AssistantAgent, UserProxyAgent  # noqa: E402

from tests.support import workflows as wf  # noqa: E402
from tests.support.scripted_llm import ScriptedLLM  # noqa: E402
from tests.support.server import start_server  # noqa: E402

KEY = "sk-bench"


class SharedClient(httpx.Client):
    """AutoGen deep-copies llm_config; a shared client must survive that as itself."""

    def __deepcopy__(self, memo: dict) -> SharedClient:
        return self


def plain_autogen(base_url: str, http_client: httpx.Client | None = None) -> None:
    entry = {"model": "gpt-4o-mini", "api_key": KEY, "base_url": base_url}
    if http_client is not None:
        entry["http_client"] = http_client
    llm_config = {
        "config_list": [entry],
        "temperature": 0,
        "cache_seed": None,
    }
    assistant = AssistantAgent(
        "primary_assistant", llm_config=llm_config, system_message="You are primary_assistant."
    )
    proxy = UserProxyAgent(
        "userproxy",
        human_input_mode="NEVER",
        max_consecutive_auto_reply=5,
        code_execution_config=False,
        llm_config=False,
        # The same rule the server applies: a reply ending in TERMINATE ends the chat.
        is_termination_msg=lambda m: str(m.get("content") or "").rstrip().endswith("TERMINATE"),
    )
    proxy.initiate_chat(assistant, message="What is 2+2?", silent=True)


def timed(fn, n: int) -> list[float]:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=50, help="runs of each")
    args = parser.parse_args()
    llm = ScriptedLLM(responder=lambda _b: "4 TERMINATE").start()
    flow = wf.autonomous(wf.assistant())
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp), env={"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": llm.base_url})
        try:

            def over_http() -> None:
                body = {"message": wf.message("bench@example.com", "What is 2+2?"), "flow_config": flow}
                r = server.post("/api/messages", body)
                assert r.status_code == 200, r.text

            shared = SharedClient()
            timed(lambda: plain_autogen(llm.base_url), 3)  # warm all three up
            timed(lambda: plain_autogen(llm.base_url, shared), 3)
            timed(over_http, 3)
            plain = timed(lambda: plain_autogen(llm.base_url), args.n)
            best = timed(lambda: plain_autogen(llm.base_url, shared), args.n)
            served = timed(over_http, args.n)
        finally:
            server.stop()
            llm.stop()
    p, b, s = statistics.median(plain), statistics.median(best), statistics.median(served)
    print(f"runs: {args.n} each, scripted LLM at 0 ms latency, one LLM call per run")
    print(f"plain autogen, own client per run: median {p:7.1f} ms/run  mean {statistics.mean(plain):7.1f}")
    print(f"plain autogen, one shared client:  median {b:7.1f} ms/run  mean {statistics.mean(best):7.1f}")
    print(f"autobots over HTTP:                median {s:7.1f} ms/run  mean {statistics.mean(served):7.1f}")
    print(f"ratio to the usual plain autogen: {s / p:.2f}x")
    ratio = s / b
    print(
        f"ratio to the best plain autogen:  {ratio:.2f}x  (goal <= 1.25x: {'met' if ratio <= 1.25 else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
