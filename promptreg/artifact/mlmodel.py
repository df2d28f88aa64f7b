"""The MLflow ``MLmodel`` of a soft-prompt artifact: written next to the mirrored artifact so that
``mlflow models serve`` / ``mlflow.pyfunc.load_model`` can load the version through
``promptreg.runtime.pyfunc`` (the ``loader_module`` recorded in every MLmodel: that module path is stable).

Invariants: the ``promptreg`` flavour records the artifact's sha256, so the loader verifies the files
before it uses them; MLflow's own files in a model folder are never part of the content address
(:func:`artifact_sha256`). mlflow is imported inside :func:`write_mlmodel` only.
"""

from __future__ import annotations

import json
from pathlib import Path

from promptreg.artifact.hashing import digest_entries, file_sha256, list_artifact_files
from promptreg.errors import IntegrityError

FLAVOR_NAME = "promptreg"
FLAVOR_FORMAT_VERSION = 1
LOADER_MODULE = "promptreg.runtime.pyfunc"
MLMODEL_FILE = "MLmodel"
DEFAULT_MAX_NEW_TOKENS = 64

# Files MLflow itself writes into a model folder; they are not part of the content-addressed artifact.
MLFLOW_FILES = frozenset({
    "MLmodel", "conda.yaml", "python_env.yaml", "requirements.txt", "registered_model_meta",
    "input_example.json", "serving_input_example.json", "model_config.yaml",
})
MLFLOW_DIRS = frozenset({"metadata"})


# ---------------------------------------------------------------------------------------- MLmodel
def _signature(manifest: dict):
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    task = manifest.get("task") or {}
    inputs = Schema([ColSpec("string", "text")])
    if (task.get("type") or "classification") == "classification":
        labels = list(task.get("verbalizer") or {})
        outputs = Schema([ColSpec("string", "label")] + [ColSpec("double", f"p_{lab}") for lab in labels])
        return ModelSignature(inputs=inputs, outputs=outputs)
    return ModelSignature(inputs=inputs, outputs=Schema([ColSpec("string", "text")]),
                          params=ParamSchema([ParamSpec("max_new_tokens", "long", DEFAULT_MAX_NEW_TOKENS)]))


def write_mlmodel(dest_dir: Path | str, manifest: dict, sha256: str, *, artifact_path: str = "soft_prompt",
                  run_id: str | None = None) -> Path:
    """Write ``dest_dir/MLmodel`` for the artifact with this manifest and sha256; return its path."""
    import mlflow.pyfunc
    from mlflow.models import Model

    task = manifest.get("task") or {}
    model = Model(artifact_path=artifact_path, run_id=run_id, signature=_signature(manifest))
    mlflow.pyfunc.add_to_model(model, loader_module=LOADER_MODULE, data=".")
    model.add_flavor(
        FLAVOR_NAME,
        format_version=FLAVOR_FORMAT_VERSION,
        sha256=sha256,
        method=manifest.get("method"),
        task=task.get("type") or "classification",
        base_model_fingerprint=(manifest.get("base_model") or {}).get("fingerprint"),
    )
    path = Path(dest_dir) / MLMODEL_FILE
    model.save(str(path))
    return path


def manifest_from_folder(folder: Path) -> dict | None:
    """The manifest JSON of an artifact folder, or None if it has none (used by the mirror)."""
    try:
        data = json.loads((Path(folder) / "promptreg.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_mlflow_file(rel: str) -> bool:
    parts = rel.split("/")
    return (len(parts) == 1 and parts[0] in MLFLOW_FILES) or parts[0] in MLFLOW_DIRS


def artifact_sha256(folder: Path) -> str:
    """The content address of the soft-prompt files in an MLflow model folder (MLflow's files left out)."""
    folder = Path(folder)
    rels = [rel for rel in list_artifact_files(folder) if not is_mlflow_file(rel)]
    if not rels:
        raise IntegrityError(f"{folder}: no soft-prompt artifact files next to the MLmodel")
    return digest_entries([(rel, file_sha256(folder / rel), (folder / rel).stat().st_size) for rel in rels])
