"""Helpers shared by the execution (sandbox) tests: real engines, real processes, no mocks.

The scenarios are written once here and run against each executor by
test_execution_docker.py and test_execution_local.py, so both sandboxes are held
to exactly the same containment checks.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from autogen import UserProxyAgent
from autogen.coding.base import CodeBlock, CommandLineCodeResult

from autobots.execution import (
    ExecutionRequest,
    ExecutionSettings,
    ExecutionUnavailable,
    SandboxExecutor,
    open_executor,
    session_workdir,
)
from autobots.execution.local_executor import check_bwrap

# CI sets it: a machine where bubblewrap cannot build its sandbox then fails the local
# sandbox's tests instead of skipping them.
REQUIRE_LOCAL = os.environ.get("AUTOBOTS_REQUIRE_LOCAL") == "1"

SECRET_ENV = "AUTOBOTS_TEST_SERVER_SECRET"
SECRET_VALUE = "sk-secret-d0n0tleak-7c1f9e"
HOST_MARKER = "HOST-DATABASE-MARKER-5e2b7a"


def local_sandbox_problem() -> str | None:
    """Why the local (bubblewrap) sandbox cannot run here, or None if it can."""
    try:
        check_bwrap()
    except ExecutionUnavailable as exc:
        return str(exc)
    return None


def require_local_sandbox() -> None:
    """Skip the calling test without a usable local sandbox; fail instead with AUTOBOTS_REQUIRE_LOCAL=1."""
    problem = local_sandbox_problem()
    if problem is None:
        return
    if REQUIRE_LOCAL:
        pytest.fail(f"AUTOBOTS_REQUIRE_LOCAL=1 but the local sandbox is unavailable: {problem}")
    pytest.skip(f"local sandbox unavailable: {problem} (AUTOBOTS_REQUIRE_LOCAL=1 makes this fail)")


@contextmanager
def work_root() -> Iterator[Path]:
    """A fresh work root that the local sandbox's uid (65534) can reach.

    pytest's tmp_path is 0700 under a root-owned tree, which the sandbox user could
    not traverse, so the tests use their own 0755 directory.
    """
    root = Path(tempfile.mkdtemp(prefix="autobots-exec-test-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def make_settings(root: Path, **overrides: Any) -> ExecutionSettings:
    """Settings for tests: short timeouts and small limits so the slow paths stay quick."""
    values: dict[str, Any] = {
        "work_root": str(root / "sessions"),
        "timeout_s": 20,
        "memory": "256m",
        "pids_limit": 64,
        "output_limit_bytes": 65536,
    }
    values.update(overrides)
    return ExecutionSettings(**values)


def open_for(kind: str, settings: ExecutionSettings, session: str = "s1", **request: Any) -> SandboxExecutor:
    """An executor of ``kind`` on a fresh session work dir."""
    workdir = session_workdir(settings, session)
    return open_executor(ExecutionRequest(executor=kind, **request), workdir, settings, f"test-{session}")


def run(executor: SandboxExecutor, code: str, language: str = "python") -> CommandLineCodeResult:
    """Run one block."""
    return executor.execute_code_blocks([CodeBlock(code=code, language=language)])


def code_marker(code: str) -> str:
    """The temp file name the block's code is written to; appears in its processes' argv."""
    return f"tmp_code_{hashlib.md5(code.encode(), usedforsecurity=False).hexdigest()}"


def processes_matching(marker: str) -> list[int]:
    """Host pids whose command line contains ``marker`` (sandboxed processes included:
    containers and bwrap pid namespaces are nested in the host's)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if marker.encode() in cmdline:
            found.append(int(entry))
    return found


def wait_no_processes(marker: str, within_s: float = 10.0) -> list[int]:
    """Wait until no process carries ``marker``; returns the survivors (empty if none)."""
    deadline = time.monotonic() + within_s
    while True:
        left = processes_matching(marker)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


@dataclass
class Background:
    """Outcome of a call run in a thread while the test thread measured its own lag."""

    result: Any
    error: BaseException | None
    elapsed_s: float
    max_lag_s: float


def run_measuring_lag(fn: Callable[[], Any], during: Callable[[float], None] | None = None) -> Background:
    """Run ``fn`` in a thread; meanwhile the test thread sleeps in 50 ms steps and records
    how late it wakes up, which shows whether the test process stayed responsive.
    ``during(elapsed)`` is called at every step (e.g. to cancel after a while)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:
            box["error"] = exc

    started = time.monotonic()
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    max_lag = 0.0
    while thread.is_alive():
        before = time.monotonic()
        time.sleep(0.05)
        max_lag = max(max_lag, time.monotonic() - before - 0.05)
        if during is not None:
            during(time.monotonic() - started)
    thread.join()
    return Background(box.get("result"), box.get("error"), time.monotonic() - started, max_lag)


@contextmanager
def loopback_listener() -> Iterator[socket.socket]:
    """A TCP listener on 127.0.0.1 (never any other address) that sandboxed code must not reach."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.settimeout(0.5)
    try:
        yield sock
    finally:
        sock.close()


def listener_got_connection(sock: socket.socket) -> bool:
    try:
        conn, _ = sock.accept()
    except TimeoutError:
        return False
    conn.close()
    return True


NETWORK_PROBE = """
import socket
for host, port in [("127.0.0.1", {port}), ("1.1.1.1", 53)]:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        s.connect((host, port))
        print("CONNECTED", host)
    except OSError as exc:
        print("blocked", host, type(exc).__name__, exc)
    finally:
        s.close()
"""

ENV_PROBE = """
import glob, os
print(dict(os.environ))
for path in glob.glob("/proc/*/environ"):
    try:
        print(path, open(path, "rb").read())
    except OSError as exc:
        print(path, "unreadable", type(exc).__name__)
"""

HOST_FILE_PROBE = """
try:
    print(open({path!r}).read())
except OSError as exc:
    print("cannot open host file:", type(exc).__name__)
"""

FORK_BOMB = """
import os
while True:
    try:
        os.fork()
    except OSError:
        pass
"""

FORK_COUNT = """
import os, time
n = 0
for _ in range(1000):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(2)
        os._exit(0)
    n += 1
print("forked", n)
"""

MEMORY_HOG = """
chunks = []
while True:
    chunks.append(bytearray(16 * 1024 * 1024))
"""

ENDLESS_LOOP = """
while True:
    pass
"""

SLEEPER = """
import time
time.sleep(60)
"""


def autogen_reply(executor: SandboxExecutor, content: str) -> str:
    """The reply AutoGen's UserProxyAgent builds with our executor (no LLM involved)."""
    agent = UserProxyAgent(
        "executor_test_proxy",
        human_input_mode="NEVER",
        llm_config=False,
        code_execution_config={"executor": executor},
    )
    reply = agent.generate_reply(messages=[{"role": "user", "content": content}])
    assert isinstance(reply, str), reply
    return reply


class ContainmentScenarios:
    """Checks every sandbox must pass; subclasses set ``kind`` and make the engine available.

    Not collected by itself (no Test prefix); test_execution_docker/local subclass it.
    """

    kind = ""
    # Slack on top of the block timeout for killing and cleaning up a sandbox.
    KILL_SLACK_S = 8.0

    @pytest.fixture
    def root(self) -> Iterator[Path]:
        with work_root() as path:
            yield path

    def test_output_comes_back(self, root: Path) -> None:
        with open_for(self.kind, make_settings(root)) as ex:
            result = run(ex, "print(6 * 7)")
            assert result.exit_code == 0
            assert result.output.strip() == "42"
            shell = run(ex, "echo hello from $0 | tr a-z A-Z", "bash")
            assert shell.exit_code == 0
            assert "HELLO FROM" in shell.output
            failed = run(ex, "import sys\nprint('partial')\nsys.exit(3)")
            assert failed.exit_code == 3
            assert "partial" in failed.output

    def test_autogen_user_proxy_reply(self, root: Path) -> None:
        with open_for(self.kind, make_settings(root)) as ex:
            ok = autogen_reply(ex, "```python\nprint(1)\n```")
            assert ok == "exitcode: 0 (execution succeeded)\nCode output: 1\n"
            bad = autogen_reply(ex, "```python\nraise SystemExit('boom')\n```")
            assert bad.startswith("exitcode: 1 (execution failed)\nCode output: ")
            assert "boom" in bad

    def test_later_block_sees_earlier_files(self, root: Path) -> None:
        settings = make_settings(root)
        with open_for(self.kind, settings) as ex:
            assert run(ex, "open('data.txt', 'w').write('persisted')").exit_code == 0
            named = run(ex, "# filename: tools/helper.py\nprint('named file ran')")
            assert named.exit_code == 0 and "named file ran" in named.output
            second = run(ex, "print(open('data.txt').read()); import tools.helper")
            assert second.exit_code == 0
            assert "persisted" in second.output
            host_file = ex.work_dir / "data.txt"
            assert host_file.read_text() == "persisted"
            names = {f.name: f.size for f in ex.list_files()}
            assert names.get("data.txt") == len("persisted")
            assert "tools/helper.py" in names
            assert not any("tmp_code_" in n for n in names)

    def test_sub_work_dir(self, root: Path) -> None:
        settings = make_settings(root)
        with open_for(self.kind, settings, work_dir="nested/dir") as ex:
            assert run(ex, "open('x.txt', 'w').write('in sub')").exit_code == 0
        assert (root / "sessions" / "s1" / "nested" / "dir" / "x.txt").read_text() == "in sub"

    def test_planted_symlink_for_sub_dir_reaches_no_host_file(self, root: Path) -> None:
        """Code replaces the sub dir a later run starts in with `ln -s / sub`: that later
        run must still see only its sandbox, and the server must not follow the link."""
        host_db = root / "database.sqlite"
        host_db.write_text(HOST_MARKER)
        host_db.chmod(0o644)
        settings = make_settings(root)
        with open_for(self.kind, settings, session="swap") as first:
            planted = run(first, "import os\nos.symlink('/', 'sub')\nos.symlink('/', 'other')")
            assert planted.exit_code == 0, planted.output
        root_owner = os.stat("/").st_uid, os.stat(root).st_uid
        with open_for(self.kind, settings, session="swap", work_dir="sub") as second:
            relative = str(host_db).lstrip("/")  # reachable from cwd if cwd were the host's /
            probe = run(
                second,
                f"import os\nprint('CWD', os.getcwd())\n"
                f"for path in [{relative!r}, {str(host_db)!r}]:\n"
                "    try:\n        print(open(path).read())\n"
                "    except OSError as exc:\n        print('NO HOST FILE', type(exc).__name__)\n",
            )
            assert HOST_MARKER not in probe.output
            assert probe.output.count("NO HOST FILE") == 2, probe.output
            assert second.list_files() == []
        assert (os.stat("/").st_uid, os.stat(root).st_uid) == root_owner  # nothing chowned through it
        assert os.path.islink(second.session_dir / "sub")

    def test_no_network(self, root: Path) -> None:
        with loopback_listener() as listener, open_for(self.kind, make_settings(root)) as ex:
            port = listener.getsockname()[1]
            started = time.monotonic()
            result = run(ex, NETWORK_PROBE.format(port=port))
            assert "CONNECTED" not in result.output
            assert result.output.count("blocked") == 2, result.output
            assert not listener_got_connection(listener)
            # No network at all: connects fail at once instead of waiting for the 3 s timeout.
            assert time.monotonic() - started < 6

    def test_server_env_not_visible(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(SECRET_ENV, SECRET_VALUE)
        monkeypatch.setenv("OPENAI_API_KEY", SECRET_VALUE)
        with open_for(self.kind, make_settings(root)) as ex:
            result = run(ex, ENV_PROBE)
            assert result.exit_code == 0
            assert "PATH" in result.output
            assert SECRET_VALUE not in result.output
            assert SECRET_ENV not in result.output

    def test_host_file_not_readable(self, root: Path) -> None:
        host_db = root / "database.sqlite"
        host_db.write_text(HOST_MARKER)
        host_db.chmod(0o644)  # readable by anyone on the host: only the sandbox may stop it
        with open_for(self.kind, make_settings(root)) as ex:
            result = run(ex, HOST_FILE_PROBE.format(path=str(host_db)))
            assert HOST_MARKER not in result.output
            assert "cannot open host file" in result.output

    def _assert_stopped(self, code: str, settings: ExecutionSettings, expect_timeout: bool) -> str:
        with open_for(self.kind, settings) as ex:
            outcome = run_measuring_lag(lambda: run(ex, code))
            assert outcome.error is None, outcome.error
            result = outcome.result
            assert result.exit_code != 0
            assert outcome.elapsed_s < settings.timeout_s + self.KILL_SLACK_S
            assert outcome.max_lag_s < 1.0, f"test process stalled for {outcome.max_lag_s:.2f} s"
            if expect_timeout:
                assert result.exit_code == 124
                assert "Timeout" in result.output
            assert wait_no_processes(code_marker(code)) == []
            # The sandbox is still usable afterwards.
            assert run(ex, "print('alive')").output.strip() == "alive"
            return result.output

    def test_fork_bomb_stopped(self, root: Path) -> None:
        self._assert_stopped(FORK_BOMB, make_settings(root, timeout_s=4), expect_timeout=True)

    def test_process_count_capped(self, root: Path) -> None:
        with open_for(self.kind, make_settings(root, pids_limit=32)) as ex:
            result = run(ex, FORK_COUNT)
            count = int(result.output.split("forked")[1].split()[0])
            assert 0 < count < 32

    def test_memory_hog_stopped(self, root: Path) -> None:
        self._assert_stopped(
            MEMORY_HOG, make_settings(root, timeout_s=20, memory="128m"), expect_timeout=False
        )

    def test_endless_loop_stopped(self, root: Path) -> None:
        output = self._assert_stopped(ENDLESS_LOOP, make_settings(root, timeout_s=3), expect_timeout=True)
        assert "3 s" in output

    def test_output_truncated(self, root: Path) -> None:
        with open_for(self.kind, make_settings(root, output_limit_bytes=4096)) as ex:
            result = run(ex, "print('A' * 100_000)\nprint('THE END')")
            assert result.exit_code == 0
            assert "output truncated" in result.output
            assert "THE END" in result.output  # the tail is kept
            assert len(result.output.encode()) < 4096 + 300

    def test_close_from_another_thread_cancels(self, root: Path) -> None:
        ex = open_for(self.kind, make_settings(root, timeout_s=60))
        closed_at: list[float] = []

        def cancel(elapsed: float) -> None:
            if elapsed > 2.0 and not closed_at:
                closed_at.append(elapsed)
                threading.Thread(target=ex.close).start()

        outcome = run_measuring_lag(lambda: run(ex, SLEEPER), during=cancel)
        assert outcome.error is None, outcome.error
        assert closed_at
        assert outcome.elapsed_s < closed_at[0] + self.KILL_SLACK_S
        assert outcome.result.exit_code != 0
        assert "cancelled" in outcome.result.output
        assert wait_no_processes(code_marker(SLEEPER)) == []
        assert ex.closed
        ex.close()  # idempotent
        after = run(ex, "print('should not run')")
        assert after.exit_code != 0 and "should not run" not in after.output
