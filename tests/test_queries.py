"""promptreg.registry.queries on an embedded database with hand-built rows (no model, no MLflow)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from promptreg import Registry
from promptreg.errors import AliasNotFoundError, InputError, PromptNotFoundError, VersionNotFoundError
from promptreg.refs import parse_ref
from promptreg.registry import queries as q


def _version(s, prompt, number: int, sha: str):
    return q.add_version(s, prompt_id=prompt.id, number=number, sha256=sha, artifact_uri=f"file:///a/{sha}",
                         size_bytes=1, method="prompt_tuning", method_config={}, base_model_fingerprint="f" * 64,
                         metrics={}, manifest={"num_virtual_tokens": 4}, created_by="me", created_at=q.utcnow())


@pytest.fixture()
def reg(tmp_path):
    reg = Registry(home=str(tmp_path / ".promptreg"))
    with reg.session() as s:
        p = q.add_prompt(s, "p", "classification", "", "me")
        v1, v2 = _version(s, p, 1, "a" * 64), _version(s, p, 2, "b" * 64)
        q.add_alias(s, p, "production", v1, "me")
        q.add_event(s, actor="me", action="push", prompt_id=p.id, to_version=1)
    return reg, v1.id, v2.id


def test_lookups_raise_typed_not_found_errors(reg):
    reg, v1, v2 = reg
    with reg.session() as s:
        with pytest.raises(InputError):
            q.get_prompt(s, "bad name")
        with pytest.raises(PromptNotFoundError, match="no prompt named 'nope'"):
            q.get_prompt(s, "nope")
        p = q.get_prompt(s, "p")
        assert q.find_prompt(s, "nope") is None
        assert q.resolve(s, parse_ref("p")).id == v2                   # the latest
        assert q.resolve(s, parse_ref("p:1")).id == v1
        assert q.resolve(s, parse_ref("p@production")).id == v1
        with pytest.raises(VersionNotFoundError, match="p has no version 3"):
            q.resolve(s, parse_ref("p:3"))
        with pytest.raises(VersionNotFoundError, match="p has no version 3"):
            q.version_of(s, "p", 3)
        with pytest.raises(AliasNotFoundError, match="p has no alias 'staging'"):
            q.resolve(s, parse_ref("p@staging"))
        assert q.next_number(s, p) == 3
        assert q.version_id_by_sha(s, "p", "b" * 64) == v2 and q.version_id_by_sha(s, "p", "c" * 64) is None
        assert q.alias_numbers(s) == {p.id: {"production": 1}}
        assert q.version_counts(s) == {p.id: (2, 2)}
        assert [e.action for e in q.events(s, p)] == ["push"]


def test_alias_swap_is_a_compare_and_swap(reg):
    reg, v1, v2 = reg
    with reg.session() as s:
        p = q.get_prompt(s, "p")
        row = q.find_alias(s, p, "production")
        stale_version = row.row_version
        assert q.swap_alias(s, row, q.version_by_id(s, v2), "me") == stale_version + 1
    with reg.session() as s:
        p = q.get_prompt(s, "p")
        row = q.find_alias(s, p, "production")
        stale = SimpleNamespace(id=row.id, row_version=stale_version)  # what a concurrent mover had read
        assert q.swap_alias(s, stale, q.version_by_id(s, v1), "you") is None
    with reg.session() as s:
        assert q.alias_target(s, q.get_prompt(s, "p"), "production").id == v2


def test_content_references_name_every_referrer(reg):
    reg, _v1, _v2 = reg
    with reg.session() as s:
        refs = q.content_references(s)
        assert refs == {"a" * 64: [("p:1", "file:///a/" + "a" * 64)], "b" * 64: [("p:2", "file:///a/" + "b" * 64)]}
        assert q.content_references(s, {"b" * 64}) == {"b" * 64: [("p:2", "file:///a/" + "b" * 64)]}
