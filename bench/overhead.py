"""How much the server adds to a run: plain AutoGen in-process vs the same workflow over HTTP.

Two workloads, each against the scripted OpenAI-compatible server at 0 ms latency (in a process
of its own, so that no process measured here pays for it), so that what is measured is the
framework's and the server's own time:
- chat: a user proxy asks, the assistant answers with TERMINATE (one LLM call);
- group chat: two assistants in a round-robin group chat, five rounds (four LLM calls).

Plain AutoGen is timed at its best: one shared HTTP client, nothing printed (and once, for the
chat, as its users usually write it: each run's agents build their own OpenAI client). Runs are
paired: AutoGen, then the server, then AutoGen ..., so that the load of a shared machine falls on
both alike; the figures are medians.

CPU: AutoGen's is `time.process_time()` around each run in this process; the server's is what
`/proc/<pid>/stat` counts for its processes (gunicorn's master and worker) around each request,
summed, so it includes everything the server does for the run (its HTTP front, its threads).

Goals: the server over HTTP within 1.25x of AutoGen at its best, for both workloads; the server's
CPU per LLM call at most 1.5x AutoGen's own CPU per call.

`--profile` samples the server's worker with py-spy (the thread holding the GIL, i.e. Python's
CPU, across every thread) while it serves each workload, and prints where a run's CPU goes by
component, scaled to the CPU a run costs unprofiled.

    python bench/overhead.py [-n 50] [--profile] [--rate 250]
"""

from __future__ import annotations

import argparse
import linecache
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from autogen import AssistantAgent, GroupChat, GroupChatManager, UserProxyAgent  # noqa: E402
from autogen.io.base import IOStream  # noqa: E402
from concurrency import cpu_seconds  # noqa: E402  (server CPU from /proc: master and worker)
from llm_process import LLMProcess  # noqa: E402

from tests.support import workflows as wf  # noqa: E402
from tests.support.server import RunningServer, start_server  # noqa: E402

KEY = "sk-bench"
CHAT_SYSTEM = "You are primary_assistant."
GROUP_ROUNDS = 5  # the proxy's message, then alice, bob, alice, bob: four LLM calls


class SharedClient(httpx.Client):
    """AutoGen deep-copies llm_config; a shared client must survive that as itself."""

    def __deepcopy__(self, memo: dict) -> SharedClient:
        return self


class Quiet:
    """AutoGen's IOStream, printing nothing (as the server's runs do)."""

    def print(self, *objects: Any, sep: str = " ", end: str = "\n", flush: bool = False) -> None:
        return None

    def send(self, message: Any) -> None:
        return None

    def input(self, prompt: str = "", *, password: bool = False) -> str:
        return ""


def ends_with_terminate(message: dict[str, Any]) -> bool:
    # The same rule the server applies: a reply ending in TERMINATE ends the chat.
    return str(message.get("content") or "").rstrip().endswith("TERMINATE")


def llm_config(base_url: str, http_client: httpx.Client | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"model": "gpt-4o-mini", "api_key": KEY, "base_url": base_url}
    if http_client is not None:
        entry["http_client"] = http_client
    return {"config_list": [entry], "temperature": 0, "cache_seed": None}


def proxy(max_auto: int) -> UserProxyAgent:
    return UserProxyAgent(
        "userproxy",
        human_input_mode="NEVER",
        max_consecutive_auto_reply=max_auto,
        code_execution_config=False,
        llm_config=False,
        is_termination_msg=ends_with_terminate,
    )


def autogen_chat(base_url: str, http_client: httpx.Client | None) -> None:
    assistant = AssistantAgent(
        "primary_assistant", llm_config=llm_config(base_url, http_client), system_message=CHAT_SYSTEM
    )
    with IOStream.set_default(Quiet()):
        proxy(5).initiate_chat(assistant, message="What is 2+2?", silent=True)


def autogen_group(base_url: str, http_client: httpx.Client | None) -> None:
    config = llm_config(base_url, http_client)
    members = [AssistantAgent(n, llm_config=config, system_message=f"You are {n}.") for n in ("alice", "bob")]
    chat = GroupChat(
        agents=members,
        messages=[],
        max_round=GROUP_ROUNDS,
        speaker_selection_method="round_robin",
        allow_repeat_speaker=False,
    )
    manager = GroupChatManager(groupchat=chat, llm_config=config, is_termination_msg=ends_with_terminate)
    with IOStream.set_default(Quiet()):
        proxy(0).initiate_chat(manager, message="What is 2+2?", silent=True)


@dataclass
class Workload:
    name: str
    calls: int
    flow: dict[str, Any]
    autogen: Callable[[str, httpx.Client | None], None]


WORKLOADS = [
    Workload("chat (1 LLM call)", 1, wf.autonomous(wf.assistant()), autogen_chat),
    Workload(
        "group chat (4 LLM calls)",
        4,
        wf.groupchat(
            wf.assistant("alice"), wf.assistant("bob"), method="round_robin", max_round=GROUP_ROUNDS
        ),
        autogen_group,
    ),
]


# the scripted LLM, in a process of its own ------------------------------------------------------


def scripted_answer(body: dict[str, Any]) -> str:
    messages = body.get("messages") or [{}]
    return "4 TERMINATE" if messages[0].get("content") == CHAT_SYSTEM else "Noted."


# measuring -------------------------------------------------------------------------------------


def worker_pid(server: RunningServer) -> int:
    pid = server.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return int(children[0]) if children else pid


@dataclass
class Figures:
    ms: list[float] = field(default_factory=list)
    cpu_s: float = 0.0
    runs: int = 0

    def add(self, ms: float, cpu_s: float) -> None:
        self.ms.append(ms)
        self.cpu_s += cpu_s
        self.runs += 1

    @property
    def median(self) -> float:
        return statistics.median(self.ms)

    def cpu_ms_per_run(self) -> float:
        return self.cpu_s / max(1, self.runs) * 1000


def post(server: RunningServer, workload: Workload, calls: int) -> None:
    body = {"message": wf.message("bench@example.com", "What is 2+2?"), "flow_config": workload.flow}
    r = server.post("/api/messages", body)
    assert r.status_code == 200, r.text
    made = r.json()["data"]["metadata"]["usage"]["llm_calls"]
    assert made == calls, f"{workload.name}: the server made {made} LLM calls, not {calls}"


def paired(server: RunningServer, llm: LLMProcess, workload: Workload, n: int) -> tuple[Figures, Figures]:
    """n AutoGen runs (shared client) and n server runs, alternating."""
    shared = SharedClient()
    pid = server.process.pid
    best, served = Figures(), Figures()
    for _ in range(3):  # warm both up: imports, first connections, SQLite pages
        workload.autogen(llm.base_url, shared)
        post(server, workload, workload.calls)
    for _ in range(n):
        before = llm.served.value
        c0, t0 = time.process_time(), time.perf_counter()
        workload.autogen(llm.base_url, shared)
        best.add((time.perf_counter() - t0) * 1000, time.process_time() - c0)
        assert llm.served.value - before == workload.calls, f"AutoGen made {llm.served.value - before} calls"
        c0, t0 = cpu_seconds(pid), time.perf_counter()
        post(server, workload, workload.calls)
        served.add((time.perf_counter() - t0) * 1000, cpu_seconds(pid) - c0)
    return best, served


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def report(workload: Workload, best: Figures, served: Figures, usual: Figures | None) -> None:
    print(f"\n{workload.name}: {best.runs} runs each, paired")
    if usual is not None:
        print(
            f"plain autogen, own client per run: median {usual.median:7.1f} ms/run  mean {statistics.mean(usual.ms):7.1f}"
        )
    print(
        f"plain autogen, one shared client:  median {best.median:7.1f} ms/run  mean {statistics.mean(best.ms):7.1f}"
    )
    label = "autobots over HTTP:" if workload.calls == 1 else "autobots over HTTP (group chat):"
    print(f"{label:<35}median {served.median:7.1f} ms/run  mean {statistics.mean(served.ms):7.1f}")
    if usual is not None:
        print(f"ratio to the usual plain autogen: {served.median / usual.median:.2f}x")
    ratio = served.median / best.median
    print(f"ratio to the best plain autogen:  {ratio:.2f}x  (goal <= 1.25x: {verdict(ratio <= 1.25)})")
    mine = best.cpu_ms_per_run() / workload.calls
    theirs = served.cpu_ms_per_run() / workload.calls
    print(
        f"CPU per LLM call: autogen {mine:.2f} ms (process_time), server {theirs:.2f} ms (/proc, all its "
        f"processes) = {theirs / mine:.2f}x  (goal <= 1.5x: {verdict(theirs <= 1.5 * mine)})"
    )


# profiling -------------------------------------------------------------------------------------

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")
# py-spy --gil reports the thread that last held the GIL, also while it waits with the GIL
# released and no other thread runs: a sample whose innermost line is such a wait is idle time.
_WAIT = re.compile(
    r"\.(wait|acquire|poll|select|recv|recv_into|readinto|sleep|join|_wait_for_tstate_lock)\(|"
    r"\.get\(block=True|^\s*with [\w.]*(lock|_cond|changed|mutex)\w*\s*:"
)
_STDLIB = os.path.dirname(os.__file__)
SRC = str(ROOT / "src") + "/"

# (component, where its code lives): the first frame from the leaf up that is not the standard
# library decides (pydantic is named apart only when our own code called it).
COMPONENTS: list[tuple[str, tuple[str, ...]]] = [
    ("storage (SQLAlchemy, SQLite)", ("sqlalchemy/", "sqlite3/", SRC + "storage/")),
    (
        "events (emit, writer, live feeds)",
        (SRC + "services/event_writer.py", SRC + "services/live.py", SRC + "services/backends/"),
    ),
    ("openai SDK", ("openai/",)),
    ("LLM HTTP client (httpx, httpcore)", ("httpx/", "httpcore/", "h11/", "anyio/")),
    ("AutoGen OpenAIWrapper, LLMConfig", ("autogen/oai/", "autogen/llm_config/")),
    ("AutoGen agents and chats", ("autogen/",)),
    (
        "HTTP front (gunicorn, asyncio, a2wsgi, Flask)",
        ("gunicorn/", "a2wsgi/", "flask", "werkzeug/", "limits/", SRC + "web/", "asyncio/", "selectors"),
    ),
    ("our run bookkeeping (services, agents, usage)", (SRC,)),
]
PYDANTIC = "pydantic (our schemas: validation, dumps)"
OTHER = "other (threads, interpreter, GC)"
# Paths through the run (inclusive: a sample counts in each that is on its stack).
PATHS: list[tuple[str, str]] = [
    ("agents built (AgentFactory: AutoGen constructors, clients)", "AgentFactory."),
    ("  of which OpenAIWrapper.__init__", "OpenAIWrapper.__init__"),
    ("  of which inspect.getfullargspec (AutoGen's per-key check)", "getfullargspec"),
    ("AutoGen's calls (OpenAIWrapper.create)", "OpenAIWrapper.create"),
    ("  of which the SDK's request transform", "_transform_recursive"),
    ("the run's chats (ChatService.execute)", "ChatService.execute"),
    ("prepare (checks, question + run stored)", "ChatService.prepare"),
    ("finish (answer stored)", "ChatService.finish"),
    ("event writer thread", "EventWriter._loop"),
]


def classify(frames: list[tuple[str, str]]) -> str:
    pydantic_seen = False
    for _func, path in reversed(frames):
        if "pydantic" in path:
            pydantic_seen = True
            continue
        if path.startswith(_STDLIB) and "/asyncio/" not in path and "selectors" not in path:
            continue
        if "site-packages/" not in path and not path.startswith(SRC) and not path.startswith(_STDLIB):
            continue  # <frozen ...> and the like
        for name, where in COMPONENTS:
            if any(w in path for w in where):
                if pydantic_seen and name.startswith("our run"):
                    return PYDANTIC
                return name
    return PYDANTIC if pydantic_seen else OTHER


def idle(func: str, path: str, line: str | None) -> bool:
    text = linecache.getline(path, int(line)) if line else ""
    return bool(_WAIT.search(text))


def parse_raw(path: Path) -> tuple[Counter[str], Counter[str], int]:
    """py-spy's raw output (one stack per line, then its count) -> samples by component and path;
    idle samples (the innermost line waits) are left out."""
    by_component: Counter[str] = Counter()
    by_path: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        if not stack.strip():  # --nonblocking: a sample taken as no thread held the GIL
            continue
        frames, leaf = [], None
        for text in stack.split(";"):
            leaf = _FRAME.match(text)
            frames.append((leaf["func"], leaf["file"]) if leaf else (text, ""))
        if leaf is not None and idle(leaf["func"], leaf["file"], leaf["line"]):
            continue
        total += count
        by_component[classify(frames)] += count
        for name, needle in PATHS:
            if any(func.startswith(needle) or func == needle for func, _ in frames):
                by_path[name] += count
    return by_component, by_path, total


def profile(server: RunningServer, workload: Workload, n: int, rate: int) -> None:
    spy = shutil.which("py-spy", path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    if spy is None:
        print("--profile needs py-spy (pip install -r requirements-dev.txt)")
        return
    pid = server.process.pid
    c0 = cpu_seconds(pid)
    for _ in range(n):
        post(server, workload, workload.calls)
    cpu_ms = (cpu_seconds(pid) - c0) / n * 1000
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.txt"
        cmd = [spy, "record", "--pid", str(worker_pid(server)), "--gil", "--rate", str(rate)]
        proc = subprocess.Popen(
            [*cmd, "--full-filenames", "--format", "raw", "-o", str(raw)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(1.0)  # attached
        for _ in range(n):
            post(server, workload, workload.calls)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        if not raw.exists():
            print(f"py-spy recorded nothing: {err.decode(errors='replace')[-300:]}")
            return
        by_component, by_path, total = parse_raw(raw)
    print(
        f"\nwhere the server's CPU goes, {workload.name}: {n} runs sampled by py-spy --gil at {rate} Hz "
        f"({total} samples); unprofiled the server used {cpu_ms:.1f} ms of CPU a run"
    )
    print(f"  {'component (exclusive)':<52}{'share':>7}{'ms/run':>9}")
    for name, count in by_component.most_common():
        print(f"  {name:<52}{count / total * 100:6.1f}%{count / total * cpu_ms:9.2f}")
    print(f"  {'path through the run (inclusive)':<52}{'share':>7}{'ms/run':>9}")
    for name, _ in PATHS:
        count = by_path.get(name, 0)
        print(f"  {name:<52}{count / total * 100:6.1f}%{count / total * cpu_ms:9.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=50, help="runs of each, per workload")
    parser.add_argument("--profile", action="store_true", help="where the server's CPU goes (py-spy)")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples a second (--profile)")
    args = parser.parse_args()
    llm = LLMProcess(scripted_answer)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            server = start_server(Path(tmp), env={"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": llm.base_url})
            try:
                print(
                    f"scripted LLM at 0 ms latency; load before: {Path('/proc/loadavg').read_text().split()[:3]}"
                )
                for workload in WORKLOADS:
                    if args.profile:
                        profile(server, workload, args.n, args.rate)
                        continue
                    usual = None
                    if workload.calls == 1:
                        usual = Figures()
                        for _ in range(max(5, args.n // 4)):
                            t0 = time.perf_counter()
                            workload.autogen(llm.base_url, None)
                            usual.add((time.perf_counter() - t0) * 1000, 0.0)
                    best, served = paired(server, llm, workload, args.n)
                    report(workload, best, served, usual)
            finally:
                server.stop()
    finally:
        llm.stop()


if __name__ == "__main__":
    main()
