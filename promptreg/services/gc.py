"""``promptreg gc``: find and remove orphaned uploads in the artifact store.

An *orphan* is something in the content-addressed store that no database row references:

* ``unreferenced``: a complete, verified artifact whose version (or eval run, drift report) never
  committed: the pushing process died between the upload and the commit, or the commit failed;
* ``incomplete`` (S3): objects of an upload that died before its completion marker was written;
* ``partial`` (local folder): a temporary upload folder under ``<store>/.tmp/`` left by a process
  that died mid-upload (or mid-delete).

Live content is every sha256 referenced by ``prompt_version.sha256``, ``eval_run.outcomes_sha256`` and
``drift_report.report_sha256``, whatever URI the row names: gc never deletes a referenced address.

The race with writers, and how it is closed. Every writer (push, eval, drift) uploads first and
commits the row that references the upload afterwards. Between the two, the upload is unreferenced
and looks exactly like an orphan, so a gc running at that moment could delete it and leave a row that
points at nothing. Three measures close this:

1. ``min_age_s`` (``--min-age-s``, default 3600): an orphan is only deleted when its newest object
   (file mtime / S3 LastModified) is older than this. A writer commits seconds after its upload, so
   an upload in flight (a partial upload included) is always younger than ``min_age_s`` and is kept;
   the age is checked again right before each deletion. This assumes that no writer stalls for
   longer than ``min_age_s`` between its upload and its commit, and that the S3 endpoint's clock
   agrees with this machine's to well within ``min_age_s``.
2. Content that was already in the store (an old orphan pushed again) is not re-uploaded, so its age
   stays old. gc therefore reads the references and deletes in ONE database transaction that blocks
   new references meanwhile (PostgreSQL: ``LOCK TABLE prompt_version, eval_run, drift_report IN SHARE
   MODE``; SQLite: the transaction's ``BEGIN IMMEDIATE`` write lock). A push's commit thus happens
   either before gc reads the references (gc sees it and keeps the content) or after gc's deletions
   are finished,
3. and ``push`` checks after its commit that the stored copy is still there
   (``ArtifactStore.has_files``) and uploads it again if a gc removed it.

Residual: an eval run or drift report that reuses an old unreferenced document has no step 3; it is
covered by steps 1-2 only (a deletion that finishes right before its commit would leave its
outcomes/report missing; the version itself is unaffected).

Deletions run in chunks of ``CHUNK`` addresses, one short transaction each, so writers are blocked
for at most one chunk's deletions.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from promptreg.errors import InputError
from promptreg.registry import queries as q

if TYPE_CHECKING:
    from promptreg.services.registry import Registry

DEFAULT_MIN_AGE_S = 3600.0
CHUNK = 50
KINDS = ("unreferenced", "incomplete", "partial")


@dataclass
class Orphan:
    kind: str                 # one of KINDS
    sha256: str | None        # None for a local partial upload (its address is not known yet)
    location: str             # URI of the content address, or the path of the temporary folder
    age_s: float
    size_bytes: int
    deletable: bool           # older than min_age_s
    deleted: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GcReport:
    store: str
    min_age_s: float
    dry_run: bool
    referenced: int                                         # addresses referenced by the database
    stored: int                                             # addresses present in the store
    orphans: list[Orphan] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)        # referenced rows whose content is absent
    skipped: list[str] = field(default_factory=list)        # became referenced or young before deletion

    @property
    def deleted(self) -> list[Orphan]:
        return [o for o in self.orphans if o.deleted]

    @property
    def kept_young(self) -> list[Orphan]:
        return [o for o in self.orphans if not o.deletable]

    def to_dict(self) -> dict[str, Any]:
        return {"store": self.store, "min_age_s": self.min_age_s, "dry_run": self.dry_run,
                "referenced": self.referenced, "stored": self.stored,
                "orphans": [o.to_dict() for o in self.orphans],
                "deleted": [o.location for o in self.deleted],
                "kept_young": [o.location for o in self.kept_young],
                "bytes_deleted": sum(o.size_bytes for o in self.deleted),
                "missing": self.missing, "skipped": self.skipped}


# ----------------------------------------------------------------------------------- store scans
@dataclass
class _Entry:
    kind: str
    sha256: str | None
    location: str
    newest: float             # epoch seconds of the newest object
    size_bytes: int
    path: Path | None = None  # local partial uploads


def _tree_stats(path: Path) -> tuple[float, int]:
    """(newest mtime, total file bytes) of a file or folder tree; missing entries are skipped."""
    newest, size = 0.0, 0
    try:
        st = path.lstat()
    except OSError:
        return newest, size
    newest = st.st_mtime
    if not path.is_dir() or path.is_symlink():
        return newest, st.st_size
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            newest = max(newest, st.st_mtime)
            if name in filenames:
                size += st.st_size
    return newest, size


def _scan_local(store) -> tuple[dict[str, _Entry], list[_Entry]]:
    """(complete artifacts by sha, temporary leftovers) of a LocalStore."""
    shas: dict[str, _Entry] = {}
    for sha in store.list_shas():
        newest, size = _tree_stats(store.path_for(sha))
        shas[sha] = _Entry("unreferenced", sha, store.uri_for(sha), newest, size)
    partial: list[_Entry] = []
    tmp_root = store.root / ".tmp"
    if tmp_root.is_dir():
        for p in sorted(tmp_root.iterdir()):
            newest, size = _tree_stats(p)
            partial.append(_Entry("partial", None, str(p), newest, size, p))
    return shas, partial


def _scan_s3(store, only: str | None = None) -> dict[str, _Entry]:
    """Content addresses of an S3Store (complete or not), from one listing."""
    return {sha: _Entry("unreferenced" if st.complete else "incomplete", sha, store.uri_for(sha), st.newest,
                        st.size_bytes) for sha, st in store.content_stats(only).items()}


def _is_s3(store) -> bool:
    from promptreg.registry.store import S3Store

    return isinstance(store, S3Store)


def _current(store, entry: _Entry) -> _Entry | None:
    """The entry as it is now (None when gone): the re-check right before a deletion."""
    if entry.path is not None:
        if not os.path.lexists(entry.path):
            return None
        newest, size = _tree_stats(entry.path)
        return _Entry(entry.kind, None, entry.location, newest, size, entry.path)
    if _is_s3(store):
        return _scan_s3(store, only=entry.sha256).get(entry.sha256)
    final = store.path_for(entry.sha256)
    if not final.is_dir():
        return None
    newest, size = _tree_stats(final)
    return _Entry(entry.kind, entry.sha256, entry.location, newest, size)


def _delete(store, entry: _Entry) -> None:
    if entry.path is not None:
        from promptreg.registry.store import remove_tree

        if entry.path.is_dir() and not entry.path.is_symlink():
            remove_tree(entry.path)
        else:
            try:
                entry.path.unlink()
            except FileNotFoundError:
                pass
        return
    store.delete(entry.sha256)


# ----------------------------------------------------------------------------------- entry point
def collect_garbage(registry: Registry, *, min_age_s: float = DEFAULT_MIN_AGE_S, delete: bool = False) -> GcReport:
    """List the store's orphans (``delete=False``) or delete those older than ``min_age_s``."""
    if min_age_s is None or min_age_s < 0:
        raise InputError(f"--min-age-s must be >= 0, got {min_age_s}")
    store = registry.store
    # List the store BEFORE reading the references: content committed meanwhile is then seen as
    # referenced (a reference read first could miss a commit whose upload the listing then sees).
    if _is_s3(store):
        present, partial = _scan_s3(store), []
    else:
        present, partial = _scan_local(store)
    with registry.session() as s:
        refs = q.content_references(s)
    now = time.time()
    report = GcReport(store=store.root_uri, min_age_s=float(min_age_s), dry_run=not delete,
                      referenced=len(refs), stored=len(present))
    entries = [e for sha, e in sorted(present.items()) if sha not in refs] + partial
    for e in entries:
        age = max(0.0, now - e.newest)
        report.orphans.append(Orphan(e.kind, e.sha256, e.location, round(age, 3), e.size_bytes,
                                     deletable=age >= min_age_s))
    for sha, users in sorted(refs.items()):
        for what, uri in users:
            if uri == store.uri_for(sha) and (sha not in present or present[sha].kind != "unreferenced"):
                report.missing.append(f"{what}: {uri}")
    if not delete:
        return report
    todo = [(o, e) for o, e in zip(report.orphans, entries, strict=True) if o.deletable]
    for i in range(0, len(todo), CHUNK):
        chunk = todo[i:i + CHUNK]
        with registry.session() as s:
            q.lock_references(s)
            live = q.content_references(s, {e.sha256 for _o, e in chunk if e.sha256})
            for orphan, entry in chunk:
                if entry.sha256 in live:
                    report.skipped.append(f"{orphan.location}: referenced meanwhile")
                    continue
                cur = _current(store, entry)
                if cur is None:
                    report.skipped.append(f"{orphan.location}: gone meanwhile")
                    continue
                if time.time() - cur.newest < min_age_s:
                    report.skipped.append(f"{orphan.location}: written to meanwhile")
                    continue
                _delete(store, entry)
                orphan.deleted = True
    return report


__all__ = ["DEFAULT_MIN_AGE_S", "GcReport", "Orphan", "collect_garbage"]
