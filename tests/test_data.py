"""Training data: loading examples, seeded splits, fingerprint rows, and GX data validation."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from promptreg.data.dataset_fetch import fetch_rotten_tomatoes
from promptreg.data.examples import (
    DataSpec,
    Example,
    load_examples,
    resolve_labels,
    rows_for_fingerprint,
    seeded_split,
)
from promptreg.errors import InputError
from promptreg.evaluation.data_validation import ValidationResult, validate_splits
from promptreg.fingerprints.dataset import dataset_fingerprint

SENTIMENT = DataSpec(labels=["negative", "positive"])


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _jsonl(path: Path, rows: list[dict]) -> Path:
    return _write(path, "".join(json.dumps(r) + "\n" for r in rows))


def _input_error(fn, *args, **kwargs) -> str:
    with pytest.raises(InputError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert msg and "\n" not in msg, msg
    return msg


@pytest.fixture(scope="module")
def rt(tmp_path_factory) -> dict[str, Path]:
    return fetch_rotten_tomatoes(tmp_path_factory.mktemp("data") / "rt")


# ------------------------------------------------------------------------------------------ loading


def test_load_jsonl_custom_columns(tmp_path):
    path = _write(tmp_path / "d.jsonl", "\n".join([
        json.dumps({"review": "Great film.", "sentiment": "pos", "id": 1}),
        "",  # blank lines are skipped
        json.dumps({"review": "Dull.", "sentiment": "neg", "id": 2}),
    ]) + "\n")
    spec = DataSpec(text_column="review", label_column="sentiment", labels=["neg", "pos"])
    assert load_examples(path, spec) == [Example("Great film.", "pos"), Example("Dull.", "neg")]


def test_load_csv_custom_columns_classification_and_generation(tmp_path):
    cls = _write(tmp_path / "c.csv", 'body,verdict,other\n"Loved it, truly",yes,x\nMeh,no,y\n')
    spec = DataSpec(text_column="body", label_column="verdict")
    assert load_examples(cls, spec) == [Example("Loved it, truly", "yes"), Example("Meh", "no")]

    gen = _write(tmp_path / "g.csv", "prompt,completion\nTranslate: chat,cat\n")
    spec = DataSpec(task="generation", text_column="prompt", target_column="completion")
    assert load_examples(gen, spec) == [Example("Translate: chat", target="cat")]


def test_load_json_list(tmp_path):
    path = _write(tmp_path / "d.json", json.dumps([{"text": "a", "label": "x"}, {"text": "b", "label": "y"}]))
    assert [e.label for e in load_examples(path, DataSpec())] == ["x", "y"]


def test_load_errors_missing_and_empty_files(tmp_path):
    msg = _input_error(load_examples, tmp_path / "nope.jsonl", DataSpec())
    assert "not found" in msg and "nope.jsonl" in msg
    msg = _input_error(load_examples, _write(tmp_path / "empty.jsonl", "\n\n"), DataSpec())
    assert "empty.jsonl" in msg and "no rows" in msg
    msg = _input_error(load_examples, _write(tmp_path / "header.csv", "text,label\n"), DataSpec())
    assert "header.csv" in msg and "no rows" in msg


def test_load_error_missing_column_lists_columns(tmp_path):
    csv_path = _write(tmp_path / "d.csv", "text,sentiment\nhello,pos\n")
    msg = _input_error(load_examples, csv_path, DataSpec())
    assert "d.csv" in msg and "missing column 'label'" in msg and "'sentiment', 'text'" in msg

    # one JSONL row lacks the column: the message names its line (blank lines count)
    path = _write(tmp_path / "d.jsonl", '{"text": "a", "label": "x"}\n\n{"text": "b", "lab": "x"}\n')
    msg = _input_error(load_examples, path, DataSpec())
    assert "d.jsonl: line 3: missing column 'label'" in msg and "'lab', 'text'" in msg

    msg = _input_error(load_examples, _jsonl(tmp_path / "g.jsonl", [{"text": "a", "label": "x"}]),
                       DataSpec(task="generation"))
    assert "missing column 'target'" in msg


def test_load_error_unknown_label(tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", [{"text": "a", "label": "positive"}, {"text": "b", "label": "neutral"}])
    msg = _input_error(load_examples, path, SENTIMENT)
    assert "d.jsonl: line 2" in msg and "'neutral'" in msg and "'negative', 'positive'" in msg
    # without declared labels any label is accepted
    assert [e.label for e in load_examples(path, DataSpec())] == ["positive", "neutral"]


def test_load_error_bad_text(tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", [{"text": "ok", "label": "positive"}, {"text": 42, "label": "positive"}])
    msg = _input_error(load_examples, path, SENTIMENT)
    assert "d.jsonl: line 2" in msg and "'text'" in msg and "must be a string" in msg and "int" in msg

    for bad in ("", "   ", None):
        path = _jsonl(tmp_path / "e.jsonl", [{"text": bad, "label": "positive"}])
        msg = _input_error(load_examples, path, SENTIMENT)
        assert "e.jsonl: line 1" in msg and ("empty" in msg or "null" in msg)

    # CSV: the line a record starts on (quoted newlines make records span lines)
    path = _write(tmp_path / "d.csv", 'text,label\n"two\nlines",positive\n,positive\n')
    msg = _input_error(load_examples, path, SENTIMENT)
    assert "d.csv: line 4" in msg and "empty" in msg


def test_load_error_missing_target(tmp_path):
    path = _jsonl(tmp_path / "g.jsonl", [{"text": "q", "target": "a"}, {"text": "q2", "target": ""}])
    msg = _input_error(load_examples, path, DataSpec(task="generation"))
    assert "g.jsonl: line 2" in msg and "target" in msg


def test_spec_validation_and_answers():
    _input_error(DataSpec, task="regression")
    _input_error(DataSpec, labels=["a", "a"])
    _input_error(DataSpec, labels=["a"], verbalizer={"b": " b"})
    spec = DataSpec(labels=["negative", "positive"], verbalizer={"positive": " great"})
    assert spec.answer("positive") == " great" and spec.answer("negative") == " negative"
    _input_error(spec.answer, "neutral")


def test_resolve_labels():
    train = [Example("a", "pos"), Example("b", "neg"), Example("c", "pos")]
    spec = resolve_labels(DataSpec(verbalizer={"pos": " good"}), train)
    assert spec.labels == ["neg", "pos"] and spec.verbalizer == {"neg": " neg", "pos": " good"}
    declared = resolve_labels(DataSpec(labels=["pos", "neg", "meh"]), train)
    assert declared.labels == ["pos", "neg", "meh"] and declared.verbalizer["meh"] == " meh"
    _input_error(resolve_labels, DataSpec(verbalizer={"pos": " x", "neg": " x"}), train)
    _input_error(resolve_labels, DataSpec(), [])
    gen = DataSpec(task="generation")
    assert resolve_labels(gen, []) == gen


# ------------------------------------------------------------------------------------------ split


def _examples(n_pos: int, n_neg: int) -> list[Example]:
    return ([Example(f"pos {i}", "positive") for i in range(n_pos)]
            + [Example(f"neg {i}", "negative") for i in range(n_neg)])


def test_seeded_split_deterministic_and_stratified():
    data = _examples(60, 40)
    kept, held = seeded_split(data, 0.2, seed=7)
    assert (kept, held) == seeded_split(data, 0.2, seed=7)
    assert seeded_split(data, 0.2, seed=8)[1] != held
    assert Counter(e.label for e in held) == {"positive": 12, "negative": 8}
    assert Counter(e.label for e in kept) == {"positive": 48, "negative": 32}
    assert sorted(map(id, kept + held)) == sorted(map(id, data))  # a partition
    # each part keeps the input order
    assert kept == [e for e in data if e in kept] and held == [e for e in data if e in held]
    # independent of the input order
    shuffled = list(reversed(data))
    k2, h2 = seeded_split(shuffled, 0.2, seed=7)
    assert {e.text for e in h2} == {e.text for e in held}


def test_seeded_split_small_groups_and_bad_args():
    data = _examples(3, 1) + [Example("other", "rare")]
    kept, held = seeded_split(data, 0.01, seed=0)
    # a group of >= 2 gives at least one example to each side; a singleton stays in kept
    assert Counter(e.label for e in held) == {"positive": 1}
    assert {"negative", "rare"} <= {e.label for e in kept}
    gen = [Example(f"q{i}", target=f"a{i}") for i in range(10)]
    assert len(seeded_split(gen, 0.3, seed=1)[1]) == 3
    for bad in (0, 1, 1.5, True):
        _input_error(seeded_split, data, bad, 0)
    _input_error(seeded_split, data, 0.5, "x")
    _input_error(seeded_split, [], 0.5, 0)


def test_rows_for_fingerprint_match_fetched_dataset(rt):
    meta = json.loads((rt["train"].parent / "dataset.json").read_text())
    for split, path in rt.items():
        rows = rows_for_fingerprint(load_examples(path, SENTIMENT))
        assert dataset_fingerprint(rows) == meta["splits"][split]["fingerprint"]
    assert rows_for_fingerprint([Example("q", target="a")]) == [{"text": "q", "target": "a"}]


# ------------------------------------------------------------------------------------------ validation


def test_modules_do_not_import_gx_or_pandas_at_import_time():
    code = ("import sys, promptreg.data.examples, promptreg.evaluation.data_validation; "
            "print(sorted(m for m in ('great_expectations', 'pandas', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_validation_passes_on_rotten_tomatoes(rt, capfd):
    splits = {s: load_examples(p, SENTIMENT) for s, p in rt.items()}
    result = validate_splits(splits, SENTIMENT)
    assert isinstance(result, ValidationResult)
    assert result.success, result.summary()
    assert result.failures == [] and result.warnings == []
    assert {s: v["rows"] for s, v in result.stats["splits"].items()} == {s: len(v) for s, v in splits.items()}
    assert result.stats["splits"]["train"]["labels"] == dict(Counter(e.label for e in splits["train"]))
    assert set(result.stats["overlaps"]) == {"eval~train", "test~train", "test~eval"}
    tl = result.stats["splits"]["train"]["text_length"]
    assert 0 < tl["min"] <= tl["median"] <= tl["max"] <= 4000
    assert result.stats["seconds"]["gx_validation"] > 0
    assert set(result.gx) == {"train", "eval", "test"} and all(g["success"] for g in result.gx.values())
    json.dumps(result.to_dict(), allow_nan=False)
    assert "PASSED" in result.summary()
    # no GX progress bars
    err = capfd.readouterr().err
    assert "Calculating Metrics" not in err


def _clean(n: int = 6) -> dict[str, list[Example]]:
    return {
        "train": [Example(f"train text {i}", "positive" if i % 2 else "negative") for i in range(n)],
        "eval": [Example(f"eval text {i}", "positive" if i % 2 else "negative") for i in range(4)],
    }


def test_validation_critical_failures():
    splits = _clean()
    splits["eval"] += [Example("unsure", "neutral"), Example("", "positive"), Example("x" * 120, "negative")]
    result = validate_splits(splits, SENTIMENT, max_chars=100)
    assert not result.success
    assert len(result.failures) == 3, result.failures
    label = next(f for f in result.failures if "be_in_set(label)" in f)
    assert label.startswith("eval: expect_column_values_to_be_in_set(label): 1 of 7 rows")
    assert "'neutral' x1" in label and "row 5" in label
    length = next(f for f in result.failures if "value_lengths" in f)
    assert length.startswith("eval: expect_column_value_lengths_to_be_between(text): 2 of 7 texts are not "
                             "1..100 characters long")
    assert "row 6: '' (0 chars)" in length and "row 7:" in length and "(120 chars)" in length
    blank = next(f for f in result.failures if "match_regex" in f)
    assert blank.startswith("eval: expect_column_values_to_match_regex(text): 1 of 7 texts are blank")
    assert all("\n" not in f for f in result.failures)
    assert result.gx["eval"]["success"] is False and result.gx["train"]["success"] is True
    # the GX results carry the criticality
    metas = [r["expectation_config"]["meta"] for r in result.gx["eval"]["results"]]
    assert {"critical": True, "check": "label_in_set", "split": "eval"} in metas
    json.dumps(result.gx, allow_nan=False)
    assert "FAILED" in result.summary() and label in result.summary()


def test_validation_missing_labels_empty_split_and_non_strings():
    splits = {"train": [Example("a", "positive"), Example("b", "positive")],
              "eval": [Example("c", "positive"), Example(7, None)], "test": []}
    result = validate_splits(splits, SENTIMENT)
    assert not result.success
    text = "\n".join(result.failures)
    assert "train: expect_column_distinct_values_to_contain_set(label): declared label(s) absent from train: " \
           "'negative'" in text
    assert "test: expect_table_row_count_to_be_between: expected at least 1 row, found 0" in text
    assert "eval: expect_column_values_to_be_of_type(text): 1 of 2 text values are not strings; " \
           "e.g. row 2: 7 (int)" in text
    assert "eval: expect_column_values_to_not_be_null(label): 1 of 2 rows have no label (null); e.g. row 2" in text
    # a label absent from eval is only a warning
    assert any(w.startswith("eval: expect_column_distinct_values_to_contain_set(label)") for w in result.warnings)
    json.dumps(result.to_dict(), allow_nan=False)


def test_duplicates_and_overlap_are_warnings():
    splits = _clean()
    splits["train"].append(Example("train text 1", "positive"))  # duplicate within train
    splits["eval"] += [Example("train text 2", "negative"), Example("train text 3", "positive")]
    splits["test"] = [Example("eval text 0", "negative"), Example("train text 4", "negative"),
                      Example("fresh", "positive")]
    result = validate_splits(splits, SENTIMENT)
    assert result.success and result.failures == [], result.summary()
    w = result.warnings
    assert any(x.startswith("train: expect_column_values_to_be_unique(text): 2 of 7 rows carry a duplicated "
                            "text (1 distinct text(s), 1 extra copy); e.g. 'train text 1' x2, at rows 2, 7") for x in w), w
    assert any(x.startswith("eval: expect_column_values_to_be_null(text_also_in_train): 2 of 6 texts also "
                            "appear in train; e.g. row 5: 'train text 2'") for x in w), w
    assert any("test: expect_column_values_to_be_null(text_also_in_train): 1 of 3" in x for x in w), w
    assert any("test: expect_column_values_to_be_null(text_also_in_eval): 1 of 3" in x
               and "'eval text 0'" in x for x in w), w
    assert len(w) == 4
    assert result.stats["splits"]["train"]["duplicates"] == {"rows": 2, "texts": 1, "extra_copies": 1}
    assert result.stats["overlaps"] == {"eval~train": {"texts": 2, "rows": 2},
                                        "test~train": {"texts": 1, "rows": 1},
                                        "test~eval": {"texts": 1, "rows": 1}}
    assert "warnings:" in result.summary()


def test_generation_and_inferred_labels():
    gen = DataSpec(task="generation")
    splits = {"train": [Example("q1", target="a1"), Example("q2", target=None)], "eval": [Example("q3", target="a")]}
    result = validate_splits(splits, gen)
    assert result.failures == ["train: expect_column_values_to_not_be_null(target): 1 of 2 rows have no target "
                               "(null); e.g. row 2"]
    # labels inferred from train: an eval label unseen in train is outside the set
    splits = {"train": [Example("a", "x"), Example("b", "y")], "eval": [Example("c", "z")]}
    result = validate_splits(splits, DataSpec())
    assert result.stats["labels"] == ["x", "y"]
    assert any("be_in_set(label)" in f and "'z' x1" in f for f in result.failures)
    _input_error(validate_splits, {"eval": splits["eval"]}, DataSpec())
    _input_error(validate_splits, {"train": ["not an example"]}, DataSpec())
    _input_error(validate_splits, splits, DataSpec(), min_chars=5, max_chars=2)


def test_validation_speed_10k_rows():
    train = [Example(f"review number {i} " + "w" * (i % 300), "positive" if i % 3 else "negative")
             for i in range(10_000)]
    evals = [Example(f"held out {i}", "positive" if i % 3 else "negative") for i in range(1_000)]
    validate_splits({"train": train[:10], "eval": evals[:10]}, SENTIMENT)  # GX import + context
    start = time.perf_counter()
    result = validate_splits({"train": train, "eval": evals, "test": evals[:500]}, SENTIMENT)
    elapsed = time.perf_counter() - start
    print(f"validate_splits 10k+1k+0.5k rows: {elapsed:.2f}s {result.stats['seconds']}")
    assert result.success
    assert any("test: expect_column_values_to_be_null(text_also_in_eval): 500 of 500" in w for w in result.warnings)
    assert elapsed < 15
