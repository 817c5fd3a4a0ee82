"""How long a caller of the embedded model will wait: asked of the server on this machine.

The model server answers one request at a time, and the first request after it starts waits for
the model to load; a run that waits there looks, from outside, like a run doing nothing.  This
module asks the server's queue route (``_queue``) where the requests tagged with a run's id
stand, and, while a process is still starting the server (preparing weights, loading the first
model before the server's port is known), answers from that process's ``starting.json`` and the
start-up time measured last time.  It needs no lock and starts nothing: a question about the wait
must never make anyone wait.

Only this machine's server is asked (the server directory in the settings); a worker on another
machine has its own, and then the answer is None, as it is when no server runs here.
"""

from __future__ import annotations

import time
import urllib.parse
from typing import Any

from ._loading import expected_load_s
from ._protocol import (
    PORT_FILE,
    QUEUE_PATH,
    STARTING_FILE,
    TIMINGS_FILE,
    client_alive,
    http_json,
    read_json,
)
from .registry import MODELS
from .settings import EmbeddedSettings

# Starting the server process (Python, llama.cpp and FastAPI imported) before it loads anything.
PROCESS_START_S = 3.0
QUESTION_TIMEOUT_S = 2.0


def model_wait(settings: EmbeddedSettings, tag: str) -> dict[str, Any] | None:
    """Where the calls tagged ``tag`` stand at this machine's model server, or None if no server
    runs or starts here.

    The answer is the server's (``_queue.QueueTracker.report``): ``state`` (``loading``,
    ``queued``, ``reading``, ``writing``, ``idle``), ``ahead`` (requests before the caller's),
    ``estimate_s`` (seconds until its reply starts), ``loading`` (model, elapsed, expected,
    remaining, progress) and the measured ``speeds``; counts only, never another caller's tag.
    """
    state_dir = settings.resolved_server_dir()
    config = read_json(state_dir / "config.json")
    port_info = read_json(state_dir / PORT_FILE)
    if config and port_info and port_info.get("instance") == config.get("instance"):
        url = f"http://127.0.0.1:{int(port_info['port'])}{QUEUE_PATH}?{urllib.parse.urlencode({'tag': tag})}"
        try:
            report = http_json(url, QUESTION_TIMEOUT_S, token=str(config.get("api_key", "")))
        except (OSError, ValueError, TypeError):
            report = None
        if isinstance(report, dict) and report.get("instance") == config.get("instance"):
            report.pop("instance", None)
            return report
    return _starting(state_dir / STARTING_FILE, state_dir / TIMINGS_FILE)


def _starting(starting_file: Any, timings_file: Any) -> dict[str, Any] | None:
    """A process is preparing the weights or starting the server: loading, with its estimate."""
    starting = read_json(starting_file)
    if not starting or not client_alive(f"{starting.get('pid')}-{starting.get('start')}"):
        return None
    model = str(starting.get("model", ""))
    expected = starting.get("expected_s")
    if not isinstance(expected, int | float):
        spec = MODELS.get(model)
        expected = PROCESS_START_S + expected_load_s(timings_file, model, spec.size if spec else 0)
    elapsed = max(0.0, time.time() - float(starting.get("started_at", time.time())))
    remaining = max(float(expected) - elapsed, min(5.0, 0.2 * float(expected)))
    return {
        "state": "loading",
        "ahead": 0,
        "estimate_s": round(remaining, 1),
        "tokens": 0,
        "loading": {
            "model": model,
            "elapsed_s": round(elapsed, 1),
            "expected_s": round(float(expected), 1),
            "remaining_s": round(remaining, 1),
            "progress": round(min(0.99, elapsed / float(expected)) if expected else 0.99, 2),
        },
        "speeds": None,
    }
