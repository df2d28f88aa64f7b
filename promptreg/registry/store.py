"""Content-addressed artifact store: a local folder or an S3 bucket (AWS S3, MinIO, ...).

Layout (both backends)::

    <root>/sha256/<sha[:2]>/<sha>/<artifact files, nested paths kept>

An artifact's address is the folder sha256 of promptreg.artifact.hashing. Stored artifacts are
immutable: nothing half-written is ever visible at a final local path, a correct S3 object is never
overwritten, and every upload and download is verified against the sha256 before it counts.

boto3/botocore are imported lazily (CLI start-up speed).
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import quote, unquote, urlparse

from promptreg.artifact.hashing import CHUNK, digest_entries, file_sha256, list_artifact_files
from promptreg.errors import (
    ArtifactNotFoundError,
    InputError,
    IntegrityError,
    PromptregError,
    StoreUnavailableError,
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


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


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
        return f"<invalid: {_one_line(e)}>"
    except OSError as e:
        return f"<unreadable: {_one_line(e.strerror or e)}>"
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
        raise InputError(f"cannot read artifact folder {src}: {_one_line(e.strerror or e)}") from None
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
        raise InputError(f"cannot create {dest.parent}: {_one_line(e.strerror or e)}") from None
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
            f"cannot move the fetched artifact to {dest}: {_one_line(e.strerror or e)}"
        ) from None
    _fsync_dir(dest.parent)


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

    def describe(self) -> str:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.root_uri!r})"


# --------------------------------------------------------------------------------------------------
# Local folder
# --------------------------------------------------------------------------------------------------


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
            f"artifact store folder {self.root} is not usable: {_one_line(e.strerror or e)}"
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
                raise IntegrityError(f"stored artifact {uri} is invalid: {_one_line(e)}") from None
            try:
                tmp.mkdir()
                for rel in files:
                    target = tmp / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src / rel, target)  # a real copy, never a link into the store
            except OSError as e:
                raise StoreUnavailableError(
                    f"cannot copy artifact {uri} to {dest}: {_one_line(e.strerror or e)}"
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

    def describe(self) -> str:
        return f"local folder {self.root}"


# --------------------------------------------------------------------------------------------------
# S3 (AWS, MinIO, any S3-compatible endpoint)
# --------------------------------------------------------------------------------------------------

S3_CLIENT_CONFIG = dict(retries={"max_attempts": 8, "mode": "adaptive"}, connect_timeout=5, read_timeout=60)
# The reachability probe retries little so that an unreachable endpoint fails in seconds.
S3_PROBE_CONFIG = dict(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=3, read_timeout=10)


class S3Store(ArtifactStore):
    """``s3://bucket[/prefix]/sha256/<ab>/<sha>/<files>`` plus a hidden completion marker object."""

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None):
        if not bucket or "/" in bucket:
            raise InputError(f"invalid S3 bucket name: {bucket!r}")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.root_uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.endpoint_url = endpoint_url or os.environ.get("MLFLOW_S3_ENDPOINT_URL") or None
        self._client_obj = None
        self._probe_client_obj = None
        self._reachable: set[str] = set()

    # -- clients & errors -----------------------------------------------------------------------
    def _endpoint_display(self) -> str:
        ep = self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        return ep or "AWS default endpoint"

    def _make_client(self, config_kwargs: dict):
        try:
            import boto3
            from botocore.config import Config

            session = boto3.session.Session()
            return session.client("s3", endpoint_url=self.endpoint_url, config=Config(**config_kwargs))
        except PromptregError:
            raise
        except ValueError as e:
            raise InputError(f"invalid S3 endpoint {self._endpoint_display()}: {_one_line(e)}") from None
        except Exception as e:  # botocore errors at client creation (profile, region, ...)
            raise StoreUnavailableError(
                f"cannot create an S3 client for {self.root_uri} ({self._endpoint_display()}): {_one_line(e)}"
            ) from None

    def _client(self):
        if self._client_obj is None:
            self._client_obj = self._make_client(S3_CLIENT_CONFIG)
        return self._client_obj

    def _probe_client(self):
        if self._probe_client_obj is None:
            self._probe_client_obj = self._make_client(S3_PROBE_CONFIG)
        return self._probe_client_obj

    @contextmanager
    def _errors(
        self, action: str, *, bucket: str | None = None, missing: str | None = None
    ) -> Iterator[None]:
        """Translate botocore errors into one-line promptreg errors.

        ``missing``: the artifact URI to name in a NotFoundError when a key (not the bucket) is absent.
        """
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            NoCredentialsError,
            ParamValidationError,
            PartialCredentialsError,
        )
        from botocore.exceptions import (
            ConnectionError as BotoConnectionError,
        )

        bucket = bucket or self.bucket
        where = f"S3 bucket {bucket} at {self._endpoint_display()}"
        try:
            yield
        except PromptregError:
            raise
        except (NoCredentialsError, PartialCredentialsError):
            raise StoreUnavailableError(
                f"no usable AWS credentials to {action} in {where} "
                "(set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile)"
            ) from None
        except BotoConnectionError as e:  # EndpointConnectionError, ConnectTimeout, ReadTimeout, ...
            raise StoreUnavailableError(f"cannot reach {where} to {action}: {_one_line(e)}") from None
        except ParamValidationError as e:
            raise InputError(f"invalid S3 request to {action} in {where}: {_one_line(e)}") from None
        except ClientError as e:
            err = e.response.get("Error", {}) or {}
            code = str(err.get("Code", ""))
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "NoSuchBucket":
                raise StoreUnavailableError(f"{where} does not exist") from None
            if missing is not None and (code in ("NoSuchKey", "404", "NotFound") or status == 404):
                raise ArtifactNotFoundError(f"artifact not found: {missing}") from None
            if code in ("AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                raise StoreUnavailableError(
                    f"access denied to {where} while trying to {action} ({code}; check credentials and permissions)"
                ) from None
            msg = _one_line(err.get("Message") or e)
            raise StoreUnavailableError(
                f"S3 error {code or status} while trying to {action} in {where}: {msg}"
            ) from None
        except BotoCoreError as e:
            raise StoreUnavailableError(
                f"S3 failure while trying to {action} in {where}: {_one_line(e)}"
            ) from None

    def _head_bucket(self, bucket: str, *, strict: bool) -> None:
        """Fast reachability check. ``strict``: also fail on access denied (doctor)."""
        from botocore.exceptions import ClientError

        where = f"S3 bucket {bucket} at {self._endpoint_display()}"
        with self._errors("check the bucket", bucket=bucket):
            try:
                self._probe_client().head_bucket(Bucket=bucket)
            except ClientError as e:
                code = str(e.response.get("Error", {}).get("Code", ""))
                status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if code in ("404", "NoSuchBucket", "NotFound") or status == 404:
                    raise StoreUnavailableError(f"{where} does not exist") from None
                if (code in ("403", "AccessDenied", "Forbidden") or status == 403) and not strict:
                    return  # reachable; the operation itself may still be allowed (prefix-scoped policies)
                if code in ("301", "PermanentRedirect") or status == 301:
                    raise StoreUnavailableError(
                        f"{where} is in another region (set AWS_DEFAULT_REGION to the bucket's region)"
                    ) from None
                raise

    def _ensure_reachable(self, bucket: str | None = None) -> None:
        """Probe the bucket once per store with the low-retry client, so that an unreachable endpoint
        fails in seconds instead of after the data client's long retry schedule."""
        bucket = bucket or self.bucket
        if bucket not in self._reachable:
            self._head_bucket(bucket, strict=False)
            self._reachable.add(bucket)

    # -- keys -----------------------------------------------------------------------------------
    def _dir_key(self, sha: str) -> str:
        base = f"{self.prefix}/" if self.prefix else ""
        return f"{base}sha256/{sha[:2]}/{sha}/"

    def _parse_uri(self, uri: str) -> tuple[str, str]:
        parsed = urlparse(uri)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise InputError(f"an S3 artifact store cannot fetch {uri}")
        key = parsed.path.strip("/")
        if not key:
            raise InputError(f"not an artifact URI: {uri}")
        return parsed.netloc, key + "/"

    def _list(self, prefix: str, *, bucket: str | None = None) -> dict[str, dict]:
        """All objects under a key prefix: key -> listing entry."""
        bucket = bucket or self.bucket
        out: dict[str, dict] = {}
        paginator = self._client().get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []) or []:
                out[obj["Key"]] = obj
        return out

    @staticmethod
    def _artifact_rels(listing: dict[str, dict], dir_key: str) -> dict[str, dict]:
        """rel path -> listing entry for the artifact (non-hidden) objects below dir_key."""
        out = {}
        for key, obj in listing.items():
            rel = key[len(dir_key) :]
            if any(part.startswith(".") for part in rel.split("/")):
                continue
            out[rel] = obj
        return out

    def _hash_object(self, key: str, *, bucket: str | None = None, sink=None) -> tuple[str, int]:
        """Download one object (into ``sink`` if given) and return (sha256 hex, size)."""
        resp = self._client().get_object(Bucket=bucket or self.bucket, Key=key)
        h = hashlib.sha256()
        size = 0
        body = resp["Body"]
        try:
            for chunk in body.iter_chunks(CHUNK):
                h.update(chunk)
                size += len(chunk)
                if sink is not None:
                    sink.write(chunk)
        finally:
            body.close()
        return h.hexdigest(), size

    def _put_file(self, path: Path, key: str, file_sha: str, size: int) -> None:
        if size > S3_MAX_SINGLE_PUT:
            raise InputError(f"artifact file is larger than 5 GiB, which the store does not support: {path}")
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            raise InputError(f"artifact file vanished during upload: {path}") from None
        except OSError as e:
            raise InputError(f"cannot read artifact file {path}: {_one_line(e.strerror or e)}") from None
        with f:
            self._client().put_object(
                Bucket=self.bucket,
                Key=key,
                Body=f,
                ContentLength=size,
                ContentType="application/octet-stream",
                Metadata={"sha256": file_sha},
            )

    # -- API ------------------------------------------------------------------------------------
    def put_folder(self, src: Path, sha256: str) -> str:
        sha = _check_sha(sha256)
        src = Path(src)
        entries = _source_entries(src, sha)
        want = {rel: (fsha, size) for rel, fsha, size in entries}
        uri = self.uri_for(sha)
        dir_key = self._dir_key(sha)
        self._ensure_reachable()
        with self._errors(f"store {uri}"):
            listing = self._list(dir_key)
            marker_key = dir_key + S3_COMPLETE_MARKER
            stored = self._artifact_rels(listing, dir_key)
            verified: dict[str, tuple[str, int]] = {}
            # Objects that do not belong to the artifact (left by tampering) would break the hash.
            extras = [dir_key + rel for rel in stored if rel not in want]
            if extras:
                self._delete_keys(extras)
            for i, (rel, (fsha, size)) in enumerate(want.items()):
                if i == 1:
                    fault_point("mid_upload")
                obj = stored.get(rel)
                if obj is not None and int(obj.get("Size", -1)) == size:
                    got = self._hash_object(dir_key + rel)
                    if got == (fsha, size):
                        verified[rel] = got  # a correct object is never overwritten
                        continue
                self._put_file(src / rel, dir_key + rel, fsha, size)
                verified[rel] = self._hash_object(dir_key + rel)  # verify from the stored bytes
            # Final check of the stored copy: exactly the artifact's files, hashing to sha.
            now = self._artifact_rels(self._list(dir_key), dir_key)
            got_sha = (
                digest_entries([(rel, h, n) for rel, (h, n) in verified.items()])
                if set(now) == set(verified)
                else f"<{len(now)} objects instead of {len(verified)}>"
            )
            if got_sha != sha:
                raise IntegrityError(
                    f"stored copy at {uri} hashes to {got_sha}, expected {sha} (upload corrupted or raced)"
                )
            if marker_key not in listing:
                self._client().put_object(
                    Bucket=self.bucket, Key=marker_key, Body=sha.encode(), ContentType="text/plain"
                )
        return uri

    def fetch(self, uri: str, dest: Path, expected_sha256: str) -> Path:
        from botocore.exceptions import BotoCoreError

        expected = _check_sha(expected_sha256)
        bucket, dir_key = self._parse_uri(uri)
        dest = Path(dest)
        self._ensure_reachable(bucket)
        with self._errors(f"fetch {uri}", bucket=bucket, missing=uri):
            listing = self._list(dir_key, bucket=bucket)
            rels = self._artifact_rels(listing, dir_key)
            if not rels:
                raise ArtifactNotFoundError(f"artifact not found: {uri}")
            bad = [rel for rel in rels if _safe_rel(rel) is None]
            if bad:
                raise IntegrityError(f"stored artifact {uri} has an unsafe object name: {bad[0]!r}")
            dest = _prepare_dest(dest)
            tmp: Path | None = _temp_sibling(dest)
            try:
                tmp.mkdir()
                for rel in sorted(rels):
                    target = tmp / PurePosixPath(rel)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with open(target, "xb") as f:
                        self._hash_object(dir_key + rel, bucket=bucket, sink=f)
                got = _digest_of_folder(tmp)
                if got != expected:
                    raise _mismatch(uri, expected, got)
                _install_fetched(tmp, dest)
                tmp = None
            except (PromptregError, BotoCoreError):
                raise
            except OSError as e:
                raise StoreUnavailableError(
                    f"cannot write the fetched artifact to {dest}: {_one_line(e.strerror or e)}"
                ) from None
            finally:
                if tmp is not None:
                    remove_tree(tmp)
        return dest

    def exists(self, sha256: str) -> bool:
        """True when a completely uploaded and verified copy is recorded (completion marker)."""
        from botocore.exceptions import ClientError

        sha = _check_sha(sha256)
        self._ensure_reachable()
        with self._errors(f"look up {self.uri_for(sha)}"):
            try:
                self._client().head_object(Bucket=self.bucket, Key=self._dir_key(sha) + S3_COMPLETE_MARKER)
                return True
            except ClientError as e:
                code = str(e.response.get("Error", {}).get("Code", ""))
                if code in ("404", "NoSuchKey", "NotFound"):
                    return False
                raise

    def has_files(self, sha256: str, files: list[str]) -> bool:
        sha = _check_sha(sha256)
        dir_key = self._dir_key(sha)
        self._ensure_reachable()
        with self._errors(f"look up {self.uri_for(sha)}"):
            keys = set(self._list(dir_key))
        return dir_key + S3_COMPLETE_MARKER in keys and all(dir_key + rel in keys for rel in files)

    def list_shas(self) -> list[str]:
        """Every content address with at least one object (incomplete uploads included, for gc)."""
        return sorted(self.content_stats())

    def content_stats(self, sha256: str | None = None) -> dict[str, ContentStat]:
        """sha256 -> what is stored at that content address (of ``sha256`` only, if given), from one
        listing: whether the upload completed (its marker exists), its newest object's time and its
        artifact bytes. Incomplete uploads are included (for gc)."""
        base = f"{self.prefix}/sha256/" if self.prefix else "sha256/"
        self._ensure_reachable()
        with self._errors("list artifacts"):
            listing = self._list(self._dir_key(_check_sha(sha256)) if sha256 else base)
        out: dict[str, ContentStat] = {}
        for key, obj in listing.items():
            parts = key[len(base) :].split("/")
            if len(parts) < 3 or not SHA_RE.match(parts[1]) or parts[1][:2] != parts[0]:
                continue
            stat = out.setdefault(parts[1], ContentStat())
            if "/".join(parts[2:]) == S3_COMPLETE_MARKER:
                stat.complete = True
            else:
                stat.size_bytes += int(obj.get("Size", 0))
            modified = obj.get("LastModified")
            if modified is not None:
                stat.newest = max(stat.newest, modified.timestamp())
        return out

    # -- any object under the store's prefix (e.g. data files for drift checks) ----------------
    def list_keys(self, action: str | None = None) -> list[str]:
        """The keys of every object under the store's bucket/prefix, sorted (``action``: how an error
        names the operation)."""
        with self._errors(action or f"list {self.root_uri}", bucket=self.bucket):
            return sorted(self._list(self.prefix, bucket=self.bucket))

    def download(self, key: str, dest: Path) -> Path:
        """Download one object of the bucket into the file ``dest`` (no verification: not an artifact)."""
        with self._errors(f"download s3://{self.bucket}/{key}", bucket=self.bucket):
            self._client().download_file(self.bucket, key, str(dest))
        return dest

    def _delete_keys(self, keys: list[str]) -> None:
        for i in range(0, len(keys), 1000):
            batch = keys[i : i + 1000]
            resp = self._client().delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
            )
            errors = resp.get("Errors") or []
            if errors:
                first = errors[0]
                raise StoreUnavailableError(
                    f"could not delete s3://{self.bucket}/{first.get('Key')}: "
                    f"{first.get('Code')} {_one_line(first.get('Message', ''))} ({len(errors)} failed)"
                )

    def delete(self, sha256: str) -> None:
        """Remove one artifact (completion marker first); a no-op if it is not there."""
        sha = _check_sha(sha256)
        dir_key = self._dir_key(sha)
        self._ensure_reachable()
        with self._errors(f"delete {self.uri_for(sha)}"):
            keys = list(self._list(dir_key))
            marker = dir_key + S3_COMPLETE_MARKER
            if marker in keys:
                self._delete_keys([marker])
                keys.remove(marker)
            if keys:
                self._delete_keys(keys)

    def check(self) -> None:
        self._head_bucket(self.bucket, strict=True)
        self._reachable.add(self.bucket)

    def describe(self) -> str:
        return f"{self.root_uri} (endpoint {self._endpoint_display()})"


# --------------------------------------------------------------------------------------------------


def open_store(uri: str, *, s3_endpoint_url: str | None = None) -> ArtifactStore:
    """A local path or ``file:///abs/path`` -> LocalStore; ``s3://bucket[/prefix]`` -> S3Store."""
    if not isinstance(uri, str) or not uri.strip():
        raise InputError("artifact store URI is empty")
    uri = uri.strip()
    if uri.startswith("s3://"):
        parsed = urlparse(uri)
        if not parsed.netloc:
            raise InputError(f"S3 store URI has no bucket: {uri}")
        if parsed.query or parsed.fragment:
            raise InputError(f"S3 store URI must not have a query or fragment: {uri}")
        return S3Store(parsed.netloc, parsed.path, endpoint_url=s3_endpoint_url)
    if uri.startswith("file:"):
        parsed = urlparse(uri)
        if parsed.netloc not in ("", "localhost") or not parsed.path.startswith("/"):
            raise InputError(f"file store URI must be file:///absolute/path: {uri}")
        return LocalStore(Path(unquote(parsed.path)))
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", uri):
        raise InputError(
            f"unsupported artifact store URI (use a path, file:///path or s3://bucket/prefix): {uri}"
        )
    return LocalStore(Path(uri))


__all__ = [
    "ArtifactStore",
    "LocalStore",
    "S3Store",
    "open_store",
]
