"""How much the server adds to a run: plain AutoGen in-process vs the same workflow over HTTP.

Both run the same two-agent chat (a user proxy asks, the assistant answers with TERMINATE: one LLM
call) against the scripted OpenAI-compatible server at 0 ms latency, so what is measured is the
framework's and the server's own time. Goal: the server within 1.25x of plain AutoGen.

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

from autogen import AssistantAgent, UserProxyAgent  # noqa: E402

from tests.support import workflows as wf  # noqa: E402
from tests.support.scripted_llm import ScriptedLLM  # noqa: E402
from tests.support.server import start_server  # noqa: E402

KEY = "sk-bench"


def plain_autogen(base_url: str) -> None:
    llm_config = {
        "config_list": [{"model": "gpt-4o-mini", "api_key": KEY, "base_url": base_url}],
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

            timed(lambda: plain_autogen(llm.base_url), 3)  # warm both up
            timed(over_http, 3)
            plain = timed(lambda: plain_autogen(llm.base_url), args.n)
            served = timed(over_http, args.n)
        finally:
            server.stop()
            llm.stop()
    p, s = statistics.median(plain), statistics.median(served)
    ratio = s / p
    print(f"runs: {args.n} each, scripted LLM at 0 ms latency, one LLM call per run")
    print(f"plain autogen (in-process): median {p:7.1f} ms/run  mean {statistics.mean(plain):7.1f}")
    print(f"autobots over HTTP:         median {s:7.1f} ms/run  mean {statistics.mean(served):7.1f}")
    print(f"ratio: {ratio:.2f}x  (goal <= 1.25x: {'met' if ratio <= 1.25 else 'NOT met'})")


if __name__ == "__main__":
    main()
