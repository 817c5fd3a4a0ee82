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
    session_dir_name,
    session_workdir,
)
from autobots.execution.output import OutputCollector
from autobots.execution.workdir import chown_tree, list_workdir_files, run_subdir
from autobots.schemas.workflow import CodeExecutionObject
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
    root = path.parent
    names = set()
    # Ids that are no safe directory name (old clients send any) get a hashed name inside the root.
    for odd in [".", "..", "../x", "a/b", "/abs", "x" * 200, "a\x00b", ".hidden", "my chat"]:
        odd_path = session_workdir(settings, odd)
        assert odd_path.parent == root and odd_path.is_dir() and not odd_path.is_symlink()
        assert odd_path.name == session_dir_name(odd) and odd_path.name.startswith("_s-")
        names.add(odd_path.name)
    assert len(names) == 9
    # A hashed name never equals an id used as is: those start with a letter or digit.
    assert session_dir_name(session_dir_name("my chat")) != session_dir_name("my chat")
    with pytest.raises(ValueError):
        session_workdir(settings, "")


def test_walks_never_follow_a_top_level_symlink(settings: ExecutionSettings) -> None:
    session = session_workdir(settings, "walk")
    (session / "real").mkdir()
    (session / "real" / "f.txt").write_text("x")
    os.symlink("/etc", session / "sub")  # what `ln -s /etc sub` in a sandbox leaves
    assert [f.name for f in list_workdir_files(session)] == ["real/f.txt"]
    assert list_workdir_files(session, "sub") == []
    assert [f.name for f in list_workdir_files(session, "real")] == ["f.txt"]
    linked_root = session.parent / "linked"
    os.symlink(session, linked_root)
    assert list_workdir_files(linked_root) == []  # the top itself is not followed either
    # run_subdir leaves a planted link alone and creates nothing through it.
    assert run_subdir(session, "sub/deeper") == "sub/deeper"
    assert not Path("/etc/deeper").exists()
    assert run_subdir(session, "new/dir") == "new/dir" and (session / "new" / "dir").is_dir()


@pytest.mark.skipif(os.geteuid() != 0, reason="chown_tree only acts when the server is root")
def test_chown_tree_never_follows_links(settings: ExecutionSettings) -> None:
    session = session_workdir(settings, "chown")
    victim = session.parent.parent / "host-file.txt"
    victim.write_text("host")
    os.chown(victim, 0, 0)
    (session / "mine.txt").write_text("m")
    os.symlink(victim, session / "link")
    os.symlink(victim.parent, session / "dirlink")
    chown_tree(session, 4242, 4242)
    assert (session / "mine.txt").stat().st_uid == 4242
    assert os.lstat(session / "link").st_uid == 4242
    assert victim.stat().st_uid == 0 and victim.parent.stat().st_uid == 0
    chown_tree(session.parent / "not-there", 4242, 4242)  # gone: nothing to do
    top_link = session.parent / "top-link"
    os.symlink(victim.parent, top_link)
    chown_tree(top_link, 4243, 4243)
    assert victim.parent.stat().st_uid == 0


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
    assert resolve_session_file(settings, "sess 1", "ok.txt") is None  # another (hashed) dir
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


def test_agent_config_validates_code_execution_options() -> None:
    """The API schema uses the same checks, so a bad option is a 400 before anything runs."""
    ok = CodeExecutionObject.model_validate({"work_dir": "a/./b/", "image": "autobots-sandbox:latest"})
    assert ok.work_dir == "a/b"
    for bad in [{"work_dir": "../x"}, {"work_dir": "/abs"}, {"image": "Bad Image"}, {"image": "x;y"}]:
        with pytest.raises(pydantic.ValidationError):
            CodeExecutionObject.model_validate(bad)
    # AutoGen's use_docker is read, not dropped; a contradiction is an error.
    assert CodeExecutionObject.model_validate({"use_docker": False}).executor == "local"
    assert CodeExecutionObject.model_validate({"use_docker": True}).executor == "docker"
    named = CodeExecutionObject.model_validate({"use_docker": "python:3.11"})
    assert (named.executor, named.image) == ("docker", "python:3.11")
    assert CodeExecutionObject.model_validate({"use_docker": None, "executor": "local"}).executor == "local"
    assert "use_docker" not in CodeExecutionObject.model_validate({"use_docker": False}).model_dump()
    for bad in [
        {"use_docker": False, "executor": "docker"},
        {"use_docker": True, "executor": "local"},
        {"use_docker": False, "image": "x:1"},
        {"use_docker": "a:1", "image": "b:1"},
        {"use_docker": 3},
    ]:
        with pytest.raises(pydantic.ValidationError, match="use_docker"):
            CodeExecutionObject.model_validate(bad)


def test_settings_validation() -> None:
    assert ExecutionSettings().memory_bytes == 512 * 1024**2
    assert ExecutionSettings(memory="1g").memory_bytes == 1024**3
    assert ExecutionSettings().allowed_images == ["autobots-sandbox:latest"]
    assert ExecutionSettings(image="mine:1").allowed_images == ["mine:1"]
    extra = ExecutionSettings(allowed_images=["python:3.11"])
    assert extra.image_allowed("python:3.11") and extra.image_allowed(extra.image)
    assert not extra.image_allowed("autobots-server:latest")
    for bad in [
        {"memory": "lots"},
        {"memory": "1k"},
        {"timeout_s": 0},
        {"executor": "ssh"},
        {"allowed_images": ["Bad Image"]},
        {"image": "no good"},
    ]:
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
