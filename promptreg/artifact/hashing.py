"""Content hash of an artifact folder.

The sha256 of a version is computed over its files in a canonical order: for every regular file
below the folder, sorted by its POSIX relative path (byte order of the UTF-8 encoding), one line

    <relative path> NUL <sha256 hex of the file's bytes> NUL <size in bytes> LF

is fed to an outer sha256. Hidden files (a path component starting with ".") are ignored, so editor
droppings and store markers do not change the hash. Symlinks are refused: an artifact is plain files.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from promptreg.errors import InputError

CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def list_artifact_files(folder: Path) -> list[str]:
    """Relative POSIX paths of the artifact's files, in canonical (sorted) order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"not a folder: {folder}")
    out: list[str] = []
    for p in folder.rglob("*"):
        rel = p.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if p.is_symlink():
            raise InputError(f"artifact folder contains a symlink, which is not allowed: {rel.as_posix()}")
        if p.is_file():
            out.append(rel.as_posix())
    return sorted(out, key=lambda s: s.encode("utf-8"))


def digest_entries(entries: list[tuple[str, str, int]]) -> str:
    """Outer sha256 over (relative path, file sha256 hex, size) entries (sorted here)."""
    outer = hashlib.sha256()
    for rel, sha, size in sorted(entries, key=lambda e: e[0].encode("utf-8")):
        outer.update(f"{rel}\0{sha}\0{size}\n".encode())
    return outer.hexdigest()


def folder_entries(folder: Path) -> list[tuple[str, str, int]]:
    folder = Path(folder)
    return [
        (rel, file_sha256(folder / rel), (folder / rel).stat().st_size) for rel in list_artifact_files(folder)
    ]


def folder_sha256(folder: Path) -> str:
    """The artifact's content address (see module docstring)."""
    entries = folder_entries(folder)
    if not entries:
        raise InputError(f"artifact folder is empty: {folder}")
    return digest_entries(entries)
