"""Benchmark of the embedded default model: load, prompt/generation speed, an AutoGen chat.

Run:  python bench/llm.py [--model embedded:qwen2.5-coder-1.5b] [--runs 3]

What it measures, and why this way:

* **Load time**: verifying the weights (a stamp check once assembled), loading the GGUF
  directly with ``llama_cpp.Llama``, and starting the managed server until it answers
  (process start + imports + model load), the cost the first embedded request pays.
* **Server vs direct**: the same prompts, ``max_tokens`` and greedy sampling through the
  managed server (OpenAI SDK, streaming) and through ``Llama`` in this process, using the
  same ``Llama`` subclass and settings as the server.  Runs alternate direct/server (never
  concurrently) so background noise hits both alike; each pair has its own prompt prefix
  so no prompt cache helps either side, and the verdict uses the median of the per-pair
  ratios.  Prompt speed is prompt tokens / time to first
  token; generation speed is tokens after the first / time from first to last token.
* **AutoGen chat**: an AssistantAgent (AutoGen's default ~500-token system prompt) and a
  UserProxyAgent reviewer, three model replies (assistant, reviewer, assistant), through
  ``config_entry()`` exactly as the web layer uses it.  Run twice: "cold" is the first
  chat with these agents on a fresh server, "warm" a second chat with another task, whose
  system prompts the server's prompt cache already holds (the steady state of a running
  autobots server, where agents' system prompts repeat across chats).
* **Machine noise**: this bench runs on shared 2-core machines; the share of CPU time used
  by other processes during each phase is printed so a slow figure can be told apart from
  a busy machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHAT_GOAL_S = 45.0
SERVER_RATIO_GOAL = 0.90
USER_TASK = (
    "Write a Python function that returns the n-th Fibonacci number iteratively, "
    "with a docstring and a short example."
)
WARM_TASK = "Write a Python function that reverses the words of a sentence, with a docstring."


@dataclass
class Run:
    """One streamed completion's figures."""

    prompt_tokens: int
    completion_tokens: int
    ttft_s: float
    gen_s: float

    @property
    def prompt_tps(self) -> float:
        return self.prompt_tokens / self.ttft_s if self.ttft_s > 0 else 0.0

    @property
    def gen_tps(self) -> float:
        return (self.completion_tokens - 1) / self.gen_s if self.gen_s > 0 else 0.0


class CpuMeter:
    """Share of the machine's CPU time spent by processes other than ``pids`` over a phase."""

    def __init__(self, pids: Callable[[], list[int]]) -> None:
        self._pids = pids
        self._start = self._sample()

    @staticmethod
    def _total_busy() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + fields[4]
        return sum(fields) - idle, sum(fields)

    def _ours(self) -> int:
        used = 0
        for pid in self._pids():
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            rest = stat[stat.rfind(")") + 2 :].split()
            used += int(rest[11]) + int(rest[12])  # utime + stime
        return used

    def _sample(self) -> tuple[int, int, int]:
        busy, total = self._total_busy()
        return busy, total, self._ours()

    def others_share(self) -> float:
        busy, total, ours = self._sample()
        d_total = total - self._start[1]
        if d_total <= 0:
            return 0.0
        return max(0.0, ((busy - self._start[0]) - (ours - self._start[2])) / d_total)


def wait_for_quiet(max_wait_s: float, threshold: float = 0.10) -> float:
    """Wait (up to ``max_wait_s``) for 3 s in which other processes use under ``threshold`` of
    the CPUs; called only while this bench is idle, so all busy time is someone else's.

    Returns the last measured share, so a figure taken on a busy machine says so.
    """
    deadline = time.monotonic() + max_wait_s
    while True:
        meter = CpuMeter(list)
        time.sleep(3)
        share = meter.others_share()
        if share < threshold or time.monotonic() >= deadline:
            return share


def _messages(system_prompt: str, nonce: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": f"Session {nonce}. {system_prompt}"},
        {"role": "user", "content": USER_TASK},
    ]


def _timed_stream(chunks: Iterator[Any], content_of: Callable[[Any], str | None]) -> tuple[float, float]:
    """(time to first content, time from first to last content) while consuming ``chunks``."""
    start = time.perf_counter()
    first = last = None
    for chunk in chunks:
        if content_of(chunk):
            last = time.perf_counter()
            first = first or last
    if first is None or last is None:
        raise RuntimeError("the model produced no content")
    return first - start, last - first


def run_direct(llama: Any, messages: list[dict[str, str]], max_tokens: int) -> Run:
    def content(chunk: dict[str, Any]) -> str | None:
        choices = chunk.get("choices") or []
        return choices[0]["delta"].get("content") if choices else None

    stream = llama.create_chat_completion(
        messages=messages, max_tokens=max_tokens, temperature=0, stream=True
    )
    ttft, gen = _timed_stream(stream, content)
    prompt_tokens, completion_tokens = llama.last_usage
    return Run(prompt_tokens, completion_tokens, ttft, gen)


def run_server(client: Any, model: str, messages: list[dict[str, str]], max_tokens: int) -> Run:
    usage: list[Any] = []

    def content(chunk: Any) -> str | None:
        if chunk.usage is not None:
            usage.append(chunk.usage)
        return chunk.choices[0].delta.content if chunk.choices else None

    stream = client.chat.completions.create(
        model=model,
        messages=messages,
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    ttft, gen = _timed_stream(stream, content)
    return Run(usage[-1].prompt_tokens, usage[-1].completion_tokens, ttft, gen)


def autogen_chat(entry: dict[str, Any], max_tokens: int, task: str) -> tuple[float, dict[str, Any], int]:
    import autogen

    llm_config = {"config_list": [entry], "cache_seed": None, "temperature": 0, "max_tokens": max_tokens}
    assistant = autogen.AssistantAgent("assistant", llm_config=llm_config)
    reviewer = autogen.UserProxyAgent(
        "reviewer",
        system_message="You review Python code. Point out one improvement in two sentences.",
        human_input_mode="NEVER",
        max_consecutive_auto_reply=1,
        code_execution_config=False,
        llm_config=llm_config,
    )
    start = time.perf_counter()
    # max_turns=2: the task, then assistant -> reviewer -> assistant = three model replies.
    result = reviewer.initiate_chat(assistant, message=task, max_turns=2, silent=True)
    wall = time.perf_counter() - start
    usage: dict[str, Any] = {}
    for agent in (assistant, reviewer):
        summary = agent.client.total_usage_summary or {}
        for value in summary.values():
            if isinstance(value, dict):
                for field in ("prompt_tokens", "completion_tokens"):
                    usage[field] = usage.get(field, 0) + value.get(field, 0)
    replies = sum(1 for m in result.chat_history[1:] if m.get("content"))
    return wall, usage, replies


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="embedded model (default: the settings' default)")
    parser.add_argument("--runs", type=int, default=6, help="direct/server pairs to measure")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--chat-max-tokens", type=int, default=160, help="cap per reply in the chat")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=120,
        help="seconds to wait before each measurement for other processes to leave the CPUs idle",
    )
    args = parser.parse_args(argv)

    import autogen
    import openai

    from autobots.llm.embedded import EmbeddedSettings, embedded_endpoint, shutdown
    from autobots.llm.embedded._server_main import _make_llama_class
    from autobots.llm.embedded.registry import get_spec
    from autobots.llm.embedded.weights import prepare_model_file

    base = EmbeddedSettings()
    model = args.model or base.default_model
    # Shared model cache, private server: the figures are this bench's server, with these
    # settings, not whatever server another process on the machine happens to run.
    settings = EmbeddedSettings(
        default_model=model,
        models=[model],
        n_threads=args.threads,
        server_dir=tempfile.mkdtemp(prefix="autobots-bench-server-"),
    )
    spec = get_spec(model)
    threads = settings.threads()
    print(f"model {model} ({spec.description}); {threads} threads; n_ctx {settings.n_ctx(model)}")
    system_prompt = autogen.AssistantAgent.DEFAULT_SYSTEM_MESSAGE

    t = time.perf_counter()
    path = prepare_model_file(spec, settings.resolved_cache_dir())
    print(f"weights ready (assemble or stamp check): {time.perf_counter() - t:6.2f} s  {path}")

    server_pids: list[int] = []
    wait_for_quiet(args.quiet_wait)
    meter = CpuMeter(lambda: [os.getpid(), *server_pids])
    t = time.perf_counter()
    llama = _make_llama_class()(
        model_path=str(path),
        n_ctx=settings.n_ctx(model),
        n_batch=settings.n_batch,
        n_ubatch=settings.n_batch,
        n_threads=threads,
        n_threads_batch=threads,
        logits_all=False,
        use_mlock=False,
        verbose=False,
    )
    direct_load = time.perf_counter() - t
    print(f"load, direct llama_cpp.Llama:            {direct_load:6.2f} s")

    t = time.perf_counter()
    endpoint = embedded_endpoint(model, settings)
    server_load = time.perf_counter() - t
    state = (settings.resolved_server_dir() / "state.json").read_text()
    server_pids.append(int(json.loads(state)["pid"]))
    print(f"load, managed server start until ready:  {server_load:6.2f} s")
    print(f"  (other processes used {meter.others_share():.0%} of the CPUs while loading)")

    client = openai.OpenAI(base_url=endpoint.base_url, api_key=endpoint.api_key, max_retries=0, timeout=600)
    direct: list[Run] = []
    server: list[Run] = []
    noise: list[float] = []
    try:
        for i in range(args.runs):
            nonce = uuid.uuid4().hex[:12]
            messages = _messages(system_prompt, nonce)
            # Alternate which side goes first so drift in background load cancels out.
            order = ("direct", "server") if i % 2 == 0 else ("server", "direct")
            for side in order:
                wait_for_quiet(args.quiet_wait)
                meter = CpuMeter(lambda: [os.getpid(), *server_pids])
                if side == "direct":
                    run = run_direct(llama, messages, args.max_tokens)
                    direct.append(run)
                else:
                    run = run_server(client, model, messages, args.max_tokens)
                    server.append(run)
                noise.append(meter.others_share())
                print(
                    f"  run {i + 1} {side:6s}: prompt {run.prompt_tokens} tok {run.prompt_tps:6.1f} tok/s, "
                    f"generated {run.completion_tokens} tok {run.gen_tps:6.2f} tok/s"
                    f"  (others used {noise[-1]:.0%} of the CPUs)"
                )
        compare_noise = _median(noise)
        llama.close()
        del llama

        chats = []
        for label, task in (("cold", USER_TASK), ("warm", WARM_TASK)):
            wait_for_quiet(args.quiet_wait)
            meter = CpuMeter(lambda: [os.getpid(), *server_pids])
            wall, usage, replies = autogen_chat(endpoint.config_entry(), args.chat_max_tokens, task)
            chats.append((label, wall, usage, replies, meter.others_share()))
    finally:
        shutdown()

    d_prompt, s_prompt = _median([r.prompt_tps for r in direct]), _median([r.prompt_tps for r in server])
    d_gen, s_gen = _median([r.gen_tps for r in direct]), _median([r.gen_tps for r in server])
    # Each pair ran back to back on one prompt, so its ratio is the least noisy comparison;
    # memory-bandwidth neighbours on a shared host move both halves of a pair alike.
    pair_ratios = [s.gen_tps / d.gen_tps for d, s in zip(direct, server, strict=True) if d.gen_tps > 0]
    ratio = _median(pair_ratios)
    print()
    print(f"prompt tokens/s   direct {d_prompt:7.1f}   server {s_prompt:7.1f}   (median of {args.runs})")
    print(
        f"generated tok/s   direct {d_gen:7.2f}   server {s_gen:7.2f}   "
        f"server/direct {ratio:.2f} (median of per-pair ratios {', '.join(f'{r:.2f}' for r in pair_ratios)})"
    )
    print(f"  (other processes used a median {compare_noise:.0%} of the CPUs during these runs)")
    for label, wall, usage, replies, noise in chats:
        print(
            f"AutoGen two-agent chat ({label} prompt cache), {replies} model replies "
            f"(max {args.chat_max_tokens} tokens each): {wall:.1f} s wall; "
            f"{usage.get('prompt_tokens', 0)} prompt + {usage.get('completion_tokens', 0)} completion tokens"
            f"  (other processes used {noise:.0%} of the CPUs)"
        )
    print()
    ratio_ok = ratio >= SERVER_RATIO_GOAL
    for label, wall, *_ in chats:
        verdict = "MET" if wall < CHAT_GOAL_S else "NOT MET"
        print(f"goal: {label} chat under {CHAT_GOAL_S:.0f} s on {threads} cores ..... {verdict}")
    print(f"goal: server tokens/s within 10% of direct ... {'MET' if ratio_ok else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
