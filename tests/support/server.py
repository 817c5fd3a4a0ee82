"""Running the real server (gunicorn, `python -m autobots serve`) as a child process for tests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningServer:
    url: str
    db_path: Path
    log_path: Path
    process: subprocess.Popen[bytes]
    http: requests.Session = field(default_factory=requests.Session)

    def get(self, path: str, **params: Any) -> requests.Response:
        return self.http.get(self.url + path, params=params, timeout=120)

    def post(self, path: str, json: Any = None, **kwargs: Any) -> requests.Response:
        return self.http.post(self.url + path, json=json, timeout=120, **kwargs)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM, as a service manager stops it; the whole group is killed if it lingers."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
                return
        self._kill_group()  # nothing of the server (a stray worker) outlives the test

    def kill(self) -> None:
        """SIGKILL to gunicorn's master and its worker at once: a crash, no goodbye."""
        self._kill_group()
        self.process.wait()

    def _kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError):  # the group is already gone
            os.killpg(self.process.pid, signal.SIGKILL)


def start_server(
    workdir: Path,
    env: dict[str, str] | None = None,
    config: Path | None = None,
    timeout: float = 60,
    extra_args: list[str] | None = None,
) -> RunningServer:
    """Start `python -m autobots serve` in `workdir` (its database.sqlite lives there)."""
    port = free_port()
    db_path = workdir / "database.sqlite"
    log_path = workdir / f"server-{port}.log"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "AUTOBOTS_"))}
    full_env.update({"AUTOBOTS_DATABASE_URL": f"sqlite:///{db_path}", "PYTHONUNBUFFERED": "1"})
    for key in ("AUTOBOTS_REQUIRE_DOCKER", "DOCKER_HOST"):
        if key in os.environ:
            full_env[key] = os.environ[key]
    # A benchmark's way to set the servers a script starts (bench/ops_cost.py runs overhead.py
    # with metrics and log formats chosen here): a JSON object of variables.
    full_env.update(json.loads(os.environ.get("AUTOBOTS_TEST_SERVER_ENV") or "{}"))
    full_env.update(env or {})
    if config is not None:
        full_env["AUTOBOTS_CONFIG"] = str(config)
    cmd = [
        sys.executable,
        "-m",
        "autobots",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *(extra_args or []),
    ]
    log = log_path.open("wb")
    # Its own process group, so that kill() takes the worker down with the master.
    proc = subprocess.Popen(
        cmd, cwd=workdir, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    server = RunningServer(f"http://127.0.0.1:{port}", db_path, log_path, proc)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{server.log()}")
        try:
            if requests.get(server.url + "/api/health", timeout=2).status_code == 200:
                return server
        except requests.RequestException:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"server did not answer within {timeout} s:\n{server.log()}")
