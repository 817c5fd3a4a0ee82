"""The models the server holds: every configured one stays resident once loaded (lazily).

Runs in the server process (no autobots imports).  Loads are timed (``_loading``), so a request
waiting behind one is told how long it has left.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._llama import make_llama_class
from ._loading import LoadTracker


class ResidentModels:
    """Stand-in for llama_cpp.server's ``LlamaProxy``: every configured model stays loaded.

    It is only ever called under llama_cpp.server's request lock, so loads never race with
    generation; a load lock serialises the startup preload with requests, and a short lock
    covers the table of loaded models, which health reads take.
    """

    def __init__(self, models: list[dict[str, Any]], threads: Any, loads: LoadTracker) -> None:
        self._threads = threads  # the _threads module
        self._specs = {m["alias"]: m for m in models}
        self._default = models[0]["alias"]
        self._loaded: dict[str, Any] = {}
        self._chat_formats: dict[str, str] = {}
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()
        self._llama_class = make_llama_class()
        self.loads = loads

    def __call__(self, model: str | None = None) -> Any:
        return self.load(self.check(model))

    def check(self, model: str | None) -> str:
        """The alias to use for ``model``; an unknown name is a 404, never a substitute."""
        from fastapi import HTTPException

        alias = model or self._default
        if alias not in self._specs:
            raise HTTPException(
                status_code=404,
                detail=f"Model {alias!r} is not served here; served models: {', '.join(self._specs)}",
            )
        if alias not in self._loaded:
            self._check_prepared(self._specs[alias])
        return alias

    @staticmethod
    def _check_prepared(spec: dict[str, Any]) -> None:
        """503 unless the model's file is in place: the parent prepares (assembles, verifies)
        a model's weights when it is first asked for it, so an offered model nobody asked for
        through autobots yet has no file, or only a partial one, to load."""
        from fastapi import HTTPException

        try:
            size = Path(spec["path"]).stat().st_size
        except OSError:
            size = -1
        if size != spec["size"]:
            raise HTTPException(
                status_code=503,
                detail=f"Model {spec['alias']!r} is offered but its weights are not prepared yet; "
                "ask for it through autobots, which assembles and verifies them first",
            )

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._specs))

    def load(self, alias: str) -> Any:
        # Loads one at a time, outside the lock that health reads take: the health and queue
        # routes answer while a model loads (the first one, at start, takes seconds to minutes).
        with self._load_lock:
            with self._lock:
                llama = self._loaded.get(alias)
            if llama is None:
                with self.loads.loading(alias):
                    llama = self._load(self._specs[alias])
                with self._lock:
                    self._loaded[alias] = llama
                    self._chat_formats[alias] = str(llama.chat_format)
            return llama

    def _load(self, spec: dict[str, Any]) -> Any:
        import llama_cpp

        self._check_prepared(spec)
        llama = self._llama_class(
            model_path=spec["path"],
            n_ctx=spec["n_ctx"],
            n_batch=spec["n_batch"],
            n_ubatch=spec["n_batch"],
            n_threads=spec["n_threads"],
            n_threads_batch=spec["n_threads"],
            # The server default logits_all=True keeps logits for every prompt token:
            # n_ctx x vocab floats (5 GB for Qwen at 8k) and slower prompt processing,
            # only to serve logprobs, which AutoGen never asks for.
            logits_all=False,
            use_mlock=False,
            verbose=False,
        )
        if llama.chat_format == "llama-2":
            # llama.cpp falls back to llama-2 prompts when the GGUF has no chat template;
            # answering in the wrong format would look like a model that cannot follow chat.
            raise RuntimeError(f"{spec['path']} has no chat template in its GGUF metadata")
        if spec["cache_bytes"] > 0:
            llama.set_cache(llama_cpp.LlamaRAMCache(capacity_bytes=spec["cache_bytes"]))
        llama.governor = self._threads.ThreadGovernor(spec["thread_policy"], spec["n_threads"])
        return llama

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {
                "models": list(self._specs),
                "loaded": dict(self._chat_formats),
                "stats": {alias: dict(llama.stats) for alias, llama in self._loaded.items()},
                "threads": {alias: llama.governor.status(llama.ctx) for alias, llama in self._loaded.items()},
            }

    def close(self) -> None:
        with self._lock:
            for llama in self._loaded.values():
                with contextlib.suppress(Exception):
                    llama.close()
            self._loaded.clear()
