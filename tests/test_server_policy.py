"""The permission rule (promptreg.server.policy.decide) on hand-built grants: no server, no database."""

from __future__ import annotations

import pytest

from promptreg.errors import InputError
from promptreg.server.policy import ROLES, Action, Grant, decide, make_grant

VIEWER = Grant("viewer")
CONTRIB = Grant("contributor")
PROMO_STAGING = Grant("promoter", aliases=("staging",))
PROMO_PROD = Grant("promoter", aliases=("production",))
ADMIN = Grant("admin")


@pytest.mark.parametrize(("grant", "allowed"), [
    (VIEWER, {Action.READ}),
    (CONTRIB, {Action.READ, Action.PUSH, Action.EVALUATE, Action.DRIFT, Action.SCHEDULE, Action.MOVE}),
    (PROMO_PROD, {Action.READ, Action.PUSH, Action.EVALUATE, Action.DRIFT, Action.SCHEDULE, Action.MOVE}),
    (ADMIN, set(Action)),
])
def test_role_ladder_without_alias(grant, allowed):
    got = {a for a in Action if decide(grant, a, prompt="sentiment") is None}
    assert got == allowed


@pytest.mark.parametrize(("grant", "alias", "ok"), [
    (CONTRIB, "staging", True),
    (CONTRIB, "production", False),
    (CONTRIB, "canary", True),
    (PROMO_STAGING, "staging", True),
    (PROMO_STAGING, "production", False),
    (PROMO_STAGING, "canary", False),           # a promoter moves only what it is granted
    (PROMO_PROD, "production", True),
    (PROMO_PROD, "staging", False),
    (Grant("promoter", aliases=("*",)), "production", False),     # a wildcard never grants a protected alias
    (Grant("promoter", aliases=("*",)), "staging", True),
    (Grant("contributor", aliases=("stag*",)), "staging", True),
    (Grant("contributor", aliases=("stag*",)), "canary", False),
    (ADMIN, "production", True),
    (VIEWER, "staging", False),
])
def test_alias_moves(grant, alias, ok):
    assert (decide(grant, Action.MOVE, prompt="sentiment", alias=alias) is None) is ok


def test_configurable_protected_aliases():
    assert decide(CONTRIB, Action.MOVE, prompt="p", alias="production", protected=()) is None
    why = decide(CONTRIB, Action.MOVE, prompt="p", alias="staging", protected=("staging", "production"))
    assert why is not None and "alias staging is protected" in why


def test_force_is_admin_only_even_for_a_granted_promoter():
    assert decide(PROMO_PROD, Action.FORCE, prompt="p", alias="production") == "role promoter; needs admin"
    assert decide(ADMIN, Action.FORCE, prompt="p", alias="production") is None


def test_prompt_globs_apply_to_every_action_reads_included():
    team = Grant("admin", prompts=("team-a.*",))
    assert decide(team, Action.READ, prompt="team-a.sentiment") is None
    assert "not in the token's prompts" in decide(team, Action.READ, prompt="team-b.sentiment")
    assert "not in the token's prompts" in decide(team, Action.MOVE, prompt="team-b.x", alias="staging")
    assert decide(team, Action.ADMIN) is None             # not prompt-scoped
    assert Grant("viewer", prompts=("Team*",)).sees("team") is False   # case-sensitive


def test_denial_names_what_is_missing():
    assert decide(VIEWER, Action.PUSH, prompt="p") == "role viewer; needs contributor or higher"
    why = decide(CONTRIB, Action.MOVE, prompt="p", alias="production")
    assert why == "alias production is protected: only an admin or a promoter granted production by name may move it"


def test_make_grant_validates():
    assert make_grant("contributor") == Grant("contributor", ("*",), ())
    assert make_grant("promoter", ["team-a.*"], ["production"]).aliases == ("production",)
    for args, match in [
        (("owner",), "unknown role"),
        (("viewer", (), ("staging",)), "moves no alias"),
        (("contributor", (), ("production",)), "grant it to a promoter"),
        (("contributor", ("",)), "invalid prompt pattern"),
        (("contributor", ("a\x00",)), "invalid prompt pattern"),
        (("contributor", (), ("Bad Alias",)), "invalid alias"),
        (("contributor", (), ("v1",)), "invalid alias"),
    ]:
        with pytest.raises(InputError, match=match):
            make_grant(*args)
    assert ROLES == ("viewer", "contributor", "promoter", "admin")
