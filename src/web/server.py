"""Serving the app with gunicorn: one worker process, many threads.

One process, because the embedded model and the live runs are per process state; many threads,
because a blocking `POST /api/messages` holds its thread for the whole run and the server must
still answer a hundred more at once.
"""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication

from ..settings import Settings


class GunicornServer(BaseApplication):
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        super().__init__()

    def load_config(self) -> None:
        s = self._settings
        options: dict[str, Any] = {
            "bind": f"{s.host}:{s.port}",
            "workers": 1,
            "worker_class": "gthread",
            "threads": s.server_threads,
            # Long runs hold a request open; the worker heartbeat is separate in gthread.
            "timeout": 0,
            "graceful_timeout": 10,
            "keepalive": 5,
            "accesslog": "-",
            "errorlog": "-",
            "loglevel": "info",
            # Query strings are logged; request bodies (where keys would be) never are.
            "access_log_format": '%(h)s "%(r)s" %(s)s %(b)s %(M)sms',
            "worker_exit": _stop_runs,
        }
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from .app import create_app

        return create_app(self._settings)


def _stop_runs(_arbiter: Any, worker: Any) -> None:
    """End live runs as interrupted before the worker exits: a run waiting for a human (or
    queued) would otherwise hold the interpreter open until the master's SIGKILL."""
    app = getattr(worker, "wsgi", None)
    services = getattr(app, "extensions", {}).get("autobots")
    if services is not None:
        services.runs.shutdown()


def serve(settings: Settings) -> None:
    GunicornServer(settings).run()
