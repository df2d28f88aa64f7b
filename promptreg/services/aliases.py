"""Alias moves: a compare-and-swap on the alias row, its audit event in the same transaction, then
the MLflow alias (best effort; ``sync`` repairs it).

Invariants: the move commits or nothing does; a concurrent move makes it raise ConflictError; MLflow
converges on the database's value whatever order concurrent movers' MLflow writes land in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from promptreg.errors import ConflictError, PromptregError
from promptreg.refs import check_alias, check_text
from promptreg.registry import queries as q
from promptreg.reporting.mlflow import ALIASES_TAG
from promptreg.services.mirroring import mirror_state_tags
from promptreg.services.views import AliasInfo

if TYPE_CHECKING:
    from sqlmodel import Session

    from promptreg.services.registry import Registry


def set_alias(registry: Registry, name: str, alias: str, version: int, *, expected_version: int | None | str = "any",
              action: str = "alias.set", reason: str | None = None, details: dict | None = None,
              in_transaction: Callable[[Session], None] | None = None) -> AliasInfo:
    """Point ``name@alias`` at ``version`` with a compare-and-swap on the alias row.

    ``expected_version``: the version number the caller believes the alias holds now (None: the
    alias must not exist yet; "any": no expectation). A concurrent move makes this raise
    ConflictError. The audit event is written in the same transaction; MLflow is updated after.
    ``in_transaction(session)``: more rows to commit atomically with the move (a drift report).
    """
    check_alias(alias)
    check_text(reason, "reason")
    user = registry.settings.user
    try:
        with registry.session() as s:
            prompt = q.get_prompt(s, name)
            target = q.get_version(s, prompt, version)
            row = q.find_alias(s, prompt, alias)
            previous = q.version_by_id(s, row.version_id).number if row is not None else None
            if expected_version != "any" and expected_version != previous:
                raise ConflictError(
                    f"{name}@{alias} moved concurrently: expected {expected_version}, found {previous}")
            if row is None:
                row_version = q.add_alias(s, prompt, alias, target, user)
            else:
                row_version = q.swap_alias(s, row, target, user)
                if row_version is None:
                    raise ConflictError(f"{name}@{alias} moved concurrently; retry")
            q.add_event(s, actor=user, action=action, prompt_id=prompt.id, alias=alias, from_version=previous,
                        to_version=version, reason=reason, details=details or {})
            if in_transaction is not None:
                in_transaction(s)
            mlflow_version = target.mlflow_model_version
    except q.DuplicateRowError:
        raise ConflictError(f"{name}@{alias} was created concurrently; retry") from None
    info = AliasInfo(name, alias, version, previous, row_version)
    if mlflow_version and registry.mirror_inline:   # else the outbox's MLflow consumer moves it
        _mirror_move(registry, info, mlflow_version)
    return info


def _mirror_move(registry: Registry, info: AliasInfo, mlflow_version: str) -> None:
    name, alias, version, previous = info.name, info.alias, info.version, info.previous
    try:
        mirror_alias(registry, name, alias, mlflow_version)
    except PromptregError as exc:
        # The move is committed: the database holds the truth and `promptreg sync` re-applies the
        # alias. The caller is told (one warning line), the command still succeeds.
        info.warnings.append(f"{name}@{alias} moved to version {version} in the registry, but the MLflow "
                             f"alias was not updated ({' '.join(str(exc).split())}); the events worker retries it "
                             "(`promptreg events run`), `promptreg sync` repairs it at once")
        return
    holders = {version} | ({previous} if previous is not None else set())
    # an alias move changes only the holders' promptreg.aliases tag (status moves on its own path)
    mirror_state_tags(registry, name, holders, keys=(ALIASES_TAG,))
    from promptreg.services.describe import refresh_descriptions

    refresh_descriptions(registry, name, holders)


def mirror_alias(registry: Registry, name: str, alias: str, mlflow_version: str, attempts: int = 5) -> None:
    """Copy ``name@alias`` to MLflow so that concurrent movers converge on the database's value.

    MLflow alias writes are last-writer-wins, and two movers' MLflow writes can land in the other
    order than their database commits. So after each write the database is read again: if it
    now holds another version (a later commit), that one is written too. The last writer to
    finish therefore always leaves MLflow equal to the database."""
    for _ in range(attempts):
        registry.mirror.set_alias(name, alias, mlflow_version)
        with registry.session() as s:
            now = q.alias_mlflow_version(s, q.get_prompt(s, name), alias)
        if not now or now == mlflow_version:
            return
        mlflow_version = now
