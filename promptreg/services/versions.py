"""Pushing and reading versions: the steps behind ``Registry.push/show/list_*/history/pull``.

The registry database is the source of truth. A push goes: validate the folder, upload the
artifact to its content address and verify it, then ONE transaction creates the version row and
its audit event (and, through the listener in promptreg.registry.outbox, its outbox event); only
then is the version mirrored into MLflow. Any failure before the commit leaves nothing visible (an
uploaded but unreferenced artifact is an orphan for ``gc``); a failed mirror leaves the version
marked ``mirror_status=failed`` (or ``pending`` after a crash), and the outbox's MLflow consumer
(``promptreg events run``) or ``sync`` repairs it.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from promptreg.errors import ConflictError, InputError, IntegrityError, PromptregError
from promptreg.refs import Ref, check_name, check_page, check_text, parse_ref
from promptreg.registry import queries as q
from promptreg.services.views import AuditEntry, PromptSummary, PushResult, VersionInfo, iso
from promptreg.services.views import version_info as render_version

if TYPE_CHECKING:
    from sqlmodel import Session

    from promptreg.artifact.validate import ValidatedArtifact
    from promptreg.registry.models import Prompt, PromptVersion
    from promptreg.services.registry import Registry

PUSH_RETRIES = 20


def _fault(stage: str) -> None:
    """Crash-test checkpoint of ``push`` (a no-op unless PROMPTREG_FAULT_PAUSE names ``stage``)."""
    from promptreg.registry.store import fault_point

    fault_point(stage)


# ----------------------------------------------------------------------------------------- push


def push(registry: Registry, folder: Path | str, name: str, description: str | None = None,
         run_id: str | None = None) -> PushResult:
    """Register the artifact folder as a new version of ``name`` (idempotent by content)."""
    from promptreg.artifact.validate import validate_artifact

    check_name(name)
    check_text(description, "description")
    art = validate_artifact(folder)
    existing = find_by_sha(registry, name, art.sha256)
    if existing is not None:
        return _mirrored(registry, PushResult(version_info_by_id(registry, existing), created=False),
                         existing, art.folder, run_id)
    _fault("before_upload")
    uri = registry.store.put_folder(art.folder, art.sha256)
    _fault("after_upload")
    version_id, created = insert_version(registry, name, art, uri, description or "")
    _fault("after_commit")
    stored_warnings = ensure_stored(registry, art)
    result = PushResult(version_info_by_id(registry, version_id), created=created, warnings=stored_warnings)
    return _mirrored(registry, result, version_id, art.folder, run_id)


def _mirrored(registry: Registry, result: PushResult, version_id: int, folder: Path,
              run_id: str | None) -> PushResult:
    """Mirror the version into MLflow unless it already is (or ``registry.mirror_inline`` is off: the
    outbox's MLflow consumer does it); the result as it is then."""
    if result.version.mirror_status != "ok" and registry.mirror_inline:
        from promptreg.services.mirroring import mirror_version

        result.warnings += mirror_version(registry, version_id, folder, run_id)
        result.version = version_info_by_id(registry, version_id)
    return result


def ensure_stored(registry: Registry, art: ValidatedArtifact) -> list[str]:
    """After the commit: the content is still in the store, else upload it again. A concurrent
    `promptreg gc` can remove content that was already stored but unreferenced (an old orphan
    pushed again) just before the commit (see promptreg.services.gc). Returns warnings."""
    try:
        if not registry.store.has_files(art.sha256, art.files):
            registry.store.put_folder(art.folder, art.sha256)
    except PromptregError as exc:
        return [f"could not re-check the stored artifact after registering it ({exc})"]
    return []


def find_by_sha(registry: Registry, name: str, sha256: str) -> int | None:
    with registry.session() as s:
        return q.version_id_by_sha(s, name, sha256)


def insert_version(registry: Registry, name: str, art: ValidatedArtifact, uri: str,
                   description: str) -> tuple[int, bool]:
    """The version row and its audit event in one transaction: (version id, created). A concurrent
    push of the same content returns that version instead; a lost number race is retried."""
    m = art.manifest
    user = registry.settings.user
    for _ in range(PUSH_RETRIES):
        try:
            with registry.session() as s:
                prompt = q.find_prompt(s, name) or q.add_prompt(s, name, m.task.type, description, user)
                number = q.next_number(s, prompt)
                version = q.add_version(
                    s, prompt_id=prompt.id, number=number, sha256=art.sha256, artifact_uri=uri,
                    size_bytes=art.size_bytes, method=m.method, method_config=m.method_config,
                    base_model_fingerprint=m.base_model.fingerprint, base_model_name=m.base_model.name_or_path,
                    dataset_fingerprint=m.dataset.fingerprint if m.dataset else None,
                    metrics=m.metrics, manifest=m.model_dump(mode="json"), mirror_status="pending",
                    status="active", description=description, created_by=user, created_at=q.utcnow())
                q.add_event(s, actor=user, action="push", prompt_id=prompt.id, to_version=number,
                            details={"sha256": art.sha256, "artifact_uri": uri})
                s.flush()
                return version.id, True
        except q.DuplicateRowError:
            # A concurrent push took this number, or pushed the same content, or created the prompt.
            existing = find_by_sha(registry, name, art.sha256)
            if existing is not None:
                return existing, False
            continue
    raise ConflictError(f"could not allocate a version number for {name} after {PUSH_RETRIES} tries")


# ----------------------------------------------------------------------------------------- reads


def version_info(s: Session, v: PromptVersion, prompt: Prompt | None = None) -> VersionInfo:
    """The public view of a version row (its prompt, unless given, and aliases read in the same session)."""
    p = prompt if prompt is not None else q.prompt_by_id(s, v.prompt_id)
    return render_version(p.name, p.task_type, v, q.version_aliases(s, v), (v.manifest or {}).get("num_virtual_tokens"))


def version_info_by_id(registry: Registry, version_id: int) -> VersionInfo:
    with registry.session() as s:
        return version_info(s, q.version_by_id(s, version_id))


def as_ref(ref: str | Ref) -> Ref:
    return parse_ref(ref) if isinstance(ref, str) else ref


def show(registry: Registry, ref: str | Ref) -> VersionInfo:
    with registry.session() as s:
        return version_info(s, *q.resolve_with_prompt(s, as_ref(ref)))


def manifest(registry: Registry, ref: str | Ref) -> dict:
    with registry.session() as s:
        return dict(q.resolve(s, as_ref(ref)).manifest)


def list_prompts(registry: Registry) -> list[PromptSummary]:
    with registry.session() as s:
        counts = q.version_counts(s)
        aliases = q.alias_numbers(s)
        return [PromptSummary(p.name, p.task_type, p.description or "", counts.get(p.id, (0, None))[0],
                              counts.get(p.id, (0, None))[1], aliases.get(p.id, {}), iso(p.created_at))
                for p in q.prompts(s)]


def version_page(registry: Registry, name: str, *, limit: int | None = None,
                 offset: int = 0) -> tuple[list[VersionInfo], bool]:
    """(the versions of ``name`` oldest first, ``offset`` skipped, at most ``limit``; whether more
    follow): two queries whatever the number of versions (queries.version_page)."""
    check_name(name)
    check_page(limit, offset)
    with registry.session() as s:
        page = q.version_page(s, name, limit=limit, offset=offset)
        return [render_version(page.prompt_name, page.task_type, v, page.aliases[v.id], v.num_virtual_tokens)
                for v in page.rows], page.more


def list_versions(registry: Registry, name: str, *, limit: int | None = None, offset: int = 0) -> list[VersionInfo]:
    return version_page(registry, name, limit=limit, offset=offset)[0]


def history(registry: Registry, name: str) -> list[AuditEntry]:
    with registry.session() as s:
        rows = q.events(s, q.get_prompt(s, name))
        return [AuditEntry(e.id, iso(e.at), e.actor, e.action, name, e.alias, e.from_version, e.to_version,
                           e.reason, dict(e.details or {}), e.token_id) for e in rows]


# ----------------------------------------------------------------------------------------- pull


def pull(registry: Registry, ref: str | Ref, dest: Path | str) -> Path:
    """Download a version into ``dest`` (which must not exist or be empty), verifying its sha256."""
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise InputError(f"destination exists and is not an empty folder: {dest}")
    info = show(registry, ref)
    if dest.exists():
        dest.rmdir()
    dest.parent.mkdir(parents=True, exist_ok=True)
    return registry.store.fetch(info.artifact_uri, dest, info.sha256)


def fetch_verified(registry: Registry, ref: str | Ref) -> tuple[VersionInfo, Path]:
    """A verified local copy of a version, cached under the project home by sha256."""
    info = show(registry, ref)
    cache = registry.settings.home / "cache" / info.sha256
    if cache.is_dir():
        from promptreg.artifact.hashing import folder_sha256

        if folder_sha256(cache) != info.sha256:
            raise IntegrityError(f"sha256 mismatch for cached {info.name}:{info.version} at {cache} "
                                 "(artifact tampered or corrupt)")
        return info, cache
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".fetch-", dir=cache.parent))
    try:
        registry.store.fetch(info.artifact_uri, tmp / "a", info.sha256)
        try:
            (tmp / "a").rename(cache)
        except OSError:
            pass  # a concurrent fetch won; it is verified on the next read
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return info, cache
