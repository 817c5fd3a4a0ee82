"""While the embedded model server starts, a caller is told "loading" and about how long.

The real managed llama.cpp server on SmolLM2-135M: ``model_wait`` is asked over and over while
``embedded_endpoint`` starts a server in a fresh directory (preparing, spawning, loading), and
the start's measured times are what the next start is expected to take.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from autobots.llm.embedded import EmbeddedSettings, embedded_endpoint, model_wait, shutdown
from autobots.llm.embedded.registry import SMOLLM2_135M

SMALL = SMOLLM2_135M.alias


def _settings(cache_dir: Path, server_dir: Path) -> EmbeddedSettings:
    return EmbeddedSettings(
        default_model=SMALL, models=[SMALL], cache_dir=str(cache_dir), server_dir=str(server_dir)
    )


def test_loading_is_reported_while_the_server_starts_and_then_measured(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    server_dir = tmp_path / "server"
    settings = _settings(cache, server_dir)
    assert model_wait(settings, "run-1") is None  # no server here, none starting

    def watch(seen: list[dict[str, Any]], stop: threading.Event) -> None:
        while not stop.is_set():
            report = model_wait(settings, "run-1")
            if report is not None:
                seen.append(report)
            time.sleep(0.02)

    def start_watched() -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        stop = threading.Event()
        watcher = threading.Thread(target=watch, args=(seen, stop))
        watcher.start()
        try:
            embedded_endpoint(SMALL, settings)
        finally:
            stop.set()
            watcher.join(10)
        return seen

    try:
        seen = start_watched()
        loading = [r for r in seen if r["state"] == "loading"]
        assert loading, [r["state"] for r in seen]
        assert all(r["estimate_s"] > 0 and r["loading"]["model"] == SMALL for r in loading)
        timings = json.loads((server_dir / "timings.json").read_text())[SMALL]
        assert timings["load_s"] > 0 and timings["startup_s"] >= timings["load_s"]
        assert not (server_dir / "starting.json").exists()
        ready = model_wait(settings, "run-1")
        assert ready is not None and ready["state"] == "idle" and ready["loading"] is None
    finally:
        shutdown()

    # The next start is expected to take what this one took.
    try:
        seen = start_watched()
        expected = [r["loading"]["expected_s"] for r in seen if r["state"] == "loading"]
        assert expected, [r["state"] for r in seen]
        measured = round(timings["startup_s"], 1), round(timings["load_s"], 1)
        assert all(e in measured for e in expected), (expected, measured)
    finally:
        shutdown()
