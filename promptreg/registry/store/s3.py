"""The S3 artifact store (AWS S3, MinIO, ...): objects are uploaded, verified and only then marked
complete by a hidden marker object; a correct object is never overwritten. boto3 is imported lazily."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from promptreg.artifact.hashing import CHUNK, digest_entries
from promptreg.errors import (
    ArtifactNotFoundError,
    InputError,
    IntegrityError,
    PromptregError,
    StoreUnavailableError,
    one_line,
)
from promptreg.registry.store.base import (
    S3_COMPLETE_MARKER,
    S3_MAX_SINGLE_PUT,
    SHA_RE,
    ArtifactStore,
    ContentStat,
    _check_sha,
    _digest_of_folder,
    _install_fetched,
    _mismatch,
    _prepare_dest,
    _safe_rel,
    _source_entries,
    _temp_sibling,
    fault_point,
    remove_tree,
)
from promptreg.registry.store.s3_objects import S3Objects

S3_CLIENT_CONFIG = dict(retries={"max_attempts": 8, "mode": "adaptive"}, connect_timeout=5, read_timeout=60)
# The reachability probe retries little so that an unreachable endpoint fails in seconds.
S3_PROBE_CONFIG = dict(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=3, read_timeout=10)


class S3Store(S3Objects, ArtifactStore):
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
            raise InputError(f"invalid S3 endpoint {self._endpoint_display()}: {one_line(e)}") from None
        except Exception as e:  # botocore errors at client creation (profile, region, ...)
            raise StoreUnavailableError(
                f"cannot create an S3 client for {self.root_uri} ({self._endpoint_display()}): {one_line(e)}"
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
            raise StoreUnavailableError(f"cannot reach {where} to {action}: {one_line(e)}") from None
        except ParamValidationError as e:
            raise InputError(f"invalid S3 request to {action} in {where}: {one_line(e)}") from None
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
            msg = one_line(err.get("Message") or e)
            raise StoreUnavailableError(
                f"S3 error {code or status} while trying to {action} in {where}: {msg}"
            ) from None
        except BotoCoreError as e:
            raise StoreUnavailableError(
                f"S3 failure while trying to {action} in {where}: {one_line(e)}"
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
            raise InputError(f"cannot read artifact file {path}: {one_line(e.strerror or e)}") from None
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
                    f"cannot write the fetched artifact to {dest}: {one_line(e.strerror or e)}"
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
                    f"{first.get('Code')} {one_line(first.get('Message', ''))} ({len(errors)} failed)"
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
