"""Benchmark of the embedded default model: load, prompt/generation speed, an AutoGen chat.

Run:  python bench/llm.py [--model embedded:qwen2.5-coder-1.5b] [--runs 3]
      python bench/llm.py --contended [--thread-policy adaptive|spin|sleep] [--runs 3]

What it measures, and why this way:

* **Load time**: verifying the weights (a stamp check once assembled), loading the GGUF
  directly with ``llama_cpp.Llama``, and starting the managed server until it answers
  (process start + imports + model load), the cost the first embedded request pays.
* **Server vs direct**: the same prompts, ``max_tokens`` and greedy sampling through the
  managed server (OpenAI SDK, streaming) and through the stock ``llama_cpp.Llama`` in this
  process on the same file with the same context/batch/thread settings, so the comparison
  includes everything the server adds (its ``Llama`` subclass, HTTP, SSE, the SDK).  Runs
  alternate direct/server (never concurrently) so background noise hits both alike; each
  pair has its own prompt prefix so no prompt cache helps either side, and the verdicts use
  the median of the per-pair ratios, over the pairs during which other processes used under
  10% of the CPUs when there are at least 3 such pairs (a busy neighbour can swing one pair
  by 2-3x either way).  Prompt speed is prompt tokens / time to first token;
  generation speed is tokens after the first / time from first to last token.  The stock
  class reports no usage when streaming: both sides of a pair read the same prompt (same
  messages, template and tokenizer), so the direct side takes the server's prompt count,
  and its completion count too when the two greedy replies are identical (otherwise its
  reply is re-tokenized, and the bench says so).
* **AutoGen chat**: an AssistantAgent (AutoGen's default ~500-token system prompt) and a
  UserProxyAgent reviewer, three model replies (assistant, reviewer, assistant), through
  ``config_entry()`` exactly as the web layer uses it.  Run twice: "cold" is the first
  chat with these agents on a fresh server, "warm" a second chat with another task, whose
  system prompts the server's prompt cache already holds (the steady state of a running
  autobots server, where agents' system prompts repeat across chats).
* **Contended** (``--contended``, instead of the above): generated tokens/s through the
  managed server (streaming, as above) first on the idle machine, then with one busy
  process per core beside it (``python -c "while True: pass"``, started by the bench and
  always killed at the end), against the goal: contended at least 80% of the fair share
  (cores / (cores + busy processes)) of the idle figure.  Medians of ``--runs`` runs each,
  after one warm-up; the server's thread report (``/autobots/health``) is printed after each.
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
QUIET_SHARE = 0.10  # a pair is judged only if other processes used less of the CPUs than this
MIN_QUIET_PAIRS = 3
GOALS = (
    f"goals: a 3-turn two-agent AutoGen chat under {CHAT_GOAL_S:.0f} s on 2 cores; the managed server "
    f"within {1 - SERVER_RATIO_GOAL:.0%} of direct llama_cpp.Llama for prompt and generated tokens/s"
)
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
    text: str

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


def _timed_stream(chunks: Iterator[Any], content_of: Callable[[Any], str | None]) -> tuple[float, float, str]:
    """(time to first content, time from first to last content, the text) consuming ``chunks``."""
    start = time.perf_counter()
    first = last = None
    parts: list[str] = []
    for chunk in chunks:
        content = content_of(chunk)
        if content:
            last = time.perf_counter()
            first = first or last
            parts.append(content)
    if first is None or last is None:
        raise RuntimeError("the model produced no content")
    return first - start, last - first, "".join(parts)


def run_direct(llama: Any, messages: list[dict[str, str]], max_tokens: int) -> tuple[float, float, str]:
    """Timings and text of one streamed completion by the stock ``Llama`` (which streams no usage)."""

    def content(chunk: dict[str, Any]) -> str | None:
        choices = chunk.get("choices") or []
        return choices[0]["delta"].get("content") if choices else None

    stream = llama.create_chat_completion(
        messages=messages, max_tokens=max_tokens, temperature=0, stream=True, **server_sampling()
    )
    return _timed_stream(stream, content)


def server_sampling() -> dict[str, Any]:
    """The sampling defaults the server applies to an OpenAI request that leaves them out.

    They differ from ``Llama.create_chat_completion``'s own (repeat_penalty 1.1 vs 1.0), and a
    penalty changes even greedy output; both sides must sample alike to write the same reply.
    """
    from llama_cpp.server.types import CreateChatCompletionRequest

    fields = ("top_p", "top_k", "min_p", "repeat_penalty", "presence_penalty", "frequency_penalty")
    return {name: CreateChatCompletionRequest.model_fields[name].default for name in fields}


def direct_run(llama: Any, timing: tuple[float, float, str], server: Run) -> tuple[Run, bool]:
    """The direct side's figures, counted against its pair's server run (same prompt).

    Returns the run and whether both sides wrote the same reply (then the counts are exact).
    """
    ttft, gen, text = timing
    if text == server.text:
        return Run(server.prompt_tokens, server.completion_tokens, ttft, gen, text), True
    completion = len(llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))
    return Run(server.prompt_tokens, completion, ttft, gen, text), False


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
    ttft, gen, text = _timed_stream(stream, content)
    return Run(usage[-1].prompt_tokens, usage[-1].completion_tokens, ttft, gen, text)


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


CONTENDED_GOAL = 0.80  # of the fair share of the idle figure


def _thread_report(endpoint: Any, model: str) -> str:
    import urllib.request

    root = endpoint.base_url.rstrip("/").removesuffix("/v1")
    with urllib.request.urlopen(f"{root}/autobots/health", timeout=10) as response:
        health = json.loads(response.read())
    return json.dumps(health.get("threads", {}).get(model))


def contended(args: argparse.Namespace) -> int:
    """Idle vs contended generated tokens/s through the managed server (see the module doc)."""
    import subprocess

    import autogen
    import openai

    from autobots.llm.embedded import EmbeddedSettings, embedded_endpoint, shutdown

    model = args.model or EmbeddedSettings().default_model
    overrides: dict[str, Any] = {} if args.thread_policy is None else {"thread_policy": args.thread_policy}
    settings = EmbeddedSettings(
        default_model=model,
        models=[model],
        n_threads=args.threads,
        server_dir=tempfile.mkdtemp(prefix="autobots-bench-server-"),
        **overrides,
    )
    cores = len(os.sched_getaffinity(0))
    busy_count = cores
    fair = cores / (cores + busy_count)
    print(
        f"goal: with {busy_count} busy processes beside it, generated tokens/s at least "
        f"{CONTENDED_GOAL:.0%} of the fair share ({fair:.2f}) of the idle figure"
    )
    print(
        f"model {model}; thread_policy {settings.thread_policy}; up to {settings.threads()} threads; "
        f"{cores} cores; {args.runs} runs of {args.max_tokens} tokens each side"
    )
    system_prompt = autogen.AssistantAgent.DEFAULT_SYSTEM_MESSAGE
    busy: list[subprocess.Popen[bytes]] = []
    idle: list[Run] = []
    loaded: list[Run] = []
    try:
        endpoint = embedded_endpoint(model, settings)
        client = openai.OpenAI(
            base_url=endpoint.base_url, api_key=endpoint.api_key, max_retries=0, timeout=900
        )
        run_server(client, model, _messages(system_prompt, uuid.uuid4().hex[:12]), 16)  # warm-up
        for i in range(args.runs):
            share = wait_for_quiet(args.quiet_wait)
            idle.append(
                run_server(client, model, _messages(system_prompt, uuid.uuid4().hex[:12]), args.max_tokens)
            )
            print(
                f"  idle run {i + 1}: generated {idle[-1].completion_tokens} tok {idle[-1].gen_tps:6.2f} tok/s, "
                f"prompt {idle[-1].prompt_tps:6.1f} tok/s  (others used {share:.0%} of the CPUs just before)"
            )
        print(f"  threads after the idle runs: {_thread_report(endpoint, model)}")
        wait_for_quiet(args.quiet_wait)
        busy = [
            subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL)
            for _ in range(busy_count)
        ]
        time.sleep(1.0)
        for i in range(args.runs):
            loaded.append(
                run_server(client, model, _messages(system_prompt, uuid.uuid4().hex[:12]), args.max_tokens)
            )
            print(
                f"  contended run {i + 1}: generated {loaded[-1].completion_tokens} tok "
                f"{loaded[-1].gen_tps:6.2f} tok/s, prompt {loaded[-1].prompt_tps:6.1f} tok/s"
            )
        print(f"  threads after the contended runs: {_thread_report(endpoint, model)}")
    finally:
        for process in busy:
            process.kill()
        for process in busy:
            process.wait()
        shutdown()
    idle_tps = _median([r.gen_tps for r in idle])
    loaded_tps = _median([r.gen_tps for r in loaded])
    ratio = loaded_tps / idle_tps if idle_tps > 0 else 0.0
    print()
    print(
        f"generated tok/s idle      {idle_tps:7.2f}   (median; prompt {_median([r.prompt_tps for r in idle]):.1f} tok/s)"
    )
    print(
        f"generated tok/s contended {loaded_tps:7.2f}   (median; prompt {_median([r.prompt_tps for r in loaded]):.1f} tok/s)"
        f"  with {busy_count} busy processes"
    )
    print(f"fair share {fair:.2f} of idle = {fair * idle_tps:.2f} tok/s; contended/idle {ratio:.2f}")
    verdict = "MET" if ratio >= CONTENDED_GOAL * fair else "NOT MET"
    print(
        f"goal: contended >= {CONTENDED_GOAL:.0%} of the fair share "
        f"({ratio / fair:.0%} of it) ............... {verdict}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="embedded model (default: the settings' default)")
    parser.add_argument("--runs", type=int, default=6, help="direct/server pairs to measure")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--chat-max-tokens", type=int, default=160, help="cap per reply in the chat")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--contended",
        action="store_true",
        help="measure generated tokens/s through the server idle and beside one busy process per core",
    )
    parser.add_argument(
        "--thread-policy",
        choices=("adaptive", "spin", "sleep"),
        default=None,
        help="the server's embedded.thread_policy (default: the settings' default)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=120,
        help="seconds to wait before each measurement for other processes to leave the CPUs idle",
    )
    args = parser.parse_args(argv)
    if args.contended:
        return contended(args)

    import autogen
    import llama_cpp
    import openai

    from autobots.llm.embedded import EmbeddedSettings, embedded_endpoint, shutdown
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
    print(GOALS)
    print(f"model {model} ({spec.description}); {threads} threads; n_ctx {settings.n_ctx(model)}")
    system_prompt = autogen.AssistantAgent.DEFAULT_SYSTEM_MESSAGE

    t = time.perf_counter()
    path = prepare_model_file(spec, settings.resolved_cache_dir())
    print(f"weights ready (assemble or stamp check): {time.perf_counter() - t:6.2f} s  {path}")

    server_pids: list[int] = []
    wait_for_quiet(args.quiet_wait)
    meter = CpuMeter(lambda: [os.getpid(), *server_pids])
    t = time.perf_counter()
    llama = llama_cpp.Llama(
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
    pair_noises: list[float] = []
    try:
        for i in range(args.runs):
            nonce = uuid.uuid4().hex[:12]
            messages = _messages(system_prompt, nonce)
            # Alternate which side goes first so drift in background load cancels out.
            order = ("direct", "server") if i % 2 == 0 else ("server", "direct")
            timing: tuple[float, float, str] | None = None
            pair_noise: dict[str, float] = {}
            for side in order:
                wait_for_quiet(args.quiet_wait)
                meter = CpuMeter(lambda: [os.getpid(), *server_pids])
                if side == "direct":
                    timing = run_direct(llama, messages, args.max_tokens)
                else:
                    server.append(run_server(client, model, messages, args.max_tokens))
                pair_noise[side] = meter.others_share()
                noise.append(pair_noise[side])
            assert timing is not None
            pair_noises.append(max(pair_noise.values()))
            run, same = direct_run(llama, timing, server[-1])
            direct.append(run)
            for side, run in (("direct", direct[-1]), ("server", server[-1])):
                print(
                    f"  run {i + 1} {side:6s}: prompt {run.prompt_tokens} tok {run.prompt_tps:6.1f} tok/s, "
                    f"generated {run.completion_tokens} tok {run.gen_tps:6.2f} tok/s"
                    f"  (others used {pair_noise[side]:.0%} of the CPUs)"
                )
            if not same:
                print(
                    f"  run {i + 1}: the two replies differ; direct completion tokens re-counted from its text"
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
    pairs = list(zip(direct, server, strict=True))
    # A pair during which other processes took a real share of the CPUs says more about them
    # than about the server; the verdicts use the quiet pairs when there are enough of them.
    quiet = [i for i, n in enumerate(pair_noises) if n < QUIET_SHARE]
    judged = quiet if len(quiet) >= MIN_QUIET_PAIRS else list(range(len(pairs)))
    pairs = [pairs[i] for i in judged]
    prompt_ratios = [s.prompt_tps / d.prompt_tps for d, s in pairs if d.prompt_tps > 0]
    gen_ratios = [s.gen_tps / d.gen_tps for d, s in pairs if d.gen_tps > 0]
    prompt_ratio, gen_ratio = _median(prompt_ratios), _median(gen_ratios)
    print()
    if judged == quiet:
        left_out = [str(i + 1) for i in range(len(pair_noises)) if i not in quiet]
        print(
            f"verdicts from the {len(quiet)} pairs where other processes used under {QUIET_SHARE:.0%} "
            f"of the CPUs" + (f" (runs {', '.join(left_out)} left out)" if left_out else "")
        )
    else:
        print(f"only {len(quiet)} quiet pairs: verdicts from all {len(judged)} pairs, machine noise included")
    print(
        f"prompt tokens/s   direct {d_prompt:7.1f}   server {s_prompt:7.1f}   "  # medians of all runs
        f"server/direct {prompt_ratio:.2f} (median of per-pair ratios {', '.join(f'{r:.2f}' for r in prompt_ratios)})"
    )
    print(
        f"generated tok/s   direct {d_gen:7.2f}   server {s_gen:7.2f}   "
        f"server/direct {gen_ratio:.2f} (median of per-pair ratios {', '.join(f'{r:.2f}' for r in gen_ratios)})"
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
    print(GOALS)
    for label, wall, *_ in chats:
        verdict = "MET" if wall < CHAT_GOAL_S else "NOT MET"
        print(f"goal: {label} chat under {CHAT_GOAL_S:.0f} s on {threads} cores ............... {verdict}")
    for what, value in (("prompt", prompt_ratio), ("generated", gen_ratio)):
        verdict = "MET" if value >= SERVER_RATIO_GOAL else "NOT MET"
        print(f"goal: server {what} tokens/s within 10% of direct ({value:.2f}) ... {verdict}")
    if threads != 2:
        print(f"  (the chat goal is set for 2 cores; this run used {threads} threads)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
