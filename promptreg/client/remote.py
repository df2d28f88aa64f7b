"""``RemoteRegistry``: the methods of ``promptreg.Registry`` over HTTP, for remote mode.

Invariants:
- Same names, same arguments, same result types as the direct facade (rebuilt with
  ``promptreg.codec.decode``), same error classes (the server's error ``code``): a caller, and the
  CLI, cannot tell the modes apart by what comes back.
- Nothing is trusted from the wire: a pulled artifact is unpacked into a temporary sibling of its
  destination and hashed before it is moved into place (a mismatch leaves nothing behind); a push
  sends the sha256 the client computed, and the server refuses content that hashes otherwise.
- Suites and drift data are uploaded (client.bundle); base models, devices and MLflow belong to the
  server, so arguments that name local ones are refused with a one-line error, never ignored.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

from promptreg.client.http import API, LONG_TIMEOUT_S, ApiClient
from promptreg.codec import decode
from promptreg.errors import InputError, IntegrityError
from promptreg.settings import Settings

_LOCAL_ONLY = ("{what} runs where the stores are: in remote mode (--url / PROMPTREG_URL) {hint}")


def _local_only(what: str, hint: str) -> InputError:
    return InputError(_LOCAL_ONLY.format(what=what, hint=hint))


def _q(ref: str) -> str:
    """A reference as one path segment (its '/' and NUL stay encoded: the server answers 400)."""
    return quote(str(ref), safe=":@")


class _ServerOwnsMlflow:
    """What a training run in remote mode logs to MLflow: nothing (see :meth:`RemoteRegistry.train`)."""

    def start_run(self, *_args, **_kwargs) -> None:
        return None

    def log_params(self, *_args, **_kwargs) -> None: ...
    def log_dataset(self, *_args, **_kwargs) -> None: ...
    def log_dict(self, *_args, **_kwargs) -> None: ...
    def log_text(self, *_args, **_kwargs) -> None: ...
    def log_metrics(self, *_args, **_kwargs) -> None: ...
    def log_figure(self, *_args, **_kwargs) -> None: ...
    def end_run(self, *_args, **_kwargs) -> None: ...


class RemoteRegistry:
    """The registry of a ``promptreg server``; ``settings`` are the client's (its cache folder)."""

    remote = True

    def __init__(self, api: ApiClient, settings: Settings | None = None):
        self.api = api
        self.settings = settings or Settings.load()

    def __repr__(self) -> str:
        return f"RemoteRegistry({self.api.url!r})"

    # ----- helpers ------------------------------------------------------------------------------
    def _get(self, tp, path: str, **params):
        return decode(tp, self.api.request("GET", path, params={k: v for k, v in params.items() if v is not None}))

    def _upload(self, tp, path: str, folder: Path | None, params: dict[str, Any], headers=None):
        from promptreg.artifact.transfer import CONTENT_TYPE, pack

        params = {k: (str(v).lower() if isinstance(v, bool) else v) for k, v in params.items() if v is not None}
        content = pack(folder) if folder is not None else b""
        hdrs = {"Content-Type": CONTENT_TYPE, **(headers or {})}
        return decode(tp, self.api.request("POST", path, params=params, content=content, headers=hdrs,
                                           timeout_s=LONG_TIMEOUT_S))

    @staticmethod
    def _no_local_model(model, device: str = "auto") -> None:
        if model is not None:
            raise InputError("in remote mode the server evaluates with its own base model: drop --model "
                             "(the server uses its base_model setting, or --env NAME where supported)")
        if device not in (None, "auto"):
            raise InputError("in remote mode the server chooses the device: drop --device")

    def _with_suite(self, suite, fn):
        """Call ``fn(folder)`` with the suite packed as a bundle folder (None: no suite)."""
        from promptreg.client.bundle import write_suite_bundle
        from promptreg.evaluation.suite import Suite, load_suite

        if suite is None:
            return fn(None)
        loaded = suite if isinstance(suite, Suite) else load_suite(Path(suite))   # local errors, local paths
        with tempfile.TemporaryDirectory(prefix="promptreg-suite-") as tmp:
            return fn(write_suite_bundle(loaded, Path(tmp) / "bundle"))

    # ----- setup --------------------------------------------------------------------------------
    def init(self):
        raise _local_only("init", "the server's stores are set up on the server (`promptreg db upgrade` there)")

    def doctor(self):
        from promptreg.services.views import Check

        checks = self._get(list[Check], f"{API}/doctor")
        me = self.whoami()
        return [Check("promptreg server", self.api.url, True, f"as {me['name']} ({me['role']})",
                      self.settings.sources.get("url", "")), *checks]

    def whoami(self) -> dict:
        return self.api.request("GET", f"{API}/whoami")

    # ----- registry -----------------------------------------------------------------------------
    def push(self, folder: Path | str, name: str, description: str | None = None, run_id: str | None = None):
        from promptreg.artifact.validate import validate_artifact
        from promptreg.refs import check_name, check_text
        from promptreg.services.views import PushResult

        if run_id is not None:
            raise InputError("in remote mode a push cannot attach an MLflow run (the server owns MLflow)")
        check_name(name)
        check_text(description, "description")
        art = validate_artifact(folder)                 # the same one-line errors as a direct push
        return self._upload(PushResult, f"{API}/prompts/{_q(name)}/versions", art.folder,
                            {"description": description}, headers={"X-Promptreg-Sha256": art.sha256})

    def list_prompts(self):
        from promptreg.services.views import PromptSummary

        return self._get(list[PromptSummary], f"{API}/prompts")

    def list_versions(self, name: str, *, limit: int | None = None, offset: int = 0):
        return self.version_page(name, limit=limit, offset=offset)[0]

    def version_page(self, name: str, *, limit: int | None = None, offset: int = 0):
        """(a page of the versions, oldest first, whether more follow): the server lists them, the page is
        cut here (the same result as direct mode's two-query page)."""
        from promptreg.services.views import VersionInfo

        versions = self._get(list[VersionInfo], f"{API}/prompts/{_q(name)}/versions")
        end = None if limit is None else offset + limit
        return versions[offset:end], end is not None and end < len(versions)

    def history(self, name: str):
        from promptreg.services.views import AuditEntry

        return self._get(list[AuditEntry], f"{API}/prompts/{_q(name)}/history")

    def show(self, ref):
        from promptreg.services.views import VersionInfo

        return self._get(VersionInfo, f"{API}/versions/{_q(ref)}")

    def manifest(self, ref) -> dict:
        return self.api.request("GET", f"{API}/versions/{_q(ref)}/manifest")

    def _download(self, ref, dest: Path):
        """The artifact of ``ref`` into the new folder ``dest``, verified against the registry's sha256."""
        from promptreg.artifact.hashing import folder_sha256
        from promptreg.artifact.transfer import unpack

        info = self.show(ref)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".pull-", dir=dest.parent))
        try:
            with self.api.stream("GET", f"{API}/versions/{_q(f'{info.name}:{info.version}')}/artifact",
                                 timeout_s=LONG_TIMEOUT_S) as response:
                unpack(response.iter_bytes(), tmp / "a", max_bytes=max(info.size_bytes, 1) * 2 + (1 << 20))
            got = folder_sha256(tmp / "a")
            if got != info.sha256:
                raise IntegrityError(f"sha256 mismatch for {info.name}:{info.version} from {self.api.url}: "
                                     f"expected {info.sha256}, got {got} (artifact tampered or corrupt)")
            (tmp / "a").rename(dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return info, dest

    def pull(self, ref, dest: Path | str) -> Path:
        dest = Path(dest)
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise InputError(f"destination exists and is not an empty folder: {dest}")
        if dest.exists():
            dest.rmdir()
        return self._download(ref, dest)[1]

    def fetch_verified(self, ref):
        """A verified local copy of a version, cached under the client's home by sha256."""
        from promptreg.artifact.hashing import folder_sha256

        info = self.show(ref)
        cache = self.settings.home / "cache" / info.sha256
        if cache.is_dir():
            if folder_sha256(cache) != info.sha256:
                raise IntegrityError(f"sha256 mismatch for cached {info.name}:{info.version} at {cache} "
                                     "(artifact tampered or corrupt)")
            return info, cache
        tmp = cache.parent / f".fetch-{info.sha256[:12]}-{id(self)}"
        try:
            self._download(f"{info.name}:{info.version}", tmp)
            try:
                tmp.rename(cache)
            except OSError:
                pass  # a concurrent fetch won; it is verified on the next read
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return info, cache

    def sync(self, *, grace_s: float = 0.0):
        from promptreg.services.views import SyncReport

        return decode(SyncReport, self.api.request("POST", f"{API}/sync", params={"grace_s": grace_s},
                                                   timeout_s=LONG_TIMEOUT_S))

    # ----- training and import ------------------------------------------------------------------
    @property
    def mirror(self) -> _ServerOwnsMlflow:
        return _ServerOwnsMlflow()

    def train(self, job):
        """Trained here, next to the data and the base model; with ``job.push`` the artifact is pushed
        through the server (re-validated and re-hashed there). The client holds no MLflow credentials, so
        the training curves are not logged: the server mirrors the version (manifest metrics,
        fingerprints) into an MLflow run of its own. The manifest's ``created_by`` is the token's
        principal, as the server knows it."""
        import dataclasses

        from promptreg.services.train import run_training

        if job.push:
            from promptreg.refs import check_name

            check_name(job.push)
        view = copy.copy(self)
        view.settings = dataclasses.replace(self.settings, user=self.whoami()["name"])
        report = run_training(view, job)
        if report is not None:
            report.warnings.insert(0, "remote mode: the training run is not logged to MLflow (the server owns it); "
                                      "the pushed version's run holds its metrics")
        return report

    def sweep(self, job):
        raise _local_only("sweep", "sweep in direct mode next to the data and the base model")

    def migrate(self, ref, to_model, **_kw):
        raise _local_only("migrate", "migrate in direct mode, next to both base models and the training data")

    def import_peft(self, folder, base_model, name, *, description=None, template=None, verbalizer=None):
        """Built here (it needs the local base model to fingerprint), pushed over HTTP."""
        from promptreg.services.peft_import import import_peft

        return import_peft(self, folder, base_model, name, description=description, template=template,
                           verbalizer=verbalizer)

    # ----- evaluation, gates, lifecycle ---------------------------------------------------------
    def eval(self, ref, suite, *, against="production", model=None, device="auto", use_cache=True, env=None):
        from promptreg.evaluation.results import EvalResult

        self._no_local_model(model, device)
        return self._with_suite(suite, lambda folder: self._upload(
            EvalResult, f"{API}/versions/{_q(ref)}/eval", folder,
            {"against": against if against is not None else "none", "use_cache": use_cache, "env": env}))

    def gate(self, ref, suite, *, against="production", model=None, device="auto", use_cache=True, env=None):
        from promptreg.evaluation.results import GateReport

        self._no_local_model(model, device)
        return self._with_suite(suite, lambda folder: self._upload(
            GateReport, f"{API}/versions/{_q(ref)}/gate", folder,
            {"against": against, "use_cache": use_cache, "env": env}))

    def promote(self, ref, to="production", *, suite=None, model=None, device="auto", force=False, reason=None,
                env=None):
        from promptreg.services.lifecycle import MoveResult

        self._no_local_model(model, device)
        return self._with_suite(suite, lambda folder: self._upload(
            MoveResult, f"{API}/versions/{_q(ref)}/promote", folder,
            {"to": to, "force": force, "reason": reason, "env": env}))

    def rollback(self, name, alias="production", *, to=None, reason=None):
        from promptreg.services.lifecycle import MoveResult

        return decode(MoveResult, self.api.request(
            "POST", f"{API}/prompts/{_q(name)}/aliases/{_q(alias)}/rollback", json={"to": to, "reason": reason}))

    def inspect(self, ref, *, model=None, top_k=5, text=None, device="auto"):
        raise _local_only("inspect", "inspect in direct mode, where the base model is")

    # ----- drift and environments ---------------------------------------------------------------
    def drift(self, ref, data_uri, *, suite=None, env=None, model=None, reference=None, action=None,
              text_column="text", label_column="label", device="auto"):
        from promptreg.client.bundle import write_drift_bundle
        from promptreg.evaluation.suite import Suite, load_suite
        from promptreg.services.drift import DriftOutcome

        self._no_local_model(model, device)
        loaded = None if suite is None else suite if isinstance(suite, Suite) else load_suite(Path(suite))
        remote_uri = data_uri if str(data_uri).startswith(("s3://", "captured")) else None  # read by the server
        local = None
        if remote_uri is None:
            local = Path(str(data_uri).removeprefix("file://")).expanduser()
            if not local.is_file():
                raise InputError(f"data file not found: {data_uri}")
        params = {"data_uri": remote_uri, "env": env, "reference": reference, "action": action,
                  "text_column": text_column, "label_column": label_column}
        with tempfile.TemporaryDirectory(prefix="promptreg-drift-") as tmp:
            folder = write_drift_bundle(local, loaded, Path(tmp) / "bundle") if (local or loaded) else None
            return self._upload(DriftOutcome, f"{API}/versions/{_q(ref)}/drift", folder, params)

    def set_environment_model(self, env: str, model: str):
        from promptreg.services.views import EnvironmentInfo

        return decode(EnvironmentInfo, self.api.request("PUT", f"{API}/environments/{_q(env)}",
                                                        json={"model": str(model)}, timeout_s=LONG_TIMEOUT_S))

    def list_environments(self):
        from promptreg.services.views import EnvironmentInfo

        return self._get(list[EnvironmentInfo], f"{API}/environments")

    # ----- schedules ----------------------------------------------------------------------------
    def add_schedule(self, ref, cron, data_uri, *, suite_path=None, policy=None, now=None):
        from promptreg.scheduling import ScheduleInfo

        if now is not None:
            raise InputError("in remote mode the server's clock is used")
        return decode(ScheduleInfo, self.api.request("POST", f"{API}/schedules", json={
            "ref": ref, "cron": cron, "data_uri": data_uri, "suite_path": suite_path, "policy": policy}))

    def list_schedules(self, name=None):
        from promptreg.scheduling import ScheduleInfo

        return self._get(list[ScheduleInfo], f"{API}/schedules", name=name)

    def get_schedule(self, schedule_id: int):
        from promptreg.scheduling import ScheduleInfo

        return self._get(ScheduleInfo, f"{API}/schedules/{int(schedule_id)}")

    def remove_schedule(self, schedule_id: int):
        from promptreg.scheduling import ScheduleInfo

        return decode(ScheduleInfo, self.api.request("DELETE", f"{API}/schedules/{int(schedule_id)}"))

    def schedule_runs(self, schedule_id=None, limit=100):
        from promptreg.services.views import ScheduleRunInfo

        return self._get(list[ScheduleRunInfo], f"{API}/schedules/runs", schedule_id=schedule_id, limit=limit)

    def run_due(self, *, check=None, owner=None, lease_s=None, guard=None, on_result=None, now=None):
        from promptreg.scheduling import RunResult

        if check is not None or owner is not None or now is not None:
            raise InputError("in remote mode the server runs its own drift checks (no custom check, owner or clock)")
        if guard is not None and guard.stop.is_set():
            return []
        params = {"lease_s": lease_s} if lease_s is not None else None
        results = decode(list[RunResult], self.api.request("POST", f"{API}/schedules/run-due", params=params,
                                                           timeout_s=LONG_TIMEOUT_S))
        for r in results:
            if on_result is not None:
                on_result(r)
        return results

    def scheduler(self, **_kwargs):
        raise _local_only("the scheduler daemon", "let the server's host run `promptreg scheduler`, or call "
                                                  "`promptreg schedule run-due` from a cron job")

    def export_schedule(self, fmt, *, every="*/5 * * * *", workdir="/srv/app", image="ghcr.io/OWNER/promptreg:latest"):
        """The snippet for remote mode: the job calls ``schedule run-due`` on the server with a token."""
        from promptreg.scheduling import export_snippet

        return export_snippet(fmt, self.settings, every=every, workdir=workdir, image=image)

    # ----- events and webhooks (promptreg.services.registry_events) -------------------------------
    def list_events(self, *, prompt=None, type_=None, limit=50):
        from promptreg.services.events.views import EventView

        return self._get(list[EventView], f"{API}/events", prompt=prompt, type=type_, limit=limit)

    def list_deliveries(self, status, *, prompt=None, limit=100):
        from promptreg.services.events.views import DeliveryView

        return self._get(list[DeliveryView], f"{API}/events/deliveries", status=status, prompt=prompt, limit=limit)

    def show_event(self, key):
        from promptreg.services.events.views import EventView

        return self._get(EventView, f"{API}/events/{quote(str(key).strip(), safe='')}")

    def retry_events(self, keys=None, *, target=None):
        from promptreg.services.events.views import DeliveryView

        return decode(list[DeliveryView], self.api.request("POST", f"{API}/events/retry",
                                                           json={"events": keys, "target": target}))

    def add_webhook(self, url, events, *, prompts=None, description=None):
        from promptreg.services.events.policy import parse_patterns
        from promptreg.services.events.views import WebhookView

        answer = self.api.request("POST", f"{API}/webhooks", json={
            "url": url, "events": parse_patterns(events), "prompts": prompts, "description": description})
        return decode(WebhookView, answer["webhook"]), answer["secret"]

    def list_webhooks(self, *, include_removed=False):
        from promptreg.services.events.views import WebhookView

        return self._get(list[WebhookView], f"{API}/webhooks", include_removed=str(bool(include_removed)).lower())

    def remove_webhook(self, webhook_id):
        from promptreg.services.events.views import WebhookView

        return decode(WebhookView, self.api.request("DELETE", f"{API}/webhooks/{int(webhook_id)}"))

    def test_webhook(self, webhook_id):
        from promptreg.services.events.worker import Outcome

        return decode(Outcome, self.api.request("POST", f"{API}/webhooks/{int(webhook_id)}/test",
                                                timeout_s=LONG_TIMEOUT_S))

    def webhook_deliveries(self, webhook_id, *, limit=50, status=None):
        from promptreg.services.events.views import DeliveryView

        return self._get(list[DeliveryView], f"{API}/webhooks/{int(webhook_id)}/deliveries", limit=limit,
                         status=status)

    # ----- housekeeping -------------------------------------------------------------------------
    def gc(self, *, min_age_s=None, delete=False, capture_retention_days=None):
        from promptreg.services.gc import GcReport

        params = {"delete": str(bool(delete)).lower()}
        if min_age_s is not None:
            params["min_age_s"] = min_age_s
        if capture_retention_days is not None:
            params["capture_retention_days"] = capture_retention_days
        return decode(GcReport, self.api.request("POST", f"{API}/gc", params=params, timeout_s=LONG_TIMEOUT_S))


__all__ = ["RemoteRegistry"]
