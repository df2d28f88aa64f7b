"""Named read queries over the registry tables, each a small helper that raises a typed not-found error.

Invariants: no import of SQLAlchemy at module level (the CLI's SQLite fast path uses
:func:`check_page`); every helper takes an open session and runs a fixed, small number of SQL statements
whatever the size of the registry (stated in its docstring); none writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from promptreg.errors import InputError, PromptNotFoundError


@dataclass
class VersionPage:
    """One page of a prompt's versions (ascending numbers), each with the aliases that point at it."""

    prompt_name: str
    task_type: str | None
    rows: list = field(default_factory=list)   # prompt_version rows (no manifest; num_virtual_tokens, task_type)
    aliases: dict[int, list[str]] = field(default_factory=dict)   # version id -> sorted alias names
    more: bool = False                                # versions exist after this page


def check_page(limit: int | None, offset: int) -> None:
    """A page request: ``limit`` None (all) or >= 1, ``offset`` >= 0 (InputError otherwise)."""
    if limit is not None and limit < 1 or offset < 0:
        raise InputError("--limit must be at least 1 and --offset at least 0")


def version_page(s, name: str, *, limit: int | None = None, offset: int = 0) -> VersionPage:
    """The versions of prompt ``name`` numbered after the first ``offset``, at most ``limit`` of them.

    Two statements: the page joined with its prompt (one row more than ``limit``, to say whether more
    follow), then the aliases of the page's versions. A third runs only when the page is empty, to tell
    an unknown prompt (PromptNotFoundError) from a page past the end."""
    import sqlalchemy as sa

    from promptreg.registry.models import Alias, Prompt, PromptVersion

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
