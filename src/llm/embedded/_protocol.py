"""What the model server and its parent agree on: routes, headers, files, and process identity.

The one module of the server's that the parent (``server.py``, ``status.py``) imports: the rest
of the server (``_http``, ``_models``, ``_llama``, ``_queue``, ``_loading``) runs only in the
server process, so the parent never loads FastAPI or llama.cpp code it has no use for.  Pure
standard library, like every module the server process loads: it cannot import autobots.
"""

from __future__ import annotations

import contextlib
import json
import os
import urllib.request
from pathlib import Path
from typing import Any

HEALTH_PATH = "/autobots/health"
# Where a client asks how long its tagged requests will wait (the queue and loading state;
# only about that tag, plus counts): see ``_queue.QueueTracker.report``.
QUEUE_PATH = "/autobots/queue"
# A client may tag its requests (``TAG_HEADER: <tag>``) and stop all of them at once with
# ``POST CANCEL_PATH/<tag>``: autobots tags each run's calls with the run's id, so cancelling a
# run frees the model at once instead of after its pending reply is generated for nobody.
TAG_HEADER = "X-Autobots-Run"
CANCEL_PATH = "/autobots/cancel"

# Files in the server directory.  ``port.json`` is written once the server listens, with
# ``loaded: false`` while it loads its first model and ``loaded: true`` once it has; ``timings.json``
# keeps measured load and start-up times (what the next wait estimate is based on);
# ``starting.json`` says a process is starting the server (preparing weights, spawning it).
PORT_FILE = "port.json"
TIMINGS_FILE = "timings.json"
STARTING_FILE = "starting.json"


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), or None if it is gone.

    Pairing pid with start time makes liveness checks immune to pid reuse: a recycled pid
    has a different start time.  Off Linux (no /proc) it degrades to a plain existence check.
    """
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return "unknown"
        return "unknown"
    fields = raw[raw.rfind(")") + 2 :].split()
    # Field 22 of /proc/PID/stat is starttime; fields[0] here is field 3 (state).
    # A zombie has exited: it only waits for its parent to reap it.
    if fields[0] == "Z":
        return None
    return fields[19]


def client_file_name(pid: int) -> str | None:
    """The name a client registers under: ``<pid>-<starttime>``, None if ``pid`` is not alive."""
    start = process_start_time(pid)
    return None if start is None else f"{pid}-{start}"


def client_alive(name: str) -> bool:
    """Whether the process that registered ``name`` is the same process and still running."""
    pid_text, _, start = name.partition("-")
    if not pid_text.isdigit():
        return False
    current = process_start_time(int(pid_text))
    return current is not None and (current == start or "unknown" in (current, start))


def live_clients(clients_dir: Path, prune: bool) -> list[str]:
    """Registered clients still alive; with ``prune``, files of dead clients are removed."""
    alive: list[str] = []
    try:
        entries = list(clients_dir.iterdir())
    except FileNotFoundError:
        return alive
    for entry in entries:
        if client_alive(entry.name):
            alive.append(entry.name)
        elif prune:
            entry.unlink(missing_ok=True)
    return alive


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` so readers see the old or the new content, never a torn file (mode 0600)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object file, or None if it is missing, torn or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def record_timing(path: Path, model: str, key: str, seconds: float) -> None:
    """Keep a measured duration (``load_s``, ``startup_s``) of ``model`` in the timings file.

    Read-modify-write without a lock: the server writes ``load_s``, the process that started it
    ``startup_s`` after it is ready, so they do not overlap; a lost update costs one estimate.
    """
    timings = read_json(path) or {}
    entry = timings.get(model)
    entry = dict(entry) if isinstance(entry, dict) else {}
    entry[key] = round(float(seconds), 3)
    timings[model] = entry
    # A read-only or vanished directory: the next estimate is a guess, nothing worse.
    with contextlib.suppress(OSError):
        write_json_atomic(path, timings)


def measured(path: Path, model: str, key: str) -> float | None:
    """A duration kept by ``record_timing``, or None if never measured."""
    entry = (read_json(path) or {}).get(model)
    value = entry.get(key) if isinstance(entry, dict) else None
    return float(value) if isinstance(value, int | float) and value >= 0 else None


def http_json(url: str, timeout: float, payload: dict[str, Any] | None = None, token: str = "") -> Any:
    """GET (or POST ``payload``) a JSON route of the server on loopback, never through a proxy:
    an HTTP(S)_PROXY in the environment must not reroute 127.0.0.1."""
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, method="GET" if data is None else "POST")
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=timeout) as response:
        return json.loads(response.read().decode())
