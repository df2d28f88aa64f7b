"""Validate an artifact folder before it is pushed (or after it is pulled).

Checks, each failing with one InputError line: the folder and required files exist; no pickle or
symlink; the manifest parses and matches the schema; ``soft_prompt.safetensors`` holds exactly the
tensors the manifest declares, with those shapes and dtypes, all values finite; the method's
``prompt_embeddings`` shape fits the base model; the PEFT files, when the method has them, agree
with the manifest and hold the same ``prompt_embeddings``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from promptreg.artifact.hashing import digest_entries, folder_entries
from promptreg.artifact.manifest import (
    MANIFEST_FILE,
    PEFT_CONFIG_FILE,
    PEFT_METHODS,
    PEFT_WEIGHTS_FILE,
    TENSORS_FILE,
    Manifest,
    format_validation_error,
)
from promptreg.errors import InputError
from promptreg.refs import text_problem
from promptreg.safetensors_io import load_numpy, read_header

MAX_ARTIFACT_BYTES = 2 * 1024**3
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


@dataclass(frozen=True)
class ValidatedArtifact:
    folder: Path
    manifest: Manifest
    sha256: str
    size_bytes: int
    files: list[str]


def _reject_constant(name: str):
    raise ValueError(f"{name} is not allowed (JSON has no NaN or infinity)")


def check_json_text(data, what: str) -> None:
    """InputError when a string (key or value) anywhere in ``data`` holds a NUL character or a lone
    surrogate (``"\\ud800"`` is valid JSON but not text): the registry database (PostgreSQL text and
    JSONB) and MLflow cannot store them."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and (problem := text_problem(item)):
            raise InputError(f"{what}: a string {problem}: {item[:60]!r}")


def load_manifest(folder: Path, *, strict: bool = False) -> Manifest:
    """The folder's manifest. ``strict`` (push): also refuse NaN/Infinity, NUL characters and lone
    surrogates anywhere in it, which the registry database and MLflow cannot store."""
    path = Path(folder) / MANIFEST_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"), parse_constant=_reject_constant if strict else None)
    except FileNotFoundError:
        raise InputError(f"{folder}: missing {MANIFEST_FILE}") from None
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError, NaN/Infinity, too many int digits
        raise InputError(f"{MANIFEST_FILE}: not valid JSON: {exc}") from None
    except RecursionError:
        raise InputError(f"{MANIFEST_FILE}: not valid JSON: nested too deeply") from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not isinstance(data, dict):
        raise InputError(f"{MANIFEST_FILE}: must be a JSON object")
    if strict:
        check_json_text(data, MANIFEST_FILE)
    try:
        return Manifest.model_validate(data)
    except Exception as exc:
        raise InputError(f"{MANIFEST_FILE}: {format_validation_error(exc)}") from None


def validate_artifact(folder: Path | str) -> ValidatedArtifact:
    folder = Path(folder)
    if not folder.exists():
        raise InputError(f"no such folder: {folder}")
    if not folder.is_dir():
        raise InputError(f"not a folder: {folder}")
    entries = folder_entries(folder)
    files = [rel for rel, _, _ in entries]
    size = sum(s for _, _, s in entries)
    if size > MAX_ARTIFACT_BYTES:
        raise InputError(f"artifact is {size} bytes, over the {MAX_ARTIFACT_BYTES} byte limit")
    pickles = [f for f in files if f.lower().endswith(_PICKLE_SUFFIXES)]
    if pickles:
        raise InputError(f"artifact contains pickle-format files ({pickles[0]}); promptreg stores safetensors only")
    manifest = load_manifest(folder, strict=True)
    if TENSORS_FILE not in files:
        raise InputError(f"{folder}: missing {TENSORS_FILE}")

    arrays = _check_tensors(folder / TENSORS_FILE, manifest)
    expected = manifest.expected_prompt_shape()
    if expected is not None:
        if "prompt_embeddings" not in arrays:
            raise InputError(f"{TENSORS_FILE}: method {manifest.method} needs a 'prompt_embeddings' tensor")
        got = list(arrays["prompt_embeddings"].shape)
        if got != expected:
            raise InputError(
                f"{TENSORS_FILE}: prompt_embeddings has shape {got}, {manifest.method} on a base model with "
                f"these dimensions needs {expected}"
            )
    if manifest.method in PEFT_METHODS:
        _check_peft(folder, files, manifest, arrays["prompt_embeddings"])
    return ValidatedArtifact(folder, manifest, digest_entries(entries), size, files)


def _check_tensors(path: Path, manifest: Manifest):
    import numpy as np

    entries, _ = read_header(path)
    declared = manifest.tensors
    if set(entries) != set(declared):
        missing, unexpected = sorted(set(declared) - set(entries)), sorted(set(entries) - set(declared))
        raise InputError(f"{TENSORS_FILE}: tensors differ from the manifest (missing {missing}, unexpected {unexpected})")
    for name, spec in declared.items():
        entry = entries[name]
        if list(entry.shape) != spec.shape or entry.dtype != spec.dtype:
            raise InputError(
                f"{TENSORS_FILE}: tensor {name!r} is {entry.dtype}{list(entry.shape)}, "
                f"manifest says {spec.dtype}{spec.shape}"
            )
    arrays = load_numpy(path)
    for name, arr in arrays.items():
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise InputError(f"{TENSORS_FILE}: tensor {name!r} contains NaN or infinite values")
    return arrays


def _check_peft(folder: Path, files: list[str], manifest: Manifest, prompt) -> None:
    import numpy as np

    from promptreg.artifact.peft_export import adapter_config

    for required in (PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE):
        if required not in files:
            raise InputError(f"{folder}: missing {required} (the PEFT export of a {manifest.method} prompt)")
    try:
        cfg = json.loads((folder / PEFT_CONFIG_FILE).read_text(encoding="utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{PEFT_CONFIG_FILE}: not valid JSON: {exc}") from None
    except RecursionError:
        raise InputError(f"{PEFT_CONFIG_FILE}: not valid JSON: nested too deeply") from None
    except OSError as exc:
        raise InputError(f"cannot read {folder / PEFT_CONFIG_FILE}: {exc.strerror or exc}") from None
    if not isinstance(cfg, dict):
        raise InputError(f"{PEFT_CONFIG_FILE}: must be a JSON object")
    want = adapter_config(manifest)
    for key in ("peft_type", "task_type", "num_virtual_tokens", "token_dim", "num_layers",
                "num_attention_heads", "num_transformer_submodules"):
        if cfg.get(key) != want[key]:
            raise InputError(f"{PEFT_CONFIG_FILE}: {key} is {cfg.get(key)!r}, the manifest implies {want[key]!r}")
    peft_arrays = load_numpy(folder / PEFT_WEIGHTS_FILE)
    if set(peft_arrays) != {"prompt_embeddings"}:
        raise InputError(f"{PEFT_WEIGHTS_FILE}: must hold exactly one tensor, 'prompt_embeddings'")
    exported = peft_arrays["prompt_embeddings"]
    if exported.shape != prompt.shape or not np.array_equal(exported.astype(np.float32), prompt.astype(np.float32)):
        raise InputError(f"{PEFT_WEIGHTS_FILE}: prompt_embeddings differs from {TENSORS_FILE}")
