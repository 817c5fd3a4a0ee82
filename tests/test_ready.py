"""`GET /api/ready`: each dependency the config uses, with its state and latency; 503 naming the
one that is down. A server counting request rates in a private redis-server of the test's own
is ready while that Redis answers, and not (503, `redis` down, quickly) once it is stopped,
while `/api/health` (liveness) still answers 200."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import docker
import requests

from autobots.llm.embedded import installed_models
from autobots.settings import load_settings
from tests.conftest import SERVER_KEY
from tests.support.cluster import PrivateRedis
from tests.support.scripted_llm import ScriptedLLM
from tests.support.server import RunningServer, start_server

DEFAULT_MODEL = load_settings(env={}).embedded.default_model


def test_ready_names_the_dependency_that_is_down(llm_server: ScriptedLLM, tmp_path: Path) -> None:
    private = PrivateRedis(tmp_path).start()
    server = None
    try:
        server = start_server(
            tmp_path,
            env={
                "OPENAI_API_KEY": SERVER_KEY,
                "OPENAI_BASE_URL": llm_server.base_url,
                "AUTOBOTS_LIMITS__PER_USER__STORAGE_URL": private.url,
                "AUTOBOTS_CODE_EXECUTION__EXECUTOR": "local",
            },
        )
        up = server.get("/api/ready")
        assert up.status_code == 200, up.text
        body = up.json()
        assert body["status"] is True and body["data"]["ready"] is True
        deps = body["data"]["dependencies"]
        assert set(deps) == {"database", "redis"}  # no broker, no embedded model, no Docker here
        for dep in deps.values():
            assert dep["state"] == "up" and dep["required"] is True
            assert 0 <= dep["latency_ms"] < 1000

        private.stop()
        # An answer is reused for 1 s (readiness.CACHE_S): the next fresh one says Redis is down.
        stopped = time.monotonic()
        while True:
            started = time.monotonic()
            down = requests.get(server.url + "/api/ready", timeout=10)
            assert time.monotonic() - started < 3  # a dead dependency never makes readiness hang
            if down.status_code != 200 or time.monotonic() - stopped > 5:
                break
            time.sleep(0.1)
        assert down.status_code == 503, down.text
        assert time.monotonic() - stopped < 1 + 3
        body = down.json()
        assert body["status"] is False and "redis" in body["message"]
        assert body["data"]["dependencies"]["redis"]["state"] == "down"
        assert body["data"]["dependencies"]["database"]["state"] == "up"
        assert server.get("/api/health").status_code == 200  # alive, only not ready
    finally:
        private.stop()
        if server is not None:
            server.stop()


def test_ready_with_docker_and_the_embedded_model(tmp_path: Path) -> None:
    """Without OPENAI_* the embedded model is the default: reported as not loaded (it starts at
    first use, which is no reason to be unready) where it can run, down where it cannot; Docker
    is reported when code runs there by default, not required while the local sandbox stands in."""
    server: RunningServer = start_server(
        tmp_path, env={"AUTOBOTS_EMBEDDED__SERVER_DIR": str(tmp_path / "llm")}
    )
    try:
        r = server.get("/api/ready")
        deps = r.json()["data"]["dependencies"]
        assert set(deps) == {"database", "embedded_model", "docker"}
        runnable = importlib.util.find_spec("llama_cpp") is not None and DEFAULT_MODEL in installed_models()
        assert deps["embedded_model"]["state"] == ("not_loaded" if runnable else "down")
        assert r.status_code == (200 if runnable else 503)
        assert deps["docker"]["required"] is False
        assert deps["docker"]["state"] == ("up" if _docker_answers() else "down")
    finally:
        server.stop()


def _docker_answers() -> bool:
    try:
        client = docker.from_env(timeout=5)
        client.ping()
        client.close()
    except docker.errors.DockerException:
        return False
    return True
