"""An artifact folder as one tar stream, for push and pull over HTTP (``promptreg server``).

Invariants:
- :func:`pack` sends exactly the files the content hash covers (``list_artifact_files``: regular
  files, hidden ones skipped, symlinks refused), in canonical order, as an uncompressed POSIX tar.
- :func:`unpack` trusts nothing it receives: it counts bytes as they arrive (over ``max_bytes``:
  PayloadTooLargeError, and nothing is left behind), accepts only regular files whose names are
  plain relative paths (no absolute path, ``..``, backslash, NUL, hidden component, link, device
  or duplicate), at most ``max_files`` of them, and writes into a fresh folder. The caller hashes
  what was written; a claimed sha256 is never taken on trust.
"""

from __future__ import annotations

import shutil
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath

from promptreg.artifact.hashing import CHUNK, list_artifact_files
from promptreg.errors import InputError, PayloadTooLargeError

CONTENT_TYPE = "application/x-tar"
MAX_FILES = 256
_SPOOL = 8 << 20


def pack(folder: Path) -> Iterator[bytes]:
    """The artifact folder as tar bytes, in chunks."""
    folder = Path(folder)
    files = list_artifact_files(folder)
    if not files:
        raise InputError(f"artifact folder is empty: {folder}")
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL) as buf:
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for rel in files:
                info = tar.gettarinfo(str(folder / rel), arcname=rel)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mode = 0o644
                with open(folder / rel, "rb") as f:
                    tar.addfile(info, f)
        buf.seek(0)
        while chunk := buf.read(CHUNK):
            yield chunk


def _check_member(member: tarfile.TarInfo, seen: set[str]) -> str:
    name = member.name
    if not member.isreg():
        raise InputError(f"artifact upload holds {name!r}, which is not a regular file (links and devices are refused)")
    if not name or "\x00" in name or "\\" in name or name.startswith("/"):
        raise InputError(f"artifact upload holds an unsafe path {name!r}")
    parts = PurePosixPath(name).parts
    if any(p in ("", ".", "..") or p.startswith(".") for p in parts) or len(parts) > 8 or len(name) > 512:
        raise InputError(f"artifact upload holds an unsafe path {name!r}")
    if name in seen:
        raise InputError(f"artifact upload holds {name!r} twice")
    seen.add(name)
    return name


def unpack(chunks: Iterable[bytes], dest: Path, *, max_bytes: int, max_files: int = MAX_FILES) -> Path:
    """Write the tar stream ``chunks`` into the new folder ``dest`` (which must not exist)."""
    dest = Path(dest)
    if dest.exists():
        raise InputError(f"destination exists: {dest}")
    total = 0
    with tempfile.TemporaryFile() as raw:
        for chunk in chunks:
            total += len(chunk)
            if total > max_bytes:
                raise PayloadTooLargeError(f"artifact upload is over the limit of {max_bytes} bytes")
            raw.write(chunk)
        raw.seek(0)
        _extract(raw, dest, max_bytes, max_files)
    return dest


def _extract(raw, dest: Path, max_bytes: int, max_files: int) -> None:
    seen: set[str] = set()
    size = 0
    dest.mkdir(parents=True)
    try:
        try:
            tar = tarfile.open(fileobj=raw, mode="r:")
        except tarfile.TarError as exc:
            raise InputError(f"artifact upload is not a tar stream: {exc}") from None
        with tar:
            try:
                for member in tar:
                    name = _check_member(member, seen)
                    if len(seen) > max_files:
                        raise InputError(f"artifact upload holds more than {max_files} files")
                    size += member.size
                    if size > max_bytes:
                        raise PayloadTooLargeError(f"artifact upload is over the limit of {max_bytes} bytes")
                    target = dest.joinpath(*PurePosixPath(name).parts)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    src = tar.extractfile(member)
                    with open(target, "xb") as out:
                        shutil.copyfileobj(src, out, CHUNK)
            except tarfile.TarError as exc:
                raise InputError(f"artifact upload is a damaged tar stream: {exc}") from None
        if not seen:
            raise InputError("artifact upload is empty")
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise


__all__ = ["CONTENT_TYPE", "MAX_FILES", "pack", "unpack"]
