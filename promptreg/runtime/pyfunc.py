"""MLflow ``python_function`` flavour: serve a registered soft-prompt version with MLflow.

Every mirrored version's ``soft_prompt/`` artifact folder carries an ``MLmodel`` (written by the
mirror with :func:`write_mlmodel`) whose pyfunc flavour names this module as ``loader_module``, so

    mlflow models serve -m models:/NAME@production --env-manager local

answers the MLflow scoring protocol. MLflow calls :func:`_load_pyfunc` with the model folder
(``data: .``). Loading:

* verifies the artifact's files against the sha256 stored in the ``promptreg`` flavour of the
  ``MLmodel``, hashing only the content-addressed artifact files (MLflow's own files such as
  ``MLmodel``, ``registered_model_meta`` or ``requirements.txt`` are left out); a mismatch is refused;
* loads the base model from ``PROMPTREG_BASE_MODEL`` (a folder or ``smollm2``), else from the
  manifest's ``base_model.name_or_path`` when that folder exists, and refuses a base model whose
  fingerprint differs from the one the version was trained on.

``predict`` takes a DataFrame with a ``text`` column (or a list of strings / ``{"text": [...]}``).
Classification prompts return columns ``label`` and ``p_<label>`` (one per verbalizer label);
generation prompts return a ``text`` column (param ``max_new_tokens``, default 64).

The MLmodel itself is written by :mod:`promptreg.artifact.mlmodel` (the mirror, below serving, uses it);
nothing heavy is imported at module level.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from promptreg.artifact.mlmodel import (  # noqa: F401 - write_mlmodel/artifact_sha256 re-exported for callers
    DEFAULT_MAX_NEW_TOKENS,
    FLAVOR_FORMAT_VERSION,
    FLAVOR_NAME,
    MLMODEL_FILE,
    artifact_sha256,
    write_mlmodel,
)
from promptreg.errors import InputError, IntegrityError

BASE_MODEL_ENV = "PROMPTREG_BASE_MODEL"


def _read_yaml(path: Path) -> dict:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise IntegrityError(f"cannot read {path}: {' '.join(str(exc).split())[:200]}") from None
    return data if isinstance(data, dict) else {}


def _flavor_conf(folder: Path) -> dict:
    path = folder / MLMODEL_FILE
    if not path.is_file():
        raise IntegrityError(f"{folder}: no {MLMODEL_FILE}, so no recorded sha256 to verify the soft prompt against")
    conf = (_read_yaml(path).get("flavors") or {}).get(FLAVOR_NAME)
    if not isinstance(conf, dict) or not isinstance(conf.get("sha256"), str):
        raise IntegrityError(f"{path}: no '{FLAVOR_NAME}' flavour with a sha256: not a promptreg soft prompt")
    if conf.get("format_version") != FLAVOR_FORMAT_VERSION:
        raise IntegrityError(f"{path}: unsupported {FLAVOR_NAME} flavour format_version {conf.get('format_version')!r}")
    return conf


def _label(folder: Path, sha256: str) -> str:
    meta = folder / "registered_model_meta"
    if meta.is_file():
        try:
            data = _read_yaml(meta)
        except IntegrityError:
            data = {}
        if data.get("model_name") and data.get("model_version"):
            return f"{data['model_name']} (MLflow version {data['model_version']})"
    return f"soft prompt {sha256[:12]}"


def resolve_base_model(manifest: dict) -> str:
    """PROMPTREG_BASE_MODEL, else the manifest's base-model folder if it exists here."""
    env = os.environ.get(BASE_MODEL_ENV, "").strip()
    if env:
        return env
    name = (manifest.get("base_model") or {}).get("name_or_path")
    if name and Path(name).is_dir():
        return str(name)
    raise InputError(f"no base model for this soft prompt: set {BASE_MODEL_ENV} to the base-model folder "
                     f"(or 'smollm2'); the manifest names {name!r}, which is not a folder here")


class PromptregPyfuncModel:
    """What ``mlflow.pyfunc.load_model`` wraps: a verified soft prompt applied to its base model."""

    def __init__(self, loaded):
        self.loaded = loaded  # runtime.loader.LoadedPrompt

    @property
    def task(self) -> str:
        return self.loaded.task

    def get_raw_model(self):
        """The :class:`promptreg.runtime.loader.LoadedPrompt` (``PyFuncModel.get_raw_model()``)."""
        return self.loaded

    def predict(self, model_input: Any, params: dict | None = None):
        import pandas as pd

        texts = _texts(model_input)
        if self.loaded.task == "classification":
            labels = self.loaded.labels
            if not texts:
                return pd.DataFrame({"label": pd.Series([], dtype=object),
                                     **{f"p_{lab}": pd.Series([], dtype="float64") for lab in labels}})
            probs = self.loaded.classify(texts)
            out = {"label": [labels[i] for i in probs.argmax(axis=1)]}
            out.update({f"p_{lab}": probs[:, k].astype("float64") for k, lab in enumerate(labels)})
            return pd.DataFrame(out)
        max_new = _max_new_tokens(params)
        return pd.DataFrame({"text": pd.Series(self.loaded.generate(texts, max_new_tokens=max_new) if texts else [],
                                               dtype=object)})


def _max_new_tokens(params: dict | None) -> int:
    value = (params or {}).get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise InputError(f"max_new_tokens must be an integer, got {value!r}") from None
    if n < 1 or n > 4096:
        raise InputError(f"max_new_tokens must be between 1 and 4096, got {n}")
    return n


def _texts(model_input: Any) -> list[str]:
    import pandas as pd

    data = model_input
    if isinstance(data, pd.DataFrame):
        if "text" in data.columns:
            data = data["text"]
        elif len(data.columns) == 1:
            data = data.iloc[:, 0]
        else:
            raise InputError(f"input needs a 'text' column; got columns {[str(c) for c in data.columns]}")
    elif isinstance(data, dict):
        if "text" not in data:
            raise InputError(f"input needs a 'text' key; got keys {sorted(map(str, data))}")
        data = data["text"]
    if isinstance(data, str):
        data = [data]
    if isinstance(data, pd.Series):
        data = data.tolist()
        if len(data) == 1 and not isinstance(data[0], str) and hasattr(data[0], "__len__"):
            data = list(data[0])  # MLflow's schema enforcement turns {"text": [...]} into one row holding the list
    if hasattr(data, "tolist") and not isinstance(data, list):
        data = data.tolist()
    if not isinstance(data, (list, tuple)):
        raise InputError(f"input must be a DataFrame with a 'text' column or a list of strings, "
                         f"got {type(model_input).__name__}")
    for i, t in enumerate(data):
        if not isinstance(t, str):
            raise InputError(f"input row {i}: text must be a string, got {type(t).__name__}")
    return list(data)


def load_verified(folder: Path | str, *, base_model: str | None = None, device: str = "auto") -> PromptregPyfuncModel:
    """Verify the artifact in an MLflow model folder and load it on its base model."""
    from promptreg.artifact.validate import load_manifest
    from promptreg.runtime.loader import load_base_model, load_soft_prompt

    folder = Path(folder)
    want = _flavor_conf(folder)["sha256"]
    got = artifact_sha256(folder)
    if got != want:
        raise IntegrityError(f"{_label(folder, want)}: artifact files hash to {got[:12]}, but the version's "
                             f"sha256 is {want[:12]}: refusing to load it")
    manifest = load_manifest(folder).model_dump(mode="json")
    base = load_base_model(base_model or resolve_base_model(manifest), device=device)
    loaded = load_soft_prompt(folder, manifest, base, label=_label(folder, want), sha256=want)
    return PromptregPyfuncModel(loaded)


def _load_pyfunc(data_path: str, model_config: dict | None = None) -> PromptregPyfuncModel:
    """MLflow's ``loader_module`` entry point (``data_path`` = the model folder, as MLmodel says ``data: .``)."""
    return load_verified(Path(data_path))


__all__ = ["FLAVOR_NAME", "PromptregPyfuncModel", "artifact_sha256", "load_verified", "resolve_base_model",
           "write_mlmodel"]

