"""Queries on prompts, versions, aliases and the audit log.

Invariants: every function takes an open session (``Registry.session()``) first, so a caller can
compose several of them in one transaction; a lookup that must find a row raises the typed
not-found error (:class:`PromptNotFoundError`, :class:`VersionNotFoundError`,
:class:`AliasNotFoundError`) with the one-line message the user sees; ``find_*`` returns None
instead. Nothing here commits, talks to MLflow or the artifact store.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, update
from sqlmodel import Session, select

from promptreg.errors import AliasNotFoundError, PromptNotFoundError, VersionNotFoundError
from promptreg.refs import Ref, check_name
from promptreg.registry.models import Alias, AuditEvent, Prompt, PromptVersion, utcnow

# ----------------------------------------------------------------------------------------- prompts


def find_prompt(s: Session, name: str) -> Prompt | None:
    return s.exec(select(Prompt).where(Prompt.name == name)).first()


def get_prompt(s: Session, name: str) -> Prompt:
    """The prompt named ``name`` (the name is checked first: a malformed one is an InputError)."""
    check_name(name)
    prompt = find_prompt(s, name)
    if prompt is None:
        raise PromptNotFoundError(f"no prompt named {name!r}")
    return prompt


def prompts(s: Session) -> list[Prompt]:
    """Every prompt, by name."""
    return list(s.exec(select(Prompt).order_by(Prompt.name)).all())


def prompt_names(s: Session) -> list[str]:
    return [p.name for p in s.exec(select(Prompt)).all()]


def version_counts(s: Session) -> dict[int, tuple[int, int]]:
    """prompt id -> (number of versions, latest version number)."""
    return {pid: (n, latest) for pid, n, latest in s.exec(
        select(PromptVersion.prompt_id, func.count(), func.max(PromptVersion.number))
        .group_by(PromptVersion.prompt_id)).all()}


# ----------------------------------------------------------------------------------------- versions


def version_by_id(s: Session, version_id: int) -> PromptVersion:
    return s.get(PromptVersion, version_id)


def prompt_by_id(s: Session, prompt_id: int) -> Prompt:
    return s.get(Prompt, prompt_id)


def get_version(s: Session, prompt: Prompt, number: int) -> PromptVersion:
    """Version ``number`` of ``prompt``."""
    v = s.exec(select(PromptVersion).where(PromptVersion.prompt_id == prompt.id,
                                           PromptVersion.number == number)).first()
    if v is None:
        raise VersionNotFoundError(f"{prompt.name} has no version {number}")
    return v


def version_of(s: Session, name: str, number: int) -> PromptVersion:
    """Version ``number`` of the prompt named ``name`` (one query)."""
    v = s.exec(select(PromptVersion).join(Prompt, Prompt.id == PromptVersion.prompt_id)
               .where(Prompt.name == name, PromptVersion.number == number)).first()
    if v is None:
        raise VersionNotFoundError(f"{name} has no version {number}")
    return v


def latest_version(s: Session, prompt: Prompt) -> PromptVersion | None:
    return s.exec(select(PromptVersion).where(PromptVersion.prompt_id == prompt.id)
                  .order_by(PromptVersion.number.desc())).first()


def resolve(s: Session, ref: Ref) -> PromptVersion:
    """The version a reference names: ``NAME@ALIAS``, ``NAME:VERSION`` or ``NAME`` (the latest)."""
    return resolve_with_prompt(s, ref)[0]


def resolve_with_prompt(s: Session, ref: Ref) -> tuple[PromptVersion, Prompt]:
    """The version a reference names and its prompt, in one statement (version joined with its prompt
    and its alias): a read through the server is round trips fewer per lookup. Only when nothing
    matches do more statements say exactly what is missing: the prompt, the alias or the version."""
    check_name(ref.name)
    q = (select(PromptVersion, Prompt).join(Prompt, Prompt.id == PromptVersion.prompt_id)
         .where(Prompt.name == ref.name))
    if ref.alias is not None:
        q = q.join(Alias, (Alias.version_id == PromptVersion.id) & (Alias.prompt_id == Prompt.id)) \
             .where(Alias.name == ref.alias)
    elif ref.version is not None:
        q = q.where(PromptVersion.number == ref.version)
    else:
        q = q.order_by(PromptVersion.number.desc()).limit(1)
    row = s.exec(q).first()
    if row is not None:
        return row[0], row[1]
    prompt = get_prompt(s, ref.name)
    if ref.alias is not None:
        return alias_target(s, prompt, ref.alias), prompt          # raises AliasNotFoundError
    if ref.version is not None:
        return get_version(s, prompt, ref.version), prompt         # raises VersionNotFoundError
    raise VersionNotFoundError(f"{ref.name} has no versions")


def versions(s: Session, prompt: Prompt, numbers: Iterable[int] | None = None, *,
             mirrored_only: bool = False) -> list[PromptVersion]:
    """Versions of ``prompt`` by number (only ``numbers`` if given; only those with an MLflow model
    version if ``mirrored_only``)."""
    q = select(PromptVersion).where(PromptVersion.prompt_id == prompt.id)
    if numbers is not None:
        q = q.where(PromptVersion.number.in_(sorted({int(n) for n in numbers})))
    if mirrored_only:
        q = q.where(PromptVersion.mlflow_model_version.is_not(None))
    return list(s.exec(q.order_by(PromptVersion.number)).all())


@dataclass
class VersionPage:
    """One page of a prompt's versions (ascending numbers), each with the aliases that point at it."""

    prompt_name: str
    task_type: str | None
    rows: list = field(default_factory=list)   # prompt_version rows (no manifest; num_virtual_tokens, task_type)
    aliases: dict[int, list[str]] = field(default_factory=dict)   # version id -> sorted alias names
    more: bool = False                                # versions exist after this page


def version_page(s: Session, name: str, *, limit: int | None = None, offset: int = 0) -> VersionPage:
    """The versions of prompt ``name`` numbered after the first ``offset``, at most ``limit`` of them.

    Two statements: the page joined with its prompt (one row more than ``limit``, to say whether more
    follow), then the aliases of the page's versions. A third runs only when the page is empty, to tell
    an unknown prompt (PromptNotFoundError) from a page past the end."""
    import sqlalchemy as sa

    # plain column rows, not ORM objects: no identity map, no mutation tracking, and of the (large)
    # manifest only the one number a listing shows
    t = PromptVersion.__table__
    tokens = t.c.manifest["num_virtual_tokens"].as_integer().label("num_virtual_tokens")
    q = (sa.select(*[c for c in t.c if c.name != "manifest"], tokens, Prompt.__table__.c.task_type)
         .join(Prompt, Prompt.id == t.c.prompt_id).where(Prompt.name == name).order_by(t.c.number).offset(offset))
    if limit is not None:
        q = q.limit(limit + 1)
    got = s.execute(q).all()
    if not got:
        task_type = s.execute(sa.select(Prompt.task_type).where(Prompt.name == name)).first()
        if task_type is None:
            raise PromptNotFoundError(f"no prompt named {name!r}")
        return VersionPage(name, task_type[0])
    more = limit is not None and len(got) > limit
    rows = got[:limit] if limit is not None else got
    page = VersionPage(name, rows[0].task_type, rows, {v.id: [] for v in rows}, more)
    for version_id, alias in s.execute(sa.select(Alias.version_id, Alias.name).where(
            Alias.prompt_id == rows[0].prompt_id, Alias.version_id.in_(list(page.aliases)))).all():
        page.aliases[version_id].append(alias)
    for names in page.aliases.values():
        names.sort()
    return page


def version_numbers(s: Session, prompt: Prompt) -> dict[int, int]:
    """version id -> version number, for every version of ``prompt``."""
    return dict(s.exec(select(PromptVersion.id, PromptVersion.number)
                       .where(PromptVersion.prompt_id == prompt.id)).all())


def version_id_by_sha(s: Session, name: str, sha256: str) -> int | None:
    """The id of the version of ``name`` with this content, if one exists."""
    return s.exec(select(PromptVersion.id).join(Prompt, Prompt.id == PromptVersion.prompt_id)
                  .where(Prompt.name == name, PromptVersion.sha256 == sha256)).first()


def next_number(s: Session, prompt: Prompt) -> int:
    latest = s.exec(select(func.max(PromptVersion.number)).where(PromptVersion.prompt_id == prompt.id)).one()
    return (latest or 0) + 1


def versions_not_mirrored(s: Session, prompt: Prompt | None = None) -> list[tuple[PromptVersion, Prompt]]:
    """Every version (of ``prompt``, else of every prompt) whose MLflow mirror is pending or failed,
    oldest first."""
    stmt = (select(PromptVersion, Prompt).join(Prompt, Prompt.id == PromptVersion.prompt_id)
            .where(PromptVersion.mirror_status != "ok"))
    if prompt is not None:
        stmt = stmt.where(PromptVersion.prompt_id == prompt.id)
    return list(s.exec(stmt.order_by(PromptVersion.id)).all())


def versions_mirrored(s: Session, prompt: Prompt | None = None) -> list[tuple[PromptVersion, Prompt]]:
    """Every version (of ``prompt``, else of every prompt) mirrored with an MLflow run, oldest first."""
    stmt = (select(PromptVersion, Prompt).join(Prompt, Prompt.id == PromptVersion.prompt_id)
            .where(PromptVersion.mirror_status == "ok", PromptVersion.mlflow_run_id.is_not(None)))
    if prompt is not None:
        stmt = stmt.where(PromptVersion.prompt_id == prompt.id)
    return list(s.exec(stmt.order_by(PromptVersion.id)).all())


def any_mirrored(s: Session, prompt: Prompt, numbers: Iterable[int]) -> bool:
    """Whether one of these versions of ``prompt`` has an MLflow model version."""
    return s.exec(select(PromptVersion.id).where(
        PromptVersion.prompt_id == prompt.id, PromptVersion.number.in_(sorted({int(n) for n in numbers})),
        PromptVersion.mlflow_model_version.is_not(None))).first() is not None


def state_rows(s: Session, prompt: Prompt, numbers: Iterable[int] | None = None) -> list[tuple[int, int, str, str]]:
    """(version id, number, status, MLflow model version) of the mirrored versions of ``prompt``."""
    q = select(PromptVersion.id, PromptVersion.number, PromptVersion.status, PromptVersion.mlflow_model_version
               ).where(PromptVersion.prompt_id == prompt.id, PromptVersion.mlflow_model_version.is_not(None))
    if numbers is not None:
        q = q.where(PromptVersion.number.in_(sorted(numbers)))
    return list(s.exec(q).all())


def version_methods(s: Session, prompt: Prompt) -> list[tuple[str, int, int, int]]:
    """(method, lowest number, highest number, count) per training method of ``prompt``."""
    pv = PromptVersion
    return list(s.exec(select(pv.method, func.min(pv.number), func.max(pv.number), func.count())
                       .where(pv.prompt_id == prompt.id).group_by(pv.method)).all())


def version_base_models(s: Session, prompt: Prompt) -> list[tuple[str, str | None, int]]:
    """(base-model fingerprint, a name recorded for it, newest version number using it)."""
    pv = PromptVersion
    return list(s.exec(select(pv.base_model_fingerprint, func.max(pv.base_model_name), func.max(pv.number))
                       .where(pv.prompt_id == prompt.id).group_by(pv.base_model_fingerprint)).all())


def set_mirror_state(s: Session, version: PromptVersion, status: str, error: str | None,
                     run_id: str | None = None, model_version: str | None = None) -> None:
    """Record the outcome of mirroring ``version`` into MLflow (pending | ok | failed)."""
    version.mirror_status, version.mirror_error = status, error
    if run_id:
        version.mlflow_run_id = run_id
    if model_version:
        version.mlflow_model_version = model_version
    s.add(version)


def set_version_status(s: Session, version: PromptVersion, status: str) -> str:
    """Set a version's lifecycle status (active | degraded | incompatible); returns the previous one."""
    previous, version.status = version.status, status
    s.add(version)
    return previous


def add_prompt(s: Session, name: str, task_type: str | None, description: str, user: str) -> Prompt:
    prompt = Prompt(name=name, task_type=task_type, description=description, created_at=utcnow(), created_by=user)
    s.add(prompt)
    s.flush()
    return prompt


def add_version(s: Session, **fields: Any) -> PromptVersion:
    version = PromptVersion(**fields)
    s.add(version)
    s.flush()
    return version


# ----------------------------------------------------------------------------------------- aliases


def find_alias(s: Session, prompt: Prompt, alias: str) -> Alias | None:
    return s.exec(select(Alias).where(Alias.prompt_id == prompt.id, Alias.name == alias)).first()


def alias_target(s: Session, prompt: Prompt, alias: str) -> PromptVersion:
    """The version ``prompt@alias`` points at."""
    row = find_alias(s, prompt, alias)
    if row is None:
        raise AliasNotFoundError(f"{prompt.name} has no alias {alias!r}")
    return s.get(PromptVersion, row.version_id)


def alias_mlflow_version(s: Session, prompt: Prompt, alias: str) -> str | None:
    """The MLflow model version of the version ``prompt@alias`` points at now (None: unset or unmirrored)."""
    return s.exec(select(PromptVersion.mlflow_model_version).join(Alias, Alias.version_id == PromptVersion.id)
                  .where(Alias.prompt_id == prompt.id, Alias.name == alias)).first()


def version_aliases(s: Session, version: PromptVersion) -> list[str]:
    """The aliases pointing at ``version``, sorted."""
    return sorted(s.exec(select(Alias.name).where(Alias.version_id == version.id)).all())


def alias_holders(s: Session, prompt: Prompt) -> dict[int, list[str]]:
    """version id -> the aliases of ``prompt`` pointing at it."""
    held: dict[int, list[str]] = {}
    for alias, vid in s.exec(select(Alias.name, Alias.version_id).where(Alias.prompt_id == prompt.id)).all():
        held.setdefault(vid, []).append(alias)
    return held


def alias_numbers(s: Session, prompt: Prompt | None = None) -> dict[int, dict[str, int]]:
    """prompt id -> {alias: version number} (of ``prompt`` only, if given)."""
    q = select(Alias.prompt_id, Alias.name, PromptVersion.number).join(PromptVersion,
                                                                       PromptVersion.id == Alias.version_id)
    if prompt is not None:
        q = q.where(Alias.prompt_id == prompt.id)
    out: dict[int, dict[str, int]] = {}
    for pid, alias, number in s.exec(q).all():
        out.setdefault(pid, {})[alias] = number
    return out


def aliased_versions_off_model(s: Session, fingerprint: str) -> list[tuple[str, str, int, str, str]]:
    """(prompt, alias, version number, version's base-model fingerprint, status) of every alias whose
    version is bound to another base model than ``fingerprint``, by prompt and alias."""
    stmt = (select(Prompt.name, Alias.name, PromptVersion.number, PromptVersion.base_model_fingerprint,
                   PromptVersion.status)
            .join(Alias, Alias.prompt_id == Prompt.id).join(PromptVersion, PromptVersion.id == Alias.version_id)
            .where(PromptVersion.base_model_fingerprint != fingerprint).order_by(Prompt.name, Alias.name))
    return [tuple(r) for r in s.exec(stmt).all()]


def mlflow_aliases(s: Session, prompt: Prompt | None = None) -> list[tuple[str, str, str | None]]:
    """(prompt name, alias, MLflow model version of its target) for every alias (of ``prompt``)."""
    stmt = (select(Prompt.name, Alias.name, PromptVersion.mlflow_model_version)
            .join(Alias, Alias.prompt_id == Prompt.id).join(PromptVersion, PromptVersion.id == Alias.version_id))
    if prompt is not None:
        stmt = stmt.where(Alias.prompt_id == prompt.id)
    return list(s.exec(stmt).all())


def aliases_moved_since(s: Session, prompt: Prompt, moment) -> set[str]:
    """The aliases of ``prompt`` whose row changed after ``moment`` (a UTC datetime)."""
    return set(s.exec(select(Alias.name).where(Alias.prompt_id == prompt.id, Alias.updated_at > moment)).all())


def numbers_of_mlflow_versions(s: Session, prompt: Prompt, mlflow_versions: Iterable[str]) -> dict[str, int]:
    """MLflow model version -> version number, for those of ``prompt`` among ``mlflow_versions``."""
    wanted = [v for v in mlflow_versions if v is not None]
    if not wanted:
        return {}
    return dict(s.exec(select(PromptVersion.mlflow_model_version, PromptVersion.number).where(
        PromptVersion.prompt_id == prompt.id, PromptVersion.mlflow_model_version.in_(wanted))).all())


def add_alias(s: Session, prompt: Prompt, alias: str, version: PromptVersion, user: str) -> int:
    """Create ``prompt@alias`` (a concurrent creation makes the commit raise IntegrityError); returns
    its row version (1)."""
    s.add(Alias(prompt_id=prompt.id, name=alias, version_id=version.id, row_version=1,
                updated_at=utcnow(), updated_by=user))
    return 1


def swap_alias(s: Session, row: Alias, version: PromptVersion, user: str) -> int | None:
    """Compare-and-swap: point ``row`` at ``version`` if nobody moved it since it was read. Returns the
    new row version, None when a concurrent move won."""
    seen, row_version = row.row_version, row.row_version + 1
    res = s.exec(update(Alias).where(Alias.id == row.id, Alias.row_version == seen)
                 .values(version_id=version.id, row_version=row_version, updated_at=utcnow(), updated_by=user))
    return row_version if res.rowcount == 1 else None


# ----------------------------------------------------------------------------------------- audit log


def add_event(s: Session, *, actor: str, action: str, **fields: Any) -> AuditEvent:
    """Append one audit event (``prompt_id``, ``alias``, ``from_version``, ``to_version``, ``reason``,
    ``details``) in the caller's transaction."""
    event = AuditEvent(at=fields.pop("at", None) or utcnow(), actor=actor, action=action, **fields)
    s.add(event)
    return event


def latest_events(s: Session, prompt: Prompt, action: str, numbers) -> dict[int, AuditEvent]:
    """The latest ``action`` audit event of each of ``prompt``'s versions ``numbers``, by version number."""
    rows = s.exec(select(AuditEvent).where(AuditEvent.prompt_id == prompt.id, AuditEvent.action == action,
                                           AuditEvent.to_version.in_([int(n) for n in numbers]))
                  .order_by(AuditEvent.id)).all()
    return {int(r.to_version): r for r in rows}  # later events replace earlier ones


def events(s: Session, prompt: Prompt) -> list[AuditEvent]:
    """The audit log of ``prompt``, oldest first."""
    return list(s.exec(select(AuditEvent).where(AuditEvent.prompt_id == prompt.id).order_by(AuditEvent.id)).all())


__all__ = [
    "VersionPage",
    "aliased_versions_off_model",
    "aliases_moved_since",
    "numbers_of_mlflow_versions",
    "add_alias",
    "add_event",
    "add_prompt",
    "add_version",
    "alias_holders",
    "alias_mlflow_version",
    "alias_numbers",
    "alias_target",
    "any_mirrored",
    "events",
    "find_alias",
    "latest_events",
    "find_prompt",
    "get_prompt",
    "get_version",
    "latest_version",
    "mlflow_aliases",
    "next_number",
    "prompt_by_id",
    "prompt_names",
    "prompts",
    "resolve",
    "resolve_with_prompt",
    "set_mirror_state",
    "set_version_status",
    "state_rows",
    "swap_alias",
    "version_aliases",
    "version_base_models",
    "version_by_id",
    "version_counts",
    "version_id_by_sha",
    "version_methods",
    "version_numbers",
    "version_page",
    "version_of",
    "versions",
    "versions_mirrored",
    "versions_not_mirrored",
]
