"""Ready-to-use endpoints for embedded models: one managed llama.cpp server per machine.

Design, and why:

* **A local OpenAI-compatible server, not an in-process model client.**  AutoGen then
  talks to the embedded model through exactly the code path it uses for OpenAI (its
  ``OpenAIClient``: streaming, ``usage``, retries, tools), so nothing in the agents or in
  the lead's cost/metadata code needs an embedded special case; the price ``[0, 0]`` in
  the config entry makes the cost 0.  A custom client registered with
  ``register_model_client`` would have to re-implement streaming and usage, and would put
  a 1 GB model and its threads inside every web worker process.
* **One server per machine (per server directory, by default in the cache directory).**  The model costs ~1.5 GB of RAM and
  all cores while generating; several autobots processes each loading it would multiply
  the RAM and fight over 2 cores.  A lock file serialises "check or start", and a state
  file tells later processes where the running server is.  They verify it is alive (pid +
  kernel start time) and is the instance recorded (a random id served on a lock-free health
  route); otherwise it is (re)started.
* **Every installed model is offered from the start, and prepared at first use.**  The
  server's model list is fixed when it starts, and restarting it would kill other
  processes' requests in flight; so it lists every enabled model whose weight packages are
  installed, and a model's weights are assembled and verified (1.1 GB for the default) only
  when somebody first asks for it, by the process asking.  A model installed after the
  server started is added by a restart only when no other process is using the server.
* **Lifetime = its users.**  Each process using the server registers a file named after
  its pid and start time.  ``shutdown()`` (also run at interpreter exit) removes it and
  stops the server when no other live user remains; the server's own watchdog stops it
  when every registered process has died (a SIGKILLed worker leaves no orphan).  With
  ``linger_s > 0`` the server stays warm that long after the last user leaves.
* **Requests are serialised by the server**, one generation at a time, each to completion
  (see ``_server_main``): on 2 cores parallel generations would only be slower, and
  llama.cpp's context is not safe for concurrent use.  Queued requests wait, they are
  never cut short.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from . import _protocol
from ._locks import atomic_write_text, exclusive_lock
from ._protocol import http_json
from .errors import EmbeddedModelError
from .registry import MODELS, get_spec
from .settings import EmbeddedSettings
from .weights import model_file_path, prepare_model_file

log = logging.getLogger(__name__)

_LAUNCHER = Path(__file__).resolve().with_name("_server_main.py")
_STOP_TIMEOUT_S = 15.0
# Environment variables the model server has no use for and should not hold.
_SECRET_MARKERS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "CREDENTIAL")


class EmbeddedEndpoint(BaseModel):
    """Where to reach one embedded model, as an OpenAI-compatible endpoint.

    ``api_key`` is a random per-server token that keeps other local users off the server;
    it grants nothing beyond that server, yet it is kept out of ``repr`` so a logged
    endpoint does not spread it.
    """

    model_config = ConfigDict(frozen=True)

    base_url: str
    model: str
    api_key: str = Field(repr=False)

    def config_entry(self, tag: str | None = None) -> dict[str, Any]:
        """An AutoGen ``config_list`` entry; ``price`` [0, 0] makes AutoGen's cost exactly 0.
        With a ``tag`` (a run's id), every call it makes can be stopped by :meth:`cancel`."""
        entry: dict[str, Any] = {
            "model": self.model,
            "base_url": self.base_url,
            "api_key": self.api_key,
            "price": [0, 0],
        }
        if tag:
            entry["default_headers"] = {_protocol.TAG_HEADER: tag}
        return entry

    def cancel(self, tag: str, timeout: float = 5.0) -> int:
        """Stop the generations of the calls tagged ``tag`` now (running or still queued);
        returns how many there were. Their callers get their answers (or an error) at once."""
        root = self.base_url.removesuffix("/v1")
        url = f"{root}{_protocol.CANCEL_PATH}/{urllib.parse.quote(tag, safe='')}"
        return int(http_json(url, timeout, payload={}, token=self.api_key).get("cancelled", 0))


@dataclass
class _Attachment:
    """This process's view of the server it uses in one state directory."""

    state_dir: Path
    owner_pid: int
    server_pid: int
    server_start: str
    instance: str
    port: int
    api_key: str
    models: list[str]
    # Where the server loads each model from, and the weights cache it was started with:
    # a model is prepared at first use into exactly the file the server will load.
    paths: dict[str, str] = field(default_factory=dict)
    cache_dir: Path | None = None
    loaded: set[str] = field(default_factory=set)
    process: subprocess.Popen[bytes] | None = None

    def endpoint(self, model: str) -> EmbeddedEndpoint:
        return EmbeddedEndpoint(
            base_url=f"http://127.0.0.1:{self.port}/v1", model=model, api_key=self.api_key
        )

    def server_alive(self) -> bool:
        if self.process is not None:
            self.process.poll()  # reap it if it exited, so it does not linger as a zombie
        return _protocol.process_start_time(self.server_pid) == self.server_start


_lock = threading.RLock()
_attachments: dict[Path, _Attachment] = {}
_atexit_registered = False


def _health(port: int, timeout: float = 5.0) -> dict[str, Any] | None:
    try:
        data = http_json(f"http://127.0.0.1:{port}{_protocol.HEALTH_PATH}", timeout)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _read_state(state_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((state_dir / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _register_client(state_dir: Path) -> None:
    name = _protocol.client_file_name(os.getpid())
    if name is None:  # cannot happen for our own pid, but keep the type honest
        raise EmbeddedModelError("cannot determine this process's start time")
    clients = state_dir / "clients"
    clients.mkdir(parents=True, exist_ok=True)
    (clients / name).touch()


def _unregister_client(state_dir: Path) -> None:
    name = _protocol.client_file_name(os.getpid())
    if name is not None:
        (state_dir / "clients" / name).unlink(missing_ok=True)


def _log_tail(path: Path, limit: int = 2000) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return text[-limit:].strip()


def _terminate(pid: int, start: str, process: subprocess.Popen[bytes] | None = None) -> None:
    """Stop a server we know by pid + start time: SIGTERM for a graceful exit, SIGKILL if stuck."""
    if _protocol.process_start_time(pid) != start:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + _STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process is not None:
            process.poll()
        if _protocol.process_start_time(pid) != start:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if process is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)


def _server_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not any(m in k.upper() for m in _SECRET_MARKERS)}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _offered_paths(model: str, settings: EmbeddedSettings, cache_dir: Path) -> dict[str, Path]:
    """The file of every model to offer: ``model`` prepared (verified, assembled) now, the
    other enabled and installed ones only located, to be prepared when first asked for.

    Offering every installed model from the start means a later request for another one
    does not force a restart of a server that other processes may be using; preparing them
    lazily means asking for the 100 MB model never assembles and hashes the 1.1 GB one.
    """
    paths: dict[str, Path] = {model: prepare_model_file(get_spec(model), cache_dir)}
    installed = set(installed_models())
    for alias in settings.enabled_models():
        if alias in paths or alias not in installed:
            continue
        try:
            paths[alias] = model_file_path(get_spec(alias), cache_dir)
        except EmbeddedModelError as exc:
            log.info("Embedded model %s not offered: %s", alias, exc)
    return paths


def _prepare(attachment: _Attachment, model: str, settings: EmbeddedSettings) -> None:
    """Assemble/verify ``model``'s weights into the file the running server will load.

    The weights module's own file lock makes concurrent preparers (other processes asking
    for the same model) build the file once.
    """
    cache_dir = attachment.cache_dir or settings.resolved_cache_dir()
    path = prepare_model_file(get_spec(model), cache_dir)
    expected = attachment.paths.get(model)
    if expected is not None and Path(expected) != path:
        raise EmbeddedModelError(
            f"The running embedded model server loads {model} from {expected}, but its weights "
            f"were prepared at {path}; the installed weight packages changed since it started. "
            "It is replaced once the autobots processes using it stop."
        )


def _check_runtime() -> None:
    """Fail early, with the install command, if llama-cpp-python's server extra is missing."""
    import importlib.util

    for module in ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context"):
        if importlib.util.find_spec(module) is None:
            raise EmbeddedModelError(
                f"The embedded model runtime is not installed (no module {module!r}). "
                "Install it with: pip install 'llama-cpp-python[server]==0.3.36'"
            )


def _start_server(model: str, settings: EmbeddedSettings, state_dir: Path) -> _Attachment:
    """Prepare the weights, start the server and wait until its first model is loaded.

    Meanwhile ``starting.json`` says so (who, since when, what it took last time), and the
    start's length is kept in the timings file: what a run waiting for the model is told
    (``status.py``)."""
    _check_runtime()
    started = time.monotonic()
    starting = state_dir / _protocol.STARTING_FILE
    timings = state_dir / _protocol.TIMINGS_FILE
    _protocol.write_json_atomic(
        starting,
        {
            "pid": os.getpid(),
            "start": _protocol.process_start_time(os.getpid()),
            "model": model,
            "started_at": time.time(),
            "expected_s": _protocol.measured(timings, model, "startup_s"),
        },
    )
    try:
        attachment = _launch(model, settings, state_dir)
    finally:
        starting.unlink(missing_ok=True)
    _protocol.record_timing(timings, model, "startup_s", time.monotonic() - started)
    return attachment


def _launch(model: str, settings: EmbeddedSettings, state_dir: Path) -> _Attachment:
    cache_dir = settings.resolved_cache_dir()
    paths = _offered_paths(model, settings, cache_dir)
    # The requested model first: it is preloaded and is the default for model-less requests.
    order = [model, *(a for a in paths if a != model)]
    instance = secrets.token_hex(16)
    api_key = f"autobots-local-{secrets.token_urlsafe(24)}"
    port_file = state_dir / _protocol.PORT_FILE
    port_file.unlink(missing_ok=True)
    config = {
        "instance": instance,
        "api_key": api_key,
        "clients_dir": str(state_dir / "clients"),
        "port_file": str(port_file),
        "timings_file": str(state_dir / _protocol.TIMINGS_FILE),
        "linger_s": settings.linger_s,
        "default_max_tokens": settings.default_max_tokens,
        "preload": [model],
        "models": [
            {
                "alias": alias,
                "path": str(paths[alias]),
                "size": get_spec(alias).size,
                "n_ctx": settings.n_ctx(alias),
                "n_batch": settings.n_batch,
                "n_threads": settings.threads(),
                "thread_policy": settings.thread_policy,
                "cache_bytes": settings.prompt_cache_mb * 1024 * 1024,
            }
            for alias in order
        ],
    }
    config_path = state_dir / "config.json"
    atomic_write_text(config_path, json.dumps(config, indent=2) + "\n")
    # Registered before the server exists, so its watchdog never sees an empty client list.
    _register_client(state_dir)

    log_path = state_dir / "server.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, str(_LAUNCHER), "--config", str(config_path)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=_server_env(),
            cwd=state_dir,
            close_fds=True,
            # Its own session: a Ctrl-C aimed at one autobots process must not kill the
            # server that other processes share; its lifetime is managed by the watchdog.
            start_new_session=True,
        )
    start = _protocol.process_start_time(process.pid) or ""
    deadline = time.monotonic() + settings.startup_timeout_s
    while True:
        if process.poll() is not None:
            raise EmbeddedModelError(
                f"The embedded model server exited during startup (code {process.returncode}). "
                f"Log {log_path}:\n{_log_tail(log_path)}"
            )
        info = _read_port_file(port_file)
        # The server answers while it loads its first model; "loaded" says it is done.
        if info is not None and info.get("instance") == instance and info.get("loaded") is True:
            health = _health(int(info["port"]))
            if health is not None and health.get("instance") == instance:
                break
        if time.monotonic() > deadline:
            _terminate(process.pid, start, process)
            raise EmbeddedModelError(
                f"The embedded model server did not become ready within {settings.startup_timeout_s:.0f} s "
                f"(startup_timeout_s). Log {log_path}:\n{_log_tail(log_path)}"
            )
        time.sleep(0.1)

    port = int(info["port"])
    state = {
        "pid": process.pid,
        "start": start,
        "instance": instance,
        "port": port,
        "api_key": api_key,
        "models": order,
        "paths": {alias: str(paths[alias]) for alias in order},
        "cache_dir": str(cache_dir),
        "launcher": str(_LAUNCHER),
        "started_at": time.time(),
        "started_by": os.getpid(),
    }
    atomic_write_text(state_dir / "state.json", json.dumps(state, indent=2) + "\n")
    log.info("Embedded model server started on 127.0.0.1:%d (pid %d) serving %s", port, process.pid, order)
    return _Attachment(
        state_dir=state_dir,
        owner_pid=os.getpid(),
        server_pid=process.pid,
        server_start=start,
        instance=instance,
        port=port,
        api_key=api_key,
        models=order,
        paths={alias: str(paths[alias]) for alias in order},
        cache_dir=cache_dir,
        loaded={model},
        process=process,
    )


def _read_port_file(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("port"), int) else None


def _attach_existing(state: dict[str, Any], state_dir: Path) -> _Attachment | None:
    """An attachment to the recorded server if it is alive and really the recorded instance."""
    try:
        pid, start, port = int(state["pid"]), str(state["start"]), int(state["port"])
        instance, api_key, models = str(state["instance"]), str(state["api_key"]), list(state["models"])
        paths = {str(k): str(v) for k, v in dict(state.get("paths") or {}).items()}
        cache_dir = Path(state["cache_dir"]) if state.get("cache_dir") else None
    except (KeyError, TypeError, ValueError):
        return None
    if _protocol.process_start_time(pid) != start:
        return None
    health = _health(port)
    if health is None or health.get("instance") != instance:
        # Alive but not answering as the recorded instance: hung or wedged. It is ours
        # (same pid and start time), so it is safe to stop before starting a fresh one.
        log.warning("Embedded model server pid %d is not answering; restarting it", pid)
        _terminate(pid, start)
        return None
    return _Attachment(
        state_dir=state_dir,
        owner_pid=os.getpid(),
        server_pid=pid,
        server_start=start,
        instance=instance,
        port=port,
        api_key=api_key,
        models=models,
        paths=paths,
        cache_dir=cache_dir,
        loaded=set(health.get("loaded") or ()),
    )


def _warm(attachment: _Attachment, model: str, settings: EmbeddedSettings) -> None:
    """Make the server load ``model`` now, so "ready" means ready and load errors surface here."""
    url = f"http://127.0.0.1:{attachment.port}/extras/tokenize"
    try:
        http_json(url, settings.startup_timeout_s, {"model": model, "input": "warm-up"}, attachment.api_key)
    except (OSError, ValueError) as exc:
        detail = exc.read().decode(errors="replace")[:500] if isinstance(exc, urllib.error.HTTPError) else exc
        raise EmbeddedModelError(
            f"The embedded model server could not load {model}: {detail}. "
            f"Log {attachment.state_dir / 'server.log'}"
        ) from exc
    attachment.loaded.add(model)


def _other_clients(state_dir: Path) -> list[str]:
    """Live processes other than this one registered as users of the server in ``state_dir``."""
    me = _protocol.client_file_name(os.getpid())
    return [c for c in _protocol.live_clients(state_dir / "clients", prune=False) if c != me]


def _ensure(model: str, settings: EmbeddedSettings, state_dir: Path) -> _Attachment:
    """Under the machine-wide lock: attach to the running server or start one."""
    state = _read_state(state_dir)
    if state is not None:
        attachment = _attach_existing(state, state_dir)
        if attachment is not None:
            if model in attachment.models:
                _register_client(state_dir)
                if model not in attachment.loaded:
                    _prepare(attachment, model, settings)
                    _warm(attachment, model, settings)
                return attachment
            # Alive but not offering this model: it started before the weights were
            # installed, or under settings that left the model out.  Restarting it would cut
            # off requests in flight (other processes', or other threads' of this one), so
            # only a server nobody uses is replaced.
            others = _other_clients(state_dir)
            mine = _attachments.get(state_dir)
            if mine is not None and (mine.owner_pid, mine.server_pid) == (os.getpid(), attachment.server_pid):
                users = "this autobots process is using it"
                remedy = "restart autobots"
            elif others:
                users = f"{len(others)} other autobots process(es) are using it"
                remedy = "they stop"
            else:
                users = ""
            if users:
                raise EmbeddedModelError(
                    f"The running embedded model server (pid {attachment.server_pid}) does not offer "
                    f"{model}; it offers {', '.join(attachment.models)} (it started before {model}'s "
                    f"weights were installed, or under an 'embedded.models' setting without it). "
                    f"It is not restarted because {users}; {model} becomes available once {remedy}, "
                    "or give this process its own 'embedded.server_dir'."
                )
            log.warning("Restarting the unused embedded model server to add %s", model)
            _terminate(attachment.server_pid, attachment.server_start, attachment.process)
    return _start_server(model, settings, state_dir)


def embedded_endpoint(model: str, settings: EmbeddedSettings) -> EmbeddedEndpoint:
    """The endpoint serving ``model``, after making sure its weights and the server are ready.

    Blocking (the first call on a machine may assemble 1.1 GB and load the model) and safe
    to call from any number of threads and processes at once; repeated calls from one
    process cost a /proc read.
    """
    get_spec(model)  # unknown names fail before any I/O
    if model not in settings.enabled_models():
        raise EmbeddedModelError(
            f"Embedded model {model!r} is disabled by the 'models' setting {settings.models}."
        )
    state_dir = settings.resolved_server_dir()
    global _atexit_registered
    with _lock:
        current = _attachments.get(state_dir)
        if (
            current is not None
            and current.owner_pid == os.getpid()
            and model in current.models
            and model in current.loaded
            and current.server_alive()
        ):
            _register_client(state_dir)  # cheap; restores the file if something pruned it
            return current.endpoint(model)
        state_dir.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(state_dir / "lock"):
            attachment = _ensure(model, settings, state_dir)
        if current is not None and attachment.process is None and current.server_pid == attachment.server_pid:
            attachment.process = current.process  # keep our child's handle so we can reap it
        _attachments[state_dir] = attachment
        if not _atexit_registered:
            atexit.register(shutdown)
            _atexit_registered = True
        return attachment.endpoint(model)


def shutdown() -> None:
    """Detach this process from the embedded model server; stop it if nobody else uses it.

    Safe to call more than once and from ``atexit``.  In a forked child that never called
    ``embedded_endpoint`` it does nothing: the attachment belongs to the parent.
    """
    with _lock:
        for state_dir, attachment in list(_attachments.items()):
            if attachment.owner_pid != os.getpid():
                continue
            try:
                with exclusive_lock(state_dir / "lock"):
                    _unregister_client(state_dir)
                    others = _protocol.live_clients(state_dir / "clients", prune=False)
                    state = _read_state(state_dir) or {}
                    if (
                        not others
                        and _linger(state_dir) <= 0
                        and state.get("instance") == attachment.instance
                    ):
                        _terminate(attachment.server_pid, attachment.server_start, attachment.process)
                        (state_dir / "state.json").unlink(missing_ok=True)
            except OSError as exc:  # the cache dir vanished; nothing left to clean up
                log.debug("embedded shutdown: %s", exc)
            del _attachments[state_dir]


def _linger(state_dir: Path) -> float:
    try:
        config = json.loads((state_dir / "config.json").read_text(encoding="utf-8"))
        return float(config.get("linger_s", 0))
    except (OSError, ValueError, TypeError):
        return 0.0


def installed_models() -> list[str]:
    """Known models whose weight packages are all installed (no hashing; cheap for a UI)."""
    import importlib.metadata

    result = []
    for alias, spec in MODELS.items():
        try:
            for part in spec.parts:
                importlib.metadata.distribution(part.distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
        result.append(alias)
    return result
