"""The Docker sandbox against a real engine (found through DOCKER_HOST).

Skipped when no engine is reachable, unless AUTOBOTS_REQUIRE_DOCKER=1, which turns
a missing engine or image into a failure (CI sets it).
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from autobots.execution import (
    BwrapSandboxExecutor,
    DockerSandboxExecutor,
    ExecutionRequest,
    ExecutionSettings,
    ExecutionUnavailable,
    docker_available,
    open_executor,
    session_workdir,
    sweep_orphans,
)
from autobots.execution.docker_engine import LABEL_OWNER, LABEL_RUN, LABEL_SANDBOX, owner_label
from autobots.execution.settings import DOCKER_SANDBOX_GID, DOCKER_SANDBOX_UID
from tests.execution_support import (
    ContainmentScenarios,
    make_settings,
    open_for,
    require_local_sandbox,
    run,
    run_measuring_lag,
    work_root,
)

pytestmark = pytest.mark.timeout(120)

REQUIRE = os.environ.get("AUTOBOTS_REQUIRE_DOCKER") == "1"
IMAGE = ExecutionSettings().image


def _engine_problem() -> str | None:
    try:
        client = docker.from_env(timeout=10)
    except docker.errors.DockerException as exc:
        return f"no Docker engine reachable at {os.environ.get('DOCKER_HOST', 'the default socket')} ({exc})"
    try:
        client.images.get(IMAGE)
    except docker.errors.ImageNotFound:
        return f"image {IMAGE} missing: run scripts/build-sandbox-image.sh"
    finally:
        client.close()
    return None


_PROBLEM = _engine_problem()


@pytest.fixture(scope="module")
def engine() -> Iterator[docker.DockerClient]:
    if _PROBLEM is not None:
        if REQUIRE:
            pytest.fail(f"AUTOBOTS_REQUIRE_DOCKER=1 but {_PROBLEM}")
        pytest.skip(_PROBLEM)
    client = docker.from_env(timeout=60)
    yield client
    client.close()


@pytest.fixture
def root() -> Iterator[Path]:
    with work_root() as path:
        yield path


def _containers_of(client: docker.DockerClient, run_id: str) -> list:
    return client.containers.list(all=True, filters={"label": f"{LABEL_RUN}={run_id}"})


@pytest.mark.usefixtures("engine")
class TestDockerSandbox(ContainmentScenarios):
    kind = "docker"

    def test_is_locked_down(self, root: Path, engine: docker.DockerClient) -> None:
        with open_for("docker", make_settings(root)) as ex:
            assert isinstance(ex, DockerSandboxExecutor) and ex.kind == "docker"
            assert ex.container_id is None  # started lazily, by the first block
            who = run(ex, "import os; print(os.getuid(), os.getcwd())")
            uid = str(DOCKER_SANDBOX_UID) if os.geteuid() == 0 else str(os.getuid())
            assert who.output.split() == [uid, "/workspace"]
            attrs = engine.containers.get(ex.container_id).attrs
            host = attrs["HostConfig"]
            assert host["NetworkMode"] == "none"
            assert host["ReadonlyRootfs"] is True
            assert host["CapDrop"] == ["ALL"]
            assert "no-new-privileges" in host["SecurityOpt"]
            assert host["Memory"] == 256 * 1024**2 and host["MemorySwap"] == host["Memory"]
            assert host["PidsLimit"] == 64
            assert host["NanoCpus"] == 1_000_000_000
            ulimits = {u["Name"]: (u["Soft"], u["Hard"]) for u in host["Ulimits"]}
            assert ulimits["nofile"] == (256, 256) and ulimits["core"] == (0, 0)
            assert ulimits["fsize"] == (256 * 1024**2, 256 * 1024**2)
            assert set(host["Tmpfs"]) == {"/tmp"} and "noexec" in host["Tmpfs"]["/tmp"]
            expected_user = (
                f"{DOCKER_SANDBOX_UID}:{DOCKER_SANDBOX_GID}"
                if os.geteuid() == 0
                else f"{os.getuid()}:{os.getgid()}"
            )
            assert attrs["Config"]["User"] == expected_user
            assert attrs["Config"]["User"].split(":")[0] not in ("", "0", "root")
            # Only the session dir is mounted, never a sub dir or anything else of the host.
            assert [(m["Source"], m["Destination"], m["RW"]) for m in attrs["Mounts"]] == [
                (str(ex.session_dir), "/workspace", True)
            ]
            assert attrs["Config"]["Labels"][LABEL_SANDBOX] == "1"
            ro = run(ex, "open('/usr/evil', 'w')")
            assert ro.exit_code != 0 and "Read-only file system" in ro.output
            root_try = run(ex, "id -u; su -c id root </dev/null 2>&1 || true", "sh")
            assert root_try.output.split()[0] == uid

    def test_no_container_left_after_close(self, root: Path, engine: docker.DockerClient) -> None:
        ex = open_for("docker", make_settings(root), session="left1")
        run(ex, "print(1)")
        assert len(_containers_of(engine, "test-left1")) == 1
        ex.close()
        assert _containers_of(engine, "test-left1") == []

    def test_no_container_left_after_failing_block(self, root: Path, engine: docker.DockerClient) -> None:
        ex = open_for("docker", make_settings(root), session="left2")
        result = run(ex, "raise RuntimeError('fails')")
        assert result.exit_code == 1 and "RuntimeError" in result.output
        ex.close()
        assert _containers_of(engine, "test-left2") == []

    def test_no_container_left_after_cancel(self, root: Path, engine: docker.DockerClient) -> None:
        ex = open_for("docker", make_settings(root, timeout_s=60), session="left3")
        closer: list[threading.Thread] = []

        def cancel(elapsed: float) -> None:
            if elapsed > 2.0 and not closer:
                closer.append(threading.Thread(target=ex.close))
                closer[0].start()

        outcome = run_measuring_lag(lambda: run(ex, "import time; time.sleep(60)"), during=cancel)
        assert outcome.error is None and outcome.elapsed_s < 15
        assert "cancelled" in outcome.result.output
        closer[0].join(10)
        assert _containers_of(engine, "test-left3") == []

    def test_timeout_replaces_container(self, root: Path) -> None:
        with open_for("docker", make_settings(root, timeout_s=2)) as ex:
            run(ex, "open('kept.txt', 'w').write('k')")
            first = ex.container_id
            assert (
                run(
                    ex,
                    "import subprocess; subprocess.Popen(['setsid', 'sleep', '600']); "
                    "import time; time.sleep(30)",
                ).exit_code
                == 124
            )
            assert ex.container_id is None  # the old container, and the escaped sleep, are gone
            again = run(ex, "print(open('kept.txt').read())")
            assert again.output.strip() == "k" and ex.container_id != first

    def test_sweep_orphans(self, root: Path, engine: docker.DockerClient) -> None:
        settings = make_settings(root)

        def leftover(owner: str | None) -> str:
            labels = {LABEL_SANDBOX: "1", LABEL_RUN: "test-orphan"}
            if owner is not None:
                labels[LABEL_OWNER] = owner
            return engine.containers.create(
                IMAGE, entrypoint=["sleep", "infinity"], network_mode="none", labels=labels
            ).id

        # pid 999999999 is above the kernel's pid_max: that server process is surely gone.
        dead_owner = leftover(f"{socket.gethostname()}/999999999/1")
        no_owner = leftover(None)
        other_host = leftover("some-other-host/1/1")
        try:
            with open_for("docker", settings, session="live") as live:
                run(live, "print(1)")
                assert live.container_id is not None
                assert engine.containers.get(live.container_id).labels[LABEL_OWNER] == owner_label()
                assert sweep_orphans(settings) >= 2
                for gone in (dead_owner, no_owner):
                    with pytest.raises(docker.errors.NotFound):
                        engine.containers.get(gone)
                # Containers of live server processes (this one) and of other hosts are kept.
                assert engine.containers.get(live.container_id).status == "running"
                assert engine.containers.get(other_host).id == other_host
        finally:
            engine.containers.get(other_host).remove(force=True)

    def test_missing_image(self, root: Path) -> None:
        settings = make_settings(root, allowed_images=["autobots-no-such-image:never"])
        with pytest.raises(ExecutionUnavailable) as info:
            open_for("docker", settings, image="autobots-no-such-image:never")
        message = str(info.value)
        assert "sandbox image 'autobots-no-such-image:never' not found" in message
        assert "never pulled" in message
        # With the fallback off (it is on by default): the missing default image is the answer.
        default_missing = make_settings(root, image="autobots-missing-default:0", fallback_to_local=False)
        with pytest.raises(ExecutionUnavailable) as info:
            open_for("docker", default_missing)
        assert "scripts/build-sandbox-image.sh" in str(info.value)

    def test_image_not_allowed(self, root: Path, engine: docker.DockerClient) -> None:
        # The image exists locally, but the server does not let requests name it.
        settings = make_settings(root, allowed_images=[])
        with pytest.raises(ExecutionUnavailable) as info:
            open_for("docker", settings, image="other/image:1")
        assert "'other/image:1' is not allowed on this server" in str(info.value)
        assert "code_execution.allowed_images" in str(info.value)
        with open_for("docker", settings, image=IMAGE) as ex:  # the configured image always is
            assert run(ex, "print(2)").output.strip() == "2"

    def test_image_gone_after_preflight_is_never_pulled(
        self, root: Path, engine: docker.DockerClient
    ) -> None:
        """The container is created, not `run` (which pulls on ImageNotFound)."""
        settings = make_settings(root)
        ex = DockerSandboxExecutor(
            client=docker.from_env(timeout=60),
            image="autobots-no-such-image:1",
            work_dir=session_workdir(settings, "gone"),
            settings=settings,
            timeout_s=10,
            run_id="test-gone",
        )
        with ex:
            started = time.monotonic()
            with pytest.raises(ExecutionUnavailable) as info:
                run(ex, "print(1)")
            assert time.monotonic() - started < 5
            assert "'autobots-no-such-image:1' not found" in str(info.value)
            assert "never pulled" in str(info.value)
        assert _containers_of(engine, "test-gone") == []
        with pytest.raises(docker.errors.ImageNotFound):
            engine.images.get("autobots-no-such-image:1")

    def test_engine_timeout_is_unavailable_and_leaves_no_container(
        self, root: Path, engine: docker.DockerClient
    ) -> None:
        """A read timeout of the engine (requests' exception, not the SDK's) is a clear
        ExecutionUnavailable, and whatever the engine created meanwhile is removed."""
        settings = make_settings(root)
        # A real client whose read timeout is too short for a container create: the
        # engine may still create the container after the client gave up on it.
        hasty = docker.from_env(timeout=60)
        hasty.api.timeout = 0.001
        ex = DockerSandboxExecutor(
            client=hasty,
            image=IMAGE,
            work_dir=session_workdir(settings, "hasty"),
            settings=settings,
            timeout_s=10,
            run_id="test-hasty",
        )
        with pytest.raises(ExecutionUnavailable) as info:
            run(ex, "print(1)")
        assert "could not create the sandbox container" in str(info.value)
        assert "ReadTimeout" in str(info.value) or "timed out" in str(info.value)
        hasty.api.timeout = 60  # the engine answers again by the time the run ends
        ex.close()
        assert _containers_of(engine, "test-hasty") == []
        time.sleep(1)  # nothing the engine was still creating shows up later either
        assert _containers_of(engine, "test-hasty") == []

    def test_docker_available(self, root: Path) -> None:
        assert docker_available(make_settings(root))


def test_unreachable_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs with or without an engine: the socket named here never exists."""
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/autobots-test/docker.sock")
    with work_root() as root:
        settings = make_settings(root, fallback_to_local=False)
        assert not docker_available(settings)
        assert sweep_orphans(settings) == 0
        started = time.monotonic()
        with pytest.raises(ExecutionUnavailable) as info:
            open_for("docker", settings)
        assert time.monotonic() - started < 5
        message = str(info.value)
        assert "Docker engine not reachable at unix:///nonexistent/autobots-test/docker.sock" in message
        assert "set code_execution.executor to 'local'" in message
        via_settings = make_settings(
            root, docker_host="unix:///nonexistent/other.sock", fallback_to_local=False
        )
        with pytest.raises(
            ExecutionUnavailable, match=re.escape("not reachable at unix:///nonexistent/other.sock")
        ):
            open_for("docker", via_settings)


def test_fallback_to_local(monkeypatch: pytest.MonkeyPatch) -> None:
    require_local_sandbox()
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/autobots-test/docker.sock")
    with work_root() as root:
        settings = make_settings(root, fallback_to_local=True)
        workdir = session_workdir(settings, "fb")
        with open_executor(ExecutionRequest(), workdir, settings, "fb") as ex:
            assert isinstance(ex, BwrapSandboxExecutor)
            assert run(ex, "print('fell back')").output.strip() == "fell back"
        # A user-named image is not silently replaced by the local sandbox.
        with pytest.raises(ExecutionUnavailable):
            open_executor(ExecutionRequest(image="someone/else:1"), workdir, settings, "fb2")
