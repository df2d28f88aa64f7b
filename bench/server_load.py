"""promptreg server under load, beside MLflow's own server, in the same run.

Set-up (all on loopback): PostgreSQL (one fresh database for the registry, one for MLflow), a moto S3
server (artifacts), an ``mlflow server`` (PostgreSQL backend, S3 artifacts: the registry mirrors into
it), and ``promptreg server --workers 2`` on the registry database. ``--prompts`` prompts are seeded
with two versions each and ``staging`` on version 1.

Phase 1, promptreg: ``--clients`` concurrent clients (asyncio + httpx, one connection each, a
contributor token) for ``--seconds``: 80 % reads (``GET /versions/NAME@staging``), 15 % pushes of a
small new artifact (tar upload, re-hashed, mirrored to MLflow by the server) and 5 % promotes of a
random version to ``staging`` (compare-and-swap; a lost race is HTTP 409 and counted as an expected
conflict, a move to the version already there is 400 and counted as a no-op). Afterwards, for every
prompt: the alias in the database equals the last alias event of its audit log, and MLflow's alias
agrees.

Phase 2, MLflow: the same number of threads for the same time against the same ``mlflow server``
through ``MlflowClient``: 80 % ``get_model_version_by_alias``, 20 % ``set_registered_model_alias``
(the registered models the registry mirrored in phase 1).

Prints ONE JSON object on stdout (progress on stderr): per operation requests/s and p50/p99 (ms),
errors by kind, the consistency check, and the ratios ours/MLflow. Goal (issue 15): p99 read
<= 50 ms, promote p99 <= 200 ms, reads/s >= MLflow's on the same machine.

Run: .venv/bin/python bench/server_load.py [--clients 50] [--seconds 60] [--prompts 10]
(the acceptance shape; on a small shared machine use e.g. --clients 16 --seconds 20).
Needs PostgreSQL on 127.0.0.1:5432 (`make services`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fixtures.services import (  # noqa: E402
    S3_ENV,
    create_pg_database,
    drop_pg_database,
    free_port,
    pg_available,
    start_mlflow_server,
)

PROMPTREG = str(Path(sys.executable).with_name("promptreg"))


def log(msg: str) -> None:
    print(f"[server_load] {msg}", file=sys.stderr, flush=True)


def stats(samples: list[float], seconds: float) -> dict:
    if not samples:
        return {"n": 0}
    s = sorted(samples)
    n = len(s)
    p99 = s[max(0, -(-99 * n // 100) - 1)]
    return {"n": n, "per_s": round(n / seconds, 2), "p50_ms": round(s[n // 2] * 1000, 2),
            "p99_ms": round(p99 * 1000, 2)}


def run(cmd: list[str], cwd: Path, env: dict) -> str:
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {p.stderr[-2000:]}")
    return p.stdout


def artifact_tar(seed: int) -> tuple[bytes, str]:
    """A small new artifact (unique content) as the tar a remote push sends, and its sha256."""
    from promptreg.artifact.hashing import folder_sha256
    from promptreg.artifact.transfer import pack
    from tests.helpers import make_artifact

    with tempfile.TemporaryDirectory() as tmp:
        folder = make_artifact(Path(tmp) / "a", seed=seed)
        return b"".join(pack(folder)), folder_sha256(folder)


# ------------------------------------------------------------------------------------------ phase 1

async def promptreg_load(url: str, token: str, prompts: list[str], clients: int, seconds: float,
                         artifacts: list[tuple[bytes, str]], versions: dict[str, int]) -> dict:
    import httpx

    lat: dict[str, list[float]] = {"read": [], "push": [], "promote": []}
    outcome: dict[str, int] = {}
    deadline = time.perf_counter() + seconds
    headers = {"Authorization": f"Bearer {token}"}
    art_iter = iter(artifacts)
    lock = asyncio.Lock()

    def count(key: str) -> None:
        outcome[key] = outcome.get(key, 0) + 1

    async def client(i: int) -> None:
        rng = random.Random(i)
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60,
                                     limits=httpx.Limits(max_connections=1)) as http:
            while time.perf_counter() < deadline:
                name = rng.choice(prompts)
                roll = rng.random()
                t0 = time.perf_counter()
                if roll < 0.80:
                    op = "read"
                    r = await http.get(f"/api/v1/versions/{name}@staging")
                elif roll < 0.95:
                    op = "push"
                    async with lock:
                        body, sha = next(art_iter, None) or artifact_tar(rng.randrange(10**9, 2 * 10**9))
                    r = await http.post(f"/api/v1/prompts/{name}/versions", content=body,
                                        headers={"Content-Type": "application/x-tar", "X-Promptreg-Sha256": sha})
                    if r.status_code == 201:
                        versions[name] = max(versions[name], r.json()["version"]["version"])
                else:
                    op = "promote"
                    v = rng.randint(1, versions[name])
                    r = await http.post(f"/api/v1/versions/{name}:{v}/promote", params={"to": "staging"},
                                        headers={"Content-Type": "application/x-tar"})
                dt = time.perf_counter() - t0
                if r.status_code < 300:
                    lat[op].append(dt)
                    count(f"{op}.ok")
                elif op == "promote" and r.status_code == 409:
                    count("promote.conflict (expected CAS loss)")
                elif op == "promote" and r.status_code == 400 and "already points" in r.text:
                    count("promote.noop (alias already there)")
                else:
                    count(f"{op}.error {r.status_code}")
                    if outcome[f"{op}.error {r.status_code}"] <= 3:
                        log(f"{op} {r.status_code}: {r.text[:300]}")

    t0 = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    elapsed = time.perf_counter() - t0
    total = sum(len(v) for v in lat.values())
    return {"seconds": round(elapsed, 1), "clients": clients, "requests_per_s": round(total / elapsed, 1),
            "ops": {op: stats(v, elapsed) for op, v in lat.items()}, "outcomes": dict(sorted(outcome.items()))}


# ------------------------------------------------------------------------------------------ phase 2

def mlflow_load(tracking_uri: str, prompts: list[str], mlflow_versions: dict[str, list[str]], clients: int,
                seconds: float) -> dict:
    from mlflow.tracking import MlflowClient

    lat: dict[str, list[float]] = {"read": [], "alias": []}
    errors: dict[str, int] = {}
    guard = threading.Lock()
    deadline = time.perf_counter() + seconds

    def worker(i: int) -> None:
        rng = random.Random(1000 + i)
        mc = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        while time.perf_counter() < deadline:
            name = rng.choice(prompts)
            t0 = time.perf_counter()
            try:
                if rng.random() < 0.80:
                    op = "read"
                    mc.get_model_version_by_alias(name, "staging")
                else:
                    op = "alias"
                    mc.set_registered_model_alias(name, "staging", rng.choice(mlflow_versions[name]))
            except Exception as exc:  # noqa: BLE001 - counted and reported
                with guard:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                continue
            with guard:
                lat[op].append(time.perf_counter() - t0)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    total = sum(len(v) for v in lat.values())
    return {"seconds": round(elapsed, 1), "clients": clients, "requests_per_s": round(total / elapsed, 1),
            "ops": {op: stats(v, elapsed) for op, v in lat.items()}, "errors": errors}


# ------------------------------------------------------------------------------------------ checks

def consistency(url: str, token: str, tracking_uri: str, prompts: list[str], timeout_s: float = 600) -> dict:
    """Per prompt: the alias in the database equals the last alias event of its audit log (at once),
    and MLflow's alias equals the database's (once the server's events worker has caught up: the
    seconds that took are reported)."""
    import httpx
    from mlflow.tracking import MlflowClient

    from promptreg.services.lifecycle import MOVE_ACTIONS

    h = {"Authorization": f"Bearer {token}"}
    mc = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    bad, db = [], {}
    for name in prompts:
        current = httpx.get(f"{url}/api/v1/versions/{name}@staging", headers=h, timeout=60).json()
        events = [e for e in httpx.get(f"{url}/api/v1/prompts/{name}/history", headers=h, timeout=60).json()
                  if e["alias"] == "staging" and e["action"] in MOVE_ACTIONS]
        db[name] = current["version"]
        if events[-1]["to_version"] != current["version"]:
            bad.append({"prompt": name, "database": current["version"], "last_audit": events[-1]["to_version"]})
    t0 = time.perf_counter()
    lagging = set(prompts)
    while lagging and time.perf_counter() - t0 < timeout_s:
        for name in sorted(lagging):
            want = httpx.get(f"{url}/api/v1/versions/{name}@staging", headers=h, timeout=60).json()
            try:
                got = mc.get_registered_model(name).aliases.get("staging")
            except Exception:  # noqa: BLE001 - not mirrored yet
                got = None
            if want["mlflow_model_version"] and got == want["mlflow_model_version"]:
                lagging.discard(name)
        if lagging:
            time.sleep(1)
    return {"prompts_checked": len(prompts), "alias_equals_last_audit_event": not bad, "audit_mismatches": bad,
            "mlflow_equals_database": not lagging, "mlflow_lagging": sorted(lagging),
            "mlflow_caught_up_after_s": round(time.perf_counter() - t0, 1)}


# ------------------------------------------------------------------------------------------ main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--prompts", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--long-concurrency", type=int, default=None,
                    help="[server] long_concurrency (default: the server's, 4); 40 = the shared pool, as before it")
    args = ap.parse_args()
    if not pg_available():
        sys.exit("PostgreSQL is not reachable at 127.0.0.1:5432 (make services)")
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)   # moto's access log
    work = Path(tempfile.mkdtemp(prefix="promptreg-bench-"))
    moto_port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port, verbose=False)
    moto.start()
    endpoint = f"http://127.0.0.1:{moto_port}"
    s3_env = {**S3_ENV, "MLFLOW_S3_ENDPOINT_URL": endpoint, "AWS_ENDPOINT_URL": endpoint}
    os.environ.update(s3_env)
    import boto3

    bucket = "promptreg-bench"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    reg_db, mlflow_db = create_pg_database("promptreg_bench"), create_pg_database("promptreg_bench_mlflow")
    mlflow = start_mlflow_server(mlflow_db, f"s3://{bucket}/mlflow", s3_env, work / "mlflow.log")
    server = None
    try:
        env = {**os.environ, **s3_env, "PROMPTREG_DB_URL": reg_db, "MLFLOW_TRACKING_URI": mlflow.url,
               "PROMPTREG_ARTIFACT_URI": f"s3://{bucket}/registry", "PROMPTREG_HOME": str(work / "home")}
        for k in ("PROMPTREG_URL", "PROMPTREG_TOKEN"):
            env.pop(k, None)
        admin = json.loads(run([PROMPTREG, "token", "create", "bench-admin", "--role", "admin", "--json"], work, env))
        contrib = json.loads(run([PROMPTREG, "token", "create", "bench-client", "--role", "contributor", "--json"],
                                 work, env))
        if args.long_concurrency is not None:
            (work / "promptreg.toml").write_text(f"[server]\nlong_concurrency = {args.long_concurrency}\n")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with open(work / "server.log", "wb") as logf:
            server = subprocess.Popen([PROMPTREG, "server", "--port", str(port), "--workers", str(args.workers),
                                       "--sync-interval", "0"], cwd=work, env=env, stdout=logf,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        import httpx

        for _ in range(300):
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            raise RuntimeError("promptreg server did not become ready: " + (work / "server.log").read_text()[-2000:])
        log(f"servers up: promptreg {url} ({args.workers} workers), mlflow {mlflow.url}")

        prompts = [f"bench-{i}" for i in range(args.prompts)]
        # enough unique artifacts for the pushes (15 % of what the clients can do, generously)
        seeds = iter(range(10_000, 10**9))
        log("building artifacts ...")
        artifacts = [artifact_tar(next(seeds)) for _ in range(2 * len(prompts) + max(200, int(args.clients * args.seconds / 4)))]
        h = {"Authorization": f"Bearer {admin['token']}"}
        versions: dict[str, int] = {}
        for name in prompts:
            for _ in range(2):
                body, sha = artifacts.pop()
                r = httpx.post(f"{url}/api/v1/prompts/{name}/versions", content=body, headers={
                    **h, "Content-Type": "application/x-tar", "X-Promptreg-Sha256": sha}, timeout=120)
                r.raise_for_status()
            r = httpx.post(f"{url}/api/v1/versions/{name}:1/promote", params={"to": "staging"}, headers={
                **h, "Content-Type": "application/x-tar"}, timeout=120)
            r.raise_for_status()
            versions[name] = 2
        log(f"seeded {len(prompts)} prompts; phase 1: promptreg, {args.clients} clients, {args.seconds:g} s")
        ours = asyncio.run(promptreg_load(url, contrib["token"], prompts, args.clients, args.seconds, artifacts,
                                          versions))
        log(f"promptreg: {ours['requests_per_s']} req/s; checking consistency")
        check = consistency(url, admin["token"], mlflow.url, prompts)
        from mlflow.tracking import MlflowClient

        mc = MlflowClient(tracking_uri=mlflow.url, registry_uri=mlflow.url)
        mlflow_versions = {n: [mv.version for mv in mc.search_model_versions(f"name='{n}'")] for n in prompts}
        log(f"phase 2: MLflow, {args.clients} threads, {args.seconds:g} s")
        theirs = mlflow_load(mlflow.url, prompts, mlflow_versions, args.clients, args.seconds)
        ratio = {
            "reads_per_s_ours_over_mlflow": round(ours["ops"]["read"].get("per_s", 0)
                                                  / max(theirs["ops"]["read"].get("per_s", 0), 1e-9), 3),
            "read_p99_ours_over_mlflow": round(ours["ops"]["read"].get("p99_ms", 0)
                                               / max(theirs["ops"]["read"].get("p99_ms", 1e-9), 1e-9), 3),
            "promote_p99_ms_ours_vs_mlflow_set_alias_p99_ms": [ours["ops"]["promote"].get("p99_ms"),
                                                               theirs["ops"]["alias"].get("p99_ms")],
        }
        errors = {k: v for k, v in ours["outcomes"].items() if ".error" in k}
        goals = {"read_p99_le_50ms": ours["ops"]["read"].get("p99_ms", 1e9) <= 50,
                 "promote_p99_le_200ms": ours["ops"]["promote"].get("p99_ms", 1e9) <= 200,
                 "reads_per_s_ge_mlflow": ratio["reads_per_s_ours_over_mlflow"] >= 1.0,
                 "no_errors_besides_cas_conflicts": not errors,
                 "final_alias_is_last_audit_event": check["alias_equals_last_audit_event"],
                 "mlflow_converges_to_the_database": check["mlflow_equals_database"]}
        print(json.dumps({"bench": "server_load", "machine_cpus": os.cpu_count(), "workers": args.workers,
                          "long_concurrency": args.long_concurrency,
                          "promptreg": ours, "mlflow": theirs, "consistency": check, "ratios": ratio,
                          "goals": goals}, indent=2))
    finally:
        if server is not None and server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
        mlflow.stop()
        moto.stop()
        from promptreg.registry.db import dispose_engines

        dispose_engines()
        drop_pg_database(reg_db)
        drop_pg_database(mlflow_db)


if __name__ == "__main__":
    main()
