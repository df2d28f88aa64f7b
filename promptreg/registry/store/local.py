"""The local-folder artifact store: an upload is written to a temporary sibling, verified, made
read-only and renamed into place, so nothing half-written is ever visible at a final path."""

from __future__ import annotations

import errno
import os
import shutil
import uuid
from pathlib import Path
from urllib.parse import quote, unquote, urlparse

from promptreg.artifact.hashing import CHUNK, list_artifact_files
from promptreg.errors import (
    ArtifactNotFoundError,
    InputError,
    IntegrityError,
    StoreUnavailableError,
    one_line,
)
from promptreg.registry.store.base import (
    READ_ONLY,
    SHA_RE,
    ArtifactStore,
    ObjectStat,
    _check_sha,
    _digest_of_folder,
    _fsync_dir,
    _install_fetched,
    _mismatch,
    _prepare_dest,
    _source_entries,
    _temp_sibling,
    check_object_key,
    fault_point,
    remove_tree,
)


class LocalStore(ArtifactStore):
    """``<root>/sha256/<ab>/<sha>/``; writes go through ``<root>/.tmp/<uuid>/`` and an atomic rename."""

    def __init__(self, root: Path):
        self.root = Path(root).expanduser().absolute()
        self.root_uri = "file://" + quote(self.root.as_posix())

    # -- paths ----------------------------------------------------------------------------------
    def path_for(self, sha256: str) -> Path:
        sha = _check_sha(sha256)
        return self.root / "sha256" / sha[:2] / sha

    def _path_from_uri(self, uri: str) -> Path:
        if uri.startswith("file://"):
            parsed = urlparse(uri)
            if parsed.netloc not in ("", "localhost"):
                raise InputError(f"not a local file URI: {uri}")
            return Path(unquote(parsed.path))
        if "://" in uri:
            raise InputError(f"a local artifact store cannot fetch {uri}")
        return Path(uri).expanduser().absolute()

    def _tmp_dir(self) -> Path:
        tmp_root = self.root / ".tmp"
        try:
            tmp_root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise self._unavailable(e) from None
        return tmp_root / uuid.uuid4().hex

    def _unavailable(self, e: OSError) -> StoreUnavailableError:
        return StoreUnavailableError(
            f"artifact store folder {self.root} is not usable: {one_line(e.strerror or e)}"
        )

    def _is_valid(self, folder: Path, sha256: str) -> bool:
        return folder.is_dir() and not folder.is_symlink() and _digest_of_folder(folder) == sha256

    # -- API ------------------------------------------------------------------------------------
    def put_folder(self, src: Path, sha256: str) -> str:
        sha = _check_sha(sha256)
        entries = _source_entries(Path(src), sha)
        uri = self.uri_for(sha)
        final = self.path_for(sha)
        if self._is_valid(final, sha):
            return uri
        tmp: Path | None = self._tmp_dir()
        try:
            try:
                tmp.mkdir()
                for i, (rel, _sha, _size) in enumerate(entries):
                    if i == 1:
                        fault_point("mid_upload")
                    target = tmp / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with open(Path(src) / rel, "rb") as fin, open(target, "xb") as fout:
                        shutil.copyfileobj(fin, fout, CHUNK)
                        fout.flush()
                        os.fsync(fout.fileno())
                    os.chmod(target, READ_ONLY)
                for d in sorted({(tmp / rel).parent for rel, _s, _n in entries}, reverse=True):
                    _fsync_dir(d)
            except FileNotFoundError as e:
                raise InputError(f"artifact file vanished during upload: {e.filename}") from None
            except OSError as e:
                raise self._unavailable(e) from None
            got = _digest_of_folder(tmp)
            if got != sha:
                raise IntegrityError(
                    f"stored copy of {src} hashes to {got}, expected {sha} (source changed during upload?)"
                )
            self._install(tmp, final, sha)
            tmp = None
        finally:
            if tmp is not None:
                remove_tree(tmp)
        return uri

    def _install(self, tmp: Path, final: Path, sha: str) -> None:
        """Rename the verified tmp folder to final; repair a corrupt final folder."""
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise self._unavailable(e) from None
        for _ in range(8):
            try:
                os.rename(tmp, final)
                _fsync_dir(final.parent)
                return
            except OSError as e:
                if e.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
                    raise self._unavailable(e) from None
            # Something is at the final path (a concurrent writer, or a corrupt earlier copy).
            if self._is_valid(final, sha):
                remove_tree(tmp)
                return
            aside = self._tmp_dir().with_name(f"corrupt-{uuid.uuid4().hex}")
            try:
                os.rename(final, aside)
            except FileNotFoundError:
                continue  # someone else moved it meanwhile; retry the rename
            except OSError as e:
                raise self._unavailable(e) from None
            remove_tree(aside)
        raise StoreUnavailableError(f"could not install artifact {sha} in {self.root} (concurrent writers?)")

    def fetch(self, uri: str, dest: Path, expected_sha256: str) -> Path:
        expected = _check_sha(expected_sha256)
        src = self._path_from_uri(uri)
        if not src.is_dir():
            raise ArtifactNotFoundError(f"artifact not found: {uri}")
        dest = _prepare_dest(Path(dest))
        tmp: Path | None = _temp_sibling(dest)
        try:
            try:
                files = list_artifact_files(src)
            except InputError as e:
                raise IntegrityError(f"stored artifact {uri} is invalid: {one_line(e)}") from None
            try:
                tmp.mkdir()
                for rel in files:
                    target = tmp / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src / rel, target)  # a real copy, never a link into the store
            except OSError as e:
                raise StoreUnavailableError(
                    f"cannot copy artifact {uri} to {dest}: {one_line(e.strerror or e)}"
                ) from None
            got = _digest_of_folder(tmp)
            if got != expected:
                raise _mismatch(uri, expected, got)
            _install_fetched(tmp, dest)
            tmp = None
        finally:
            if tmp is not None:
                remove_tree(tmp)
        return dest

    def exists(self, sha256: str) -> bool:
        return self.path_for(sha256).is_dir()

    def has_files(self, sha256: str, files: list[str]) -> bool:
        final = self.path_for(sha256)
        return all((final / rel).is_file() for rel in files)

    def list_shas(self) -> list[str]:
        base = self.root / "sha256"
        if not base.is_dir():
            return []
        out = []
        try:
            for sub in base.iterdir():
                if not sub.is_dir() or len(sub.name) != 2:
                    continue
                for d in sub.iterdir():
                    if d.is_dir() and SHA_RE.match(d.name) and d.name[:2] == sub.name:
                        out.append(d.name)
        except OSError as e:
            raise self._unavailable(e) from None
        return sorted(out)

    def delete(self, sha256: str) -> None:
        """Remove one artifact; a no-op if it is not there."""
        final = self.path_for(sha256)
        if not os.path.lexists(final):
            return
        aside = self._tmp_dir().with_name(f"deleting-{uuid.uuid4().hex}")
        try:
            os.rename(final, aside)
        except FileNotFoundError:
            return
        except OSError as e:
            raise self._unavailable(e) from None
        remove_tree(aside)

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe_dir = self.root / ".tmp"
            probe_dir.mkdir(exist_ok=True)
            probe = probe_dir / f"probe-{uuid.uuid4().hex}"
            with open(probe, "xb") as f:
                f.write(b"ok")
                f.flush()
                os.fsync(f.fileno())
            probe.unlink()
        except OSError as e:
            raise self._unavailable(e) from None

    # -- small whole objects ----------------------------------------------------------------------
    def put_object(self, key: str, data: bytes) -> str:
        """Written to ``.tmp/``, fsynced, made read-only, then renamed to ``<root>/<key>``: a reader sees the
        whole object or nothing (a writer killed before the rename leaves a ``partial`` for gc)."""
        rel = check_object_key(key)
        final = self.root / rel
        tmp = self._tmp_dir()
        try:
            with open(tmp, "xb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, READ_ONLY)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.rename(tmp, final)
            _fsync_dir(final.parent)
        except OSError as e:
            raise self._unavailable(e) from None
        finally:
            if os.path.lexists(tmp):
                tmp.unlink()
        return "file://" + quote(final.as_posix())

    def get_object(self, key: str) -> bytes:
        path = self.root / check_object_key(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise ArtifactNotFoundError(f"object not found: {path}") from None
        except OSError as e:
            raise self._unavailable(e) from None

    def list_objects(self, prefix: str) -> list[ObjectStat]:
        folder = prefix.rstrip("/")
        top = self.root / check_object_key(folder) if folder else self.root
        out = []
        if not top.is_dir():
            return out
        try:
            for dirpath, dirnames, filenames in os.walk(top):
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                for name in filenames:
                    if name.startswith("."):
                        continue
                    path = Path(dirpath) / name
                    st = path.stat()
                    key = path.relative_to(self.root).as_posix()
                    if key.startswith(prefix):
                        out.append(ObjectStat(key, st.st_size, st.st_mtime))
        except OSError as e:
            raise self._unavailable(e) from None
        return sorted(out, key=lambda o: o.key)

    def delete_objects(self, keys: list[str]) -> None:
        for key in keys:
            path = self.root / check_object_key(key)
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError as e:
                raise self._unavailable(e) from None

    def describe(self) -> str:
        return f"local folder {self.root}"


# --------------------------------------------------------------------------------------------------
# S3 (AWS, MinIO, any S3-compatible endpoint)
# --------------------------------------------------------------------------------------------------
