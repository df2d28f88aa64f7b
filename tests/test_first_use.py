"""First use of the embedded default (issue 13): concurrent first pushes into a fresh folder, a
half-migrated mlflow.db made by killing MLflow's own migration (named by `doctor`, rebuilt by
`doctor --repair`), `doctor` in a folder nothing has used, quiet MLflow/alembic logging."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from promptreg.registry.migrate import HEAD_REVISION, current_revision
from promptreg.registry.mlflow_db import inspect_db, repair_db
from promptreg.services.doctor import FIRST_USE
from promptreg.services.registry import Registry
from promptreg.settings import Settings
from tests.cli_utils import _CLEAN, PROMPTREG, run_cli
from tests.helpers import make_artifact

PUSHERS = 8
#: Repetitions of the concurrent first use (each in a fresh folder); lower it for a quick run.
REPS = int(os.environ.get("PROMPTREG_FIRST_USE_REPS", "20"))

# Runs MLflow's own creation of a SQLite database (what every MlflowClient did on first use before
# promptreg took over) and SIGKILLs itself just before the Nth SQL statement matching PATTERN.
KILL_MID_MIGRATION = r"""
import os, re, signal, sys
from sqlalchemy import event
from sqlalchemy.engine import Engine

uri, pattern, nth = sys.argv[1], re.compile(sys.argv[2]), int(sys.argv[3])
seen = [0]

@event.listens_for(Engine, "before_cursor_execute")
def _kill(conn, cursor, statement, params, context, executemany):
    if pattern.search(statement):
        seen[0] += 1
        if seen[0] == nth:
            os.kill(os.getpid(), signal.SIGKILL)

from mlflow.tracking import MlflowClient

MlflowClient(tracking_uri=uri, registry_uri=uri).search_experiments(max_results=1)
print("migration finished before the kill point", flush=True)
sys.exit(3)
"""
LEFTOVER = "_alembic_tmp_latest_metrics"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _CLEAN and k != "MLFLOW_LOGGING_LEVEL"}
    env.update(extra)
    return env


def _registry(folder: Path) -> Registry:
    return Registry(Settings.load(cwd=folder, env={}))


def _kill_mlflow_migration(db: Path, pattern: str = f"^ALTER TABLE {LEFTOVER}", nth: int = 1) -> None:
    db.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([sys.executable, "-c", KILL_MID_MIGRATION, f"sqlite:///{db}", pattern, str(nth)],
                          env=_env(MLFLOW_LOGGING_LEVEL="WARNING"), capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stdout, proc.stderr[-2000:])


def _no_info(stderr: str) -> None:
    assert not [ln for ln in stderr.splitlines() if " INFO " in f" {ln} " or ln.startswith("INFO")], stderr


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("first-use-artifacts")
    return [make_artifact(root / f"art{i}", seed=100 + i) for i in range(PUSHERS)]


@pytest.mark.slow
def test_concurrent_first_pushes_into_fresh_folders(tmp_path, artifacts):
    """8 processes push distinct artifacts into a fresh folder at once, REPS times: every version is
    registered and mirrored, sync repairs nothing, doctor passes, stderr is empty."""
    import resource

    def children_cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    timings, cpu_before = [], children_cpu()
    for rep in range(REPS):
        folder = tmp_path / f"rep{rep}"
        folder.mkdir()
        started = time.monotonic()
        procs = [subprocess.Popen([PROMPTREG, "push", str(art), "--name", "conc", "--json"], cwd=folder, env=_env(),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for art in artifacts]
        results = [(p.wait(timeout=600), *p.communicate()) for p in procs]
        timings.append(time.monotonic() - started)
        pushed = []
        for code, out, err in results:
            assert code == 0, (rep, code, out, err)
            assert err.strip() == "", (rep, err)        # no warning, no MLflow/alembic INFO line
            pushed.append(json.loads(out))
        assert sorted(v["version"] for v in pushed) == list(range(1, PUSHERS + 1)), rep
        assert all(v["mirror_status"] == "ok" for v in pushed), (rep, [v["mirror_error"] for v in pushed])

        home = folder / ".promptreg"
        assert inspect_db(home / "mlflow.db").status == "ok", rep          # no leftover tables either
        assert current_revision(f"sqlite:///{home / 'registry.db'}") == HEAD_REVISION
        reg = _registry(folder)
        report = reg.sync()
        assert report.repaired == 0 and not report.failed, (rep, report)
        assert all(c.ok for c in reg.doctor()), (rep, reg.doctor())
        mirrored = reg.mirror.version_tags("conc")
        assert sorted(t["promptreg.sha256"] for t in mirrored.values()) == sorted(v["sha256"] for v in pushed)
    res = run_cli("doctor", cwd=tmp_path / "rep0")
    assert res.code == 0 and res.err == "", res.out + res.err
    print(f"\n{REPS} x {PUSHERS} concurrent first pushes: wall median {sorted(timings)[len(timings) // 2]:.1f} s, "
          f"max {max(timings):.1f} s, total {sum(timings):.0f} s; push processes' CPU "
          f"{children_cpu() - cpu_before:.0f} s")


def test_doctor_in_an_empty_folder_exits_0_and_creates_nothing(tmp_path):
    for args in (["doctor"], ["doctor", "--json"], ["doctor", "--repair"]):
        res = run_cli(*args, cwd=tmp_path)
        assert res.code == 0, res.out + res.err
        assert res.err == ""
        assert list(tmp_path.iterdir()) == [], args
    checks = run_cli("doctor", "--json", cwd=tmp_path).json()
    assert [(c["component"], c["ok"], c["detail"]) for c in checks] == [
        ("registry database", True, FIRST_USE), ("artifact store", True, FIRST_USE), ("MLflow tracking", True, FIRST_USE)]
    # a home that could never be created is not OK
    (tmp_path / "file").write_text("x")
    res = run_cli("--home", str(tmp_path / "file" / "home"), "doctor", "--json", cwd=tmp_path)
    assert res.code == 2 and all("is not a folder" in c["detail"] for c in res.json())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
    # after first use, doctor sees the real stores
    assert run_cli("list", cwd=tmp_path).code == 0
    res = run_cli("doctor", "--json", cwd=tmp_path)
    assert res.code == 0 and res.json()[0]["detail"] == f"schema {HEAD_REVISION}", res.out


def test_interrupted_mlflow_migration_is_named_and_repaired(tmp_path, artifacts):
    home = tmp_path / ".promptreg"
    _kill_mlflow_migration(home / "mlflow.db")
    state = inspect_db(home / "mlflow.db")
    assert state.status == "damaged" and LEFTOVER in state.leftovers, state

    # an ordinary command registers the version, warns in one line naming the repair, touches nothing
    res = run_cli("push", artifacts[0], "--name", "k", cwd=tmp_path)
    assert res.code == 0 and "mlflow: failed" in res.out, res.out + res.err
    lines = res.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: ") and "promptreg doctor --repair" in lines[0], res.err
    assert inspect_db(home / "mlflow.db") == state

    res = run_cli("doctor", "--json", cwd=tmp_path)
    assert res.code == 2, res.out + res.err
    mlflow_check = res.json()[2]
    assert not mlflow_check["ok"]
    detail = mlflow_check["detail"]
    assert "half-migrated" in detail and LEFTOVER in detail and "run `promptreg doctor --repair`" in detail
    res = run_cli("doctor", cwd=tmp_path)
    assert res.code == 2 and sum("FAIL" in ln for ln in res.out.splitlines()) == 1, res.out
    res = run_cli("sync", cwd=tmp_path)
    assert res.code == 2 and res.err.count("\n") == 1 and "promptreg doctor --repair" in res.err, res.err

    res = run_cli("doctor", "--repair", "--json", cwd=tmp_path)
    assert res.code == 0 and res.err == "", res.out + res.err
    out = res.json()
    assert all(c["ok"] for c in out["checks"]), out
    repair = out["repair"]
    assert repair["revision_before"] == state.revision and repair["revision_after"] == state.head
    assert LEFTOVER in repair["dropped_leftovers"]
    assert Path(repair["backup"]).is_file() and Path(repair["backup"]).parent == home
    assert inspect_db(home / "mlflow.db").status == "ok"
    assert not [p.name for p in home.iterdir() if p.name.startswith(".mlflow.db.")]     # no scratch file left

    res = run_cli("sync", "--json", cwd=tmp_path)
    assert res.code == 0 and res.json()["mirrored"] == ["k:1"], res.out + res.err
    res = run_cli("push", artifacts[1], "--name", "k", cwd=tmp_path)
    assert res.code == 0 and "mlflow: ok" in res.out and res.err == "", res.out + res.err
    assert len(_registry(tmp_path).mirror.version_tags("k")) == 2
    res = run_cli("doctor", "--repair", cwd=tmp_path)
    assert res.code == 0 and res.out.startswith("MLflow tracking: nothing to repair"), res.out


def test_repair_carries_tracking_data_over(tmp_path):
    """Runs logged before the interrupted migration (written at MLflow's first schema) survive the
    repair, migrated to MLflow's head."""
    from mlflow.store.tracking.dbmodels.initial_models import Base as InitialBase
    from mlflow.tracking import MlflowClient
    from sqlalchemy import create_engine

    db = tmp_path / "mlflow.db"
    engine = create_engine(f"sqlite:///{db}")
    InitialBase.metadata.create_all(engine)
    engine.dispose()
    run_id = "a" * 32
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO experiments VALUES (1, 'legacy', 'file:///tmp/legacy', 'active')")
        conn.execute("INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, status, "
                     "start_time, end_time, source_version, lifecycle_stage, artifact_uri, experiment_id) VALUES "
                     f"('{run_id}', 'old run', 'LOCAL', 'train.py', '', 'ann', 'FINISHED', 1000, 2000, '', 'active', "
                     "'file:///tmp/legacy/run', 1)")
        conn.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?)",
                         [("acc", 0.5, 1100, run_id), ("acc", 0.75, 1900, run_id)])
        conn.execute(f"INSERT INTO params VALUES ('lr', '0.1', '{run_id}')")
        conn.execute(f"INSERT INTO tags VALUES ('team', 'nlp', '{run_id}')")
    _kill_mlflow_migration(db)
    state = inspect_db(db)
    assert state.status == "damaged" and state.revision is not None, state

    report = repair_db(db)
    assert report is not None and report.rows >= 6 and report.not_carried == [], report
    assert report.backup.is_file() and inspect_db(report.backup).status == "damaged"
    assert inspect_db(db).status == "ok"
    client = MlflowClient(tracking_uri=f"sqlite:///{db}", registry_uri=f"sqlite:///{db}")
    run = client.get_run(run_id)
    assert run.info.run_name == "old run" and run.info.status == "FINISHED" and run.info.experiment_id == "1"
    assert run.data.params == {"lr": "0.1"} and run.data.tags["team"] == "nlp"
    assert run.data.metrics == {"acc": 0.75}          # latest_metrics, computed by the re-run migration
    assert [m.value for m in client.get_metric_history(run_id, "acc")] == [0.5, 0.75]
    assert client.get_experiment("1").name == "legacy"
    assert repair_db(db) is None                      # nothing left to repair


def test_leftover_tables_at_head_are_named_and_the_repair_keeps_the_mirror(tmp_path, artifacts):
    """What concurrent first uses used to leave: the schema at head plus `_alembic_tmp_*` tables."""
    reg = _registry(tmp_path)
    for art in artifacts[:2]:
        assert reg.push(art, "kept").version.mirror_status == "ok"
    reg.set_alias("kept", "production", 2)
    db = tmp_path / ".promptreg" / "mlflow.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE _alembic_tmp_experiments AS SELECT * FROM experiments WHERE 0")
    state = inspect_db(db)
    assert state.status == "leftovers" and state.usable, state

    res = run_cli("doctor", cwd=tmp_path)
    assert res.code == 2 and "_alembic_tmp_experiments" in res.out and "promptreg doctor --repair" in res.out, res.out
    res = run_cli("push", artifacts[2], "--name", "kept", cwd=tmp_path)      # still usable meanwhile
    assert res.code == 0 and "mlflow: ok" in res.out, res.out + res.err

    res = run_cli("doctor", "--repair", cwd=tmp_path)
    assert res.code == 0, res.out + res.err
    assert res.out.startswith(f"repaired MLflow database {db}") and "_alembic_tmp_experiments" in res.out
    reg = _registry(tmp_path)
    report = reg.sync()
    assert report.repaired == 0 and not report.failed, report       # runs, versions, aliases, tags kept
    assert reg.mirror.get_aliases("kept") == {"production": "2"}
    assert len(reg.mirror.version_tags("kept")) == 3


def test_verbose_shows_info_logging_and_default_is_quiet(tmp_path, artifacts):
    for sub in ("q", "v"):
        (tmp_path / sub).mkdir()
    quiet = run_cli("push", artifacts[0], "--name", "v", cwd=tmp_path / "q")
    assert quiet.code == 0 and quiet.err == "", quiet.err
    loud = run_cli("--verbose", "push", artifacts[0], "--name", "v", cwd=tmp_path / "v")
    assert loud.code == 0, loud.err
    assert "INFO alembic.runtime.migration: Running upgrade" in loud.err
    assert "INFO promptreg.registry.mlflow_db: creating the MLflow database" in loud.err
