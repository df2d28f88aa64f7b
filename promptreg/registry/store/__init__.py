"""Content-addressed artifact store: a local folder or an S3 bucket (AWS S3, MinIO, ...).

Layout (both backends)::

    <root>/sha256/<sha[:2]>/<sha>/<artifact files, nested paths kept>

An artifact's address is the folder sha256 of promptreg.artifact.hashing. Stored artifacts are
immutable: nothing half-written is ever visible at a final local path, a correct S3 object is never
overwritten, and every upload and download is verified against the sha256 before it counts.

boto3/botocore are imported lazily (CLI start-up speed).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlparse

from promptreg.errors import InputError
from promptreg.registry.store.base import (
    FAULT_ENV,
    READ_ONLY,
    S3_COMPLETE_MARKER,
    S3_MAX_SINGLE_PUT,
    SHA_RE,
    ArtifactStore,
    ContentStat,
    ObjectStat,
    check_object_key,
    fault_point,
    remove_tree,
)
from promptreg.registry.store.local import LocalStore
from promptreg.registry.store.s3 import S3Store

__all__ = ["FAULT_ENV", "READ_ONLY", "S3_COMPLETE_MARKER", "S3_MAX_SINGLE_PUT", "SHA_RE", "ArtifactStore",
           "ContentStat", "LocalStore", "ObjectStat", "check_object_key", "S3Store", "fault_point", "open_store", "remove_tree"]


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
