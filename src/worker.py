"""`python -m autobots worker`: a Celery worker that runs the distributed mode's queued runs.

It builds the same services as `serve` (one composition root, `services/core.py`), so a run does
exactly what it would in one process; Celery only hands it the run's id. Its pool is threads, not
processes: a run spends its time waiting on LLM calls and sandboxes, and the embedded model is a
server of its own. It heartbeats the runs it holds and, like every process, interrupts runs whose
worker died. On SIGTERM (Celery's warm shutdown) it takes no new runs, lets its runs finish for
`runs.shutdown_grace_s`, then interrupts the rest, keeping what was said.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
from typing import Any

from sqlalchemy.engine import make_url

from .services import metrics
from .services.backends.celery_queue import CeleryQueue
from .services.core import Services, build_services
from .settings import Settings

log = logging.getLogger("autobots.worker")


def run_worker(settings: Settings, concurrency: int, metrics_at: tuple[str, int] | None = None) -> int:
    """Logging is configured by the entry point (`cli.py`: `logs.configure`); Celery keeps it."""
    from celery import signals

    core = build_services(settings, recover=True)
    gc.freeze()  # what the start built lives as long as the process: out of the GC's walks
    # Celery configures logging itself unless a receiver of setup_logging does: ours is done.
    signals.setup_logging.connect(lambda **_: None, weak=False)
    _serve_metrics(core, metrics_at)
    queue = core.backends.queue
    assert isinstance(queue, CeleryQueue)

    def drain(**_: Any) -> None:
        grace = settings.runs.shutdown_grace_s
        log.info("stopping: no new runs; the %s s grace for runs held begins", grace)
        threading.Thread(target=core.runs.drain, args=(grace,), name="drain", daemon=True).start()

    signals.worker_shutting_down.connect(drain, weak=False)
    print(
        f"autobots worker {core.backends.worker_id}: {concurrency} thread(s), queue {queue.queue!r}, "
        f"database {make_url(settings.database_url).render_as_string(hide_password=True)}",
        flush=True,
    )
    queue.app.worker_main(
        [
            "worker",
            "--pool=threads",
            f"--concurrency={concurrency}",
            "--loglevel=INFO",
            f"--queues={queue.queue}",
            f"--hostname=autobots-{os.getpid()}@%h",
            "--without-gossip",
            "--without-mingle",
            "--prefetch-multiplier=1",
        ]
    )
    core.writer.close()
    if core.metrics_dir is not None:
        metrics.process_exited(os.getpid(), core.metrics_dir)
    return 0


def _serve_metrics(core: Services, at: tuple[str, int] | None) -> None:
    """`--metrics-port`: this machine's metrics (its processes' files) for a worker machine with
    no API process to scrape; the database's run gauges are the API processes' to serve."""
    if at is None or core.run_gauges is None:
        return
    from prometheus_client import start_http_server

    host, port = at
    start_http_server(port, addr=host, registry=metrics.registry(core.metrics_dir))
    log.info("metrics at http://%s:%d/metrics", host, port)
