"""Crash during push (issue 7, item 2) and ``promptreg gc``.

``promptreg push`` subprocesses are killed with SIGKILL at four points (PROMPTREG_FAULT_PAUSE makes the
process announce ``PAUSE <stage>`` on stderr and wait there): before the upload, in the middle of the
upload (between two files), between the upload and the commit, and after the commit before the MLflow
mirror. After every kill: every visible version's artifact verifies (sha256) and no version exists
for content whose push died before its commit; pushing again converges to exactly one version; a
version killed before its mirror shows ``pending`` and ``promptreg sync`` repairs it (MLflow has the
model version with the right ``promptreg.sha256`` tag). Finally ``promptreg gc --dry-run`` lists exactly
the orphaned uploads, ``gc --yes`` keeps them while they are younger than ``--min-age-s``, and
``gc --yes --min-age-s 0`` removes them while every referenced object (versions, eval outcomes, drift
report) stays and verifies.

50 trials in all: 30 on the embedded default, 20 on the production services (PostgreSQL, moto S3,
``mlflow server``). Run with ``-s`` to see the measured figures.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from promptreg import Registry
from promptreg.artifact.hashing import folder_sha256
from promptreg.errors import NotFoundError
from tests.cli_utils import _CLEAN, PROMPTREG, Result, run_cli
from tests.helpers import make_artifact, make_model_artifact, sentiment_rows, write_suite

STAGES = ("before_upload", "mid_upload", "after_upload", "after_commit")
EMBEDDED_TRIALS = 30   # ~0.8 s a trial
PRODUCTION_TRIALS = 20  # ~2 s a trial
# `promptreg gc` through the real CLI entry point (registered here too if main.py does not list it yet).
GC_MAIN = ("import sys; from promptreg.cli.main import cli, main; from promptreg.cli.gc_cmds import gc_cmd; "
           "cli.commands.get('gc') or cli.add_command(gc_cmd); main()")


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _CLEAN and k != "PROMPTREG_FAULT_PAUSE"}
    env.update(extra)
    return env


def run_gc(*args: str, cwd: Path, env: dict[str, str]) -> Result:
    proc = subprocess.run([sys.executable, "-c", GC_MAIN, "gc", *args], cwd=cwd, env=_env(env),
                          capture_output=True, text=True, timeout=180)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def kill_push_at(stage: str, folder: Path, name: str, *, cwd: Path, env: dict[str, str]) -> float:
    """Start `promptreg push`, SIGKILL its process group once it says ``PAUSE <stage>``; seconds to the pause."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([PROMPTREG, "push", str(folder), "--name", name], cwd=cwd,
                            env=_env({**env, "PROMPTREG_FAULT_PAUSE": stage}), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)

    def killpg():
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    watchdog = threading.Timer(120, killpg)
    watchdog.start()
    seen: list[str] = []
    try:
        for raw in proc.stderr:
            line = raw.decode("utf-8", "replace").strip()
            if line == f"PAUSE {stage}":
                break
            seen.append(line)
        else:
            pytest.fail(f"push exited with {proc.wait()} before PAUSE {stage}: {seen[-5:]}")
        elapsed = time.perf_counter() - t0
        killpg()
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            killpg()
            proc.wait(timeout=30)
        proc.stderr.close()
    return elapsed


def verify_all(reg: Registry, name: str, scratch: Path, verified: set[str] | None = None) -> list:
    """Every visible version's artifact is in the store and verifies against its sha256 (``verified``:
    shas already verified, skipped and updated: stored content is immutable, so once is enough)."""
    try:
        versions = reg.list_versions(name)
    except NotFoundError:
        return []
    for v in versions:
        if verified is not None:
            if v.sha256 in verified:
                continue
            verified.add(v.sha256)
        dest = scratch / uuid.uuid4().hex
        reg.store.fetch(v.artifact_uri, dest, v.sha256)  # raises NotFoundError / IntegrityError
        shutil.rmtree(dest)
    assert len({v.sha256 for v in versions}) == len(versions)  # one version per content
    return versions


def plan(n: int, seed: int) -> list[str]:
    """Random stages with a fixed seed; every stage at least twice."""
    rng = random.Random(seed)
    stages = [*STAGES, *STAGES] + [rng.choice(STAGES) for _ in range(n - 2 * len(STAGES))]
    rng.shuffle(stages)
    return stages


def crash_trials(reg: Registry, name: str, n: int, seed: int, *, tmp: Path, env: dict[str, str]) -> dict:
    """Run the trials; returns what the gc phase needs and the measured figures."""
    stages = plan(n, seed)
    orphan_trials = {stages.index("after_upload"), stages.index("mid_upload")}  # never pushed again
    scratch = tmp / "scratch"
    scratch.mkdir()
    pause_s: dict[str, list[float]] = defaultdict(list)
    pending: list[tuple[str, Path]] = []
    orphans: list[tuple[str, str]] = []       # (stage, sha) of contents not pushed again
    verified: set[str] = set()
    t_loop = time.perf_counter()
    for i, stage in enumerate(stages):
        art = make_artifact(tmp / "arts" / f"t{i}", n=2, seed=1000 + seed + i)
        sha = folder_sha256(art)
        pause_s[stage].append(kill_push_at(stage, art, name, cwd=tmp, env=env))
        visible = {v.sha256: v for v in verify_all(reg, name, scratch, verified)}
        if stage == "after_commit":
            assert sha in visible and visible[sha].mirror_status == "pending", (i, stage)
            pending.append((sha, art))
            continue
        assert sha not in visible, (i, stage)  # nothing visible without its commit
        if i in orphan_trials:
            orphans.append((stage, sha))
            continue
        res = reg.push(art, name)  # rerun without a fault: converges
        assert res.created and res.version.mirror_status == "ok" and res.version.sha256 == sha, res.warnings
        again = reg.push(art, name)
        assert not again.created and again.version.version == res.version.version
        assert [v.sha256 for v in verify_all(reg, name, scratch, verified)].count(sha) == 1
    loop_s = time.perf_counter() - t_loop
    return dict(stages=stages, pause_s=pause_s, pending=pending, orphans=orphans, loop_s=loop_s, scratch=scratch)


def repair_with_sync(reg: Registry, name: str, pending, *, tmp: Path, env: dict[str, str]) -> float:
    from mlflow.tracking import MlflowClient

    t0 = time.perf_counter()
    res = run_cli("sync", cwd=tmp, env=env)
    sync_s = time.perf_counter() - t0
    assert res.code == 0, res.out + res.err
    client = MlflowClient(tracking_uri=reg.settings.tracking_uri)
    by_sha = {v.sha256: v for v in reg.list_versions(name)}
    for sha, art in pending:
        v = by_sha[sha]
        assert v.mirror_status == "ok" and v.mlflow_model_version, v
        mv = client.get_model_version(name, v.mlflow_model_version)
        assert mv.tags["promptreg.sha256"] == sha
        again = reg.push(art, name)  # and pushing it again is a no-op
        assert not again.created and again.version.version == v.version and again.version.mirror_status == "ok"
    return sync_s


def referenced_documents(reg: Registry, tmp: Path, tiny_model_dir: Path) -> list[tuple[str, str]]:
    """An eval run (tiny model) and a drift report: (uri, sha256) of their documents in the store."""
    import sqlalchemy as sa

    from promptreg.evaluation.suite import load_suite
    from promptreg.services.drift import check_drift
    from promptreg.services.evaluate import Evaluator

    reg.push(make_model_artifact(tmp / "model-art", tiny_model_dir, method="prefix_tuning"), "toy")
    suite = load_suite(write_suite(tmp / "suite", rows=8, checks=False))
    result, _ = Evaluator(reg, model=tiny_model_dir, log_mlflow=False).evaluate("toy:1", suite, against="none")
    assert result.eval_run_id and not result.cached
    fresh = tmp / "fresh.jsonl"
    fresh.write_text("".join(json.dumps(r) + "\n" for r in sentiment_rows(12, seed=3)))
    check_drift(reg, "toy:1", str(fresh), suite=suite, model=str(tiny_model_dir), action="report", log_mlflow=False)
    with reg.engine.connect() as conn:
        docs = conn.execute(sa.text("SELECT outcomes_uri, outcomes_sha256 FROM eval_run")).all()
        docs += conn.execute(sa.text("SELECT report_uri, report_sha256 FROM drift_report")).all()
    assert len(docs) == 2
    return [(uri, sha) for uri, sha in docs]


def gc_phase(reg: Registry, name: str, trials: dict, docs, *, tmp: Path, env: dict[str, str], s3: bool) -> dict:
    from promptreg.services.gc import collect_garbage

    orphans, stages, scratch = trials["orphans"], trials["stages"], trials["scratch"]
    want = {("unreferenced", sha) for stage, sha in orphans if stage == "after_upload"}
    if s3:   # objects of the killed upload without their completion marker
        want |= {("incomplete", sha) for stage, sha in orphans if stage == "mid_upload"}
    partial = 0 if s3 else stages.count("mid_upload")  # local: one temporary folder per mid-upload kill

    t0 = time.perf_counter()
    res = run_gc("--dry-run", "--json", cwd=tmp, env=env)
    dry_s = time.perf_counter() - t0
    assert res.code == 0, res.err
    report = res.json()
    assert report["missing"] == [] and report["deleted"] == [] and report["dry_run"]
    got = {(o["kind"], o["sha256"]) for o in report["orphans"] if o["kind"] != "partial"}
    assert got == want
    assert sum(o["kind"] == "partial" for o in report["orphans"]) == partial
    assert all(not o["deletable"] for o in report["orphans"])  # all younger than the default min age
    text = run_gc(cwd=tmp, env=env)  # the default is a dry run too
    assert text.code == 0 and "nothing deleted" in text.out, text.out + text.err

    res = run_gc("--yes", "--json", cwd=tmp, env=env)  # default --min-age-s 3600: all too young
    assert res.code == 0 and res.json()["deleted"] == [], res.out + res.err
    assert len(res.json()["kept_young"]) == len(want) + partial

    t0 = time.perf_counter()
    res = run_gc("--yes", "--min-age-s", "0", "--json", cwd=tmp, env=env)
    yes_s = time.perf_counter() - t0
    assert res.code == 0, res.err
    assert len(res.json()["deleted"]) == len(want) + partial and res.json()["skipped"] == []
    for _kind, sha in want:
        assert not reg.store.exists(sha)
        assert sha not in reg.store.list_shas()
    after = collect_garbage(reg, min_age_s=0)
    assert after.orphans == [] and after.missing == []

    # everything referenced stays and verifies
    versions = verify_all(reg, name, scratch)
    assert len(versions) == len(stages) - len(orphans)
    for uri, sha in docs:
        dest = scratch / uuid.uuid4().hex
        assert folder_sha256(reg.store.fetch(uri, dest, sha)) == sha
    assert verify_all(reg, "toy", scratch)
    bad = run_gc("--dry-run", "--yes", cwd=tmp, env=env)
    assert bad.code == 2 and bad.err.strip().startswith("error: ") and len(bad.err.strip().splitlines()) == 1
    return dict(orphans=len(want) + partial, dry_s=dry_s, yes_s=yes_s)


def report_figures(mode: str, trials: dict, sync_s: float, gc: dict) -> None:
    counts = Counter(trials["stages"])
    per_stage = ", ".join(f"{s} {counts[s]} (pause after {sum(trials['pause_s'][s]) / counts[s]:.2f}s avg)"
                          for s in STAGES)
    print(f"\n[crash trials, {mode}] {len(trials['stages'])} trials: {per_stage}; "
          f"loop {trials['loop_s']:.1f}s ({trials['loop_s'] / len(trials['stages']):.2f}s/trial); "
          f"{len(trials['pending'])} repaired by `promptreg sync` in {sync_s:.1f}s; "
          f"gc: {gc['orphans']} orphans listed in {gc['dry_s']:.2f}s, removed in {gc['yes_s']:.2f}s")


def test_crash_during_push_embedded(tmp_path, tiny_model_dir):
    reg = Registry(home=str(tmp_path / ".promptreg"))
    assert all(c.ok for c in reg.init())
    name = "crashy"
    trials = crash_trials(reg, name, EMBEDDED_TRIALS, seed=7, tmp=tmp_path, env={})
    sync_s = repair_with_sync(reg, name, trials["pending"], tmp=tmp_path, env={})
    docs = referenced_documents(reg, tmp_path, tiny_model_dir)
    gc = gc_phase(reg, name, trials, docs, tmp=tmp_path, env={}, s3=False)
    report_figures("embedded", trials, sync_s, gc)


@pytest.mark.integration
def test_crash_during_push_production(tmp_path, pg_url, mlflow_server, s3_env, tiny_model_dir):
    from promptreg.settings import Settings

    bucket = s3_env.new_bucket()
    env = {**s3_env.env(), "PROMPTREG_DB_URL": pg_url, "MLFLOW_TRACKING_URI": mlflow_server.url,
           "PROMPTREG_ARTIFACT_URI": f"s3://{bucket}/registry"}
    reg = Registry(settings=Settings.load(cwd=tmp_path, env={**os.environ, **env}))
    assert all(c.ok for c in reg.init())
    name = f"crashy-{uuid.uuid4().hex[:8]}"
    trials = crash_trials(reg, name, PRODUCTION_TRIALS, seed=11, tmp=tmp_path, env=env)
    sync_s = repair_with_sync(reg, name, trials["pending"], tmp=tmp_path, env=env)
    docs = referenced_documents(reg, tmp_path, tiny_model_dir)
    assert all(uri.startswith(f"s3://{bucket}/registry/") for uri, _ in docs)
    gc = gc_phase(reg, name, trials, docs, tmp=tmp_path, env=env, s3=True)
    report_figures("production", trials, sync_s, gc)


def test_push_reuploads_content_that_gc_removed_before_its_commit(tmp_path, monkeypatch):
    """The gc race (promptreg/services/gc.py): content already in the store, unreferenced and old, is
    pushed again; a gc deletes it between the push's upload (which found it there) and its commit. The
    push's post-commit check uploads it again, so the version still verifies."""
    from promptreg.services.gc import collect_garbage

    reg = Registry(home=str(tmp_path / ".promptreg"))
    art = make_artifact(tmp_path / "a", n=2, seed=3)
    sha = folder_sha256(art)
    reg.store.put_folder(art, sha)  # an old orphan
    old = time.time() - 7200
    os.utime(reg.store.path_for(sha), (old, old))
    for f in reg.store.path_for(sha).iterdir():
        os.utime(f, (old, old))
    from promptreg.services import versions

    real_insert = versions.insert_version

    def insert_after_gc(*args, **kwargs):
        gone = collect_garbage(reg, min_age_s=3600, delete=True)
        assert [o.sha256 for o in gone.deleted] == [sha]
        return real_insert(*args, **kwargs)

    monkeypatch.setattr(versions, "insert_version", insert_after_gc)
    monkeypatch.setattr("promptreg.services.mirroring.mirror_version", lambda *a, **k: [])  # MLflow plays no part here
    res = reg.push(art, "p")
    assert res.created
    assert verify_all(reg, "p", tmp_path)[0].sha256 == sha
    assert collect_garbage(reg, min_age_s=0).orphans == []
