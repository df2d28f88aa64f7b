"""Mirror of registry versions into MLflow (tracking runs + model registry), for browsing.

promptreg's own database is the source of truth; this module only copies what it holds into MLflow:

* one experiment per prompt, ``promptreg/<prompt>/push`` (unless the version names an existing
  training run to attach to),
* one run per version (tagged ``promptreg.sha256``; found again by that tag after a crash), with
  params, metrics, ``promptreg.*`` tags, the artifact folder under ``soft_prompt/`` (plus an ``MLmodel``
  written next to it, so the version is an MLflow pyfunc model: promptreg.runtime.pyfunc) and the
  training data set as an MLflow dataset input whose digest is our fingerprint,
* one registered model per prompt and one model version per artifact sha256 (found again by the
  ``promptreg.sha256`` model-version tag), and aliases.

Every call is idempotent: mirroring the same record twice reuses the run and the model version.

This module is longer than the house's ~450 lines on purpose: it is one thing, the single adapter
between promptreg and MlflowClient (one class, every MLflow call behind one error translation and
the same retry/timeout settings), and splitting the class would scatter MLflow's quirks it documents.

MLflow facts this relies on (checked against mlflow 3.17 source):

* ``MlflowClient(tracking_uri=..., registry_uri=...)`` is used explicitly (built by
  promptreg.registry.mlflow_db.open_client: a SQLite database is created once, under a lock); no global
  MLflow state (tracking URI, active run) is touched, so several mirrors can coexist in one process.
* The HTTP client retries with exponential backoff (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, default 7,
  ``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR`` 2) and waits ``MLFLOW_HTTP_REQUEST_TIMEOUT`` (default 120 s)
  per request; both are read from the environment on every request. We ``setdefault`` them to 2 and
  20 so that an unreachable server fails within seconds while a user's own setting still wins.
  ``MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT`` is set the same way: otherwise ``set_terminated`` on an
  HTTP tracking URI prints "View run ... at ..." to stdout.
* A dataset digest is at most 36 characters (``mlflow.utils.validation.MAX_DATASET_DIGEST_SIZE``,
  a ``VARCHAR(36)`` column): the digest we log is the first 36 hex characters of our fingerprint
  (algorithm prefix such as ``sha256:`` stripped); the full fingerprint is kept in the input tag
  ``promptreg.dataset_fingerprint`` and the run tag ``promptreg.dataset``.
* Param values are limited to 6000 characters (``MAX_PARAM_VAL_LENGTH``) and a param cannot be
  changed once logged, so params already present on the run are skipped.
* ``search_model_versions`` results carry no aliases: aliases are read with ``get_registered_model``.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from promptreg.artifact.hashing import list_artifact_files
from promptreg.errors import MirrorError, PromptregError, StoreUnavailableError

ARTIFACT_PATH = "soft_prompt"
TAG_PREFIX = "promptreg."
TAG_SHA256 = "promptreg.sha256"
TAG_MANAGED = "promptreg.managed"
INPUT_TAG_FINGERPRINT = "promptreg.dataset_fingerprint"

DEFAULT_HTTP_MAX_RETRIES = "2"
DEFAULT_HTTP_TIMEOUT_S = "20"

# Fallback values if mlflow.utils.validation moves them (checked in 3.17).
_MAX_PARAM_VAL_LENGTH = 6000
_MAX_TAG_VAL_LENGTH = 8000
_MAX_ENTITY_KEY_LENGTH = 250
_MAX_DATASET_DIGEST_SIZE = 36
_MAX_DATASET_NAME_SIZE = 500
_MAX_INPUT_TAG_VALUE_SIZE = 500
_MAX_PARAMS_TAGS_PER_BATCH = 100
_MAX_METRICS_PER_BATCH = 1000

_UNREACHABLE_EXC_NAMES = {
    "ConnectionError",  # requests.exceptions.ConnectionError and builtin
    "ConnectTimeout",
    "ReadTimeout",
    "Timeout",
    "ConnectTimeoutError",
    "MaxRetryError",
    "NewConnectionError",
    "ProtocolError",
    "RemoteDisconnected",
    "OperationalError",  # sqlalchemy: database unreachable / unopenable
    "EndpointConnectionError",
}

T = TypeVar("T")


@dataclass
class VersionRecord:
    prompt: str
    prompt_description: str
    version: int
    sha256: str
    method: str
    folder: Path
    params: dict[str, object]
    metrics: dict[str, float]
    base_model_fingerprint: str
    base_model_name: str | None = None
    dataset_fingerprint: str | None = None
    dataset_name: str | None = None
    dataset_source: str | None = None
    dataset_rows: int | None = None
    created_by: str = ""
    run_id: str | None = None
    description: str = ""


@dataclass
class MirrorResult:
    run_id: str
    model_version: str


def experiment_name(prompt: str) -> str:
    return f"promptreg/{prompt}/push"


def _sanitize_segment(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "experiment"


def _redact_uri(uri: str) -> str:
    """Drop user:password from a URI before it goes into a message."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri
    if parts.username or parts.password:
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return uri


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_unreachable(exc: BaseException) -> bool:
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, (ConnectionError, TimeoutError)) or type(e).__name__ in _UNREACHABLE_EXC_NAMES:
            return True
        for nxt in (e.__cause__, e.__context__):
            if nxt is not None:
                stack.append(nxt)
        for arg in getattr(e, "args", ()):
            if isinstance(arg, BaseException):
                stack.append(arg)
    # MLflow flattens request failures into a message.
    msg = str(exc)
    return "Max retries exceeded" in msg or "Connection refused" in msg or "Failed to establish" in msg


def _limit(name: str, fallback: int) -> int:
    try:
        from mlflow.utils import validation

        return int(getattr(validation, name))
    except (ImportError, AttributeError, TypeError, ValueError):
        return fallback


def _sanitize_key(key: str) -> str:
    """Make a param/metric key acceptable to MLflow (``[/\\w.\\- :]``, no path tricks)."""
    key = re.sub(r"[^/\w.\- :]", "_", str(key))
    key = re.sub(r"/+", "/", key).strip("/")
    parts = [p if p not in (".", "..") else "_" for p in key.split("/")]
    key = "/".join(parts) or "_"
    return key[: _limit("MAX_ENTITY_KEY_LENGTH", _MAX_ENTITY_KEY_LENGTH)]


def _stringify(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list, tuple)):
        try:
            return json.dumps(value, sort_keys=True, default=str)
        except (TypeError, ValueError):
            return str(value)
    return str(value)


def _chunks(items: list[T], size: int) -> list[list[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class MlflowMirror:
    """Idempotent mirror of promptreg versions into one MLflow tracking server / database."""

    def __init__(self, tracking_uri: str, artifact_location: str | None = None):
        if not tracking_uri:
            raise MirrorError("MLflow tracking URI is empty")
        self.tracking_uri = tracking_uri
        self.artifact_location = artifact_location
        self._display_uri = _redact_uri(tracking_uri)
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", DEFAULT_HTTP_MAX_RETRIES)
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", DEFAULT_HTTP_TIMEOUT_S)
        # set_terminated() on an HTTP store writes "View run ... at ..." to stdout: keep CLI output ours.
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        self._client_obj: Any = None

    # ------------------------------------------------------------------ plumbing
    @property
    def _client(self):
        if self._client_obj is None:
            from promptreg.registry.mlflow_db import open_client

            # a SQLite database is created once under a lock, or refused if half-migrated (mlflow_db)
            self._client_obj = open_client(self.tracking_uri)
        return self._client_obj

    def _wrap(self, what: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` translating any MLflow / connection failure into a one-line promptreg error."""
        try:
            return fn()
        except PromptregError:
            raise
        except Exception as e:  # translate everything coming out of MLflow
            detail = _one_line(f"{type(e).__name__}: {e}")
            if _is_unreachable(e):
                raise StoreUnavailableError(
                    f"MLflow at {self._display_uri} unreachable: could not {what}: {detail}"
                ) from e
            raise MirrorError(f"MLflow mirror at {self._display_uri} failed to {what}: {detail}") from e

    @staticmethod
    def _error_code(exc: BaseException) -> str | None:
        return getattr(exc, "error_code", None)

    # ------------------------------------------------------------------ public API
    def check(self) -> None:
        """Raise StoreUnavailableError (one line) unless the tracking server / database answers."""

        try:
            self._client.search_experiments(max_results=1)
        except PromptregError:
            raise
        except Exception as e:  # any failure here means: not usable
            raise StoreUnavailableError(
                f"MLflow at {self._display_uri} unreachable: {_one_line(f'{type(e).__name__}: {e}')}"
            ) from e

    def mirror_version(self, rec: VersionRecord) -> MirrorResult:
        folder = Path(rec.folder)
        files = list_artifact_files(folder)  # raises InputError on a missing folder / symlink
        if not files:
            raise MirrorError(f"cannot mirror {rec.prompt} v{rec.version}: artifact folder is empty: {folder}")

        tags = self._version_tags(rec)
        if rec.run_id is not None:
            run_id = self._wrap(f"read run {rec.run_id}", lambda: self._client.get_run(rec.run_id).info.run_id)
            owned = False
        else:
            exp_id = self._wrap("get or create the experiment",
                                lambda: self._ensure_experiment(experiment_name(rec.prompt), rec.prompt))
            run_id = self._wrap("find or create the run", lambda: self._find_or_create_run(exp_id, rec, tags))
            owned = True

        self._wrap("log params, metrics and tags", lambda: self._log_run_data(run_id, rec, tags))
        if rec.dataset_fingerprint:
            self._wrap("log the dataset input", lambda: self._log_dataset(
                run_id, rec.dataset_fingerprint, rec.dataset_name, rec.dataset_source, rec.dataset_rows))
        self._wrap("upload the artifact folder", lambda: self._log_artifacts(run_id, folder, files))
        self._wrap("upload the MLmodel", lambda: self._log_mlmodel(run_id, rec.sha256, folder))
        if owned:
            self._wrap("finish the run", lambda: self._finish_run(run_id))

        self._wrap("create the registered model", lambda: self._ensure_registered_model(rec))
        existing = self.find_model_version(rec.prompt, rec.sha256)
        if existing is not None:
            return MirrorResult(run_id=run_id, model_version=existing)

        def create():
            run = self._client.get_run(run_id)
            source = run.info.artifact_uri.rstrip("/") + "/" + ARTIFACT_PATH
            mv = self._client.create_model_version(
                name=rec.prompt,
                source=source,
                run_id=run_id,
                # state tags start as a new version's; set_alias and `promptreg sync` keep them equal to the DB
                tags={**tags, "promptreg.aliases": "none", "promptreg.status": "active"},
                description=rec.description or None,
                await_creation_for=0,
            )
            return str(mv.version)

        version = self._wrap("create the model version", create)
        return MirrorResult(run_id=run_id, model_version=version)

    def set_alias(self, prompt: str, alias: str, model_version: str) -> None:
        self._wrap(
            f"set alias {alias!r} of {prompt} to version {model_version}",
            lambda: self._client.set_registered_model_alias(prompt, alias, str(model_version)),
        )

    def delete_alias(self, prompt: str, alias: str) -> None:
        def go():
            try:
                self._client.delete_registered_model_alias(prompt, alias)
            except Exception as e:
                if self._error_code(e) == "RESOURCE_DOES_NOT_EXIST":
                    return
                raise

        self._wrap(f"delete alias {alias!r} of {prompt}", go)

    def get_aliases(self, prompt: str) -> dict[str, str]:
        """alias -> MLflow model version; ``{}`` when the prompt is not mirrored (yet)."""

        def go():
            try:
                rm = self._client.get_registered_model(prompt)
            except Exception as e:
                if self._error_code(e) == "RESOURCE_DOES_NOT_EXIST":
                    return {}
                raise
            return {str(a): str(v) for a, v in (rm.aliases or {}).items()}

        return self._wrap(f"read the aliases of {prompt}", go)

    def version_tags(self, prompt: str) -> dict[str, dict[str, str]]:
        """MLflow model version -> its tags, for every version of ``prompt`` (one paged search)."""

        def go():
            out: dict[str, dict[str, str]] = {}
            token = None
            while True:
                try:
                    page = self._client.search_model_versions(filter_string=f"name = {_quote(prompt)}",
                                                              max_results=1000, page_token=token)
                except Exception as e:
                    if self._error_code(e) == "RESOURCE_DOES_NOT_EXIST":
                        return out
                    raise
                for mv in page:
                    out[str(mv.version)] = {str(k): str(v) for k, v in (mv.tags or {}).items()}
                token = getattr(page, "token", None)
                if not token:
                    return out

        return self._wrap(f"read the version tags of {prompt}", go)

    def set_version_tags(self, prompt: str, model_version: str, tags: dict[str, str]) -> None:
        max_tag = _limit("MAX_TAG_VAL_LENGTH", _MAX_TAG_VAL_LENGTH)

        def go():
            for k, v in tags.items():
                self._client.set_model_version_tag(prompt, str(model_version), k, _stringify(v)[:max_tag])

        self._wrap(f"tag model version {model_version} of {prompt}", go)

    # ------------------------------------------------------------------ descriptions (promptreg.services.describe)
    def update_descriptions(self, prompt: str, model_md: str | None = None,
                            versions: dict[str, str] | None = None) -> None:
        """Set the registered model's description (unless None) and these model versions' descriptions."""

        def go():
            if model_md is not None:
                self._client.update_registered_model(prompt, description=model_md)
            for mv, md in (versions or {}).items():
                self._client.update_model_version(prompt, str(mv), description=md)

        self._wrap(f"update the descriptions of {prompt}", go)

    def descriptions(self, prompt: str) -> tuple[str | None, dict[str, str]]:
        """(registered model's description — None when the prompt is not mirrored —, model version -> its
        description)."""

        def go():
            try:
                rm = self._client.get_registered_model(prompt)
            except Exception as e:
                if self._error_code(e) == "RESOURCE_DOES_NOT_EXIST":
                    return None, {}
                raise
            out: dict[str, str] = {}
            token = None
            while True:
                page = self._client.search_model_versions(filter_string=f"name = {_quote(prompt)}",
                                                          max_results=1000, page_token=token)
                for mv in page:
                    out[str(mv.version)] = mv.description or ""
                token = getattr(page, "token", None)
                if not token:
                    return rm.description or "", out

        return self._wrap(f"read the descriptions of {prompt}", go)

    def run_experiment_id(self, run_id: str) -> str | None:
        """The experiment of a run (for ``#/experiments/<id>/runs/<run>`` links); None if the run is gone."""
        cache = self.__dict__.setdefault("_experiment_of", {})
        if run_id not in cache:
            def go():
                try:
                    return str(self._client.get_run(run_id).info.experiment_id)
                except Exception as e:
                    if self._error_code(e) == "RESOURCE_DOES_NOT_EXIST":
                        return None
                    raise

            found = self._wrap(f"read run {run_id}", go)
            if found is None:
                return None
            cache[run_id] = found
        return cache[run_id]

    def find_model_version(self, prompt: str, sha256: str) -> str | None:
        """MLflow model version of ``prompt`` tagged ``promptreg.sha256 = sha256`` (lowest if several)."""

        def go():
            flt = f"name = {_quote(prompt)} and tags.`{TAG_SHA256}` = {_quote(sha256)}"
            try:
                mvs = self._client.search_model_versions(filter_string=flt)
            except Exception as e:
                if self._error_code(e) == "RESOURCE_DOES_NOT_EXIST":
                    return None
                raise
            versions = sorted(int(mv.version) for mv in mvs)
            return str(versions[0]) if versions else None

        return self._wrap(f"search model versions of {prompt}", go)

    # ------------------------------------------------------------------ steps
    def _version_tags(self, rec: VersionRecord) -> dict[str, str]:
        return {
            "promptreg.prompt": rec.prompt,
            "promptreg.version": str(rec.version),
            TAG_SHA256: rec.sha256,
            "promptreg.base_model": rec.base_model_fingerprint or "none",
            "promptreg.base_model_name": rec.base_model_name or "none",
            "promptreg.dataset": rec.dataset_fingerprint or "none",
            "promptreg.method": rec.method,
            "promptreg.created_by": rec.created_by,
        }

    def _experiment_artifact_location(self, name: str) -> str | None:
        root = self.artifact_location
        if not root:
            return None
        scheme = urlsplit(root).scheme
        if len(scheme) <= 1:  # plain path (or a Windows drive letter)
            root = Path(root).expanduser().resolve().as_uri()
        return root.rstrip("/") + "/" + _sanitize_segment(name)

    def _ensure_experiment(self, name: str, prompt: str | None) -> str:
        exp = self._client.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                self._client.restore_experiment(exp.experiment_id)
            return exp.experiment_id
        try:
            return self._client.create_experiment(
                name,
                artifact_location=self._experiment_artifact_location(name),
                tags={TAG_MANAGED: "true", **({"promptreg.prompt": prompt} if prompt else {})},
            )
        except Exception as e:
            if self._error_code(e) == "RESOURCE_ALREADY_EXISTS":  # lost a race with another pusher
                exp = self._client.get_experiment_by_name(name)
                if exp is not None:
                    return exp.experiment_id
            raise

    def _find_or_create_run(self, experiment_id: str, rec: VersionRecord, tags: dict[str, str]) -> str:
        runs = self._client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{TAG_SHA256}` = {_quote(rec.sha256)}",
            order_by=["attributes.start_time ASC"],
            max_results=10,
        )
        if runs:
            return runs[0].info.run_id
        run = self._client.create_run(experiment_id, tags=tags, run_name=f"v{rec.version}")
        return run.info.run_id

    def _log_run_data(self, run_id: str, rec: VersionRecord, tags: dict[str, str]) -> None:
        from mlflow.entities import Metric, Param, RunTag

        run = self._client.get_run(run_id)
        have_params = run.data.params
        have_metrics = run.data.metrics
        max_val = _limit("MAX_PARAM_VAL_LENGTH", _MAX_PARAM_VAL_LENGTH)
        max_tag = _limit("MAX_TAG_VAL_LENGTH", _MAX_TAG_VAL_LENGTH)

        params: dict[str, str] = {}
        for k, v in rec.params.items():
            key = _sanitize_key(k)
            if key in have_params or key in params:
                continue  # MLflow params are immutable: never re-log
            params[key] = _stringify(v)[:max_val]

        now = int(time.time() * 1000)
        metrics: list[Any] = []
        for k, v in rec.metrics.items():
            key = _sanitize_key(k)
            val = float(v)
            old = have_metrics.get(key)
            if old is not None and (old == val or (math.isnan(old) and math.isnan(val))):
                continue  # already mirrored
            metrics.append(Metric(key, val, now, 0))

        run_tags = [
            RunTag(k, v[:max_tag]) for k, v in tags.items() if run.data.tags.get(k) != v[:max_tag]
        ]

        param_list = [Param(k, v) for k, v in params.items()]
        per_batch = _limit("MAX_PARAMS_TAGS_PER_BATCH", _MAX_PARAMS_TAGS_PER_BATCH)
        for chunk in _chunks(param_list, per_batch):
            self._client.log_batch(run_id, params=chunk)
        for chunk in _chunks(run_tags, per_batch):
            self._client.log_batch(run_id, tags=chunk)
        for chunk in _chunks(metrics, _limit("MAX_METRICS_PER_BATCH", _MAX_METRICS_PER_BATCH)):
            self._client.log_batch(run_id, metrics=chunk)

    def _dataset_source(self, raw: str | None, fingerprint: str):
        from mlflow.data.code_dataset_source import CodeDatasetSource

        if not raw:
            return CodeDatasetSource(tags={INPUT_TAG_FINGERPRINT: fingerprint})
        if raw.startswith("hf://"):
            from mlflow.data.huggingface_dataset_source import HuggingFaceDatasetSource

            path = raw[len("hf://") :]
            path = path.removeprefix("datasets/")
            return HuggingFaceDatasetSource(path=path)
        from mlflow.data.dataset_source_registry import resolve_dataset_source

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # mlflow warns about its own duplicate registrations
                return resolve_dataset_source(raw)
        except Exception:  # noqa: BLE001 - any unresolvable source falls back to a plain record
            return CodeDatasetSource(tags={"uri": raw})

    def _log_dataset(self, run_id: str, fingerprint: str, name: str | None, source: str | None,
                     rows: int | None, context: str = "train") -> None:
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.entities import Dataset as DatasetEntity
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        fp = fingerprint or ""
        digest = dataset_digest(fp)
        name = (name or f"dataset-{digest[:12]}")[: _limit("MAX_DATASET_NAME_SIZE", _MAX_DATASET_NAME_SIZE)]
        ds = MetaDataset(source=self._dataset_source(source, fp), name=name, digest=digest)
        entity = ds._to_mlflow_entity()
        if rows is not None:
            entity = DatasetEntity(
                name=entity.name,
                digest=entity.digest,
                source_type=entity.source_type,
                source=entity.source,
                schema=entity.schema,
                profile=json.dumps({"num_rows": int(rows)}),
            )
        # Idempotent: MLflow dedups datasets by (experiment, name, digest) and inputs by (dataset, run).
        run = self._client.get_run(run_id)
        for di in run.inputs.dataset_inputs if run.inputs else []:
            if di.dataset.name == entity.name and di.dataset.digest == entity.digest:
                return
        max_in = _limit("MAX_INPUT_TAG_VALUE_SIZE", _MAX_INPUT_TAG_VALUE_SIZE)
        input_tags = [InputTag(MLFLOW_DATASET_CONTEXT, context), InputTag(INPUT_TAG_FINGERPRINT, fp[:max_in])]
        self._client.log_inputs(run_id, datasets=[DatasetInput(entity, tags=input_tags)])

    def _list_remote(self, run_id: str, path: str) -> dict[str, int | None]:
        out: dict[str, int | None] = {}
        for fi in self._client.list_artifacts(run_id, path):
            if fi.is_dir:
                out.update(self._list_remote(run_id, fi.path))
            else:
                out[fi.path] = fi.file_size
        return out

    def _log_artifacts(self, run_id: str, folder: Path, files: list[str]) -> None:
        want = {f"{ARTIFACT_PATH}/{rel}": (folder / rel).stat().st_size for rel in files}
        have = self._list_remote(run_id, ARTIFACT_PATH)
        if all(k in have and (have[k] is None or have[k] == size) for k, size in want.items()):
            return
        for rel in files:
            parent = Path(rel).parent.as_posix()
            dest = ARTIFACT_PATH if parent == "." else f"{ARTIFACT_PATH}/{parent}"
            self._client.log_artifact(run_id, str(folder / rel), artifact_path=dest)

    def _log_mlmodel(self, run_id: str, sha256: str, folder: Path) -> None:
        from promptreg.artifact.mlmodel import manifest_from_folder

        manifest = manifest_from_folder(folder)
        if manifest is not None:  # a promptreg artifact (the registry validated it): make it an MLflow model
            self._upload_mlmodel(run_id, sha256, manifest)

    def _upload_mlmodel(self, run_id: str, sha256: str, manifest: dict) -> bool:
        """Add ``soft_prompt/MLmodel`` (pyfunc flavour ``promptreg.runtime.pyfunc``, promptreg flavour with the
        sha256) to the run unless it is there. Written in a temporary folder and uploaded as one extra file:
        the artifact in our store, and the files hashed into its sha256, are untouched."""
        import tempfile

        from promptreg.artifact.mlmodel import MLMODEL_FILE, write_mlmodel

        if any(fi.path == f"{ARTIFACT_PATH}/{MLMODEL_FILE}" for fi in self._client.list_artifacts(run_id, ARTIFACT_PATH)):
            return False
        with tempfile.TemporaryDirectory(prefix="promptreg-mlmodel-") as tmp:
            path = write_mlmodel(tmp, manifest, sha256, artifact_path=ARTIFACT_PATH, run_id=run_id)
            self._client.log_artifact(run_id, str(path), artifact_path=ARTIFACT_PATH)
        return True

    def ensure_mlmodel(self, run_id: str, sha256: str, manifest: dict) -> bool:
        """For versions mirrored before MLmodel existed (``sync``): add it; True if it was missing."""
        return self._wrap(f"add the MLmodel to run {run_id}", lambda: self._upload_mlmodel(run_id, sha256, manifest))

    def _finish_run(self, run_id: str) -> None:
        run = self._client.get_run(run_id)
        if run.info.status != "FINISHED":
            self._client.set_terminated(run_id, status="FINISHED")

    def _ensure_registered_model(self, rec: VersionRecord) -> None:
        try:
            self._client.get_registered_model(rec.prompt)
            return
        except Exception as e:
            if self._error_code(e) != "RESOURCE_DOES_NOT_EXIST":
                raise
        try:
            self._client.create_registered_model(
                rec.prompt, tags={TAG_MANAGED: "true"}, description=rec.prompt_description or None
            )
        except Exception as e:
            if self._error_code(e) != "RESOURCE_ALREADY_EXISTS":
                raise


    # ------------------------------------------------------------------ runs of our own jobs (training, eval, drift)
    def start_run(self, experiment: str, run_name: str, *, prompt: str | None = None,
                  tags: dict[str, str] | None = None) -> str:
        """Create a run in ``experiment`` (created if missing, under our artifact location); return its id."""

        def go():
            exp_id = self._ensure_experiment(experiment, prompt)
            run_tags = {TAG_MANAGED: "true", **(tags or {})}
            return self._client.create_run(exp_id, tags=run_tags, run_name=run_name).info.run_id

        return self._wrap(f"start a run in {experiment}", go)

    def log_params(self, run_id: str, params: dict[str, object]) -> None:
        from mlflow.entities import Param

        max_val = _limit("MAX_PARAM_VAL_LENGTH", _MAX_PARAM_VAL_LENGTH)
        items = [Param(_sanitize_key(k), _stringify(v)[:max_val]) for k, v in params.items()]
        per_batch = _limit("MAX_PARAMS_TAGS_PER_BATCH", _MAX_PARAMS_TAGS_PER_BATCH)
        self._wrap("log params", lambda: [self._client.log_batch(run_id, params=c) for c in _chunks(items, per_batch)])

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        max_tag = _limit("MAX_TAG_VAL_LENGTH", _MAX_TAG_VAL_LENGTH)
        items = [RunTag(_sanitize_key(k), str(v)[:max_tag]) for k, v in tags.items()]
        per_batch = _limit("MAX_PARAMS_TAGS_PER_BATCH", _MAX_PARAMS_TAGS_PER_BATCH)
        self._wrap("set tags", lambda: [self._client.log_batch(run_id, tags=c) for c in _chunks(items, per_batch)])

    def log_metrics(self, run_id: str, rows: list[tuple[str, float, int]]) -> None:
        """Log (key, value, step) rows in batches."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(_sanitize_key(k), float(v), now, int(step)) for k, v, step in rows]
        per_batch = _limit("MAX_METRICS_PER_BATCH", _MAX_METRICS_PER_BATCH)
        self._wrap("log metrics", lambda: [self._client.log_batch(run_id, metrics=c) for c in _chunks(items, per_batch)])

    def log_dataset(self, run_id: str, fingerprint: str, *, name: str | None = None, source: str | None = None,
                    rows: int | None = None, context: str = "train") -> None:
        """Attach a dataset input whose digest is OUR fingerprint (truncated to MLflow's limit)."""
        self._wrap("log the dataset input", lambda: self._log_dataset(run_id, fingerprint, name, source, rows, context))

    def log_dict(self, run_id: str, data: dict, artifact_file: str) -> None:
        self._wrap(f"log {artifact_file}", lambda: self._client.log_dict(run_id, data, artifact_file))

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self._wrap(f"log {artifact_file}", lambda: self._client.log_text(run_id, text, artifact_file))

    def log_figure(self, run_id: str, figure, artifact_file: str) -> None:
        self._wrap(f"log {artifact_file}", lambda: self._client.log_figure(run_id, figure, artifact_file))

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self._wrap(f"log {Path(path).name}", lambda: self._client.log_artifact(run_id, str(path), artifact_path))

    def log_table(self, run_id: str, data: dict[str, list], artifact_file: str) -> None:
        self._wrap(f"log {artifact_file}", lambda: self._client.log_table(run_id, data=data, artifact_file=artifact_file))

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self._wrap("end the run", lambda: self._client.set_terminated(run_id, status=status))


def dataset_digest(fingerprint: str) -> str:
    """The MLflow dataset digest for our fingerprint: algorithm prefix stripped, cut to MLflow's
    maximum digest length (36 in mlflow 3.17)."""
    core = fingerprint.rsplit(":", 1)[-1] if fingerprint else "none"
    return core[: _limit("MAX_DATASET_DIGEST_SIZE", _MAX_DATASET_DIGEST_SIZE)]


def _quote(value: str) -> str:
    """A quoted string literal for an MLflow search filter (MLflow's parser has no escapes)."""
    value = str(value)
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise MirrorError(f"cannot search MLflow for a value containing both quote characters: {value!r}")


__all__ = ["MirrorResult", "MlflowMirror", "VersionRecord", "dataset_digest", "experiment_name"]
