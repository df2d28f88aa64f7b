"""``promptreg.Registry``: the one typed Python API. The CLI (and the HTTP server) are thin shells over it.

Invariants: every public verb is one method here, with a docstring and typed parameters, that opens
what it needs (database, artifact store, MLflow mirror: created lazily, on first use) and delegates to
one service function taking the registry first (``promptreg.services.versions``, ``.aliases``,
``.mirroring``, ``.lifecycle``, ``.evaluate``, ``.drift``, ``promptreg.scheduling``, ``.gc``, ...). Results
are dataclasses with ``to_dict()``; errors are :mod:`promptreg.errors` types. Nothing heavy is imported at
module level (the CLI starts fast).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from promptreg.errors import (
    InputError,
    PromptregError,
    StoreUnavailableError,
)
from promptreg.refs import Ref
from promptreg.services.registry_events import EventVerbs
from promptreg.services.views import (
    AliasInfo,
    AuditEntry,
    Check,
    PromptSummary,
    PushResult,
    SyncReport,
    VersionInfo,
)
from promptreg.settings import Settings

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Callable

    from sqlmodel import Session

    from promptreg.evaluation.drift import DriftOutcome
    from promptreg.evaluation.results import EvalResult, GateReport
    from promptreg.evaluation.suite import Suite
    from promptreg.registry.mlflow_db import RepairReport
    from promptreg.scheduling import (
        Claim,
        GracefulStop,
        RunResult,
        ScheduleInfo,
        Scheduler,
        ScheduleRunInfo,
    )
    from promptreg.services.evaluate import Evaluator
    from promptreg.services.gc import GcReport
    from promptreg.services.lifecycle import MoveResult
    from promptreg.services.migrate import MigrateReport
    from promptreg.services.sweep import SweepJob, SweepReport
    from promptreg.services.train import TrainJob, TrainReport
    from promptreg.services.views import EnvironmentInfo
    from promptreg.softprompt.inspection import PromptInspection

    SuiteArg = Suite | str | Path

class Registry(EventVerbs):
    """The registry of one project: its database, artifact store and MLflow mirror, and every verb.

    ``Registry()`` reads the settings (``promptreg.toml``, ``PROMPTREG_*``, the embedded default
    ``./.promptreg``); keyword overrides (``home=``, ``db_url=``, ``tracking_uri=``, ``artifact_uri=``)
    win. Nothing is opened until a verb needs it. Every method raises a
    :class:`~promptreg.errors.PromptregError` subclass (one line) when it cannot do what it says; the
    results are dataclasses with ``to_dict()`` (JSON-ready), which is what the CLI prints with ``--json``.
    """

    #: The API token the acting principal authenticated with (``promptreg server``), recorded on audit events.
    token_id: str | None = None
    #: Mirror pushes and alias moves into MLflow before returning (True), or leave them to the outbox's
    #: MLflow consumer (``promptreg events run``, or the worker in ``promptreg server``): ``mirror_status``
    #: is then ``pending`` until it has run.
    mirror_inline: bool = True

    def __init__(self, settings: Settings | None = None, **overrides: str | None):
        self.settings = settings or Settings.load(**{k: v for k, v in overrides.items() if v})
        self._engine = None
        self._store = None
        self._mirror = None

    def acting_as(self, user: str, *, token_id: str | None = None) -> Registry:
        """This registry, sharing its engine, store and mirror, with every write recorded as ``user``
        (and ``token_id``): what ``promptreg server`` uses per request for the authenticated principal."""
        import copy
        import dataclasses

        self.engine, self.store, self.mirror  # noqa: B018 - created once here, shared by every view
        view = copy.copy(self)
        view.settings = dataclasses.replace(self.settings, user=user)
        view.token_id = token_id
        return view

    # ----- components, created lazily -------------------------------------------------------
    @property
    def engine(self):
        if self._engine is None:
            from promptreg.registry.db import make_engine
            from promptreg.registry.migrate import ensure_schema

            if self.settings.db_url.startswith("sqlite"):
                self._make_home()
            with self._db_errors():
                ensure_schema(self.settings.db_url, auto_upgrade=self.settings.db_url.startswith("sqlite"))
                self._engine = make_engine(self.settings.db_url)
        return self._engine

    @property
    def store(self):
        if self._store is None:
            from promptreg.registry.store import open_store

            self._store = open_store(self.settings.artifact_uri, s3_endpoint_url=self.settings.s3_endpoint_url)
        return self._store

    @property
    def mirror(self):
        if self._mirror is None:
            from promptreg.registry.mirror import MlflowMirror

            self._mirror = MlflowMirror(self.settings.tracking_uri, artifact_location=self.settings.mlflow_artifact_uri)
        return self._mirror

    def _make_home(self) -> None:
        try:
            self.settings.home.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailableError(f"cannot create the project folder {self.settings.home}: "
                                        f"{exc.strerror or exc}") from None

    @contextmanager
    def _db_errors(self) -> Iterator[None]:
        from sqlalchemy.exc import DBAPIError, OperationalError

        from promptreg.registry.db import translate_db_error

        try:
            yield
        except (OperationalError, DBAPIError) as exc:
            if getattr(exc, "connection_invalidated", False) or isinstance(exc, OperationalError):
                raise translate_db_error(exc) from exc
            raise

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A database session on the registry: commits when the block succeeds, rolls back when it
        raises; an unreachable database leaves it as one-line :class:`StoreUnavailableError`. Every
        audit event added in it carries this registry's :attr:`token_id` (see :meth:`acting_as`)."""
        from promptreg.registry.db import session
        from promptreg.registry.models import stamp_token_id

        with self._db_errors(), session(self.engine) as s:
            if self.token_id is not None:
                stamp_token_id(s, self.token_id)
            yield s

    # ----- setup --------------------------------------------------------------------------
    def init(self) -> list[Check]:
        """Create the project's stores (embedded default: the folder, both databases, the artifact
        folder) and report every store; a store that fails is reported, not raised."""
        from promptreg.registry.migrate import upgrade

        if self.settings.db_url.startswith("sqlite"):
            self._make_home()
        with self._db_errors():
            upgrade(self.settings.db_url)
        for create in (self.store.check, self.mirror.check):
            try:
                create()
            except PromptregError:
                pass   # doctor reports it
        return self.doctor()

    def doctor(self) -> list[Check]:
        """Which stores are in use (and where that setting came from) and whether each works; creates
        nothing: a store not created yet is OK, created on first use (promptreg.services.doctor)."""
        from promptreg.services.doctor import doctor_checks

        return doctor_checks(self)

    def repair_tracking_db(self) -> RepairReport | None:
        """Rebuild a half-migrated embedded MLflow database (a copy of the damaged file is kept);
        returns the RepairReport, or None when there is nothing to repair."""
        from promptreg.services.doctor import repair_tracking

        report = repair_tracking(self)
        self._mirror = None   # a client opened before the repair would still read the replaced file
        return report

    # ----- versions ---------------------------------------------------------------------------
    def push(self, folder: Path | str, name: str, description: str | None = None,
             run_id: str | None = None) -> PushResult:
        """Validate the artifact ``folder`` and register it as a new, immutable version of ``name``
        (idempotent by content: the same bytes again return the existing version, ``created=False``);
        then mirror it into MLflow (``run_id``: attach it to that run). See promptreg.services.versions."""
        from promptreg.services.versions import push

        return push(self, folder, name, description, run_id)

    def pull(self, ref: str | Ref, dest: Path | str) -> Path:
        """Download a version into ``dest`` (which must not exist or be empty), verifying its sha256
        (a tampered artifact raises :class:`~promptreg.errors.IntegrityError`)."""
        from promptreg.services.versions import pull

        return pull(self, ref, dest)

    def fetch_verified(self, ref: str | Ref) -> tuple[VersionInfo, Path]:
        """A verified local copy of a version, cached under the project home by sha256."""
        from promptreg.services.versions import fetch_verified

        return fetch_verified(self, ref)

    def show(self, ref: str | Ref) -> VersionInfo:
        """One version: ``NAME`` (the latest), ``NAME:VERSION`` or ``NAME@ALIAS``. Raises
        :class:`~promptreg.errors.PromptNotFoundError`, :class:`~promptreg.errors.VersionNotFoundError` or
        :class:`~promptreg.errors.AliasNotFoundError`."""
        from promptreg.services.versions import show

        return show(self, ref)

    def manifest(self, ref: str | Ref) -> dict:
        """The full manifest (``promptreg.json``) of a version, as recorded at push."""
        from promptreg.services.versions import manifest

        return manifest(self, ref)

    def list_prompts(self) -> list[PromptSummary]:
        """Every prompt by name, with its version count, latest version and aliases."""
        from promptreg.services.versions import list_prompts

        return list_prompts(self)

    def list_versions(self, name: str, *, limit: int | None = None, offset: int = 0) -> list[VersionInfo]:
        """The versions of ``name``, oldest first, ``offset`` skipped, at most ``limit`` (two queries).
        Raises :class:`~promptreg.errors.PromptNotFoundError`."""
        from promptreg.services.versions import list_versions

        return list_versions(self, name, limit=limit, offset=offset)

    def version_page(self, name: str, *, limit: int | None = None, offset: int = 0) -> tuple[list[VersionInfo], bool]:
        """(a page of :meth:`list_versions`, whether more versions follow it)."""
        from promptreg.services.versions import version_page

        return version_page(self, name, limit=limit, offset=offset)

    def history(self, name: str) -> list[AuditEntry]:
        """The append-only audit log of ``name``: every push, eval, gate, alias move, flag, schedule change."""
        from promptreg.services.versions import history

        return history(self, name)

    def sync(self, *, grace_s: float = 0.0) -> SyncReport:
        """Make MLflow match the database: mirror versions whose mirror is missing or failed, aliases,
        status tags, descriptions. Raises :class:`~promptreg.errors.MirrorError` when MLflow is down;
        items that fail individually are listed in ``report.failed``. An alias changed by hand in MLflow
        is restored and the overwrite is an audit event (``alias.restore``). ``grace_s``: leave alone
        what changed less than that many seconds ago (a background sync beside live writers)."""
        from promptreg.services.mirroring import sync

        return sync(self, grace_s=grace_s)

    def sync_prompt(self, name: str, report: SyncReport | None = None, *, mlmodels: bool = True) -> SyncReport:
        """Make MLflow match the database for the prompt ``name`` only (what :meth:`sync` does for
        every prompt); the outbox's MLflow consumer calls it per prompt with new events."""
        from promptreg.services.mirroring import sync_prompt

        return sync_prompt(self, name, report, mlmodels=mlmodels)

    def set_alias(self, name: str, alias: str, version: int, *, expected_version: int | None | str = "any",
                  action: str = "alias.set", reason: str | None = None, details: dict | None = None,
                  in_transaction: Callable[[Session], None] | None = None) -> AliasInfo:
        """Point ``name@alias`` at ``version`` with a compare-and-swap on the alias row, no gate (see
        :meth:`promote`). ``expected_version``: the holder the caller believes the alias has now (None:
        unset; "any": no expectation); a concurrent move raises ConflictError. The audit event commits
        with the move (and ``in_transaction(session)``'s rows); MLflow is updated after."""
        from promptreg.services.aliases import set_alias

        return set_alias(self, name, alias, version, expected_version=expected_version, action=action,
                         reason=reason, details=details, in_transaction=in_transaction)

    # ----- training and import ----------------------------------------------------------------
    def train(self, job: TrainJob) -> TrainReport:
        """Train a soft prompt against a frozen base model (:class:`~promptreg.services.train.TrainJob`:
        data, method, configuration); with ``job.push`` the artifact is registered as a new version of
        that name, on the same MLflow run. Returns the metrics, the artifact folder and the push result."""
        from promptreg.services.train import run_training

        return run_training(self, job)

    def sweep(self, job: SweepJob) -> SweepReport:
        """Train a grid of trials (methods x prompt lengths x inits x learning rates; successive halving
        stops those that fall behind), each an MLflow child run of one parent run; with ``job.base.push``
        register only the best (by eval metric, tie -> fewer parameters), the sweep in its manifest."""
        from promptreg.services.sweep import run_sweep

        return run_sweep(self, job)

    def migrate(self, ref: str, to_model: str, *, suite: SuiteArg | None = None, from_model: str | None = None,
                max_steps: int | None = None, device: str = "auto", description: str | None = None,
                progress: bool = False, notes: bool = False) -> MigrateReport:
        """Carry ``ref`` (NAME@ALIAS or NAME:V) to base model ``to_model``: retrain it on its recorded,
        fingerprint-checked data (warm start when the dimensions allow, else from text), register the
        candidate bound to the new model and, with ``suite``, gate it against the incumbent evaluated on
        its own base model (see promptreg.services.migrate)."""
        from promptreg.services.migrate import migrate

        return migrate(self, ref, to_model, suite=_suite(suite) if suite is not None else None,
                       from_model=from_model, max_steps=max_steps, device=device, description=description,
                       progress=progress, notes=notes)

    def import_peft(self, folder: Path | str, base_model: str, name: str, *, description: str | None = None,
                    template: str | None = None, verbalizer: dict[str, str] | None = None) -> PushResult:
        """Register a PEFT prompt-learning adapter folder (prompt tuning, P-tuning, prefix tuning) trained
        on ``base_model`` (a folder or ``smollm2``) as a new version of ``name``. With ``verbalizer``
        (label -> answer text) it is a classification prompt, otherwise a generation prompt."""
        from promptreg.services.peft_import import import_peft

        return import_peft(self, folder, base_model, name, description=description, template=template,
                           verbalizer=verbalizer)

    # ----- evaluation and gates -----------------------------------------------------------------
    def evaluator(self, *, model: str | Path | None = None, device: str = "auto",
                  use_cache: bool = True) -> Evaluator:
        """An :class:`~promptreg.services.evaluate.Evaluator` holding one base model (``model``, else the
        ``base_model`` setting, else the candidate manifest's folder), loaded on first need: reuse it to
        evaluate several versions without reloading."""
        from promptreg.services.evaluate import Evaluator

        return Evaluator(self, model=model, device=device, use_cache=use_cache)

    def _env_model(self, env: str | None, model: str | Path | None) -> str | Path | None:
        """The base model of environment ``env`` (``promptreg env set-base-model``), else ``model``."""
        if env is None:
            return model
        if model is not None:
            raise InputError("give --env or --model, not both")
        from promptreg.services.environments import environment_model

        return environment_model(self, env)

    def eval(self, ref: str, suite: SuiteArg, *, against: str | None = "production", model: str | Path | None = None,
             device: str = "auto", use_cache: bool = True, env: str | None = None) -> EvalResult:
        """Evaluate ``ref`` on a regression suite (a :class:`~promptreg.evaluation.suite.Suite` or its
        YAML path) and record the eval run; ``against`` (an alias, a version number or None) is also
        evaluated for the comparison logged to MLflow. A cached result is reused unless ``use_cache=False``.
        ``env``: evaluate on that environment's recorded base model (instead of ``model``)."""
        ev = self.evaluator(model=self._env_model(env, model), device=device, use_cache=use_cache)
        result, _baseline = ev.evaluate(ref, _suite(suite), against=against)
        result.warnings = [*ev.warnings, *result.warnings]
        return result

    def gate(self, ref: str, suite: SuiteArg, *, against: str = "production", model: str | Path | None = None,
             device: str = "auto", use_cache: bool = True, env: str | None = None) -> GateReport:
        """Run the regression gate of ``ref`` against the version it would replace (``against``: an alias,
        its current holder; a version number; or ``none`` for floors only). The report says whether it
        passed (``report.passed``) and why; a gate that could not run raises instead. ``env``: on that
        environment's recorded base model."""
        ev = self.evaluator(model=self._env_model(env, model), device=device, use_cache=use_cache)
        report = ev.gate(ref, _suite(suite), against=against)
        report.warnings = [*ev.warnings, *report.warnings]
        return report

    # ----- lifecycle ----------------------------------------------------------------------------
    def promote(self, ref: str, to: str = "production", *, suite: SuiteArg | None = None,
                model: str | Path | None = None, device: str = "auto", force: bool = False,
                reason: str | None = None, env: str | None = None) -> MoveResult:
        """Point ``NAME@to`` at ``ref`` if the alias's policy allows it: ``production`` needs a passing
        gate against its current holder (run now with ``suite``, else the stored verdict). A failed gate
        raises :class:`~promptreg.errors.GateFailedError` (its ``report`` attached); ``force`` with a
        ``reason`` bypasses it and records that. Compare-and-swap + audit event + MLflow alias."""
        from promptreg.services.lifecycle import promote

        loaded = _suite(suite) if suite is not None else None
        ev = self.evaluator(model=self._env_model(env, model), device=device) if loaded is not None else None
        return promote(self, ref, to, suite=loaded, evaluator=ev, force=force, reason=reason)

    def rollback(self, name: str, alias: str = "production", *, to: int | str | None = None,
                 reason: str | None = None) -> MoveResult:
        """Move ``name@alias`` back to its previous holder (from the audit log, as a stack) or to
        ``to``: a version number or a version ref of ``name`` (``V``, ``ALIAS``, ``NAME:V``, ``NAME@ALIAS``)."""
        from promptreg.services.lifecycle import rollback

        return rollback(self, name, alias, to=to, reason=reason)

    def inspect(self, ref: str, *, model: str | Path | None = None, top_k: int = 5, text: str | None = None,
                device: str = "auto") -> PromptInspection:
        """Per virtual token of ``ref`` its nearest vocabulary tokens (cosine over the input embeddings), its
        norm against the vocabulary's, and the tokens' pairwise cosines (ID-SPAM: the prompt generated for
        ``text``; prefix tuning has nothing to inspect: InputError). Recorded with the version (audit event,
        MLflow description). Nearest tokens are not an explanation (``PromptInspection.caveat``)."""
        from promptreg.services.inspection import inspect_version

        return inspect_version(self, ref, model=model, top_k=top_k, text=text, device=device)

    # ----- drift and environments ---------------------------------------------------------------
    def drift(self, ref: str, data_uri: str, *, suite: SuiteArg | None = None, env: str | None = None,
              model: str | None = None, reference: str | None = None, action: str | None = None,
              text_column: str = "text", label_column: str = "label", device: str = "auto") -> DriftOutcome:
        """Check ``ref`` (``NAME@ALIAS`` to let a rollback policy move the alias) for base-model, data
        and performance drift on fresh data (a .jsonl/.json/.csv file or ``s3://`` prefix), against the
        base model deployed in ``env`` (or ``model``), scored on ``device``; act by policy
        (``report``/``flag``/``rollback``)."""
        from promptreg.services.drift import check_drift

        if env and model:
            raise InputError("use --env or --model, not both")
        return check_drift(self, ref, data_uri, suite=_suite(suite) if suite is not None else None, env=env,
                           model=model, reference=reference, action=action, text_column=text_column,
                           label_column=label_column, device=device)

    def set_environment_model(self, env: str, model: str) -> EnvironmentInfo:
        """Record that deployment environment ``env`` runs base model ``model`` (a folder or
        ``smollm2``): drift checks with ``env=`` compare its fingerprint with each version's."""
        from promptreg.services.environments import set_environment_model

        return set_environment_model(self, env, model)

    def list_environments(self) -> list[EnvironmentInfo]:
        """Every environment and the base model recorded for it."""
        from promptreg.services.environments import list_environments

        return list_environments(self)

    # ----- schedules (recurring drift checks; times in UTC) -------------------------------------
    def add_schedule(self, ref: str, cron: str, data_uri: str, *, suite_path: str | None = None,
                     policy: dict[str, Any] | None = None, now: dt.datetime | None = None) -> ScheduleInfo:
        """Check ``NAME@ALIAS`` for drift on ``data_uri`` at every fire time of the five-field ``cron``
        (UTC); ``policy`` overrides the drift policy (JSON object). ``now``: the clock (tests)."""
        from promptreg.scheduling import add_schedule

        return add_schedule(self, ref, cron, data_uri, suite_path=suite_path, policy=policy, now=now)

    def list_schedules(self, name: str | None = None) -> list[ScheduleInfo]:
        """Every schedule (of prompt ``name`` only, if given), oldest first."""
        from promptreg.scheduling import list_schedules

        return list_schedules(self, name)

    def get_schedule(self, schedule_id: int) -> ScheduleInfo:
        """One schedule by id (:class:`~promptreg.errors.ScheduleNotFoundError` if there is none)."""
        from promptreg.scheduling import get_schedule

        return get_schedule(self, schedule_id)

    def remove_schedule(self, schedule_id: int) -> ScheduleInfo:
        """Delete a schedule and its run history (drift reports stay); returns what was removed."""
        from promptreg.scheduling import remove_schedule

        return remove_schedule(self, schedule_id)

    def schedule_runs(self, schedule_id: int | None = None, limit: int = 100) -> list[ScheduleRunInfo]:
        """The newest schedule runs (of one schedule, if given), newest slot first."""
        from promptreg.scheduling import list_runs

        return list_runs(self, schedule_id, limit)

    def run_due(self, *, check: Callable[[Claim], Any] | None = None, owner: str | None = None,
                lease_s: float | None = None, guard: GracefulStop | None = None,
                on_result: Callable[[RunResult], None] | None = None,
                now: dt.datetime | None = None) -> list[RunResult]:
        """Run every due check once (safe on several machines at once: each slot runs exactly once).
        ``check(claim)`` defaults to the drift check of the claimed schedule; ``guard``: stop handling
        (:class:`~promptreg.scheduling.schedules.GracefulStop`); ``on_result``: called after each run."""
        from promptreg.scheduling import DEFAULT_LEASE_S, run_due

        return run_due(self, check or drift_check(self), owner=owner, now=now,
                       lease_s=DEFAULT_LEASE_S if lease_s is None else lease_s, guard=guard, on_result=on_result)

    def scheduler(self, *, check: Callable[[Claim], Any] | None = None, poll_s: float = 30,
                  lease_s: float | None = None, grace_s: float | None = None, owner: str | None = None,
                  on_result: Callable[[RunResult], None] | None = None,
                  on_error: Callable[[PromptregError], None] | None = None) -> Scheduler:
        """A long-lived :meth:`run_due` loop (``.run_forever()`` until SIGTERM/SIGINT) polling every
        ``poll_s`` seconds."""
        from promptreg.scheduling import DEFAULT_GRACE_S, DEFAULT_LEASE_S, Scheduler

        return Scheduler(self, check or drift_check(self), poll_s=poll_s, owner=owner,
                         lease_s=DEFAULT_LEASE_S if lease_s is None else lease_s,
                         grace_s=DEFAULT_GRACE_S if grace_s is None else grace_s,
                         on_result=on_result, on_error=on_error)

    def export_schedule(self, fmt: str, *, every: str = "*/5 * * * *", workdir: str = "/srv/app",
                        image: str = "ghcr.io/OWNER/promptreg:latest") -> str:
        """A ready-made ``crontab`` line, Kubernetes CronJob (``k8s``) or GitHub Actions workflow
        (``github``) that calls ``promptreg schedule run-due`` every ``every`` (cron, UTC); secrets are
        referenced, never written out."""
        from promptreg.scheduling import export_snippet

        return export_snippet(fmt, self.settings, every=every, workdir=workdir, image=image)

    # ----- housekeeping -------------------------------------------------------------------------
    def gc(self, *, min_age_s: float | None = None, delete: bool = False,
           capture_retention_days: float | None = None) -> GcReport:
        """Find artifact-store content no version, eval run or drift report references (uploads whose
        commit never happened); with ``delete`` remove those older than ``min_age_s`` seconds, and the
        captured traffic older than ``capture_retention_days`` (default: the configured retention)."""
        from promptreg.services.gc import DEFAULT_MIN_AGE_S, collect_garbage

        return collect_garbage(self, min_age_s=DEFAULT_MIN_AGE_S if min_age_s is None else min_age_s,
                               delete=delete, capture_retention_days=capture_retention_days)


def drift_check(registry: Registry) -> Callable[[Claim], Any]:
    """The check ``run_due`` runs by default: the drift check of the claimed schedule (from the drift
    service, imported here: it loads models lazily). The claim's run id goes into
    ``drift_report.schedule_run_id`` (same transaction as the report), so a process that dies after
    writing the report is never re-run for that slot."""
    try:
        from promptreg.services.drift import scheduled_check
    except ImportError as exc:
        raise PromptregError("drift checks are not available in this build") from exc
    return lambda claim: scheduled_check(registry, claim, schedule_run_id=claim.run_id)


def _suite(suite: SuiteArg) -> Suite:
    """A loaded suite, or the one at this YAML path."""
    from promptreg.evaluation.suite import Suite, load_suite

    return suite if isinstance(suite, Suite) else load_suite(Path(suite))
