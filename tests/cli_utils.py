"""Run the real `promptreg` console script as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

PROMPTREG = str(Path(sys.executable).with_name("promptreg"))
_CLEAN = ("PROMPTREG_HOME", "PROMPTREG_DB_URL", "MLFLOW_TRACKING_URI", "PROMPTREG_ARTIFACT_URI",
          "MLFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL", "PROMPTREG_MLFLOW_ARTIFACT_URI")


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self):
        return json.loads(self.out)


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 180) -> Result:
    full_env = {k: v for k, v in os.environ.items() if k not in _CLEAN}
    full_env.update(env or {})
    proc = subprocess.run([PROMPTREG, *map(str, args)], cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def assert_one_line_error(res: Result, code: int = 2, match: str | None = None) -> None:
    assert res.code == code, (res.code, res.out, res.err)
    lines = [line for line in res.err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, res.err
    assert lines[0].startswith("error: "), res.err
    assert "Traceback" not in res.err
    if match:
        assert match in lines[0], lines[0]
