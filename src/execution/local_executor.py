"""Running code blocks on this machine without a Docker engine.

``local``: every block runs in a fresh bubblewrap sandbox. It gets new user, pid,
network, IPC, UTS and mount namespaces; the only host paths it sees are /usr (and
the /bin, /lib... links into it) and a few loader files in /etc, all read-only, plus
the run's work dir at /workspace, the one writable place. No network devices exist
but loopback of its own namespace, so no connection can leave it.

Why the sandbox runs as uid 65534 on the host when the server is root: the kernel
exempts processes whose real uid is root in the initial user namespace from
RLIMIT_NPROC, whatever uid they have inside a user namespace. So bwrap is started
as 65534 (nobody, via setpriv, which also sets no_new_privs), and RLIMIT_NPROC is applied *inside* the sandbox (by `prlimit`
after the namespaces exist). Process counts are kept per user namespace, so the
limit counts only the sandbox's own processes: other sandboxes or host processes
of the same uid do not eat into it. The wall-clock timeout kills bwrap; with
--die-with-parent and its own pid namespace, that kills every process of the block.

``unsafe-local``: a plain subprocess with the same rlimits and a clean
environment, but no isolation at all: code runs as the server's user and sees the
whole host. Only for trusted single-user setups, and only if the server's settings
say ``allow_unsafe_local``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import selectors
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from .base import TIMEOUT_EXIT_CODE, Observer, RawRun, SandboxExecutor
from .errors import ExecutionUnavailable
from .output import OutputCollector
from .settings import (
    FILE_SIZE_LIMIT_BYTES,
    LOCAL_SANDBOX_GID,
    LOCAL_SANDBOX_UID,
    OPEN_FILES_LIMIT,
    SANDBOX_ENV,
    SANDBOX_WORKDIR,
    TMPFS_SIZE_BYTES,
    ExecutionSettings,
)
from .workdir import chown_tree

# Only what the dynamic loader and Python need from /etc; the rest of /etc (host
# config, credentials of services) stays invisible.
_ETC_PATHS = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
    "/etc/localtime",
)
_ROOT_LINK_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
# The environment of the launcher processes themselves (bwrap, prlimit): bwrap
# clears it for the code anyway, but the server's must not even reach bwrap.
_LAUNCH_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
# After killing a block, how long to wait for its output pipe to close.
_DRAIN_AFTER_KILL_S = 2.0


def _rlimit_prefix(settings: ExecutionSettings, timeout_s: int) -> list[str]:
    """`prlimit` options: CPU seconds, address space, processes, file size, open files, no cores."""
    return [
        "prlimit",
        f"--cpu={timeout_s + 1}",
        f"--as={settings.memory_bytes}",
        f"--nproc={settings.pids_limit}",
        f"--fsize={FILE_SIZE_LIMIT_BYTES}",
        f"--nofile={OPEN_FILES_LIMIT}",
        "--core=0",
        "--",
    ]


def _sandbox_identity() -> tuple[int | None, int | None]:
    """Host uid/gid to start bwrap as: 65534 if we are root, else our own (None = no change)."""
    if os.geteuid() == 0:
        return LOCAL_SANDBOX_UID, LOCAL_SANDBOX_GID
    return None, None


def _launcher(setpriv: str, uid: int | None, gid: int | None) -> list[str]:
    """`setpriv` prefix: the host uid switch (when root) and no_new_privs for the sandbox.

    The uid switch is done by setpriv rather than by Popen(user=...): Python can only
    vfork() when it does not change ids itself, and fork() of a large server process
    costs ~20 ms per block, more than the whole sandbox start.
    """
    args = [setpriv]
    if uid is not None and gid is not None:
        args += [f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]
    return [*args, "--no-new-privs", "--"]


def _bwrap_base(bwrap: str, disable_userns: bool, env: dict[str, str] | None = None) -> list[str]:
    """bwrap options shared by the preflight probe and real blocks (no work dir yet);
    ``env`` is the sandbox's whole environment (default SANDBOX_ENV)."""
    args = [bwrap, "--unshare-all", "--unshare-user"]
    if disable_userns:
        args.append("--disable-userns")
    args += ["--die-with-parent", "--new-session", "--clearenv"]
    for key, value in (SANDBOX_ENV if env is None else env).items():
        args += ["--setenv", key, value]
    args += ["--uid", str(LOCAL_SANDBOX_UID), "--gid", str(LOCAL_SANDBOX_GID), "--hostname", "sandbox"]
    args += ["--ro-bind", "/usr", "/usr"]
    for name in _ROOT_LINK_DIRS:
        path = f"/{name}"
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for path in (*_ETC_PATHS, *sorted(glob.glob("/etc/python3*"))):
        args += ["--ro-bind-try", path, path]
    args += ["--proc", "/proc", "--dev", "/dev", "--size", str(TMPFS_SIZE_BYTES), "--tmpfs", "/tmp"]
    return args


@lru_cache(maxsize=4)
def _probe_bwrap(uid: int | None, gid: int | None) -> tuple[list[str], bool]:
    """Find bwrap and check it can build our sandbox here.

    Returns the launcher prefix (setpriv ... bwrap) and whether --disable-userns works.

    Cached per process: the answer only changes if the machine is reconfigured.
    Raises ExecutionUnavailable with what is wrong and how to fix it.
    """
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise ExecutionUnavailable(
            "bubblewrap (bwrap) is not installed, so the local sandbox cannot run: install it with "
            "'apt-get install bubblewrap', or set code_execution.executor to 'docker'"
        )
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise ExecutionUnavailable(
            "setpriv (from util-linux) is not installed, so the local sandbox cannot drop privileges: "
            "install it with 'apt-get install util-linux', or set code_execution.executor to 'docker'"
        )
    launcher = _launcher(setpriv, uid, gid)
    last_error = ""
    for disable_userns in (True, False):
        argv = [*launcher, *_bwrap_base(bwrap, disable_userns), "--chdir", "/", "--", "true"]
        try:
            proc = subprocess.run(
                argv,
                env=_LAUNCH_ENV,
                cwd="/",
                capture_output=True,
                timeout=20,
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            last_error = type(exc).__name__
            continue
        if proc.returncode == 0:
            return [*launcher, bwrap], disable_userns
        last_error = proc.stderr.decode("utf-8", errors="replace").strip()[:300]
    raise ExecutionUnavailable(
        f"bubblewrap cannot create its sandbox on this machine ({last_error}): allow unprivileged user "
        "namespaces (sysctl user.max_user_namespaces > 0, kernel.unprivileged_userns_clone=1 where it "
        "exists), or set code_execution.executor to 'docker'"
    )


def _check_reachable(path: Path, uid: int, gid: int) -> None:
    """Raise ExecutionUnavailable unless ``uid`` may search every parent of ``path``.

    bwrap runs as that uid and opens the work dir by path, so a 0700 parent (say
    /root) would make every block fail; better to say so once, up front.
    """
    for parent in reversed(path.parents):
        st = os.stat(parent)
        if st.st_uid == uid:
            bit = stat.S_IXUSR
        elif st.st_gid == gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            raise ExecutionUnavailable(
                f"the local sandbox runs as uid {uid}, which cannot reach the work dir {path}: {parent} "
                f"(mode {stat.S_IMODE(st.st_mode):o}) lacks search permission; run 'chmod o+x {parent}' "
                "or move code_execution.work_root"
            )


def check_bwrap() -> None:
    """Preflight for the local sandbox; raises ExecutionUnavailable if it cannot work here."""
    _probe_bwrap(*_sandbox_identity())


class _ProcessExecutor(SandboxExecutor):
    """Shared process handling: bounded output, wall-clock kill of the whole group,
    and close() from another thread killing the running blocks.

    Blocks may run concurrently (agents of a run share one executor, parallel
    receivers among them): each is its own process group, and close() kills all.
    """

    _code_via_stdin = True

    def __init__(
        self,
        *,
        work_dir: Path,
        settings: ExecutionSettings,
        timeout_s: int,
        run_id: str,
        observer: Observer | None,
        sub_dir: str | None = None,
    ) -> None:
        super().__init__(
            work_dir=work_dir,
            sub_dir=sub_dir,
            timeout_s=timeout_s,
            output_limit_bytes=settings.output_limit_bytes,
            memory_limit=settings.memory,
            run_id=run_id,
            observer=observer,
        )
        self._settings = settings
        self._procs: set[subprocess.Popen[bytes]] = set()
        self._proc_lock = threading.Lock()

    def restart(self) -> None:
        """Nothing to reset: every block already starts from a fresh process (and sandbox)."""

    def _spawn(self, argv: list[str], timeout_s: int) -> subprocess.Popen[bytes]:
        raise NotImplementedError

    def _run(self, argv: list[str], timeout_s: int, stdin: bytes | None) -> RawRun:
        collector = OutputCollector(self._output_limit)
        with self._proc_lock:
            if self._closed.is_set():
                return RawRun(1, collector, cancelled=True)
            try:
                proc = self._spawn(argv, timeout_s)
            except OSError as exc:
                collector.feed(f"sandbox error: could not start the code ({exc.strerror or exc})\n".encode())
                return RawRun(1, collector)
            self._procs.add(proc)
        try:
            self._feed_stdin(proc, stdin)
            timed_out = self._pump(proc, collector, time.monotonic() + timeout_s)
            exit_code = proc.wait()
        finally:
            with self._proc_lock:
                self._procs.discard(proc)
            if proc.stdout is not None:
                proc.stdout.close()
        if self._closed.is_set():
            return RawRun(exit_code or 1, collector, cancelled=True)
        if timed_out:
            return RawRun(TIMEOUT_EXIT_CODE, collector, timed_out=True)
        # A signal death shows as -N; report it the way a shell would (128+N).
        return RawRun(128 - exit_code if exit_code < 0 else exit_code, collector)

    @staticmethod
    def _feed_stdin(proc: subprocess.Popen[bytes], data: bytes | None) -> None:
        """Hand the code to the bootstrap, which reads all of it before anything runs."""
        if proc.stdin is None:
            return
        try:
            if data:
                proc.stdin.write(data)
            proc.stdin.close()
        except BrokenPipeError:
            # The sandbox died before reading (bwrap failed); its output says why.
            pass

    def _pump(self, proc: subprocess.Popen[bytes], collector: OutputCollector, deadline: float) -> bool:
        """Copy output until EOF; kill the group at the deadline. True if it timed out."""
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        timed_out = False
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    if not timed_out:
                        timed_out = True
                        self._kill(proc)
                        deadline = time.monotonic() + _DRAIN_AFTER_KILL_S
                        continue
                    break  # killed, and the pipe still did not close: stop reading
                if not sel.select(remaining):
                    continue
                data = os.read(fd, 65536)
                if not data:
                    break
                collector.feed(data)
        if timed_out and proc.poll() is None:
            self._kill(proc)
        return timed_out

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL the block's process group (it was started in a session of its own)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    def _close(self) -> None:
        with self._proc_lock:
            procs = list(self._procs)
        for proc in procs:
            self._kill(proc)


class BwrapSandboxExecutor(_ProcessExecutor):
    """The ``local`` executor: each block in a fresh bubblewrap sandbox."""

    kind = "local"

    def __init__(
        self,
        *,
        work_dir: Path,
        settings: ExecutionSettings,
        timeout_s: int,
        run_id: str,
        observer: Observer | None = None,
        sub_dir: str | None = None,
    ) -> None:
        self._uid, self._gid = _sandbox_identity()
        launch, disable_userns = _probe_bwrap(self._uid, self._gid)
        super().__init__(
            work_dir=work_dir,
            sub_dir=sub_dir,
            settings=settings,
            timeout_s=timeout_s,
            run_id=run_id,
            observer=observer,
        )
        # Built once: the options are the same for every block of the run. The session
        # dir is what is mounted, never a sub dir (see workdir.run_subdir).
        self._prefix = [*launch[:-1], *_bwrap_base(launch[-1], disable_userns, self._env)]
        if self._uid is not None and self._gid is not None:
            self._owner = (self._uid, self._gid)
            _check_reachable(work_dir, self._uid, self._gid)
            chown_tree(work_dir, self._uid, self._gid)

    def _spawn(self, argv: list[str], timeout_s: int) -> subprocess.Popen[bytes]:
        full = [
            *self._prefix,
            "--bind",
            str(self._session_dir),
            SANDBOX_WORKDIR,
            "--chdir",
            self._cwd,
            "--",
            *_rlimit_prefix(self._settings, timeout_s),
            *argv,
        ]
        return _popen(full, cwd="/")


class UnsafeLocalExecutor(_ProcessExecutor):
    """The ``unsafe-local`` executor: rlimits and a clean environment, nothing more.

    As root, RLIMIT_NPROC does not apply, and the code can read and write anything
    the server can. Constructible only with ``settings.allow_unsafe_local``.
    """

    kind = "unsafe-local"

    def __init__(
        self,
        *,
        work_dir: Path,
        settings: ExecutionSettings,
        timeout_s: int,
        run_id: str,
        observer: Observer | None = None,
        sub_dir: str | None = None,
    ) -> None:
        if not settings.allow_unsafe_local:
            raise ExecutionUnavailable(
                "executor 'unsafe-local' runs code without any sandbox and is disabled on this server "
                "(code_execution.allow_unsafe_local is false): use 'docker' or 'local'"
            )
        super().__init__(
            work_dir=work_dir,
            sub_dir=sub_dir,
            settings=settings,
            timeout_s=timeout_s,
            run_id=run_id,
            observer=observer,
        )
        # Code files go to a private temp dir, not the work dir the user sees.
        self._tmp = tempfile.mkdtemp(prefix="autobots-unsafe-")

    def _code_dirs(self) -> tuple[str, str]:
        return str(self.work_dir), self._tmp

    def _spawn(self, argv: list[str], timeout_s: int) -> subprocess.Popen[bytes]:
        env = {**SANDBOX_ENV, "HOME": self._tmp, "TMPDIR": self._tmp, "PYTHONPATH": str(self.work_dir)}
        return _popen([*_rlimit_prefix(self._settings, timeout_s), *argv], env=env, cwd=str(self.work_dir))

    def _close(self) -> None:
        try:
            super()._close()
        finally:
            shutil.rmtree(self._tmp, ignore_errors=True)


def _popen(
    argv: Sequence[str],
    *,
    cwd: str,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start a block in a new session (so the whole group can be killed), output merged."""
    return subprocess.Popen(
        list(argv),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=cwd,
        env=env if env is not None else _LAUNCH_ENV,
        start_new_session=True,
        close_fds=True,
    )
