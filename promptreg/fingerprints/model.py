"""Fingerprint of a base model folder (Hugging Face layout), without importing torch.

(One cohesive thing, a little over the house's ~450 lines: the canonical form below and the reader
of every weight layout it covers belong together.)

A soft prompt is only meaningful for the exact base model it was trained against, so every prompt
version records the fingerprint of its base model folder. The fingerprint is independent of how the
weights are laid out on disk (one ``model.safetensors`` or several shards + index) and of volatile
metadata, and it changes when any tensor byte, the architecture config or the vocabulary changes.

Canonical form (algorithm ``promptreg-model-v1``). The fingerprint is the sha256 hex digest of the
UTF-8 bytes of::

    promptreg-model-v1 LF
    config NUL <canonical config JSON> LF
    tensor NUL <name> NUL <dtype> NUL <shape> NUL <sha256 hex of the tensor's raw bytes> LF   (one per tensor)
    tokenizer NUL <source> NUL <digest> LF

* **config**: ``config.json`` parsed as JSON; in every (nested) object the volatile keys
  ``_name_or_path``, ``transformers_version``, ``torch_dtype``, ``dtype``, ``_commit_hash``,
  ``_attn_implementation``, ``_attn_implementation_autoset``, ``use_cache`` and every key starting
  with ``_`` are removed; the result is serialised with ``json.dumps(sort_keys=True,
  separators=(",", ":"), ensure_ascii=False)``.
* **tensors**: every top-level ``*.safetensors`` file of the folder (all shards). Each file's header
  (8-byte little-endian length + JSON ``{name: {dtype, shape, data_offsets}}``) is read directly, and
  each tensor's byte range is streamed through sha256. ``__metadata__`` (e.g. ``format``) and the
  shard index are not part of the fingerprint. All tensors of all files are sorted by name
  (code-point order); ``shape`` is the dimensions joined with ``,`` (empty for a scalar). A tensor
  name present in two files is an :class:`InputError`.
* **tokenizer** (the vocabulary, as sorted ``(id, token)`` pairs):

  - ``tokenizer.json`` -> source ``vocab``: ``model.vocab`` (a ``{token: id}`` object, or for Unigram a
    list of ``[token, score]`` whose index is the id) plus ``added_tokens`` (``id``/``content``);
  - else ``vocab.json`` -> source ``vocab``: its ``{token: id}`` plus ``added_tokens.json`` and the
    ``added_tokens_decoder`` of ``tokenizer_config.json`` when present;
  - the pairs are de-duplicated, sorted by (id, token), serialised as the compact JSON list
    ``[[id,"token"],...]`` (ensure_ascii False) and ``digest`` is its sha256. The same vocabulary
    therefore gives the same digest from ``tokenizer.json`` or ``vocab.json``;
  - else ``tokenizer.model`` (SentencePiece) -> source ``sentencepiece``, digest = sha256 of the file
    bytes followed by the added-token pairs as above (``added_tokens.json``/``tokenizer_config.json``);
  - else source ``none`` and digest ``-``: the model is fingerprinted alone, and
    ``ModelInfo.tokenizer_source == "none"`` records that no tokenizer was found.

Refusals (:class:`InputError`): a missing folder, a folder without ``config.json``, a folder whose
weights are only pickles (``*.bin``, ``*.pt``, ``*.pth``, ``*.ckpt``: promptreg never unpickles), a
folder without weights, a malformed safetensors file, a shard listed in
``model.safetensors.index.json`` that is missing.

Cache. Hashing a large model takes a while, so results are cached in
``<cache_dir>/fingerprints.json`` (``cache_dir`` = ``$PROMPTREG_CACHE_DIR``, else
``$XDG_CACHE_HOME/promptreg``, else ``~/.cache/promptreg``), keyed by the absolute resolved folder path.
An entry is valid only while the folder's *signature* - the sorted list of (relative name, size,
mtime_ns) of ``config.json``, every ``*.safetensors`` and every tokenizer file listed above that
exists - is unchanged. The file is written atomically (temp file + ``os.replace``); a corrupt or
unreadable cache is ignored and rewritten; failures to write it are ignored (it is only a cache).
To avoid the "racy" case of a file rewritten within the file system's timestamp granularity, a result
is not cached when a file was modified less than 2 s before hashing started, or when the files
changed while being hashed.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from promptreg.errors import InputError
from promptreg.safetensors_io import read_header

ALGORITHM = "promptreg-model-v1"
CHUNK = 1 << 20
RACY_NS = 2_000_000_000
CACHE_FORMAT = 1

VOLATILE_CONFIG_KEYS = frozenset(
    {
        "_name_or_path",
        "transformers_version",
        "torch_dtype",
        "dtype",
        "_commit_hash",
        "_attn_implementation",
        "_attn_implementation_autoset",
        "use_cache",
    }
)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.json",
    "tokenizer.model",
    "added_tokens.json",
    "tokenizer_config.json",
)

# Bytes per element of the safetensors dtypes with a whole-byte size (sub-byte types are not size-checked).


@dataclass(frozen=True)
class ModelInfo:
    """A base model's fingerprint plus the architecture facts a soft prompt depends on."""

    fingerprint: str
    name_or_path: str
    model_type: str | None = None
    architecture: str | None = None
    hidden_size: int | None = None
    num_hidden_layers: int | None = None
    num_attention_heads: int | None = None
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    vocab_size: int | None = None
    tokenizer_source: str = "none"  # "vocab", "sentencepiece" or "none"

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------------------- config


def _strip_volatile(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {
            k: _strip_volatile(v)
            for k, v in obj.items()
            if k not in VOLATILE_CONFIG_KEYS and not k.startswith("_")
        }
    if isinstance(obj, list):
        return [_strip_volatile(v) for v in obj]
    return obj


def canonical_config(config: dict) -> str:
    return json.dumps(_strip_volatile(config), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _load_json(path: Path, what: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"cannot read {what} {path}: {e}") from None


def _int_or_none(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _architecture_facts(config: dict) -> dict:
    """hidden size, layers, heads... from config.json (looking into ``text_config`` when needed)."""
    sources = [config]
    if isinstance(config.get("text_config"), dict):
        sources.append(config["text_config"])

    def pick(*names: str) -> int | None:
        for src in sources:
            for n in names:
                v = _int_or_none(src.get(n))
                if v is not None:
                    return v
        return None

    hidden = pick("hidden_size", "n_embd", "d_model")
    layers = pick("num_hidden_layers", "n_layer", "num_layers")
    heads = pick("num_attention_heads", "n_head", "num_heads")
    kv = pick("num_key_value_heads", "num_kv_heads")
    if kv is None:
        kv = heads  # multi-head attention: one key/value head per query head
    head_dim = pick("head_dim")
    if head_dim is None and hidden and heads:
        head_dim = hidden // heads
    archs = config.get("architectures")
    arch = archs[0] if isinstance(archs, list) and archs and isinstance(archs[0], str) else None
    mt = config.get("model_type")
    return {
        "model_type": mt if isinstance(mt, str) else None,
        "architecture": arch,
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "head_dim": head_dim,
        "vocab_size": pick("vocab_size"),
    }


# ------------------------------------------------------------------------------------------ tensors


def _hash_safetensors_file(path: Path) -> dict[str, tuple[str, list[int], str]]:
    """``{tensor name: (dtype, shape, sha256 hex of its raw bytes)}`` for one safetensors file."""
    entries = [(e.name, e.dtype, list(e.shape), e.begin, e.end) for e in read_header(path)[0].values()]
    result: dict[str, tuple[str, list[int], str]] = {}
    try:
        with open(path, "rb") as f:
            for name, dtype, shape, begin, end in sorted(entries, key=lambda e: e[3]):
                h = hashlib.sha256()
                f.seek(begin)
                remaining = end - begin
                while remaining:
                    chunk = f.read(min(CHUNK, remaining))
                    if not chunk:
                        raise InputError(f"malformed safetensors file {path}: truncated data for {name!r}")
                    h.update(chunk)
                    remaining -= len(chunk)
                result[name] = (dtype, shape, h.hexdigest())
    except OSError as e:
        raise InputError(f"cannot read {path}: {e}") from None
    return result


def _hash_all_tensors(folder: Path, files: list[str]) -> list[tuple[str, str, list[int], str]]:
    workers = max(1, min(4, len(files)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        per_file = list(pool.map(lambda rel: _hash_safetensors_file(folder / rel), files))
    merged: dict[str, tuple[str, list[int], str]] = {}
    origin: dict[str, str] = {}
    for rel, tensors in zip(files, per_file, strict=True):
        for name, value in tensors.items():
            if name in merged:
                raise InputError(
                    f"tensor {name!r} appears in two safetensors files of {folder}: {origin[name]} and {rel}"
                )
            merged[name] = value
            origin[name] = rel
    if not merged:
        raise InputError(f"model folder {folder} has safetensors files but no tensors")
    return [(name, *merged[name]) for name in sorted(merged)]


# ---------------------------------------------------------------------------------------- tokenizer


def _vocab_digest(pairs: set[tuple[int, str]]) -> str:
    text = json.dumps(sorted(pairs), separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _extra_added_tokens(folder: Path) -> set[tuple[int, str]]:
    pairs: set[tuple[int, str]] = set()
    added = folder / "added_tokens.json"
    if added.is_file():
        data = _load_json(added, "added tokens")
        if isinstance(data, dict):
            pairs |= {(int(i), str(t)) for t, i in data.items() if _int_or_none(i) is not None}
    tc = folder / "tokenizer_config.json"
    if tc.is_file():
        data = _load_json(tc, "tokenizer config")
        dec = data.get("added_tokens_decoder") if isinstance(data, dict) else None
        if isinstance(dec, dict):
            for i, tok in dec.items():
                content = tok.get("content") if isinstance(tok, dict) else None
                if isinstance(content, str) and str(i).lstrip("-").isdigit():
                    pairs.add((int(i), content))
    return pairs


def _tokenizer_part(folder: Path) -> tuple[str, str]:
    """(source, digest) of the folder's tokenizer vocabulary; ("none", "-") when there is none."""
    tj = folder / "tokenizer.json"
    if tj.is_file():
        data = _load_json(tj, "tokenizer")
        model = data.get("model") if isinstance(data, dict) else None
        vocab = model.get("vocab") if isinstance(model, dict) else None
        pairs: set[tuple[int, str]] = set()
        if isinstance(vocab, dict):
            for tok, i in vocab.items():
                if _int_or_none(i) is None:
                    raise InputError(f"malformed tokenizer {tj}: non-integer id for token {tok!r}")
                pairs.add((i, tok))
        elif isinstance(vocab, list):  # Unigram: [[token, score], ...], the index is the id
            for i, item in enumerate(vocab):
                if not isinstance(item, list) or not item or not isinstance(item[0], str):
                    raise InputError(f"malformed tokenizer {tj}: bad vocabulary entry {i}")
                pairs.add((i, item[0]))
        else:
            raise InputError(f"malformed tokenizer {tj}: no model.vocab")
        for tok in data.get("added_tokens") or []:
            if isinstance(tok, dict) and _int_or_none(tok.get("id")) is not None:
                pairs.add((tok["id"], str(tok.get("content"))))
        return "vocab", _vocab_digest(pairs)
    vj = folder / "vocab.json"
    if vj.is_file():
        data = _load_json(vj, "vocabulary")
        if not isinstance(data, dict) or not all(_int_or_none(i) is not None for i in data.values()):
            raise InputError(f"malformed vocabulary {vj}: expected a {{token: id}} object")
        pairs = {(i, t) for t, i in data.items()} | _extra_added_tokens(folder)
        return "vocab", _vocab_digest(pairs)
    sp = folder / "tokenizer.model"
    if sp.is_file():
        h = hashlib.sha256()
        with open(sp, "rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
        extra = _extra_added_tokens(folder)
        h.update(json.dumps(sorted(extra), separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
        return "sentencepiece", h.hexdigest()
    return "none", "-"


# ------------------------------------------------------------------------------------------ folders


def _check_folder(folder: Path) -> list[str]:
    """Validate the folder and return its safetensors files (relative names, sorted)."""
    if not folder.exists():
        raise InputError(f"base model folder does not exist: {folder}")
    if not folder.is_dir():
        raise InputError(f"base model path is not a folder: {folder}")
    if not (folder / "config.json").is_file():
        hint = (
            " (it looks like a PEFT adapter folder, not a base model)"
            if (folder / "adapter_config.json").is_file()
            else ""
        )
        raise InputError(f"base model folder {folder} has no config.json{hint}")
    names = sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    st = [n for n in names if n.endswith(".safetensors")]
    if not st:
        pickles = [n for n in names if n.endswith(PICKLE_SUFFIXES)]
        if pickles:
            raise InputError(
                f"base model folder {folder} has no safetensors weights (only {', '.join(pickles[:3])}); "
                "promptreg never unpickles weights: convert them to safetensors first"
            )
        raise InputError(f"base model folder {folder} has no *.safetensors weights")
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        data = _load_json(index, "safetensors index")
        wm = data.get("weight_map") if isinstance(data, dict) else None
        if isinstance(wm, dict):
            missing = sorted({f for f in wm.values() if isinstance(f, str) and f not in st})
            if missing:
                raise InputError(
                    f"base model folder {folder} is incomplete: shard {missing[0]} listed in "
                    "model.safetensors.index.json is missing"
                )
    return st


def _signature(folder: Path, st_files: list[str]) -> list[list]:
    rels = ["config.json", *st_files, *(t for t in TOKENIZER_FILES if (folder / t).is_file())]
    sig = []
    for rel in sorted(set(rels)):
        s = (folder / rel).stat()
        sig.append([rel, s.st_size, s.st_mtime_ns])
    return sig


# -------------------------------------------------------------------------------------------- cache


def cache_dir() -> Path:
    env = os.environ.get("PROMPTREG_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg) / "promptreg"
    return Path.home() / ".cache" / "promptreg"


def _cache_path() -> Path:
    return cache_dir() / "fingerprints.json"


def _read_cache() -> dict:
    try:
        with open(_cache_path(), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    if (
        not isinstance(data, dict)
        or data.get("format") != CACHE_FORMAT
        or not isinstance(data.get("entries"), dict)
    ):
        return {}
    return data["entries"]


def _write_cache(entries: dict) -> None:
    path = _cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".fingerprints.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"format": CACHE_FORMAT, "entries": entries}, f, ensure_ascii=False)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    except OSError:
        pass  # a cache that cannot be written only costs time


def clear_fingerprint_cache() -> None:
    """Remove the fingerprint cache file (tests, or after a suspected corruption)."""
    try:
        _cache_path().unlink()
    except FileNotFoundError:
        pass


# --------------------------------------------------------------------------------------------- main


def _compute(folder: Path, st_files: list[str]) -> tuple[str, dict]:
    config = _load_json(folder / "config.json", "model config")
    if not isinstance(config, dict):
        raise InputError(f"model config {folder / 'config.json'} is not a JSON object")
    tensors = _hash_all_tensors(folder, st_files)
    tok_source, tok_digest = _tokenizer_part(folder)
    h = hashlib.sha256()
    h.update(f"{ALGORITHM}\n".encode())
    h.update(f"config\0{canonical_config(config)}\n".encode())
    for name, dtype, shape, digest in tensors:
        h.update(f"tensor\0{name}\0{dtype}\0{','.join(map(str, shape))}\0{digest}\n".encode())
    h.update(f"tokenizer\0{tok_source}\0{tok_digest}\n".encode())
    facts = _architecture_facts(config)
    facts["tokenizer_source"] = tok_source
    return h.hexdigest(), facts


def model_fingerprint(folder: Path | str, *, use_cache: bool = True) -> ModelInfo:
    """Fingerprint a base model folder (see the module docstring for the canonical form and cache).

    ``use_cache=False`` neither reads nor writes the cache.
    """
    given = str(folder)
    folder = Path(folder)
    st_files = _check_folder(folder)
    key = str(folder.resolve())
    start_ns = time.time_ns()
    sig = _signature(folder, st_files)
    if use_cache:
        entry = _read_cache().get(key)
        if (
            isinstance(entry, dict)
            and entry.get("algorithm") == ALGORITHM
            and entry.get("signature") == sig
            and isinstance(entry.get("fingerprint"), str)
            and isinstance(entry.get("facts"), dict)
        ):
            try:
                return ModelInfo(fingerprint=entry["fingerprint"], name_or_path=given, **entry["facts"])
            except TypeError:
                pass  # stale entry shape: recompute
    fingerprint, facts = _compute(folder, st_files)
    if use_cache:
        racy = any(mtime >= start_ns - RACY_NS for _, _, mtime in sig)
        if not racy and _signature(folder, st_files) == sig:
            entries = _read_cache()
            entries[key] = {
                "algorithm": ALGORITHM,
                "signature": sig,
                "fingerprint": fingerprint,
                "facts": facts,
            }
            _write_cache(entries)
    return ModelInfo(fingerprint=fingerprint, name_or_path=given, **facts)
