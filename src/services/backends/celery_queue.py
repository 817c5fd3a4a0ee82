"""The distributed mode's run queue: Celery, on a Redis or RabbitMQ broker.

An API process sends `autobots.execute_run(run_id, payload)`; a worker process
(`python -m autobots worker`, Celery's thread pool: a run waits on its LLM calls, not on the CPU)
runs it. The message is acknowledged after the run (`acks_late`), one at a time per thread
(`prefetch_multiplier=1`), so a worker that dies takes no queued runs with it. A message that is
delivered again (a broker's redelivery, a worker lost mid-run) finds its run claimed in the
database and is dropped: a run is executed once at most, because LLM calls cost money.
"""

from __future__ import annotations

from celery import Celery

from .base import Execute, RunQueue

TASK = "autobots.execute_run"


def make_celery(broker_url: str, queue: str) -> Celery:
    app = Celery("autobots", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=False,  # a lost run is interrupted, never run again
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=queue,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        broker_transport_options={"visibility_timeout": 86_400},
        broker_heartbeat=10,
    )
    return app


class CeleryQueue(RunQueue):
    def __init__(self, app: Celery, queue: str) -> None:
        self.app = app
        self.queue = queue

    def start(self, execute: Execute) -> None:
        """Register the task that runs a queued run (in a worker process)."""

        @self.app.task(name=TASK, bind=False, ignore_result=True)
        def execute_run(run_id: str, payload: str) -> None:
            execute(run_id, payload)

    def submit(self, run_id: str, payload: str) -> None:
        self.app.send_task(TASK, args=(run_id, payload), queue=self.queue)

    def close(self) -> None:
        """Nothing to close: a worker stops taking runs by Celery's own warm shutdown."""
