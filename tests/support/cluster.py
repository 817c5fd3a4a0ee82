"""The distributed mode as users run it: API processes (`serve`) and Celery workers (`worker`),
each a separate OS process in its own directory (so each has its own work root), sharing one
PostgreSQL database and one Redis (a database number of the suite's own, or a private
redis-server for the tests that restart it)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import redis

from tests.support.server import RunningServer, free_port, start_server

DISTRIBUTED_DB = 12  # the Redis database number of these tests
SECRET = "cluster-secret-0123456789abcdef"


def cluster_env(pg_url: str, redis_url: str, llm_base_url: str, server_key: str) -> dict[str, str]:
    return {
        "AUTOBOTS_DATABASE_URL": pg_url,
        "AUTOBOTS_BROKER_URL": redis_url,
        "AUTOBOTS_SECRET_KEY": SECRET,
        "OPENAI_API_KEY": server_key,
        "OPENAI_BASE_URL": llm_base_url,
        # Faster than the defaults, so a dead worker is found within the test's patience.
        "AUTOBOTS_RUNS__WORKER_HEARTBEAT_S": "1",
        "AUTOBOTS_RUNS__DEAD_AFTER_S": "6",
        # A queue of this cluster's own: a broker shared with anything else never mixes them.
        "AUTOBOTS_RUNS__QUEUE": f"autobots-test-{uuid.uuid4().hex[:8]}",
    }


@dataclass
class Worker:
    workdir: Path
    log_path: Path
    process: subprocess.Popen[bytes]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM (Celery's warm shutdown), then wait for it to exit."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._dump_threads()
                self.kill()
        return self.process.returncode

    def _dump_threads(self) -> None:
        """A worker that did not stop: its threads' stacks go into its log (printed by the test
        that failed), so a hang can be read rather than guessed at."""
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            dump = subprocess.run(
                [spy, "dump", "--pid", str(self.process.pid)], capture_output=True, timeout=20
            )
            with self.log_path.open("ab") as log:
                log.write(b"\n== py-spy dump of the worker that did not stop\n" + dump.stdout + dump.stderr)

    def kill(self) -> None:
        """SIGKILL: the machine is gone, no goodbye."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def start_worker(workdir: Path, env: dict[str, str], concurrency: int = 8, timeout: float = 90) -> Worker:
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"worker-{time.monotonic_ns()}.log"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "AUTOBOTS_"))}
    for key in ("AUTOBOTS_REQUIRE_DOCKER", "DOCKER_HOST"):
        if key in os.environ:
            full_env[key] = os.environ[key]
    full_env.update({"PYTHONUNBUFFERED": "1", **env})
    cmd = [sys.executable, "-m", "autobots", "worker", "--concurrency", str(concurrency)]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd, cwd=workdir, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    worker = Worker(workdir, log_path, proc)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited with {proc.returncode}:\n{worker.log()}")
        if " ready." in worker.log():
            return worker
        time.sleep(0.2)
    worker.kill()
    raise RuntimeError(f"worker not ready within {timeout} s:\n{worker.log()}")


def start_api(workdir: Path, env: dict[str, str], workers: int = 1) -> RunningServer:
    workdir.mkdir(parents=True, exist_ok=True)
    extra = ["--workers", str(workers)] if workers > 1 else []
    return start_server(workdir, env=env, extra_args=extra)


class PrivateRedis:
    """A redis-server of the test's own on a free port of 127.0.0.1, to stop and start at will
    (the machine's Redis is shared by everything else)."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=self.workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_timeout=1)
        for _ in range(100):
            with contextlib.suppress(redis.RedisError):
                if client.ping():
                    return self
            time.sleep(0.05)
        raise RuntimeError("the private redis-server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
