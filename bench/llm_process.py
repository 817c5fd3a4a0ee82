"""The scripted OpenAI-compatible server (tests/support/scripted_llm.py) in a process of its own.

A benchmark that runs it in its own threads makes its clients and the LLM share one interpreter
lock: under a hundred client threads, an answer due after 500 ms leaves late, and the time is
charged to whatever is measured. In a forked child it takes none of the benchmark's CPU, and the
benchmark reads how many calls it served from a shared counter.

    llm = LLMProcess(responder, latency=0.5)   # fork before the benchmark starts any thread
    ... llm.base_url, llm.served.value, llm.pid ...
    llm.stop()
"""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.scripted_llm import ScriptedLLM

Responder = Callable[[dict[str, Any]], str]


def _serve(conn: Connection, served: Synchronized, responder: Responder, latency: float) -> None:
    def respond(body: dict[str, Any]) -> str:
        with served.get_lock():
            served.value += 1
        return responder(body)

    llm = ScriptedLLM(latency=latency, responder=respond).start()
    conn.send(llm.base_url)
    conn.recv()  # until told to stop
    llm.stop()


class LLMProcess:
    def __init__(self, responder: Responder, latency: float = 0.0) -> None:
        ctx = multiprocessing.get_context("fork")  # the responder goes across as it is, unpickled
        self.served: Synchronized = ctx.Value("i", 0)
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, self.served, responder, latency), daemon=True)
        self._proc.start()
        self.base_url: str = self._conn.recv()

    @property
    def pid(self) -> int:
        return int(self._proc.pid or 0)

    def reset(self) -> None:
        with self.served.get_lock():
            self.served.value = 0

    def stop(self) -> None:
        self._conn.send("stop")
        self._proc.join(5)
