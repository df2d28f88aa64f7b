"""`list NAME`: one page of versions in two SELECTs whatever the count (no query per version), with
--limit/--offset pagination, on SQLite and PostgreSQL (issue 20)."""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

import pytest

from promptreg import Registry
from promptreg.artifact.validate import validate_artifact
from promptreg.errors import InputError, NotFoundError
from promptreg.services.versions import insert_version
from tests.cli_utils import assert_one_line_error, run_cli
from tests.helpers import make_artifact


def _fill(reg: Registry, tmp_path, name: str, n: int) -> None:
    """``n`` versions through the push's metadata path (no upload, no MLflow: only the rows matter)."""
    art = validate_artifact(make_artifact(tmp_path / "template", n=6))
    for i in range(n):
        sha = hashlib.sha256(f"{name}-{i}".encode()).hexdigest()
        insert_version(reg, name, SimpleNamespace(manifest=art.manifest, sha256=sha, size_bytes=art.size_bytes),
                            f"file:///nowhere/{sha}", f"v{i + 1}")


def _selects(reg: Registry, fn, *args, **kw) -> tuple[int, object]:
    from sqlalchemy import event

    seen: list[str] = []

    def on_execute(_conn, _cursor, statement, *_a):
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append(statement)

    event.listen(reg.engine, "before_cursor_execute", on_execute)
    try:
        out = fn(*args, **kw)
    finally:
        event.remove(reg.engine, "before_cursor_execute", on_execute)
    return len(seen), out


@pytest.fixture(params=["sqlite", "postgresql"])
def reg(request, tmp_path):
    if request.param == "postgresql":
        url = request.getfixturevalue("pg_url")
        from promptreg.registry.migrate import upgrade

        upgrade(url)
        return Registry(home=str(tmp_path / ".promptreg"), db_url=url)
    return Registry(home=str(tmp_path / ".promptreg"))


def test_list_versions_two_queries_any_size_and_pages(reg, tmp_path):
    _fill(reg, tmp_path, "qa", 30)
    reg.set_alias("qa", "production", 7, action="alias.set")
    reg.set_alias("qa", "staging", 7, action="alias.set")
    reg.set_alias("qa", "canary", 30, action="alias.set")
    small_q, _ = _selects(reg, reg.list_versions, "qa", limit=3)
    full_q, full = _selects(reg, reg.list_versions, "qa")
    assert small_q == full_q == 2
    assert [v.version for v in full] == list(range(1, 31))
    assert full[6].aliases == ["production", "staging"] and full[29].aliases == ["canary"] and full[0].aliases == []
    assert {v.num_virtual_tokens for v in full} == {6} and full[0].task_type == "classification"
    assert full[6] == reg.show("qa:7")          # the page and `show` render the same view

    page, more = reg.version_page("qa", limit=5, offset=5)
    assert [v.version for v in page] == [6, 7, 8, 9, 10] and more and page[1].aliases == ["production", "staging"]
    last, more = reg.version_page("qa", limit=5, offset=25)
    assert [v.version for v in last] == [26, 27, 28, 29, 30] and not more
    assert reg.version_page("qa", limit=5, offset=30) == ([], False)
    with pytest.raises(NotFoundError, match="no prompt named 'nope'"):
        reg.list_versions("nope")
    with pytest.raises(InputError):
        reg.list_versions("qa", limit=0)


def test_cli_list_limit_offset(tmp_path):
    reg = Registry(home=str(tmp_path / ".promptreg"))
    _fill(reg, tmp_path, "qa", 4)
    res = run_cli("list", "qa", "--limit", "2", "--offset", "1", "--json", cwd=tmp_path)
    assert res.code == 0, res.err
    assert [v["version"] for v in res.json()] == [2, 3]
    text = run_cli("list", "qa", "--limit", "2", cwd=tmp_path)
    assert text.code == 0 and "(more versions: --offset 2)" in text.out
    assert "more versions" not in run_cli("list", "qa", "--offset", "2", cwd=tmp_path).out
    assert_one_line_error(run_cli("list", "--limit", "2", cwd=tmp_path), 2, "page the versions of NAME")
    assert_one_line_error(run_cli("list", "qa", "--limit", "0", cwd=tmp_path), 2)
    assert_one_line_error(run_cli("list", "nope", cwd=tmp_path), 2, "no prompt named 'nope'")
