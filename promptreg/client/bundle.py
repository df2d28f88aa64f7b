"""What remote eval, gate, promote and drift upload: a folder packed as one tar (artifact.transfer).

A suite bundle is ``suite.yaml`` (the suite as the client loaded and validated it, every data path
rewritten to ``data/<n>-<file name>``) plus those data files. The suite's sha256 does not depend on
where its files live, so the server computes the same suite identity, cache keys and verdicts as a
direct run. A drift bundle is ``data/<file>`` and optionally ``suite/`` (a suite bundle).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

SUITE_FILE = "suite.yaml"


def write_suite_bundle(suite, into: Path) -> Path:
    """Write ``suite`` (a loaded :class:`~promptreg.evaluation.suite.Suite`) into the new folder ``into``."""
    into.mkdir(parents=True)
    data = into / "data"
    data.mkdir()
    doc = suite.spec.model_dump(mode="json", exclude_unset=True)
    copied: dict[Path, str] = {}

    def place(path: Path) -> str:
        path = Path(path)
        if path not in copied:
            rel = f"data/{len(copied)}-{path.name}"
            shutil.copyfile(path, into / rel)
            copied[path] = rel
        return copied[path]

    for i, g in enumerate(suite.golden):
        doc["golden"][i]["path"] = place(g.path)
    golden_names = {g.name for g in suite.golden}
    for c in doc.get("checks", []):
        data = c.get("data")
        if isinstance(data, str) and data not in golden_names:      # a data file (as the suite resolves it)
            c["data"] = place(Path(data) if Path(data).is_absolute() else Path(suite.path).parent / data)
    (into / SUITE_FILE).write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return into


def write_drift_bundle(data_file: Path | None, suite, into: Path) -> Path:
    into.mkdir(parents=True)
    if data_file is not None:
        (into / "data").mkdir()
        shutil.copyfile(data_file, into / "data" / f"0-{Path(data_file).name}")   # never a hidden name
    if suite is not None:
        write_suite_bundle(suite, into / "suite")
    return into


__all__ = ["SUITE_FILE", "write_drift_bundle", "write_suite_bundle"]
