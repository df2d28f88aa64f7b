"""Base model and dataset fingerprints."""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import struct
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from promptreg.errors import InputError
from promptreg.fingerprints import model as fpm
from promptreg.fingerprints.dataset import (
    dataset_fingerprint,
    file_dataset_fingerprint,
    read_rows,
)
from promptreg.fingerprints.model import ModelInfo, clear_fingerprint_cache, model_fingerprint
from promptreg.safetensors_io import read_header

# tiny_model_dir / tiny_model_dir_sharded (harmless if tests/conftest.py also lists this plugin)
pytest_plugins = ["tests.fixtures.models"]

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMPTREG_CACHE_DIR", str(tmp_path / "cache"))
    yield
    clear_fingerprint_cache()


def _copy(src: Path, dest: Path, *, age_s: float | None = None) -> Path:
    shutil.copytree(src, dest)
    if age_s is not None:
        _age(dest, age_s)
    return dest


def _age(folder: Path, age_s: float) -> None:
    """Set every file's mtime ``age_s`` seconds in the past (outside the cache's racy window)."""
    t = time.time() - age_s
    for p in folder.iterdir():
        os.utime(p, (t, t))


def _flip_byte_in_tensor(path: Path, tensor: str | None = None) -> str:
    entries, _ = read_header(path)
    names = sorted(entries)
    name = tensor or names[len(names) // 2]
    pos = (entries[name].begin + entries[name].end) // 2
    with open(path, "r+b") as f:
        f.seek(pos)
        b = f.read(1)
        f.seek(pos)
        f.write(bytes([b[0] ^ 0x01]))
    return name


def _write_safetensors(
    path: Path, tensors: dict[str, tuple[str, list[int], bytes]], *, metadata=None
) -> None:
    header: dict = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    offset = 0
    blobs = []
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for b in blobs:
            f.write(b)


# ----------------------------------------------------------------------------------------- model


def test_model_info_facts(tiny_model_dir):
    info = model_fingerprint(tiny_model_dir)
    assert isinstance(info, ModelInfo)
    assert len(info.fingerprint) == 64 and int(info.fingerprint, 16) >= 0
    assert info.name_or_path == str(tiny_model_dir)
    assert (info.model_type, info.architecture) == ("llama", "LlamaForCausalLM")
    assert (info.hidden_size, info.num_hidden_layers, info.num_attention_heads) == (64, 2, 4)
    assert (info.num_key_value_heads, info.head_dim) == (2, 16)
    from tests.fixtures.models import build_tokenizer

    assert info.vocab_size == len(build_tokenizer())
    assert info.tokenizer_source == "vocab"
    d = info.to_dict()
    assert d["fingerprint"] == info.fingerprint and d["hidden_size"] == 64
    json.dumps(d)


def test_shard_layout_does_not_matter(tiny_model_dir, tiny_model_dir_sharded):
    shards = sorted(p.name for p in tiny_model_dir_sharded.glob("*.safetensors"))
    assert len(shards) > 1 and (tiny_model_dir_sharded / "model.safetensors.index.json").is_file()
    assert [p.name for p in tiny_model_dir.glob("*.safetensors")] == ["model.safetensors"]
    a = model_fingerprint(tiny_model_dir, use_cache=False)
    b = model_fingerprint(tiny_model_dir_sharded, use_cache=False)
    assert a.fingerprint == b.fingerprint
    assert a.to_dict() | {"name_or_path": ""} == b.to_dict() | {"name_or_path": ""}


def test_same_weights_saved_twice(tmp_path, tiny_model_dir):
    from tests.fixtures.models import build_tiny_llama

    again = build_tiny_llama(tmp_path / "again", seed=0)
    other_seed = build_tiny_llama(tmp_path / "other", seed=1)
    base = model_fingerprint(tiny_model_dir).fingerprint
    assert model_fingerprint(again).fingerprint == base
    assert model_fingerprint(other_seed).fingerprint != base


def test_volatile_config_fields_ignored(tmp_path, tiny_model_dir):
    d = _copy(tiny_model_dir, tmp_path / "m")
    cfg = json.loads((d / "config.json").read_text())
    cfg["transformers_version"] = "4.0.0"
    cfg["_name_or_path"] = "/somewhere/else"
    cfg["use_cache"] = not cfg.get("use_cache", True)
    cfg["_private"] = 1
    (d / "config.json").write_text(json.dumps(cfg, indent=4))
    assert model_fingerprint(d).fingerprint == model_fingerprint(tiny_model_dir).fingerprint


def test_one_flipped_byte_changes_fingerprint(tmp_path, tiny_model_dir, tiny_model_dir_sharded):
    base = model_fingerprint(tiny_model_dir).fingerprint
    d = _copy(tiny_model_dir, tmp_path / "m")
    _flip_byte_in_tensor(d / "model.safetensors")
    assert model_fingerprint(d).fingerprint != base
    s = _copy(tiny_model_dir_sharded, tmp_path / "s")
    last = sorted(s.glob("model-*.safetensors"))[-1]
    _flip_byte_in_tensor(last)
    assert model_fingerprint(s).fingerprint != base


def test_config_change_changes_fingerprint(tmp_path, tiny_model_dir):
    d = _copy(tiny_model_dir, tmp_path / "m")
    cfg = json.loads((d / "config.json").read_text())
    if "rope_parameters" in cfg:
        cfg["rope_parameters"]["rope_theta"] = 500000.0
    else:
        cfg["rope_theta"] = 500000.0
    (d / "config.json").write_text(json.dumps(cfg))
    assert model_fingerprint(d).fingerprint != model_fingerprint(tiny_model_dir).fingerprint


def test_tokenizer_vocab_change_changes_fingerprint(tmp_path, tiny_model_dir):
    base = model_fingerprint(tiny_model_dir).fingerprint
    d = _copy(tiny_model_dir, tmp_path / "m")
    tj = json.loads((d / "tokenizer.json").read_text())
    vocab = tj["model"]["vocab"]
    vocab["film!"] = vocab.pop("movie")
    (d / "tokenizer.json").write_text(json.dumps(tj))
    assert model_fingerprint(d).fingerprint != base

    # formatting-only rewrite of tokenizer.json: same vocabulary, same fingerprint
    e = _copy(tiny_model_dir, tmp_path / "e")
    tj = json.loads((e / "tokenizer.json").read_text())
    (e / "tokenizer.json").write_text(json.dumps(tj, indent=1, sort_keys=True))
    assert model_fingerprint(e).fingerprint == base


def test_vocab_json_equivalent_to_tokenizer_json(tmp_path, tiny_model_dir):
    base = model_fingerprint(tiny_model_dir).fingerprint
    d = _copy(tiny_model_dir, tmp_path / "m")
    tj = json.loads((d / "tokenizer.json").read_text())
    (d / "tokenizer.json").unlink()
    (d / "tokenizer_config.json").unlink()
    (d / "vocab.json").write_text(json.dumps(tj["model"]["vocab"]))
    # the added (special) tokens of this tokenizer are also in its vocab, so the pair sets coincide
    assert model_fingerprint(d).fingerprint == base


def test_missing_tokenizer_is_recorded(tmp_path, tiny_model_dir):
    d = _copy(tiny_model_dir, tmp_path / "m")
    (d / "tokenizer.json").unlink()
    info = model_fingerprint(d)
    assert info.tokenizer_source == "none"
    assert info.fingerprint != model_fingerprint(tiny_model_dir).fingerprint
    (d / "tokenizer.model").write_bytes(b"\x00sentencepiece-bytes")
    sp = model_fingerprint(d)
    assert sp.tokenizer_source == "sentencepiece" and sp.fingerprint != info.fingerprint


def test_pickle_only_folder_refused(tmp_path, tiny_model_dir):
    d = tmp_path / "pickled"
    d.mkdir()
    shutil.copy(tiny_model_dir / "config.json", d)
    (d / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(InputError, match="no safetensors weights.*never unpickles"):
        model_fingerprint(d)


def test_bad_folders(tmp_path, tiny_model_dir):
    with pytest.raises(InputError, match="does not exist"):
        model_fingerprint(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no config.json"):
        model_fingerprint(empty)
    (empty / "adapter_config.json").write_text("{}")
    with pytest.raises(InputError, match="PEFT adapter"):
        model_fingerprint(empty)
    only_cfg = tmp_path / "only_cfg"
    only_cfg.mkdir()
    shutil.copy(tiny_model_dir / "config.json", only_cfg)
    with pytest.raises(InputError, match="no \\*.safetensors weights"):
        model_fingerprint(only_cfg)
    bad_cfg = _copy(tiny_model_dir, tmp_path / "bad_cfg")
    (bad_cfg / "config.json").write_text("{not json")
    with pytest.raises(InputError, match="cannot read model config"):
        model_fingerprint(bad_cfg)


def test_duplicate_tensor_across_shards_refused(tmp_path, tiny_model_dir):
    d = _copy(tiny_model_dir, tmp_path / "m")
    shutil.copy(d / "model.safetensors", d / "model-extra.safetensors")
    with pytest.raises(InputError, match="appears in two safetensors files"):
        model_fingerprint(d)


def test_missing_shard_refused(tmp_path, tiny_model_dir_sharded):
    d = _copy(tiny_model_dir_sharded, tmp_path / "s")
    sorted(d.glob("model-*.safetensors"))[0].unlink()
    with pytest.raises(InputError, match="incomplete: shard .* is missing"):
        model_fingerprint(d)


def test_malformed_safetensors_refused(tmp_path, tiny_model_dir):
    d = tmp_path / "m"
    d.mkdir()
    shutil.copy(tiny_model_dir / "config.json", d)
    st_path = d / "model.safetensors"
    for content in [b"\x01\x02", struct.pack("<Q", 1 << 40) + b"{}", struct.pack("<Q", 4) + b"nope"]:
        st_path.write_bytes(content)
        with pytest.raises(InputError, match="malformed safetensors"):
            model_fingerprint(d, use_cache=False)
    # data_offsets past the end of the file
    _write_safetensors(st_path, {"w": ("F32", [2], b"\x00" * 8)})
    raw = st_path.read_bytes()
    st_path.write_bytes(raw[:-4])
    with pytest.raises(InputError, match="malformed safetensors"):
        model_fingerprint(d, use_cache=False)
    # size inconsistent with dtype/shape
    _write_safetensors(st_path, {"w": ("F32", [3], b"\x00" * 8)})
    with pytest.raises(InputError, match="expected 12"):
        model_fingerprint(d, use_cache=False)


def test_synthetic_safetensors_metadata_and_order(tmp_path, tiny_model_dir):
    """Header key order, padding and __metadata__ do not matter; dtype and shape do."""
    tensors = {"a": ("F32", [2, 2], bytes(range(16))), "b": ("I8", [4], b"\x01\x02\x03\x04")}

    def fp(name, t, **kw):
        d = tmp_path / name
        d.mkdir()
        shutil.copy(tiny_model_dir / "config.json", d)
        _write_safetensors(d / "model.safetensors", t, **kw)
        return model_fingerprint(d, use_cache=False).fingerprint

    base = fp("base", tensors)
    assert fp("reordered", dict(reversed(list(tensors.items()))), metadata={"format": "pt"}) == base
    assert fp("shape", {**tensors, "a": ("F32", [4, 1], bytes(range(16)))}) != base
    assert fp("dtype", {**tensors, "b": ("U8", [4], b"\x01\x02\x03\x04")}) != base
    assert fp("rename", {"a2": tensors["a"], "b": tensors["b"]}) != base


def test_cache_avoids_rehash_and_invalidates(tmp_path, tiny_model_dir_sharded, monkeypatch):
    d = _copy(tiny_model_dir_sharded, tmp_path / "s", age_s=60)
    calls: list[Path] = []
    real = fpm._hash_safetensors_file

    def counting(path):
        calls.append(Path(path))
        return real(path)

    monkeypatch.setattr(fpm, "_hash_safetensors_file", counting)
    n_shards = len(list(d.glob("*.safetensors")))

    first = model_fingerprint(d)
    assert len(calls) == n_shards
    cache_file = Path(os.environ["PROMPTREG_CACHE_DIR"]) / "fingerprints.json"
    assert str(d.resolve()) in json.loads(cache_file.read_text())["entries"]

    second = model_fingerprint(d)
    assert len(calls) == n_shards  # no tensor was re-read
    assert second == first

    # touching a file (new mtime, same bytes) invalidates: rehash, same fingerprint
    shard = sorted(d.glob("model-*.safetensors"))[0]
    t = time.time() - 30
    os.utime(shard, (t, t))
    assert model_fingerprint(d).fingerprint == first.fingerprint
    assert len(calls) == 2 * n_shards
    model_fingerprint(d)
    assert len(calls) == 2 * n_shards

    # modifying a file invalidates: a different fingerprint
    _flip_byte_in_tensor(shard)
    os.utime(shard, (t - 10, t - 10))
    changed = model_fingerprint(d)
    assert changed.fingerprint != first.fingerprint
    assert len(calls) == 3 * n_shards

    # use_cache=False always rehashes
    model_fingerprint(d, use_cache=False)
    assert len(calls) == 4 * n_shards


def test_cache_skips_racy_files(tmp_path, tiny_model_dir, monkeypatch):
    d = _copy(tiny_model_dir, tmp_path / "fresh", age_s=0)  # just written: inside the racy window
    calls = []
    real = fpm._hash_safetensors_file
    monkeypatch.setattr(fpm, "_hash_safetensors_file", lambda p: calls.append(p) or real(p))
    model_fingerprint(d)
    model_fingerprint(d)
    assert len(calls) == 2


def test_corrupt_cache_ignored_and_rewritten(tmp_path, tiny_model_dir):
    d = _copy(tiny_model_dir, tmp_path / "m", age_s=60)
    cache_file = Path(os.environ["PROMPTREG_CACHE_DIR"]) / "fingerprints.json"
    cache_file.parent.mkdir(parents=True)
    cache_file.write_text("{this is not json")
    info = model_fingerprint(d)
    data = json.loads(cache_file.read_text())
    assert data["entries"][str(d.resolve())]["fingerprint"] == info.fingerprint
    clear_fingerprint_cache()
    assert not cache_file.exists()


def test_cache_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("PROMPTREG_CACHE_DIR", str(tmp_path / "a"))
    assert fpm.cache_dir() == tmp_path / "a"
    monkeypatch.delenv("PROMPTREG_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert fpm.cache_dir() == tmp_path / "xdg" / "promptreg"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert fpm.cache_dir() == tmp_path / "home" / ".cache" / "promptreg"


def test_import_does_not_pull_torch():
    code = (
        "import sys, promptreg.fingerprints.model, promptreg.fingerprints.dataset\n"
        "bad = [m for m in ('torch', 'transformers', 'safetensors', 'mlflow', 'numpy') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# --------------------------------------------------------------------------------------- dataset


def test_dataset_order_sensitive_key_order_insensitive():
    a, b = {"text": "good", "label": "positive"}, {"text": "bad", "label": "negative"}
    assert dataset_fingerprint([a, b]) != dataset_fingerprint([b, a])
    assert dataset_fingerprint([a, b]) == dataset_fingerprint([dict(reversed(list(a.items()))), b])
    assert len(dataset_fingerprint([])) == 64
    assert dataset_fingerprint([]) != dataset_fingerprint([{}])
    # types stay distinct
    fps = {dataset_fingerprint([{"x": v}]) for v in (1, 1.5, "1", True, None, [1], {"y": 1})}
    assert len(fps) == 7


def test_dataset_unicode_nfc():
    composed = unicodedata.normalize("NFC", "café crème")
    decomposed = unicodedata.normalize("NFD", "café crème")
    assert composed != decomposed
    assert dataset_fingerprint([{"t": composed}]) == dataset_fingerprint([{"t": decomposed}])
    assert dataset_fingerprint([{composed: 1}]) == dataset_fingerprint([{decomposed: 1}])
    with pytest.raises(InputError, match="collide"):
        dataset_fingerprint([{composed: 1, decomposed: 2}])


def test_dataset_rejects_non_finite_and_non_json():
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(InputError, match="row 2: non-finite"):
            dataset_fingerprint([{"x": 1}, {"x": [bad]}])
    with pytest.raises(InputError, match="not a JSON value"):
        dataset_fingerprint([{"x": b"bytes"}])
    with pytest.raises(InputError, match="expected an object"):
        dataset_fingerprint([["not", "a", "row"]])
    with pytest.raises(InputError, match="keys must be strings"):
        dataset_fingerprint([{1: "x"}])


def test_csv_jsonl_json_agree(tmp_path):
    rows = [
        {"text": "Review: great movie, really", "label": "positive"},
        {"text": 'He said "terrible"\nthen left', "label": "negative"},
        {"text": "naïve – ok\u2028odd separator", "label": ""},
    ]
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n\n", encoding="utf-8")
    js = tmp_path / "d.json"
    js.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    import csv

    csv_path = tmp_path / "d.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["label", "text"])
        w.writeheader()
        w.writerows(rows)
    expected = dataset_fingerprint(rows)
    assert read_rows(jsonl) == rows
    for p in (jsonl, js, csv_path):
        assert file_dataset_fingerprint(p) == (expected, 3)


def test_dataset_file_errors(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"a": 1}\n{"a": 2\n')
    with pytest.raises(InputError, match="line 2: invalid JSON"):
        read_rows(p)
    p.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(InputError, match="line 2: expected a JSON object"):
        read_rows(p)
    p.write_text('{"a": NaN}\n')
    with pytest.raises(InputError, match="line 1: invalid JSON.*non-finite"):
        read_rows(p)
    p.write_text("")
    fp, n = file_dataset_fingerprint(p)
    assert n == 0 and fp == dataset_fingerprint([])
    j = tmp_path / "d.json"
    j.write_text('{"a": 1}')
    with pytest.raises(InputError, match="expected a JSON list"):
        read_rows(j)
    c = tmp_path / "d.csv"
    c.write_text("a,b\n1,2\n3\n")
    with pytest.raises(InputError, match="line 3: wrong number of fields"):
        read_rows(c)
    c.write_text("a,a\n1,2\n")
    with pytest.raises(InputError, match="duplicate column"):
        read_rows(c)
    c.write_bytes(b"a\n\xff\n")
    with pytest.raises(InputError, match="not valid UTF-8"):
        read_rows(c)
    with pytest.raises(InputError, match="not found"):
        read_rows(tmp_path / "missing.jsonl")
    with pytest.raises(InputError, match="unsupported dataset file type"):
        read_rows(tmp_path / "d.parquet")


json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
rows_strategy = st.lists(st.dictionaries(st.text(max_size=8), json_values, max_size=5), max_size=5)


def _shuffle_keys(obj, rnd: random.Random):
    if isinstance(obj, dict):
        items = list(obj.items())
        rnd.shuffle(items)
        return {k: _shuffle_keys(v, rnd) for k, v in items}
    if isinstance(obj, list):
        return [_shuffle_keys(v, rnd) for v in obj]
    return obj


@settings(max_examples=150, deadline=None)
@given(rows=rows_strategy, seed=st.integers(0, 2**32 - 1))
def test_property_key_permutation_and_nfc(rows, seed):
    # rows whose keys collide after NFC are rejected; skip those
    try:
        fp = dataset_fingerprint(rows)
    except InputError:
        return
    rnd = random.Random(seed)
    assert dataset_fingerprint([_shuffle_keys(r, rnd) for r in rows]) == fp

    def nfd(o):
        if isinstance(o, str):
            return unicodedata.normalize("NFD", o)
        if isinstance(o, dict):
            return {nfd(k): nfd(v) for k, v in o.items()}
        if isinstance(o, list):
            return [nfd(v) for v in o]
        return o

    # NFC(NFD(s)) == NFC(s), so decomposing every string never changes the fingerprint
    assert dataset_fingerprint([nfd(r) for r in rows]) == fp


@settings(max_examples=60, deadline=None)
@given(rows=rows_strategy)
def test_property_jsonl_roundtrip(tmp_path_factory, rows):
    try:
        fp = dataset_fingerprint(rows)
    except InputError:
        return
    p = tmp_path_factory.mktemp("ds") / "rows.jsonl"
    p.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    assert file_dataset_fingerprint(p) == (fp, len(rows))
