"""Registry at scale on PostgreSQL: 10,000 versions across 100 prompts.

Latency (median, p99) of the registry's in-process operations on two fresh databases, one with 1,000
and one with 10,000 versions (100 prompts each), measured in alternation (A B, B A, ...) so that
both see the same load on a shared machine:

* ``push_metadata``: the metadata path of a push (``promptreg.services.versions.insert_version``: version row + audit event,
  one transaction; no upload, no MLflow mirror),
* ``promote``: ``lifecycle.promote(..., to="staging")`` (no gate required), a version not mirrored to
  MLflow, so this is the whole in-process path (reads + compare-and-swap transaction),
* ``alias_cas_txn``: ``Registry.set_alias`` alone (the compare-and-swap + audit transaction),
* ``rollback``: ``lifecycle.rollback`` (reads the alias history from the audit log, then the same CAS),
* ``show_version`` / ``show_alias``: ``Registry.show("p:n")`` / ``show("p@staging")``,
* ``list_prompts`` (all 100 prompts with counts and aliases) and ``list_versions`` (one prompt's versions),

and, on the 10,000-version database against a real ``mlflow server`` (PostgreSQL backend store), on a
prompt whose versions are mirrored:

* ``promote_mirrored``: promote including the MLflow alias write, its convergence re-read and the
  ``promptreg.aliases`` tags; ``mirror_alias``: the MLflow alias write + re-read alone;
  ``mirror_state_tags``: the tag writes alone (two versions: the new and the previous holder),
* ``mlflow_set_alias`` / ``mlflow_get_by_alias``: the plain ``MlflowClient.set_registered_model_alias`` /
  ``get_model_version_by_alias`` against the same server, for comparison.

Set-up rows are bulk-inserted (same columns as a push writes); only the sampled pushes go through the
real metadata path (they complete each level: ``versions_total`` counts the 100 measured prompts; a
warm-up prompt and the small mirrored prompts come on top). ``promote_mirrored`` minus ``promote``,
``mirror_alias`` and ``mirror_state_tags`` is reported as ``of_which_other_mlflow_writes_ms`` (the
description refresh that follows an alias move). Everything runs on fresh databases that are dropped afterwards. Prints ONE JSON
object on stdout (progress on stderr).

Run: .venv/bin/python bench/registry_scale.py [--versions 10000] [--prompts 100] [--samples 100]
Needs PostgreSQL on 127.0.0.1:5432 (`make services`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fixtures.services import (  # noqa: E402
    create_pg_database,
    drop_pg_database,
    pg_available,
    start_mlflow_server,
)


def log(msg: str) -> None:
    print(f"[registry_scale] {msg}", file=sys.stderr, flush=True)


def stats(samples: list[float]) -> dict:
    s = sorted(samples)
    n = len(s)
    p99 = s[max(0, -(-99 * n // 100) - 1)]  # nearest rank
    med = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
    return {"median_ms": round(med * 1000, 3), "p99_ms": round(p99 * 1000, 3), "n": n}


def timed(fn, *args, **kw) -> float:
    t0 = time.perf_counter()
    fn(*args, **kw)
    return time.perf_counter() - t0


def fake_sha(i: int) -> str:
    return hashlib.sha256(f"bench-version-{i}".encode()).hexdigest()


class Bench:
    def __init__(self, reg, art, prompts: int, samples: int, rng: random.Random):
        self.reg, self.art, self.n_prompts, self.samples, self.rng = reg, art, prompts, samples, rng
        self.names = [f"p{i:03d}" for i in range(prompts)]
        self.counts = dict.fromkeys(self.names, 0)     # versions per prompt
        self.seq = 0

    # -- set-up: bulk rows, same columns as services.versions.insert_version writes -------------------------
    def bulk_fill(self, targets: dict[str, int]) -> None:
        """Bulk-insert versions (and their push audit events) until each prompt has ``targets[name]``."""
        from sqlmodel import select

        from promptreg.registry.models import AuditEvent, Prompt, PromptVersion, utcnow

        m = self.art.manifest
        manifest = m.model_dump(mode="json")
        with self.reg.session() as s:
            ids = dict(s.exec(select(Prompt.name, Prompt.id)).all())
            missing = [n for n in self.names if n not in ids]
            if missing:
                s.connection().execute(Prompt.__table__.insert(), [
                    {"name": n, "task_type": m.task.type, "description": "", "created_at": utcnow(),
                     "created_by": "bench"} for n in missing])
                ids = dict(s.exec(select(Prompt.name, Prompt.id)).all())
            versions, events = [], []
            for name in self.names:
                pid = ids[name]
                for number in range(self.counts[name] + 1, targets[name] + 1):
                    self.seq += 1
                    sha = fake_sha(self.seq)
                    uri = f"s3://bench/registry/sha256/{sha[:2]}/{sha}"
                    versions.append({
                        "prompt_id": pid, "number": number, "sha256": sha, "artifact_uri": uri,
                        "size_bytes": self.art.size_bytes, "method": m.method, "method_config": m.method_config,
                        "base_model_fingerprint": m.base_model.fingerprint,
                        "base_model_name": m.base_model.name_or_path,
                        "dataset_fingerprint": m.dataset.fingerprint if m.dataset else None,
                        "metrics": m.metrics, "manifest": manifest, "mirror_status": "pending",
                        "status": "active", "description": "", "created_by": "bench", "created_at": utcnow()})
                    events.append({"at": utcnow(), "actor": "bench", "action": "push", "prompt_id": pid,
                                   "to_version": number, "details": {"sha256": sha, "artifact_uri": uri}})
                self.counts[name] = max(self.counts[name], targets[name])
            conn = s.connection()
            for i in range(0, len(versions), 2000):
                conn.execute(PromptVersion.__table__.insert(), versions[i:i + 2000])
                conn.execute(AuditEvent.__table__.insert(), events[i:i + 2000])
        with self.reg.engine.connect() as c:  # fresh planner statistics, as autovacuum would keep them
            c.exec_driver_sql("ANALYZE")
            c.commit()

    def total(self) -> int:
        return sum(n for name, n in self.counts.items() if name in self.names)

    # -- measured operations -------------------------------------------------------------------------
    def push_one(self, name: str) -> float:
        from promptreg.services.versions import insert_version

        self.seq += 1
        sha = fake_sha(self.seq)
        art = SimpleNamespace(manifest=self.art.manifest, sha256=sha, size_bytes=self.art.size_bytes)
        uri = f"s3://bench/registry/sha256/{sha[:2]}/{sha}"
        t0 = time.perf_counter()
        _vid, created = insert_version(self.reg, name, art, uri, "")
        dt = time.perf_counter() - t0
        assert created
        self.counts[name] += 1
        return dt

    def other_version(self, name: str, alias: str) -> int:
        from promptreg.errors import NotFoundError

        try:
            held = self.reg.show(f"{name}@{alias}").version
        except NotFoundError:
            held = None
        while True:
            v = self.rng.randint(1, self.counts[name])
            if v != held:
                return v

    def warm_up(self) -> None:
        """A few unmeasured rounds of every operation (connection pool, SQLAlchemy's statement cache,
        lazy imports), on a prompt outside the measured ones, so that the first level is not penalised."""
        from promptreg.services.lifecycle import promote, rollback

        name = "warmup"
        self.counts.setdefault(name, 0)
        for _ in range(5):
            self.push_one(name)
        for i in range(10):
            promote(self.reg, f"{name}:{i % 5 + 1}", to="staging")
            if i % 3 == 2:
                rollback(self.reg, name, "staging")
            self.reg.show(f"{name}@staging")
            self.reg.show(f"{name}:{i % 5 + 1}")
            self.reg.list_prompts()
            self.reg.list_versions(name)
            self.reg.history(name)

    # one measured operation each; ``i`` is the sample index. Set-up reads are not timed.
    def order(self, i: int) -> str:
        return self.names[i % self.n_prompts]

    def op_push_metadata(self, i: int) -> float:       # the pushes complete each prompt's version count
        return self.push_one(self.order(i))

    def op_promote(self, i: int) -> float:             # 2 x samples: two per prompt, so each can roll back
        from promptreg.services.lifecycle import promote

        n = self.order(i)
        return timed(promote, self.reg, f"{n}:{self.other_version(n, 'staging')}", to="staging")

    def op_rollback(self, i: int) -> float:
        from promptreg.services.lifecycle import rollback

        return timed(rollback, self.reg, self.order(i), "staging")

    def op_alias_cas_txn(self, i: int) -> float:
        from promptreg.errors import NotFoundError

        n = self.order(i)
        try:
            held = self.reg.show(f"{n}@canary").version
        except NotFoundError:
            held = None
        v = self.other_version(n, "canary") if held is not None else 1
        return timed(self.reg.set_alias, n, "canary", v, expected_version=held, action="alias.set")

    def op_show_version(self, i: int) -> float:
        n = self.order(i)
        return timed(self.reg.show, f"{n}:{self.rng.randint(1, self.counts[n])}")

    def op_show_alias(self, i: int) -> float:
        return timed(self.reg.show, f"{self.order(i)}@staging")

    def op_list_prompts(self, i: int) -> float:
        return timed(self.reg.list_prompts)

    def op_list_versions(self, i: int) -> float:
        return timed(self.reg.list_versions, self.order(i))

    def op_history(self, i: int) -> float:
        return timed(self.reg.history, self.order(i))


def measure_interleaved(benches: list[Bench], samples: int) -> list[dict]:
    """Every operation on every level in turn (A B, B A, A B, ...), so that both levels see the same
    machine load: the comparison between levels is fair even on a shared machine."""
    plan = [("push_metadata", samples), ("promote", 2 * samples), ("rollback", samples),
            ("alias_cas_txn", samples), ("show_version", samples), ("show_alias", samples),
            ("list_prompts", max(50, samples // 2)), ("list_versions", max(50, samples // 2)),
            ("history", max(50, samples // 2))]
    outs: list[dict] = [{} for _ in benches]
    for kind, count in plan:
        log(f"{kind} x{count} per level")
        got: list[list[float]] = [[] for _ in benches]
        for i in range(count):
            idx = list(range(len(benches)))
            for j in (idx if i % 2 == 0 else idx[::-1]):
                got[j].append(getattr(benches[j], f"op_{kind}")(i))
        for j, samples_j in enumerate(got):
            outs[j][kind] = stats(samples_j)
    return outs


def measure_mlflow(reg, mirrored: str, versions: int, url: str, samples: int) -> dict:
    """promote through the mirror vs the plain MlflowClient alias calls, same server."""
    from mlflow.tracking import MlflowClient

    from promptreg.services.lifecycle import promote

    logging.getLogger("mlflow").setLevel(logging.WARNING)   # mlflow sets its logger up on import
    client = MlflowClient(tracking_uri=url, registry_uri=url)
    out: dict[str, dict] = {}
    prom = []
    for i in range(samples):
        prom.append(timed(promote, reg, f"{mirrored}:{i % versions + 1}", to="staging"))
    out["promote_mirrored"] = stats(prom)
    mv = [reg.show(f"{mirrored}:{i + 1}").mlflow_model_version for i in range(versions)]
    holder = reg.show(f"{mirrored}@staging").mlflow_model_version
    from promptreg.services.aliases import mirror_alias
    from promptreg.services.mirroring import mirror_state_tags

    out["mirror_alias"] = stats([timed(mirror_alias, reg, mirrored, "staging", holder) for _ in range(samples)])
    out["mirror_state_tags"] = stats([timed(mirror_state_tags, reg, mirrored, {1, 2}) for _ in range(samples)])
    plain_model = f"{mirrored}-plain"
    client.create_registered_model(plain_model)
    first = client.get_model_version(mirrored, mv[0])
    for _ in range(versions):
        client.create_model_version(plain_model, first.source, run_id=first.run_id)
    sets, gets, both = [], [], []
    for i in range(samples):
        v = str(i % versions + 1)
        sets.append(timed(client.set_registered_model_alias, plain_model, "staging", v))
        gets.append(timed(client.get_model_version_by_alias, plain_model, "staging"))
        t0 = time.perf_counter()
        client.set_registered_model_alias(plain_model, "canary", v)
        client.get_model_version_by_alias(plain_model, "canary")
        both.append(time.perf_counter() - t0)
    out["mlflow_set_alias"] = stats(sets)
    out["mlflow_get_by_alias"] = stats(gets)
    out["mlflow_set_then_get"] = stats(both)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--versions", type=int, default=10_000, help="total versions at the end (default 10000)")
    ap.add_argument("--prompts", type=int, default=100)
    ap.add_argument("--samples", type=int, default=100, help="operations per measurement (>= 50)")
    ap.add_argument("--small", type=int, default=1000, help="the smaller level to compare with (default 1000)")
    ap.add_argument("--no-mlflow", action="store_true", help="skip the mlflow server comparison")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.samples < 50:
        raise SystemExit("--samples must be >= 50")
    if args.small % args.prompts or args.versions % args.prompts or args.small >= args.versions:
        raise SystemExit("--small and --versions must be multiples of --prompts, small < versions")
    if not pg_available():
        raise SystemExit("PostgreSQL is not reachable at 127.0.0.1:5432 (run `make services`)")

    from promptreg import Registry
    from promptreg.artifact.validate import validate_artifact
    from promptreg.registry.migrate import upgrade
    from promptreg.settings import Settings
    from tests.helpers import make_artifact

    t_start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="promptreg-bench-"))
    levels_n = (args.small, args.versions)
    db_urls: dict[int, str] = {}
    mlflow_db = server = None
    levels: dict[str, dict] = {}
    mlflow_res = None
    try:
        tracking = f"sqlite:///{tmp / 'unused-mlflow.db'}"
        if not args.no_mlflow:
            mlflow_db = create_pg_database("promptreg_bench_mlflow")
            log("starting mlflow server (PostgreSQL backend store)")
            server = start_mlflow_server(mlflow_db, str(tmp / "mlflow-artifacts"), {}, tmp / "mlflow.log")
            tracking = server.url
        art = validate_artifact(make_artifact(tmp / "template", seed=0))
        benches = []
        for level in levels_n:
            db_urls[level] = create_pg_database("promptreg_bench")
            upgrade(db_urls[level])
            settings = Settings.load(cwd=tmp, env={}, db_url=db_urls[level], tracking_uri=tracking,
                                     artifact_uri=str(tmp / "artifacts"), user="bench")
            bench = Bench(Registry(settings), art, args.prompts, args.samples, random.Random(args.seed))
            # bulk rows up to the level, minus what the sampled pushes add (they complete the level)
            pushes = dict.fromkeys(bench.names, 0)
            for i in range(args.samples):
                pushes[bench.order(i)] += 1
            log(f"database {len(benches) + 1}: bulk-inserting {level} versions")
            t0 = time.perf_counter()
            bench.bulk_fill({n: level // args.prompts - pushes[n] for n in bench.names})
            bench.fill_s = time.perf_counter() - t0
            bench.warm_up()
            benches.append(bench)
        for level, bench, res in zip(levels_n, benches, measure_interleaved(benches, args.samples), strict=True):
            res["versions_total"] = bench.total()
            res["versions_per_prompt"] = level // args.prompts
            res["bulk_fill_s"] = round(bench.fill_s, 1)
            levels[str(level)] = res
        if server is not None:
            log(f"MLflow comparison (on the {args.versions}-version database)")
            reg = benches[-1].reg
            name = "mirrored"
            for i in range(4):
                pushed = reg.push(make_artifact(tmp / f"m{i}", seed=1000 + i), name)
                assert pushed.version.mirror_status == "ok", pushed.warnings
            mlflow_res = measure_mlflow(reg, name, 4, server.url, args.samples)
    finally:
        if server is not None:
            server.stop()
        if mlflow_db:
            drop_pg_database(mlflow_db)
        from promptreg.registry.db import dispose_engines

        dispose_engines()
        for url in db_urls.values():
            drop_pg_database(url)

    small, big = levels[str(args.small)], levels[str(args.versions)]
    ops = [k for k, v in big.items() if isinstance(v, dict) and "median_ms" in v]
    growth = {k: round(big[k]["median_ms"] / small[k]["median_ms"], 2) for k in ops}
    targets = {
        "promote_median_le_50ms": big["promote"]["median_ms"] <= 50,
        "rollback_median_le_50ms": big["rollback"]["median_ms"] <= 50,
        "list_prompts_median_le_200ms": big["list_prompts"]["median_ms"] <= 200,
        "list_versions_median_le_200ms": big["list_versions"]["median_ms"] <= 200,
    }
    result = {
        "bench": "registry_scale",
        "database": "postgresql",
        "prompts": args.prompts,
        "versions": args.versions,
        "samples": args.samples,
        "levels": levels,
        "growth_median_big_over_small": growth,
        "targets_met": targets,
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    if mlflow_res is not None:
        mf = result["mlflow"] = mlflow_res
        result["vs_mlflow"] = {
            "promote_in_process_ms": big["promote"]["median_ms"],
            "promote_with_mlflow_mirror_ms": mf["promote_mirrored"]["median_ms"],
            "of_which_mirror_alias_ms": mf["mirror_alias"]["median_ms"],
            "of_which_mirror_state_tags_ms": mf["mirror_state_tags"]["median_ms"],
            "of_which_other_mlflow_writes_ms": round(mf["promote_mirrored"]["median_ms"] - big["promote"]["median_ms"]
                                                     - mf["mirror_alias"]["median_ms"]
                                                     - mf["mirror_state_tags"]["median_ms"], 3),
            "mlflow_plain_set_alias_ms": mf["mlflow_set_alias"]["median_ms"],
            "mlflow_plain_set_then_get_ms": mf["mlflow_set_then_get"]["median_ms"],
            "alias_cas_txn_over_mlflow_set_alias": round(
                big["alias_cas_txn"]["median_ms"] / mf["mlflow_set_alias"]["median_ms"], 2),
            "promote_in_process_over_mlflow_set_alias": round(
                big["promote"]["median_ms"] / mf["mlflow_set_alias"]["median_ms"], 2),
            "promote_mirrored_over_mlflow_set_alias": round(
                mf["promote_mirrored"]["median_ms"] / mf["mlflow_set_alias"]["median_ms"], 2),
            "show_alias_over_mlflow_get_by_alias": round(
                big["show_alias"]["median_ms"] / mf["mlflow_get_by_alias"]["median_ms"], 2),
        }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
