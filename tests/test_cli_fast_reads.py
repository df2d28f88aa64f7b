"""The read commands' SQLite fast path (services.sqlite_reads) and shell completion (issue 20):
the same answers as the Registry, no SQLAlchemy/sqlmodel import for `list`, `show` and completion,
a fall-back to the Registry when the schema is not at head, completion scripts for bash/zsh/fish."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
from types import SimpleNamespace

import pytest

from promptreg import Registry
from promptreg.artifact.validate import validate_artifact
from promptreg.errors import InputError, NotFoundError
from promptreg.services.sqlite_reads import open_reader
from promptreg.services.versions import insert_version
from tests.cli_utils import PROMPTREG, assert_one_line_error, run_cli
from tests.helpers import make_artifact


@pytest.fixture
def project(tmp_path):
    """qa-bot:1..3 (production=2, staging=3), qa-other:1..2, sum:1 (a generation prompt); no MLflow."""
    reg = Registry(home=str(tmp_path / ".promptreg"))
    art = validate_artifact(make_artifact(tmp_path / "template", n=6, metrics={"accuracy": 0.7, "f1": 0.5}))
    for name, n in (("qa-bot", 3), ("qa-other", 2), ("sum", 1)):
        for i in range(n):
            sha = hashlib.sha256(f"{name}-{i}".encode()).hexdigest()
            insert_version(reg, name, SimpleNamespace(manifest=art.manifest, sha256=sha, size_bytes=art.size_bytes),
                                f"file:///nowhere/{sha}", f"{name} v{i + 1}")
    reg.set_alias("qa-bot", "production", 2, action="alias.set")
    reg.set_alias("qa-bot", "staging", 3, action="alias.set")
    return reg


def test_fast_reader_answers_as_the_registry(project):
    reader = open_reader(project.settings.db_url)
    assert reader is not None
    assert reader.list_prompts() == project.list_prompts()
    for kw in ({}, {"limit": 2}, {"limit": 2, "offset": 2}, {"offset": 5}):
        assert reader.version_page("qa-bot", **kw) == project.version_page("qa-bot", **kw)
    for ref in ("qa-bot", "qa-bot:1", "qa-bot@production", "qa-bot@staging", "sum:1"):
        assert reader.show(ref) == project.show(ref)
        assert reader.manifest(ref) == project.manifest(ref)
    for bad, kind in (("nope", NotFoundError), ("qa-bot:9", NotFoundError), ("qa-bot@canary", NotFoundError),
                      ("nope@production", NotFoundError), ("qa-bot:0", InputError), ("Bad Name", InputError)):
        with pytest.raises(kind) as fast:
            reader.show(bad)
        with pytest.raises(kind) as slow:
            project.show(bad)
        assert str(fast.value) == str(slow.value)
    with pytest.raises(NotFoundError, match="no prompt named 'nope'"):
        reader.version_page("nope")
    assert reader.prompt_names("qa") == ["qa-bot", "qa-other"] and reader.prompt_names() == ["qa-bot", "qa-other", "sum"]
    assert reader.alias_names("qa-bot") == ["production", "staging"] and reader.version_numbers("qa-other") == [1, 2]


def test_fast_path_only_at_schema_head(project, tmp_path):
    assert open_reader(f"sqlite:///{tmp_path / 'missing.db'}") is None
    assert open_reader("postgresql+psycopg://u@127.0.0.1/x") is None
    db = project.settings.db_url[len("sqlite:///"):]
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0002'")
    assert open_reader(project.settings.db_url) is None


def _modules_after(args: list[str], cwd, env: dict | None = None) -> tuple[str, list[str]]:
    """Run the CLI in a fresh interpreter; (stdout, the heavy modules it imported)."""
    code = ("import atexit, sys\n"
            "heavy = ('sqlalchemy', 'sqlmodel', 'pydantic', 'alembic', 'torch', 'mlflow')\n"
            "atexit.register(lambda: print('HEAVY:' + ','.join(m for m in heavy if m in sys.modules)))\n"
            "from promptreg.cli.main import main\n"
            f"main({args!r})\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                         env={**os.environ, **(env or {})}, timeout=120)
    lines = out.stdout.splitlines()
    heavy = next(ln for ln in reversed(lines) if ln.startswith("HEAVY:"))[len("HEAVY:"):]
    return "\n".join(ln for ln in lines if not ln.startswith("HEAVY:")), [m for m in heavy.split(",") if m]


def test_read_commands_and_completion_import_no_sqlalchemy(project, tmp_path):
    out, heavy = _modules_after(["list"], tmp_path)
    assert "qa-bot" in out and "production=2, staging=3" in out and heavy == []
    out, heavy = _modules_after(["list", "qa-bot", "--limit", "1", "--offset", "1"], tmp_path)
    assert "production" in out and "(more versions: --offset 2)" in out and heavy == []
    out, heavy = _modules_after(["show", "qa-bot@staging", "--json"], tmp_path)
    assert '"version": 3' in out and heavy == []
    out, heavy = _modules_after([], tmp_path, {"_PROMPTREG_COMPLETE": "bash_complete",
                                               "COMP_WORDS": "promptreg show qa-bot@", "COMP_CWORD": "2"})
    assert out.split() == ["plain,qa-bot@production", "plain,qa-bot@staging"] and heavy == []
    # an unknown name is the Registry's one-line error, from the fast path too
    assert_one_line_error(run_cli("show", "qa-bot@canary", cwd=tmp_path), 2, "qa-bot has no alias 'canary'")


def _complete(tmp_path, words: str) -> list[str]:
    cword = len(words.split()) - (0 if words.endswith(" ") else 1)
    env = {**os.environ, "_PROMPTREG_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": str(cword)}
    out = subprocess.run([PROMPTREG], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    return [line.split(",", 1)[1] for line in out.stdout.splitlines() if line]


def test_dynamic_completion(project, tmp_path):
    assert _complete(tmp_path, "promptreg show qa") == ["qa-bot", "qa-other"]
    assert _complete(tmp_path, "promptreg show qa-bot:") == ["qa-bot:1", "qa-bot:2", "qa-bot:3"]
    assert _complete(tmp_path, "promptreg history ") == ["qa-bot", "qa-other", "sum"]
    assert _complete(tmp_path, "promptreg gate qa-bot:3 --against ") == ["production", "staging", "1", "2", "3"]
    assert _complete(tmp_path, "promptreg gate qa-bot:3 --against qa-bot@p") == ["qa-bot@production"]
    assert _complete(tmp_path, "promptreg rollback qa-bot@st") == ["qa-bot@staging"]
    assert _complete(tmp_path, "promptreg rollback qa-bot --to s") == ["staging"]
    assert _complete(tmp_path, "promptreg show nope@") == []
    # elsewhere, no registry: nothing completes and none is created
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _complete(empty, "promptreg show q") == [] and not (empty / ".promptreg").exists()


@pytest.mark.parametrize("shell, marker", [("bash", "complete -o nosort -F"), ("zsh", "compdef"),
                                           ("fish", "complete --no-files --command promptreg")])
def test_completion_scripts(tmp_path, shell, marker):
    res = run_cli("completion", shell, cwd=tmp_path)
    assert res.code == 0 and marker in res.out and "_PROMPTREG_COMPLETE" in res.out, res.out
    assert not (tmp_path / ".promptreg").exists()


def test_completion_unknown_shell_is_one_line(tmp_path):
    assert_one_line_error(run_cli("completion", "tcsh", cwd=tmp_path), 2, "tcsh")
