"""Servers that sign people in, and their API keys, made the way an operator makes them: with
`python -m autobots keys create` against the server's own database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.server import RunningServer


def cli(workdir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m autobots ARGS` on the database in `workdir` (as `start_server` lays it out)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "AUTOBOTS_"))}
    full_env["AUTOBOTS_DATABASE_URL"] = f"sqlite:///{workdir / 'database.sqlite'}"
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "autobots", *args],
        cwd=workdir,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def create_key(workdir: Path, user: str, admin: bool = False, name: str | None = None) -> str:
    """A new API key for `user`: the last line `keys create` prints."""
    args = ["keys", "create", user] + (["--admin"] if admin else []) + (["--name", name] if name else [])
    out = cli(workdir, *args)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def as_user(server: RunningServer, key: str) -> dict[str, str]:
    """Headers that sign a request in with `key`."""
    return {"Authorization": f"Bearer {key}"}
