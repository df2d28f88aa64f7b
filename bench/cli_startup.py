"""CLI start-up time: median wall time of `promptreg --help`, `promptreg list` and, as the peer,
`mlflow --help`, over several runs in the same process. Prints JSON with the ratios.

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


def timed(cmd: list[str], env: dict[str, str], cwd: str, runs: int) -> dict:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        samples.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.decode()[-500:]}")
    return {"median_s": round(statistics.median(samples), 4), "min_s": round(min(samples), 4),
            "max_s": round(max(samples), 4), "runs": runs}


def imported_modules(args: list[str], env: dict[str, str], cwd: str) -> list[str]:
    code = ("import sys; from promptreg.cli.main import cli\n"
            f"try:\n    cli.main(args={args!r}, prog_name='promptreg', standalone_mode=False)\n"
            "except SystemExit:\n    pass\n"
            "heavy = ['torch', 'transformers', 'mlflow', 'great_expectations']\n"
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
        subprocess.run([str(BIN / "promptreg"), "init"], env=env, cwd=tmp, check=True, stdout=subprocess.DEVNULL)
        results = {
            "promptreg --help": timed([str(BIN / "promptreg"), "--help"], env, tmp, args.runs),
            "promptreg list": timed([str(BIN / "promptreg"), "list"], env, tmp, args.runs),
            "mlflow --help": timed([str(BIN / "mlflow"), "--help"], env, tmp, args.runs),
        }
        heavy = {"promptreg --help": imported_modules(["--help"], env, tmp),
                 "promptreg list": imported_modules(["list"], env, tmp)}
    peer = results["mlflow --help"]["median_s"]
    print(json.dumps({
        "benchmark": "cli_startup",
        "results": results,
        "ratio_vs_mlflow_help": {k: round(v["median_s"] / peer, 3) for k, v in results.items() if k != "mlflow --help"},
        "heavy_modules_imported": heavy,
    }, indent=2))


if __name__ == "__main__":
    main()
