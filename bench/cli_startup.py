"""CLI start-up time: median wall time of `promptreg --help`, the read commands on the embedded
default (`list`, `list NAME`, `show NAME@ALIAS`, a dynamic shell completion of NAME@) and, as the peer,
`mlflow --help`, over several runs in the same process, interleaved (A B C, A B C, ...) so that a
shared machine's load falls on all alike. Prints JSON with the ratios and the issue-20 target
(read commands <= 0.3 s median) next to the load average the run saw.

Run: .venv/bin/python bench/cli_startup.py [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def run_once(cmd: list[str], env: dict[str, str], cwd: str) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.decode()[-500:]}")
    return dt


def summary(samples: list[float]) -> dict:
    return {"median_s": round(statistics.median(samples), 4), "min_s": round(min(samples), 4),
            "max_s": round(max(samples), 4), "runs": len(samples)}


def seed_registry(home: Path) -> None:
    """Three prompts, 100 versions of qa-bot with two aliases (metadata rows: the push's own path)."""
    import hashlib
    from types import SimpleNamespace

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from promptreg import Registry
    from promptreg.artifact.validate import validate_artifact
    from promptreg.services.versions import insert_version
    from tests.helpers import make_artifact

    reg = Registry(home=str(home))
    art = validate_artifact(make_artifact(home.parent / "template", n=8))
    for name, n in (("qa-bot", 100), ("qa-other", 3), ("summarize", 3)):
        for i in range(n):
            sha = hashlib.sha256(f"{name}-{i}".encode()).hexdigest()
            insert_version(reg, name, SimpleNamespace(manifest=art.manifest, sha256=sha, size_bytes=art.size_bytes),
                                f"file:///bench/{sha}", "")
    reg.set_alias("qa-bot", "production", 50, action="alias.set")
    reg.set_alias("qa-bot", "staging", 100, action="alias.set")


def imported_modules(args: list[str], env: dict[str, str], cwd: str) -> list[str]:
    code = ("import sys; from promptreg.cli.main import cli\n"
            f"try:\n    cli.main(args={args!r}, prog_name='promptreg', standalone_mode=False)\n"
            "except SystemExit:\n    pass\n"
            "heavy = ['torch', 'transformers', 'mlflow', 'great_expectations', 'sqlalchemy', 'sqlmodel']\n"
            "print('HEAVY:' + ','.join(m for m in heavy if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True)
    line = next(ln for ln in reversed(out.stdout.splitlines()) if ln.startswith("HEAVY:"))
    return [m for m in line[len("HEAVY:"):].split(",") if m]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PROMPTREG_HOME": str(Path(tmp) / ".promptreg")}
        seed_registry(Path(tmp) / ".promptreg")
        pr = str(BIN / "promptreg")
        complete = {**env, "_PROMPTREG_COMPLETE": "bash_complete", "COMP_WORDS": "promptreg show qa-bot@",
                    "COMP_CWORD": "2"}
        cases = {
            "promptreg --help": ([pr, "--help"], env),
            "promptreg list": ([pr, "list"], env),
            "promptreg list qa-bot (100 versions)": ([pr, "list", "qa-bot"], env),
            "promptreg show qa-bot@production": ([pr, "show", "qa-bot@production"], env),
            "promptreg completion of 'show qa-bot@'": ([pr], complete),
            "mlflow --help": ([str(BIN / "mlflow"), "--help"], env),
        }
        samples: dict[str, list[float]] = {k: [] for k in cases}
        load0 = os.getloadavg()[0]
        for _ in range(args.runs):
            for key, (cmd, e) in cases.items():
                samples[key].append(run_once(cmd, e, tmp))
        load1 = os.getloadavg()[0]
        results = {k: summary(v) for k, v in samples.items()}
        heavy = {"promptreg --help": imported_modules(["--help"], env, tmp),
                 "promptreg list": imported_modules(["list"], env, tmp),
                 "promptreg show": imported_modules(["show", "qa-bot@production"], env, tmp)}
    peer = results["mlflow --help"]["median_s"]
    reads = [k for k in results if k.startswith(("promptreg list", "promptreg show", "promptreg completion"))]
    print(json.dumps({
        "benchmark": "cli_startup",
        "results": results,
        "ratio_vs_mlflow_help": {k: round(v["median_s"] / peer, 3) for k, v in results.items() if k != "mlflow --help"},
        # the reads against our own --help (the import-free floor) measured in the same rounds
        "ratio_vs_promptreg_help": {k: round(results[k]["median_s"] / results["promptreg --help"]["median_s"], 3)
                                    for k in reads},
        "targets_met": {f"{k} median <= 0.3 s": results[k]["median_s"] <= 0.3 for k in reads},
        "load_average_1min": [round(load0, 2), round(load1, 2)],
        "cpus": os.cpu_count(),
        "heavy_modules_imported": heavy,
    }, indent=2))


if __name__ == "__main__":
    main()
