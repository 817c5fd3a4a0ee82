"""The local (bubblewrap) sandbox and the unsafe-local executor, on real processes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from autobots.execution import (
    BwrapSandboxExecutor,
    ExecutionRequest,
    ExecutionUnavailable,
    UnsafeLocalExecutor,
    local_executor,
    open_executor,
    session_workdir,
)
from tests.execution_support import (
    ContainmentScenarios,
    make_settings,
    open_for,
    require_local_sandbox,
    run,
    work_root,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def root() -> Iterator[Path]:
    with work_root() as path:
        yield path


class TestLocalSandbox(ContainmentScenarios):
    """Skipped where bubblewrap cannot build its sandbox, unless AUTOBOTS_REQUIRE_LOCAL=1 (CI)."""

    kind = "local"

    @pytest.fixture(autouse=True)
    def _local_sandbox(self) -> None:
        require_local_sandbox()

    def test_is_bubblewrap(self, root: Path) -> None:
        with open_for("local", make_settings(root)) as ex:
            assert isinstance(ex, BwrapSandboxExecutor)
            assert ex.kind == "local"
            who = run(ex, "import os; print(os.getuid(), os.getgid(), os.getcwd())")
            assert who.output.split() == ["65534", "65534", "/workspace"]

    def test_host_paths_hidden(self, root: Path) -> None:
        with open_for("local", make_settings(root)) as ex:
            result = run(ex, "ls / ; ls /etc ; ls /root /home /var 2>&1 | head -3", "sh")
            listing = result.output.split()
            assert "workspace" in listing and "usr" in listing
            assert "passwd" not in listing and "shadow" not in listing
            assert "No such file" in result.output

    @pytest.mark.skipif(os.geteuid() != 0, reason="the host uid only changes when the server is root")
    def test_sandbox_is_not_host_root(self, root: Path) -> None:
        # Root is exempt from RLIMIT_NPROC, so the sandbox must run as another host uid.
        with open_for("local", make_settings(root)) as ex:
            run(ex, "open('owned.txt', 'w').write('x')")
            assert (ex.work_dir / "owned.txt").stat().st_uid == 65534


def test_bwrap_missing_is_reported(root: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    local_executor._probe_bwrap.cache_clear()
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH without bwrap
    try:
        settings = make_settings(root)
        with pytest.raises(ExecutionUnavailable) as info:
            open_executor(ExecutionRequest(executor="local"), session_workdir(settings, "s"), settings, "r")
        message = str(info.value)
        assert "bubblewrap (bwrap) is not installed" in message
        assert "apt-get install bubblewrap" in message
    finally:
        monkeypatch.undo()
        local_executor._probe_bwrap.cache_clear()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create an unreachable parent dir for uid 65534")
def test_unreachable_work_dir_is_reported(root: Path) -> None:
    require_local_sandbox()
    hidden = root / "private"
    hidden.mkdir(mode=0o700)
    settings = make_settings(hidden)
    with pytest.raises(ExecutionUnavailable) as info:
        open_for("local", settings)
    assert "cannot reach the work dir" in str(info.value)
    assert "chmod o+x" in str(info.value)


def test_unsafe_local_needs_opt_in(root: Path) -> None:
    settings = make_settings(root)
    with pytest.raises(ExecutionUnavailable) as info:
        open_for("unsafe-local", settings)
    assert "allow_unsafe_local" in str(info.value)


def test_unsafe_local_when_allowed(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOBOTS_TEST_SERVER_SECRET", "unsafe-but-clean-env")
    settings = make_settings(root, allow_unsafe_local=True, timeout_s=3, output_limit_bytes=2048)
    with open_for("unsafe-local", settings) as ex:
        assert isinstance(ex, UnsafeLocalExecutor) and ex.kind == "unsafe-local"
        result = run(ex, "import os; open('f.txt', 'w').write('u'); print(sorted(os.environ))")
        assert result.exit_code == 0
        assert "unsafe-but-clean-env" not in result.output
        assert [f.name for f in ex.list_files()] == ["f.txt"]
        loop = run(ex, "while True: pass")
        assert loop.exit_code == 124
        big = run(ex, "print('B' * 50_000)")
        assert "output truncated" in big.output
