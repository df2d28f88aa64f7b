"""Concurrent promote and rollback in production mode (PostgreSQL registry, `mlflow server`, S3 artifacts).

20 worker processes run 100 rounds; in every round they all start together (a barrier) and each one
either promotes "its" version of the round to ``staging`` (no gate required) or rolls ``staging`` back,
through the in-process lifecycle API (the same code path as the CLI, without its start-up cost).
Losers of the compare-and-swap get a ConflictError and move on. Afterwards:

* the alias equals the last move event of the audit log;
* every move event starts where the one before it ended (from_version == previous to_version);
* the move events are exactly the moves the workers reported as done: none lost, none duplicated;
* MLflow's alias equals the database's (no `sync` needed: the mirror converges by itself), and after
  `promptreg sync` the ``promptreg.aliases`` tags agree too.
"""

from __future__ import annotations

import collections
import multiprocessing
import os
import queue as queue_mod
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from promptreg import Registry
from tests.helpers import make_artifact

pytestmark = pytest.mark.integration

WORKERS = 20
ROUNDS = 100
VERSIONS = 20
NAME = "race"
ALIAS = "staging"
BARRIER_TIMEOUT_S = 120
MOVES = ("promote", "rollback")


def _worker(idx: int, settings: dict, env: dict, barrier, results) -> None:
    """One process: ROUNDS moves of NAME@ALIAS, reported as (round, action, from, to)."""
    os.environ.update(env)
    from promptreg.errors import ConflictError, InputError
    from promptreg.services.lifecycle import promote, rollback

    reg = Registry(**settings, user=f"worker{idx}")
    done, conflicts, refused, errors = [], 0, 0, []
    for r in range(ROUNDS):
        try:
            barrier.wait(timeout=BARRIER_TIMEOUT_S)
        except threading.BrokenBarrierError:
            errors.append(f"round {r}: barrier broken")
            break
        try:
            if (idx + r) % 4 == 0:
                res = rollback(reg, NAME, ALIAS)
            else:
                res = promote(reg, f"{NAME}:{(idx + r) % VERSIONS + 1}", to=ALIAS)
            done.append((r, res.action, res.previous, res.version))
        except ConflictError:
            conflicts += 1          # another worker moved the alias first: move on
        except InputError:
            refused += 1            # already the holder / nothing to roll back to (state changed under us)
        except Exception as exc:  # noqa: BLE001 - reported to the test, which fails on it
            errors.append(f"round {r}: {type(exc).__name__}: {exc}")
    results.put({"idx": idx, "done": done, "conflicts": conflicts, "refused": refused, "errors": errors})


def test_twenty_processes_promote_and_roll_back(tmp_path, pg_url, mlflow_server, s3_env):
    from mlflow.tracking import MlflowClient

    t_setup = time.perf_counter()
    bucket = s3_env.new_bucket()
    settings = {"db_url": pg_url, "tracking_uri": mlflow_server.url, "artifact_uri": f"s3://{bucket}/registry"}
    reg = Registry(**settings)
    reg.push(make_artifact(tmp_path / "a1", seed=1), NAME)       # creates the prompt and its MLflow model

    def push(i: int):   # the other versions in parallel (mostly waiting on MLflow and S3 round trips)
        return Registry(**settings).push(make_artifact(tmp_path / f"a{i}", seed=i), NAME).version

    with ThreadPoolExecutor(4) as pool:
        pushed = list(pool.map(push, range(2, VERSIONS + 1)))
    assert all(v.mirror_status == "ok" for v in pushed)
    assert sorted(v.version for v in pushed) == list(range(2, VERSIONS + 1))

    # forkserver: children fork from a clean single-threaded server that has promptreg and mlflow imported
    # once (spawn would import them 20 times; fork would copy this process's moto/pytest threads).
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["promptreg.services.registry", "promptreg.services.lifecycle",
                                "promptreg.registry.mirror", "mlflow.tracking", __name__])
    barrier = ctx.Barrier(WORKERS)
    results = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(i, settings, s3_env.env(), barrier, results), daemon=True)
             for i in range(WORKERS)]
    t0 = time.perf_counter()
    setup_s = t0 - t_setup
    for p in procs:
        p.start()
    reports = []
    try:
        for _ in range(WORKERS):
            reports.append(results.get(timeout=600))
    except queue_mod.Empty:
        pytest.fail(f"only {len(reports)} of {WORKERS} workers finished")
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    seconds = time.perf_counter() - t0

    errors = [e for rep in reports for e in rep["errors"]]
    assert not errors, errors[:5]
    moves = [(action, prev, ver) for rep in reports for (_r, action, prev, ver) in rep["done"]]
    conflicts = sum(rep["conflicts"] for rep in reports)
    refused = sum(rep["refused"] for rep in reports)
    assert len(moves) + conflicts + refused == WORKERS * ROUNDS
    rounds_with_a_move = len({r for rep in reports for (r, *_rest) in rep["done"]})
    assert moves and rounds_with_a_move >= ROUNDS // 2, (len(moves), rounds_with_a_move)

    events = [e for e in reg.history(NAME) if e.alias == ALIAS and e.action in MOVES]
    # none lost, none duplicated: the audit log holds exactly the moves the workers saw succeed
    assert len(events) == len(moves)
    assert collections.Counter((e.action, e.from_version, e.to_version) for e in events) == collections.Counter(moves)
    # the compare-and-swap chain: every move started from the state the one before it left
    chain = [None] + [e.to_version for e in events]
    assert [e.from_version for e in events] == chain[:-1]
    final = reg.show(f"{NAME}@{ALIAS}")
    assert final.version == events[-1].to_version

    client = MlflowClient(tracking_uri=mlflow_server.url)
    assert str(client.get_model_version_by_alias(NAME, ALIAS).version) == final.mlflow_model_version
    assert client.get_registered_model(NAME).aliases == {ALIAS: final.mlflow_model_version}

    report = reg.sync()
    assert not report.failed, report.failed
    assert not report.aliases_set and not report.aliases_removed       # nothing to repair on the alias
    tags = {v.version: v.tags.get("promptreg.aliases") for v in client.search_model_versions(f"name='{NAME}'")}
    assert tags == {mv: (ALIAS if mv == final.mlflow_model_version else "none") for mv in tags}, tags

    promotes = sum(1 for m in moves if m[0] == "promote")
    print(f"\n{WORKERS} processes x {ROUNDS} rounds: {len(moves)} moves won ({promotes} promote, "
          f"{len(moves) - promotes} rollback) in {rounds_with_a_move} rounds, {conflicts} compare-and-swap "
          f"conflicts, {refused} refused (no-op), {seconds:.1f} s (set-up: {VERSIONS} pushes {setup_s:.1f} s); "
          f"final {NAME}@{ALIAS} = {final.version} "
          f"= last of {len(events)} audit events; MLflow agrees")
