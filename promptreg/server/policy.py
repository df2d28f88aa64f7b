"""Who may do what: roles, grants and protected aliases, as one pure function (:func:`decide`).

Invariants:
- Roles are ordered, each includes the ones before it: ``viewer`` (read) < ``contributor`` (+ push,
  eval, gate, drift checks, schedules, moving unprotected aliases) < ``promoter`` (+ moving the
  protected aliases it is granted by name) < ``admin`` (+ tokens, environments, gc, sync, run-due,
  ``--force``, every alias).
- A grant's ``prompts`` are glob patterns (``fnmatch``, case-sensitive); a prompt no pattern matches is
  invisible to the grant for every action, reads included.
- ``aliases`` empty means "every unprotected alias"; otherwise only aliases matching a pattern. A
  protected alias is moved only by an admin or by a promoter whose ``aliases`` name it exactly (a
  wildcard never grants a protected alias).
- Nothing here reads a database, a request or a clock: the server passes the facts in, tests pass
  hand-built ones.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from enum import StrEnum

from promptreg.errors import InputError
from promptreg.refs import check_alias, text_problem

ROLES = ("viewer", "contributor", "promoter", "admin")
DEFAULT_PROTECTED = ("production",)
_MAX_PATTERN = 128


class Action(StrEnum):
    READ = "read"            # list, show, history, pull, reports, schedules and environments listed
    PUSH = "push"            # push a version
    EVALUATE = "evaluate"    # eval, gate
    DRIFT = "drift"          # drift checks
    SCHEDULE = "schedule"    # add / remove schedules
    MOVE = "move"            # promote / rollback an alias
    FORCE = "force"          # promote past a failed or missing gate
    ADMIN = "admin"          # tokens, environments, gc, sync, schedule run-due


#: The least role each action needs (prompt and alias grants are checked on top).
MIN_ROLE = {
    Action.READ: "viewer",
    Action.PUSH: "contributor",
    Action.EVALUATE: "contributor",
    Action.DRIFT: "contributor",
    Action.SCHEDULE: "contributor",
    Action.MOVE: "contributor",
    Action.FORCE: "admin",
    Action.ADMIN: "admin",
}


def rank(role: str) -> int:
    return ROLES.index(role)


@dataclass(frozen=True)
class Grant:
    """What one principal (a token, an OIDC subject) was granted."""

    role: str
    prompts: tuple[str, ...] = ("*",)
    aliases: tuple[str, ...] = ()

    def sees(self, prompt: str) -> bool:
        return any(fnmatch.fnmatchcase(prompt, p) for p in self.prompts)

    def to_dict(self) -> dict:
        return {"role": self.role, "prompts": list(self.prompts), "aliases": list(self.aliases)}


def decide(grant: Grant, action: Action, *, prompt: str | None = None, alias: str | None = None,
           protected: Collection[str] = DEFAULT_PROTECTED) -> str | None:
    """None when ``grant`` allows ``action`` (on ``prompt``, moving ``alias``), else what is missing,
    as a phrase for the one-line error ("role viewer; needs contributor or higher")."""
    needed = MIN_ROLE[action]
    if rank(grant.role) < rank(needed):
        return f"role {grant.role}; needs {needed}" + (" or higher" if needed != ROLES[-1] else "")
    if prompt is not None and not grant.sees(prompt):
        return f"prompt {prompt} is not in the token's prompts ({', '.join(grant.prompts)})"
    if action in (Action.MOVE, Action.FORCE) and alias is not None and grant.role != "admin":
        if alias in protected:
            if grant.role != "promoter" or alias not in grant.aliases:
                return (f"alias {alias} is protected: only an admin or a promoter granted {alias} by name "
                        "may move it")
        elif grant.aliases and not any(fnmatch.fnmatchcase(alias, p) for p in grant.aliases):
            return f"alias {alias} is not in the token's aliases ({', '.join(grant.aliases)})"
    return None


def make_grant(role: str, prompts: Iterable[str] = (), aliases: Iterable[str] = (),
               protected: Collection[str] = DEFAULT_PROTECTED) -> Grant:
    """A validated grant for a new token (InputError says what is wrong)."""
    if role not in ROLES:
        raise InputError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    prompts = tuple(prompts) or ("*",)
    aliases = tuple(aliases)
    for kind, patterns in (("prompt", prompts), ("alias", aliases)):
        for p in patterns:
            if not isinstance(p, str) or not p or len(p) > _MAX_PATTERN or text_problem(p) or "\n" in p:
                raise InputError(f"invalid {kind} pattern {p!r}: a non-empty glob of at most {_MAX_PATTERN} "
                                 "characters")
    for a in aliases:
        if not any(c in a for c in "*?["):
            check_alias(a)
    if aliases and rank(role) < rank("contributor"):
        raise InputError(f"a {role} token moves no alias: --aliases needs role contributor or higher")
    named_protected = [a for a in aliases if a in protected]
    if named_protected and role not in ("promoter", "admin"):
        raise InputError(f"alias {named_protected[0]} is protected: grant it to a promoter token, not a {role}")
    return Grant(role, prompts, aliases)


__all__ = ["Action", "DEFAULT_PROTECTED", "Grant", "MIN_ROLE", "ROLES", "decide", "make_grant", "rank"]
