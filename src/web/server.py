"""Serving the app with gunicorn: its asyncio (ASGI) worker in front, one process by default.

One process, because live runs are per process state; in the distributed mode (`runs.broker_url`)
runs live on Celery workers and `--workers N` starts N API processes that hold none. Connections
are asyncio tasks (`asgi.py`): idle event-stream listeners and slow clients hold no thread, and
the Flask app runs in a pool of `server_threads` threads, because a blocking `POST /api/messages`
holds its thread for the whole run and the server must still answer a hundred more at once.
Each server has no gunicorn control socket: every gunicorn of a machine would share one
(`~/.gunicorn/gunicorn.ctl`), and nothing here uses it.
"""

from __future__ import annotations

import contextlib
import gc
import resource
import threading
from typing import Any

from gunicorn import glogging
from gunicorn.app.base import BaseApplication
from gunicorn.workers.gasgi import ASGIWorker

from ..settings import Settings, metrics_dir


class GunicornServer(BaseApplication):
    def __init__(self, settings: Settings, workers: int = 1) -> None:
        self._settings = settings
        self._workers = workers
        super().__init__()

    def load_config(self) -> None:
        s = self._settings
        options: dict[str, Any] = {
            "bind": f"{s.host}:{s.port}",
            # One, unless the runs live elsewhere (the distributed mode: API processes hold none).
            "workers": self._workers,
            "worker_class": StoppingASGIWorker,
            # Open connections one process may hold (idle listeners are cheap; see asgi.py).
            "worker_connections": 20_000,
            # Long runs hold a request open; the worker's heartbeat runs beside them.
            "timeout": 0,
            "graceful_timeout": 10,
            "keepalive": 5,
            # No access log of gunicorn's: the app writes one line per request itself
            # (requestlog.py: without the query string, in the process's log format), and
            # gunicorn's own lines go through that format too.
            "accesslog": None,
            "errorlog": "-",
            "loglevel": "info",
            "logger_class": ProcessLogger,
            "worker_exit": _stop_runs,
            "child_exit": self._child_exit,
            "control_socket_disable": True,
        }
        for key, value in options.items():
            self.cfg.set(key, value)

    def _child_exit(self, _arbiter: Any, worker: Any) -> None:
        """In the master, after a worker exited (a SIGKILL too): its metrics files are a dead
        process's (see services/metrics.py)."""
        if self._settings.metrics.enabled:
            from ..services.metrics import process_exited

            process_exited(worker.pid, metrics_dir(self._settings))

    def load(self) -> Any:
        from .app import create_app
        from .asgi import Front

        _raise_open_files_limit()
        front = Front(create_app(self._settings), self._settings)
        # What the start built (the app, AutoGen's and the SDK's modules, pydantic's schemas)
        # lives as long as the process: frozen, the cyclic GC stops walking it at every full
        # collection (about 10% of a run's CPU with 100 runs in flight, bench/concurrency.py).
        gc.freeze()
        return front


class StoppingASGIWorker(ASGIWorker):
    """gunicorn's asyncio worker that, on SIGTERM, ends live runs first: their listeners' streams
    then end with the runs, and the worker need not sit out the graceful timeout for them."""

    def handle_exit_signal(self) -> None:
        super().handle_exit_signal()
        threading.Thread(target=_stop_runs, args=(None, self), name="stop-runs", daemon=True).start()


class ProcessLogger(glogging.Logger):
    """gunicorn's lines through the process's own logging (`logs.configure`: its format, on
    stderr) rather than through handlers of gunicorn's."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for logger in (self.error_log, self.access_log):
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
            logger.propagate = True


def _services(worker: Any) -> Any:
    front = getattr(worker, "asgi", None) or getattr(worker, "wsgi", None)
    app = getattr(front, "app", None)
    return getattr(app, "extensions", {}).get("autobots")


def _stop_runs(_arbiter: Any, worker: Any) -> None:
    """End live runs as interrupted before the worker exits: a run waiting for a human (or
    queued) would otherwise hold the interpreter open until the master's SIGKILL."""
    services = _services(worker)
    if services is not None:
        services.runs.shutdown()


def _raise_open_files_limit() -> None:
    """Thousands of idle listeners need as many sockets: lift the soft limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(
                resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard)
            )


def serve(settings: Settings, workers: int = 1) -> None:
    GunicornServer(settings, workers).run()
