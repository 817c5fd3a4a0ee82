"""Operator settings for the embedded models (the ``"embedded"`` key of ``web/config.json``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .registry import MODELS, QWEN_CODER_1_5B


class EmbeddedSettings(BaseModel):
    """Every field has a default so an empty ``"embedded": {}`` gives a working offline server.

    Unknown keys are rejected: a misspelt ``"n_thread"`` silently ignored would leave an
    operator wondering why the setting has no effect.
    """

    model_config = ConfigDict(extra="forbid")

    default_model: str = QWEN_CODER_1_5B.alias
    cache_dir: str = "~/.cache/autobots/models"
    # Where the shared server keeps its lock, state and log; processes using the same
    # directory share one server.  Default: "<cache_dir>/server".  Tests and benchmarks
    # point it elsewhere to get a private server while reusing the assembled weights.
    server_dir: str | None = None
    # llama.cpp threads: the most it uses (default: the cores this process may run on).
    n_threads: int | None = Field(default=None, ge=1)
    # How those threads share a busy machine (see _threads.py): "adaptive" runs as many as
    # the cores other processes leave free, re-measured before each token or prompt batch
    # (idle speed when idle, a fair share when not); "spin" always runs n_threads spinning
    # threads (llama.cpp's default: fastest idle, collapses beside busy processes); "sleep"
    # always runs n_threads threads that sleep while waiting (steady, ~30% slower idle).
    thread_policy: Literal["adaptive", "spin", "sleep"] = "adaptive"
    startup_timeout_s: float = Field(default=300, gt=0)
    # Per call to the embedded model, when the agent sets no timeout: calls queue one at a time
    # behind other agents' replies on the CPU, so they get longer than remote endpoints.
    request_timeout_s: float = Field(default=600, gt=0)
    # Which embedded models the managed server offers; None means every known model whose
    # weight packages are installed.  Each is prepared (the default's 1.1 GB assembled and
    # hashed) and loaded only when first asked for, so offering one costs nothing until used.
    models: list[str] | None = None
    # Per-model context window overrides (tokens); the registry's defaults otherwise.
    context_size: dict[str, int] = Field(default_factory=dict)
    # RAM for each model's prompt-prefix cache: saved KV states of earlier prompts, so agents
    # taking turns (each with its own system prompt) resume from their own prefix instead of
    # re-reading the whole history.  0 disables it.
    prompt_cache_mb: int = Field(default=2048, ge=0)
    # Reply length cap for requests that set none (llama.cpp's own default is "until the
    # context is full", minutes of a shared 2-core server for a model that rambles).
    default_max_tokens: int = Field(default=1024, ge=1)
    # Tokens evaluated per batch while reading a prompt.
    n_batch: int = Field(default=512, ge=32)
    # How long the shared server stays up after the last autobots process detaches; 0 stops
    # it at once.  A few minutes suits CLI use where processes come and go.
    linger_s: float = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _check_names(self) -> EmbeddedSettings:
        names = [self.default_model, *(self.models or []), *self.context_size]
        unknown = sorted({n for n in names if n not in MODELS})
        if unknown:
            raise ValueError(f"unknown embedded model(s) {unknown}; known: {list(MODELS)}")
        if self.models is not None and self.default_model not in self.models:
            raise ValueError(f"default_model {self.default_model!r} is not in models {self.models}")
        small = {k: v for k, v in self.context_size.items() if v < 512}
        if small:
            raise ValueError(f"context_size below 512 tokens is unusable for chat: {small}")
        return self

    def resolved_cache_dir(self) -> Path:
        return Path(os.path.expandvars(self.cache_dir)).expanduser().resolve()

    def resolved_server_dir(self) -> Path:
        if self.server_dir is None:
            return self.resolved_cache_dir() / "server"
        return Path(os.path.expandvars(self.server_dir)).expanduser().resolve()

    def threads(self) -> int:
        """Cores this process may run on (cgroup/affinity aware), unless set explicitly."""
        if self.n_threads is not None:
            return self.n_threads
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:
            return max(1, os.cpu_count() or 1)

    def enabled_models(self) -> list[str]:
        return list(self.models) if self.models is not None else list(MODELS)

    def n_ctx(self, alias: str) -> int:
        return self.context_size.get(alias, MODELS[alias].n_ctx)
