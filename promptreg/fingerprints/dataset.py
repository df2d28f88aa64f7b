"""Fingerprint of a training / evaluation dataset (a sequence of rows), order-sensitive.

Canonical form (``promptreg-dataset-v1``). The fingerprint is the sha256 hex digest of the UTF-8
bytes of::

    promptreg-dataset-v1 LF
    <row 1 line> LF
    <row 2 line> LF
    ...

in the rows' order (reordering rows changes the fingerprint). A row line is
``json.dumps(row, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)`` of
the row after normalisation:

* every string (values and keys, at any depth) is Unicode NFC-normalised, so composed and decomposed
  spellings of the same text are equal; two keys of one object that become equal are an error;
* values must be JSON values: ``str``, ``int``, ``float`` (finite: NaN and infinities are an
  :class:`InputError`), ``bool``, ``None``, lists/tuples (as lists) and mappings with string keys;
  anything else is an :class:`InputError`;
* key order does not matter (keys are sorted); ``1``, ``1.0``, ``"1"`` and ``true`` stay distinct.

An empty dataset has a fingerprint too (the header alone); callers that need rows check the count.

Files (:func:`read_rows`): ``.jsonl`` (one JSON object per line; blank lines are skipped), ``.json``
(a JSON list of objects), ``.csv`` (``csv.DictReader`` with a header row; every value is a string).
The same string rows as JSONL and CSV therefore give the same fingerprint. Files are read as UTF-8
(a leading BOM is ignored).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import unicodedata
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from promptreg.errors import InputError

HEADER = "promptreg-dataset-v1\n"


def _normalise(value: Any, where: str) -> Any:
    if isinstance(value, str):
        return unicodedata.normalize("NFC", value)
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InputError(f"{where}: non-finite number {value!r} is not allowed in a dataset")
        return value
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise InputError(f"{where}: keys must be strings, got {type(k).__name__} {k!r}")
            nk = unicodedata.normalize("NFC", k)
            if nk in out:
                raise InputError(f"{where}: keys {nk!r} collide after Unicode NFC normalisation")
            out[nk] = _normalise(v, where)
        return out
    if isinstance(value, (list, tuple)):
        return [_normalise(v, where) for v in value]
    raise InputError(f"{where}: value of type {type(value).__name__} is not a JSON value")


def canonical_row(row: Mapping[str, Any], index: int = 0) -> str:
    """The canonical JSON line of one row (without the trailing newline)."""
    where = f"row {index + 1}"
    if not isinstance(row, Mapping):
        raise InputError(f"{where}: expected an object (mapping), got {type(row).__name__}")
    return json.dumps(
        _normalise(row, where), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def dataset_fingerprint(rows: Iterable[Mapping[str, Any]]) -> str:
    """sha256 hex of the canonical serialisation of ``rows`` (see the module docstring)."""
    h = hashlib.sha256(HEADER.encode("utf-8"))
    for i, row in enumerate(rows):
        h.update(canonical_row(row, i).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name} is not allowed")


def read_utf8(path: Path, *, missing: str, folder: str, undecodable: str, unreadable: str) -> str:
    """The UTF-8 text of ``path`` (a byte-order mark dropped); each failure is an InputError with the
    given message (format fields: ``path``, ``byte`` for undecodable, ``reason`` for unreadable)."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(missing.format(path=path)) from None
    except IsADirectoryError:
        raise InputError(folder.format(path=path)) from None
    except UnicodeDecodeError as e:
        raise InputError(undecodable.format(path=path, byte=e.start)) from None
    except OSError as e:
        raise InputError(unreadable.format(path=path, reason=e.strerror)) from None


def _read_text(path: Path) -> str:
    return read_utf8(path, missing="dataset file not found: {path}", folder="dataset path is a folder, not a file: {path}",
                     undecodable="dataset file {path} is not valid UTF-8 (byte {byte})",
                     unreadable="cannot read dataset file {path}: {reason}")


def _read_jsonl(path: Path, text: str) -> list[dict]:
    rows = []
    # split on LF only: str.splitlines() would also split on U+2028/U+2029, which JSON allows raw in strings
    for lineno, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        try:
            obj = json.loads(line, parse_constant=_reject_constant)
        except ValueError as e:
            raise InputError(f"{path}: line {lineno}: invalid JSON ({e})") from None
        except RecursionError:
            raise InputError(f"{path}: line {lineno}: invalid JSON (nested too deeply)") from None
        if not isinstance(obj, dict):
            raise InputError(f"{path}: line {lineno}: expected a JSON object, got {type(obj).__name__}")
        rows.append(obj)
    return rows


def _read_json(path: Path, text: str) -> list[dict]:
    if not text.strip():
        return []
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except ValueError as e:
        raise InputError(f"{path}: invalid JSON ({e})") from None
    except RecursionError:
        raise InputError(f"{path}: invalid JSON (nested too deeply)") from None
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a JSON list of objects, got {type(data).__name__}")
    for i, obj in enumerate(data):
        if not isinstance(obj, dict):
            raise InputError(f"{path}: item {i + 1}: expected a JSON object, got {type(obj).__name__}")
    return data


def _read_csv(path: Path, text: str) -> list[dict]:
    import io

    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    rows: list[dict] = []
    try:
        fields = reader.fieldnames
        if fields is None:
            return []
        dupes = sorted({f for f in fields if fields.count(f) > 1})
        if dupes:
            raise InputError(f"{path}: duplicate column name {dupes[0]!r} in the header")
        for row in reader:
            if None in row or any(v is None for v in row.values()):
                raise InputError(
                    f"{path}: line {reader.line_num}: wrong number of fields (header has {len(fields)})"
                )
            rows.append(dict(row))
    except csv.Error as e:
        raise InputError(f"{path}: line {reader.line_num}: malformed CSV ({e})") from None
    return rows


def read_rows(path: Path | str) -> list[dict]:
    """The rows of a ``.jsonl``, ``.json`` (list) or ``.csv`` dataset file, in file order."""
    path = Path(path)
    suffix = path.suffix.lower()
    readers = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv}
    if suffix not in readers:
        raise InputError(
            f"unsupported dataset file type {suffix or '(none)'!r} for {path}: use .jsonl, .json or .csv"
        )
    return readers[suffix](path, _read_text(path))


def file_dataset_fingerprint(path: Path | str) -> tuple[str, int]:
    """(fingerprint, row count) of a dataset file."""
    rows = read_rows(path)
    return dataset_fingerprint(rows), len(rows)
