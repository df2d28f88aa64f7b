"""What both artifact stores share: the layout constants, the crash-test hook, path and digest
helpers, :class:`ContentStat` and the :class:`ArtifactStore` interface."""

from __future__ import annotations

import errno
import os
import re
import shutil
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from promptreg.artifact.hashing import digest_entries, file_sha256, list_artifact_files
from promptreg.errors import (
    InputError,
    IntegrityError,
    one_line,
)

SHA_RE = re.compile(r"^[0-9a-f]{64}$")
READ_ONLY = 0o444
# Hidden object written last by S3Store.put_folder once the stored copy is verified. Hidden names are
# ignored by the folder hash, so the marker never changes the content address.
S3_COMPLETE_MARKER = ".promptreg-complete"
S3_MAX_SINGLE_PUT = 5 * 1024**3
FAULT_ENV = "PROMPTREG_FAULT_PAUSE"


def fault_point(stage: str) -> None:
    """Crash-test checkpoint (tests/test_gc_crash.py): when the environment variable
    PROMPTREG_FAULT_PAUSE equals ``stage``, print ``PAUSE <stage>`` on stderr and sleep, so that the
    test can kill -9 the process at exactly this point. Otherwise a single dict lookup.
    Stages: before_upload, mid_upload (here, between two files), after_upload, after_commit."""
    if os.environ.get(FAULT_ENV) == stage:
        import time

        sys.stderr.write(f"PAUSE {stage}\n")
        sys.stderr.flush()
        time.sleep(3600)


def _check_sha(sha256: str) -> str:
    if not isinstance(sha256, str) or not SHA_RE.match(sha256):
        raise InputError(f"not a sha256 content address (64 lowercase hex digits): {sha256!r}")
    return sha256


def _mismatch(uri: str, expected: str, got: str) -> IntegrityError:
    return IntegrityError(
        f"sha256 mismatch for {uri}: expected {expected}, got {got} (artifact tampered or corrupt)"
    )


def _digest_of_folder(folder: Path) -> str:
    """Folder sha256 of a stored/downloaded copy; '<empty>' / '<invalid: ...>' instead of raising."""
    try:
        files = list_artifact_files(folder)
        entries = [(rel, file_sha256(folder / rel), (folder / rel).stat().st_size) for rel in files]
    except InputError as e:
        return f"<invalid: {one_line(e)}>"
    except OSError as e:
        return f"<unreadable: {one_line(e.strerror or e)}>"
    if not entries:
        return "<empty>"
    return digest_entries(entries)


def _source_entries(src: Path, sha256: str) -> list[tuple[str, str, int]]:
    """Entries of the source folder, checked against the announced sha256 (InputError otherwise)."""
    src = Path(src)
    try:
        files = list_artifact_files(src)
        entries = [(rel, file_sha256(src / rel), (src / rel).stat().st_size) for rel in files]
    except OSError as e:
        raise InputError(f"cannot read artifact folder {src}: {one_line(e.strerror or e)}") from None
    if not entries:
        raise InputError(f"artifact folder is empty: {src}")
    got = digest_entries(entries)
    if got != sha256:
        raise InputError(f"artifact folder {src} has sha256 {got}, not the expected {sha256}")
    return entries


def _safe_rel(rel: str) -> str | None:
    """A relative POSIX path that cannot escape its folder, or None."""
    if not rel or rel.startswith("/") or "\\" in rel or "\0" in rel:
        return None
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return None
    return rel


def remove_tree(path: Path) -> None:
    """Remove a tree even if files/folders were made read-only (a no-op if it is gone)."""

    def fix(func, p, _exc):
        try:
            os.chmod(os.path.dirname(p), 0o755)
            if not os.path.islink(p):
                os.chmod(p, 0o755 if os.path.isdir(p) else 0o644)
            func(p)
        except FileNotFoundError:
            pass

    if not os.path.lexists(path):
        return
    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=fix)
    else:
        shutil.rmtree(path, onerror=fix)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _prepare_dest(dest: Path) -> Path:
    dest = Path(dest)
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise InputError(f"destination exists and is not an empty folder: {dest}")
    if dest.is_dir() and any(dest.iterdir()):
        raise InputError(f"destination folder is not empty: {dest}")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create {dest.parent}: {one_line(e.strerror or e)}") from None
    return dest


def _temp_sibling(dest: Path) -> Path:
    return dest.parent / f".{dest.name}.partial-{uuid.uuid4().hex[:12]}"


def _install_fetched(tmp: Path, dest: Path) -> None:
    """Atomically rename the verified temp folder to dest (an absent or empty folder)."""
    try:
        os.rename(tmp, dest)
    except OSError as e:
        if e.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
            raise InputError(f"destination appeared meanwhile and is not empty: {dest}") from None
        raise InputError(
            f"cannot move the fetched artifact to {dest}: {one_line(e.strerror or e)}"
        ) from None
    _fsync_dir(dest.parent)


def check_object_key(key: str) -> str:
    """A small-object key (``captures/...``): relative, no ``..``, no hidden part, not in ``sha256/``."""
    rel = _safe_rel(key) if isinstance(key, str) else None
    if rel is None or any(p.startswith(".") for p in rel.split("/")) or rel.split("/")[0] == "sha256":
        raise InputError(f"invalid object key {key!r}: a relative path outside sha256/, without hidden parts")
    return rel


@dataclass(frozen=True)
class ObjectStat:
    """One small object (see :meth:`ArtifactStore.list_objects`)."""

    key: str                 # relative to the store root
    size: int
    modified: float          # epoch seconds


@dataclass
class ContentStat:
    """What an S3 store holds at one content address (see :meth:`S3Store.content_stats`)."""

    complete: bool = False   # the completion marker exists: the upload finished and was verified
    newest: float = 0.0      # epoch seconds of the newest object
    size_bytes: int = 0      # artifact bytes (the marker excluded)


class ArtifactStore:
    """Base class of the content-addressed stores. Use :func:`open_store`."""

    root_uri: str

    def uri_for(self, sha256: str) -> str:
        sha = _check_sha(sha256)
        return f"{self.root_uri}/sha256/{sha[:2]}/{sha}"

    def put_folder(self, src: Path, sha256: str) -> str:
        raise NotImplementedError

    def fetch(self, uri: str, dest: Path, expected_sha256: str) -> Path:
        raise NotImplementedError

    def exists(self, sha256: str) -> bool:
        raise NotImplementedError

    def has_files(self, sha256: str, files: list[str]) -> bool:
        """Cheap post-commit check (no hashing) that the stored copy still holds ``files``; push uses it
        to re-upload content that ``gc`` deleted concurrently (promptreg.services.gc)."""
        raise NotImplementedError

    def list_shas(self) -> list[str]:
        raise NotImplementedError

    def delete(self, sha256: str) -> None:
        raise NotImplementedError

    def check(self) -> None:
        raise NotImplementedError

    # -- small whole objects beside the artifacts (captured traffic: promptreg.registry.captures) --
    def put_object(self, key: str, data: bytes) -> str:
        """Write one whole object at ``key`` (visible complete or not at all); its URI."""
        raise NotImplementedError

    def get_object(self, key: str) -> bytes:
        raise NotImplementedError

    def list_objects(self, prefix: str) -> list[ObjectStat]:
        """The objects whose key starts with ``prefix`` (a folder path ending in '/'), sorted by key."""
        raise NotImplementedError

    def delete_objects(self, keys: list[str]) -> None:
        """Remove objects (a missing one is not an error)."""
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.root_uri!r})"


# --------------------------------------------------------------------------------------------------
# Local folder
# --------------------------------------------------------------------------------------------------
