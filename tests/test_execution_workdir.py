"""Work dirs, file lookups that must never leave them, and validation of user options."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pydantic
import pytest

from autobots.execution import (
    ExecutionRequest,
    ExecutionSettings,
    open_session_file,
    resolve_session_file,
    session_workdir,
)
from autobots.execution.output import OutputCollector
from tests.execution_support import make_settings, work_root


@pytest.fixture
def settings() -> Iterator[ExecutionSettings]:
    with work_root() as root:
        yield make_settings(root)


@pytest.fixture
def session(settings: ExecutionSettings) -> Path:
    workdir = session_workdir(settings, "sess-1")
    (workdir / "ok.txt").write_text("inside")
    (workdir / "sub").mkdir()
    (workdir / "sub" / "deep.txt").write_text("deep")
    outside = workdir.parent.parent / "outside-secret.txt"
    outside.write_text("SECRET")
    os.symlink(outside, workdir / "link-out")
    os.symlink("/etc", workdir / "etc-dir")
    os.symlink("ok.txt", workdir / "link-in")
    return workdir


def test_session_workdir_created_and_validated(settings: ExecutionSettings) -> None:
    path = session_workdir(settings, "abc_DEF-1.2")
    assert path.is_dir() and path.name == "abc_DEF-1.2"
    assert session_workdir(settings, "abc_DEF-1.2") == path  # idempotent
    for bad in ["", ".", "..", "../x", "a/b", "/abs", "x" * 200, "a\x00b", ".hidden"]:
        with pytest.raises(ValueError):
            session_workdir(settings, bad)


def test_resolve_session_file(settings: ExecutionSettings, session: Path) -> None:
    assert resolve_session_file(settings, "sess-1", "ok.txt") == (session / "ok.txt").resolve()
    assert resolve_session_file(settings, "sess-1", "sub/deep.txt") is not None
    assert resolve_session_file(settings, "sess-1", "link-in") == (session / "ok.txt").resolve()
    for bad in [
        "../x",
        "../outside-secret.txt",
        "sub/../../outside-secret.txt",
        "/etc/passwd",
        str(session / "ok.txt"),  # absolute, even though inside
        "link-out",
        "etc-dir/passwd",
        "missing.txt",
        "sub",  # a directory, not a file
        "",
    ]:
        assert resolve_session_file(settings, "sess-1", bad) is None, bad
    assert resolve_session_file(settings, "../sess-1", "ok.txt") is None
    assert resolve_session_file(settings, "no-such-session", "ok.txt") is None


def test_open_session_file_never_follows_links(settings: ExecutionSettings, session: Path) -> None:
    with open_session_file(settings, "sess-1", "sub/deep.txt") as f:  # type: ignore[union-attr]
        assert f.read() == b"deep"
    for bad in ["link-out", "link-in", "etc-dir/passwd", "../x", "/etc/passwd", "sub", "missing"]:
        assert open_session_file(settings, "sess-1", bad) is None, bad


def test_request_validation() -> None:
    assert ExecutionRequest(work_dir="a/./b/").work_dir == "a/b"
    assert ExecutionRequest(timeout_s=3600).timeout_s == 3600
    for bad in [
        {"work_dir": "/abs"},
        {"work_dir": "../up"},
        {"work_dir": "a/../../b"},
        {"timeout_s": 0},
        {"timeout_s": 3601},
        {"executor": "podman"},
        {"image": "bad image; rm -rf /"},
        {"use_docker": False},
    ]:
        with pytest.raises(pydantic.ValidationError):
            ExecutionRequest(**bad)


def test_settings_validation() -> None:
    assert ExecutionSettings().memory_bytes == 512 * 1024**2
    assert ExecutionSettings(memory="1g").memory_bytes == 1024**3
    for bad in [{"memory": "lots"}, {"memory": "1k"}, {"timeout_s": 0}, {"executor": "ssh"}]:
        with pytest.raises(pydantic.ValidationError):
            ExecutionSettings(**bad)


def test_output_collector_keeps_head_and_tail() -> None:
    out = OutputCollector(1000)
    for _ in range(100):
        out.feed(b"0123456789" * 10)
    out.feed(b"LAST LINE")
    text = out.text()
    assert out.truncated and out.total == 10_009
    assert text.startswith("0123456789") and text.endswith("LAST LINE")
    assert "output truncated" in text and "10009 bytes" in text
    small = OutputCollector(1000)
    small.feed(b"short")
    assert small.text() == "short" and not small.truncated
