"""The data a drift check compares: fresh rows (a local file or every data file under an S3 prefix)
and the version's reference rows (``--reference``, else its training file, else the suite's golden sets).

Invariants: every row has a non-empty text; labels are all there or all absent; the reference is
sampled (seeded) to at most REFERENCE_CAP rows by the caller.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from promptreg.errors import InputError

if TYPE_CHECKING:
    from promptreg.services.registry import Registry
    from promptreg.settings import Settings

REFERENCE_CAP = 1000          # reference rows used at most (seeded sample)


def read_data(uri: str, settings: Settings, *, text_column: str = "text", label_column: str = "label") -> list[dict]:
    """Rows ``{"text", ("label")}`` of a local data file or of every .jsonl/.json/.csv under an S3 prefix."""
    from promptreg.fingerprints.dataset import read_rows

    if uri.startswith("s3://"):
        raw = _read_s3_prefix(uri, settings)
    else:
        path = Path(uri.removeprefix("file://")).expanduser()
        if not path.is_file():
            raise InputError(f"data file not found: {uri}")
        raw = read_rows(path)
    if not raw:
        raise InputError(f"{uri}: no rows")
    rows = []
    for i, r in enumerate(raw):
        text = r.get(text_column)
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"{uri}: row {i + 1} has no text in column {text_column!r} "
                             f"(columns: {', '.join(sorted(map(str, r))) or 'none'})")
        row = {"text": text}
        if r.get(label_column) not in (None, ""):
            row["label"] = str(r[label_column])
        rows.append(row)
    labelled = sum("label" in r for r in rows)
    if 0 < labelled < len(rows):
        raise InputError(f"{uri}: {labelled} of {len(rows)} rows have a {label_column!r}: label all rows or none")
    return rows


def _read_s3_prefix(uri: str, settings: Settings) -> list[dict]:
    from promptreg.fingerprints.dataset import read_rows
    from promptreg.registry.store import open_store

    store = open_store(uri, s3_endpoint_url=settings.s3_endpoint_url)
    keys = [k for k in store.list_keys(f"list {uri}") if k.rsplit(".", 1)[-1].lower() in ("jsonl", "json", "csv")]
    if not keys:
        raise InputError(f"{uri}: no .jsonl/.json/.csv objects under this prefix")
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="promptreg-drift-") as tmp:
        for i, key in enumerate(keys):
            local = Path(tmp) / f"{i}.{key.rsplit('.', 1)[-1].lower()}"
            rows += read_rows(store.download(key, local))
    return rows


def fingerprint(rows: list[dict]) -> str:
    from promptreg.fingerprints.dataset import dataset_fingerprint

    return dataset_fingerprint(rows)


def sample(rows: list, n: int, seed: int) -> list:
    return rows if len(rows) <= n else random.Random(seed).sample(rows, n)


def reference_rows(registry: Registry, info, *, reference: str | None, suite, text_column: str, label_column: str):
    """(rows, description) of the data the version is compared against."""
    if reference:
        return read_data(reference, registry.settings, text_column=text_column, label_column=label_column), reference
    source = ((registry.manifest(f"{info.name}:{info.version}").get("dataset") or {}).get("source"))
    if source and Path(source).is_file():
        return read_data(source, registry.settings), f"training data {source}"
    if suite is not None and suite.golden:
        rows = [{"text": ex.text, **({"label": ex.label} if ex.label is not None else {})}
                for g in suite.golden for ex in g.examples]
        return rows, f"golden sets of suite {suite.name}"
    raise InputError(f"no reference data for {info.name}:{info.version}: its training file is not available "
                     "here; pass --reference FILE or --suite FILE (golden sets)")
