"""``promptreg.Registry``: the Python API. The CLI is a thin shell over it.

The registry database is the source of truth. A push goes: validate the folder, upload the
artifact to its content address and verify it, then ONE transaction creates the version row and
its audit event; only then is the version mirrored into MLflow. Any failure before the commit
leaves nothing visible (an uploaded but unreferenced artifact is an orphan for ``gc``); a failed
mirror leaves the version marked ``mirror_status=failed`` (or ``pending`` after a crash) and
``sync`` repairs it.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from promptreg.errors import (
    ConflictError,
    InputError,
    MirrorError,
    NotFoundError,
    PromptregError,
    StoreUnavailableError,
)
from promptreg.refs import Ref, check_alias, check_name, check_text, parse_ref
from promptreg.registry.db import mask_url
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

_PUSH_RETRIES = 20


def _fault(stage: str) -> None:
    """Crash-test checkpoint of ``push`` (a no-op unless PROMPTREG_FAULT_PAUSE names ``stage``)."""
    from promptreg.registry.store import fault_point

    fault_point(stage)


def _iso(dt) -> str:
    return dt.isoformat(timespec="seconds") if dt is not None else ""


class Registry:
    #: The API token the acting principal authenticated with (``promptreg server``), recorded on audit events.
    token_id: str | None = None

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
    def _session(self):
        from promptreg.registry.db import session

        with self._db_errors(), session(self.engine) as s:
            yield s

    # ----- setup --------------------------------------------------------------------------
    def init(self) -> list[Check]:
        """Create the embedded project folder and the schema; report every store."""
        from promptreg.registry.migrate import upgrade

        if self.settings.db_url.startswith("sqlite"):
            self._make_home()
        with self._db_errors():
            upgrade(self.settings.db_url)
        return self.doctor()

    def doctor(self) -> list[Check]:
        from promptreg.registry.migrate import HEAD_REVISION, current_revision

        s = self.settings
        checks = []
        try:
            with self._db_errors():
                rev = current_revision(s.db_url)
            ok = rev == HEAD_REVISION
            detail = f"schema {rev}" if ok else f"schema {rev or 'missing'}, expected {HEAD_REVISION} (run `promptreg db upgrade`)"
            checks.append(Check("registry database", mask_url(s.db_url), ok, detail, s.sources.get("db_url", "")))
        except PromptregError as exc:
            checks.append(Check("registry database", mask_url(s.db_url), False, str(exc), s.sources.get("db_url", "")))
        for component, target, probe, key in (
            ("artifact store", s.artifact_uri, lambda: self.store.check(), "artifact_uri"),
            ("MLflow tracking", s.tracking_uri, lambda: self.mirror.check(), "tracking_uri"),
        ):
            try:
                probe()
                checks.append(Check(component, mask_url(target), True, "reachable", s.sources.get(key, "")))
            except PromptregError as exc:
                checks.append(Check(component, mask_url(target), False, str(exc), s.sources.get(key, "")))
        return checks

    # ----- push ---------------------------------------------------------------------------
    def push(self, folder: Path | str, name: str, description: str | None = None,
             run_id: str | None = None) -> PushResult:
        """Register the artifact folder as a new version of ``name`` (idempotent by content)."""
        from promptreg.artifact.validate import validate_artifact

        check_name(name)
        check_text(description, "description")
        art = validate_artifact(folder)
        existing = self._find_by_sha(name, art.sha256)
        if existing is not None:
            result = PushResult(self._version_info(existing), created=False)
            if result.version.mirror_status != "ok":
                result.warnings += self._mirror_version(existing, art.folder, run_id)
                result.version = self._version_info(existing)
            return result
        _fault("before_upload")
        uri = self.store.put_folder(art.folder, art.sha256)
        _fault("after_upload")
        version_id, created = self._insert_version(name, art, uri, description or "")
        _fault("after_commit")
        stored_warnings = self._ensure_stored(art)
        result = PushResult(self._version_info(version_id), created=created, warnings=stored_warnings)
        if result.version.mirror_status != "ok":
            result.warnings += self._mirror_version(version_id, art.folder, run_id)
            result.version = self._version_info(version_id)
        return result

    def _ensure_stored(self, art) -> list[str]:
        """After the commit: the content is still in the store, else upload it again. A concurrent
        `promptreg gc` can remove content that was already stored but unreferenced (an old orphan
        pushed again) just before the commit (see promptreg.services.gc). Returns warnings."""
        try:
            if not self.store.has_files(art.sha256, art.files):
                self.store.put_folder(art.folder, art.sha256)
        except PromptregError as exc:
            return [f"could not re-check the stored artifact after registering it ({exc})"]
        return []

    def _find_by_sha(self, name: str, sha256: str) -> int | None:
        from sqlmodel import select

        from promptreg.registry.models import Prompt, PromptVersion

        with self._session() as s:
            row = s.exec(
                select(PromptVersion.id).join(Prompt, Prompt.id == PromptVersion.prompt_id)
                .where(Prompt.name == name, PromptVersion.sha256 == sha256)
            ).first()
        return row

    def _insert_version(self, name: str, art, uri: str, description: str) -> tuple[int, bool]:
        from sqlalchemy import func
        from sqlalchemy.exc import IntegrityError
        from sqlmodel import select

        from promptreg.registry.models import AuditEvent, Prompt, PromptVersion, utcnow

        m = art.manifest
        user = self.settings.user
        for _ in range(_PUSH_RETRIES):
            try:
                with self._session() as s:
                    prompt = s.exec(select(Prompt).where(Prompt.name == name)).first()
                    if prompt is None:
                        prompt = Prompt(name=name, task_type=m.task.type, description=description,
                                        created_at=utcnow(), created_by=user)
                        s.add(prompt)
                        s.flush()
                    latest = s.exec(
                        select(func.max(PromptVersion.number)).where(PromptVersion.prompt_id == prompt.id)
                    ).one()
                    number = (latest or 0) + 1
                    version = PromptVersion(
                        prompt_id=prompt.id, number=number, sha256=art.sha256, artifact_uri=uri,
                        size_bytes=art.size_bytes, method=m.method, method_config=m.method_config,
                        base_model_fingerprint=m.base_model.fingerprint, base_model_name=m.base_model.name_or_path,
                        dataset_fingerprint=m.dataset.fingerprint if m.dataset else None,
                        metrics=m.metrics, manifest=m.model_dump(mode="json"), mirror_status="pending",
                        status="active", description=description, created_by=user, created_at=utcnow(),
                    )
                    s.add(version)
                    s.flush()
                    s.add(AuditEvent(at=utcnow(), actor=user, action="push", prompt_id=prompt.id,
                                     to_version=number, details={"sha256": art.sha256, "artifact_uri": uri}))
                    s.flush()
                    return version.id, True
            except IntegrityError:
                # A concurrent push took this number, or pushed the same content, or created the prompt.
                existing = self._find_by_sha(name, art.sha256)
                if existing is not None:
                    return existing, False
                continue
        raise ConflictError(f"could not allocate a version number for {name} after {_PUSH_RETRIES} tries")

    # ----- MLflow mirror ------------------------------------------------------------------
    def _mirror_version(self, version_id: int, folder: Path, run_id: str | None = None) -> list[str]:
        """Mirror one version into MLflow and record the outcome. Returns warnings."""
        from promptreg.registry.mirror import VersionRecord
        from promptreg.registry.models import Prompt, PromptVersion

        with self._session() as s:
            v = s.get(PromptVersion, version_id)
            p = s.get(Prompt, v.prompt_id)
            manifest = v.manifest
            params = {"method": v.method, "num_virtual_tokens": manifest.get("num_virtual_tokens"),
                      "task_type": (manifest.get("task") or {}).get("type"),
                      "base_model_name": v.base_model_name}
            params.update({f"method.{k}": val for k, val in (v.method_config or {}).items()})
            ds = manifest.get("dataset") or {}
            rec = VersionRecord(
                prompt=p.name, prompt_description=p.description or "", version=v.number, sha256=v.sha256,
                method=v.method, folder=Path(folder), params=params, metrics=dict(v.metrics or {}),
                base_model_fingerprint=v.base_model_fingerprint, base_model_name=v.base_model_name,
                dataset_fingerprint=v.dataset_fingerprint, dataset_name=ds.get("name"),
                dataset_source=ds.get("source"), dataset_rows=ds.get("rows"), created_by=v.created_by,
                run_id=run_id or v.mlflow_run_id, description=self._version_markdown(p.name, v),
            )
        try:
            result = self.mirror.mirror_version(rec)
        except PromptregError as exc:
            self._set_mirror_state(version_id, "failed", str(exc))
            return [f"MLflow mirror failed ({exc}); the version is registered, run `promptreg sync` to repair"]
        self._set_mirror_state(version_id, "ok", None, result.run_id, result.model_version)
        from promptreg.services.describe import refresh_descriptions

        refresh_descriptions(self, rec.prompt, {rec.version})  # best effort (run links); sync repairs
        return []

    def _set_mirror_state(self, version_id: int, status: str, error: str | None,
                          run_id: str | None = None, model_version: str | None = None) -> None:
        from promptreg.registry.models import PromptVersion

        with self._session() as s:
            v = s.get(PromptVersion, version_id)
            v.mirror_status, v.mirror_error = status, error
            if run_id:
                v.mlflow_run_id = run_id
            if model_version:
                v.mlflow_model_version = model_version
            s.add(v)

    @staticmethod
    def _version_markdown(name: str, v) -> str:
        lines = [f"**{name}:{v.number}** — {v.method}, sha256 `{v.sha256}`", "",
                 f"- base model: `{v.base_model_fingerprint}` ({v.base_model_name or 'unnamed'})",
                 f"- dataset: `{v.dataset_fingerprint or 'none'}`"]
        if v.metrics:
            lines += ["", "| metric | value |", "|---|---|"]
            lines += [f"| {k} | {val:.4g} |" for k, val in sorted(v.metrics.items())]
        if v.description:
            lines += ["", v.description]
        return "\n".join(lines)

    def sync(self) -> SyncReport:
        """Make MLflow match the database: mirror versions whose mirror is missing, and aliases."""
        from sqlmodel import select

        from promptreg.registry.models import Alias, Prompt, PromptVersion

        # MLflow down: one clear error now, instead of one retried timeout per version, alias and tag
        self.mirror.check()
        report = SyncReport()
        with self._session() as s:
            pending = [(v.id, p.name, v.number, v.sha256, v.artifact_uri) for v, p in s.exec(
                select(PromptVersion, Prompt).join(Prompt, Prompt.id == PromptVersion.prompt_id)
                .where(PromptVersion.mirror_status != "ok").order_by(PromptVersion.id))]
        for version_id, name, number, sha, uri in pending:
            with tempfile.TemporaryDirectory(prefix="promptreg-sync-") as tmp:
                try:
                    folder = self.store.fetch(uri, Path(tmp) / "artifact", sha)
                except PromptregError as exc:
                    report.failed.append(f"{name}:{number}: {exc}")
                    continue
                warnings = self._mirror_version(version_id, folder)
            (report.failed if warnings else report.mirrored).append(f"{name}:{number}" + (f": {warnings[0]}" if warnings else ""))
        with self._session() as s:
            rows = s.exec(
                select(Prompt.name, Alias.name, PromptVersion.mlflow_model_version)
                .join(Alias, Alias.prompt_id == Prompt.id).join(PromptVersion, PromptVersion.id == Alias.version_id)
            ).all()
            names = [p.name for p in s.exec(select(Prompt)).all()]
        wanted: dict[str, dict[str, str]] = {n: {} for n in names}
        for pname, alias, mv in rows:
            if mv:
                wanted[pname][alias] = mv
        for pname, aliases in wanted.items():
            try:
                current = self.mirror.get_aliases(pname)
                for alias, mv in aliases.items():
                    if current.get(alias) != mv:
                        self.mirror.set_alias(pname, alias, mv)
                        report.aliases_set.append(f"{pname}@{alias}")
                for alias in set(current) - set(aliases):
                    self.mirror.delete_alias(pname, alias)
                    report.aliases_removed.append(f"{pname}@{alias}")
            except (MirrorError, PromptregError) as exc:
                report.failed.append(f"{pname} aliases: {exc}")
        with self._session() as s:
            mirrored = [(p.name, v.number, v.mlflow_run_id, v.sha256, dict(v.manifest)) for v, p in s.exec(
                select(PromptVersion, Prompt).join(Prompt, Prompt.id == PromptVersion.prompt_id)
                .where(PromptVersion.mirror_status == "ok", PromptVersion.mlflow_run_id.is_not(None))
                .order_by(PromptVersion.id))]
        for pname, number, run_id, sha, manifest in mirrored:  # versions mirrored before the pyfunc flavour
            try:
                if self.mirror.ensure_mlmodel(run_id, sha, manifest):
                    report.models_added.append(f"{pname}:{number}")
            except PromptregError as exc:
                report.failed.append(f"{pname}:{number} MLmodel: {exc}")
        for pname in names:
            try:
                wanted_tags = self._state_tags(pname)
                if not wanted_tags:
                    continue
                current_tags = self.mirror.version_tags(pname)
                for mv, (number, tags) in wanted_tags.items():
                    have = current_tags.get(mv, {})
                    diff = {k: v for k, v in tags.items() if have.get(k) != v}
                    if diff:
                        self.mirror.set_version_tags(pname, mv, diff)
                        report.tags_set.append(f"{pname}:{number} " + ",".join(sorted(diff)))
            except (MirrorError, PromptregError) as exc:
                report.failed.append(f"{pname} tags: {exc}")
        from promptreg.services.describe import sync_descriptions

        for pname in names:  # descriptions and the gate/drift tags derived from the database
            try:
                report.descriptions_set += sync_descriptions(self, pname)
            except PromptregError as exc:
                report.failed.append(f"{pname} descriptions: {exc}")
        return report

    def _state_tags(self, name: str, numbers: set[int] | None = None) -> dict[str, tuple[int, dict[str, str]]]:
        """MLflow model version -> (version number, the ``promptreg.aliases`` / ``promptreg.status`` tags the
        database says it should carry); only versions that are mirrored (and in ``numbers`` if given)."""
        from sqlmodel import select

        from promptreg.registry.models import Alias, PromptVersion

        with self._session() as s:
            prompt = self._prompt(s, name)
            q = select(PromptVersion.id, PromptVersion.number, PromptVersion.status, PromptVersion.mlflow_model_version
                       ).where(PromptVersion.prompt_id == prompt.id, PromptVersion.mlflow_model_version.is_not(None))
            if numbers is not None:
                q = q.where(PromptVersion.number.in_(sorted(numbers)))
            rows = s.exec(q).all()
            held: dict[int, list[str]] = {}
            for alias, vid in s.exec(select(Alias.name, Alias.version_id).where(Alias.prompt_id == prompt.id)).all():
                held.setdefault(vid, []).append(alias)
        return {str(mv): (number, {"promptreg.aliases": ",".join(sorted(held.get(vid, []))) or "none",
                                   "promptreg.status": status})
                for vid, number, status, mv in rows}

    def _mirror_state_tags(self, name: str, numbers: set[int], keys: tuple[str, ...] | None = None) -> None:
        """Best effort: copy the alias/status tags (only ``keys`` if given) of these versions to MLflow
        (sync repairs misses)."""
        try:
            for mv, (_number, tags) in self._state_tags(name, numbers).items():
                self.mirror.set_version_tags(name, mv, {k: v for k, v in tags.items() if keys is None or k in keys})
        except PromptregError:
            pass

    # ----- aliases (compare-and-swap) -----------------------------------------------------
    def set_alias(self, name: str, alias: str, version: int, *, expected_version: int | None | str = "any",
                  action: str = "alias.set", reason: str | None = None,
                  details: dict | None = None, in_transaction=None) -> AliasInfo:
        """Point ``name@alias`` at ``version`` with a compare-and-swap on the alias row.

        ``expected_version``: the version number the caller believes the alias holds now (None: the
        alias must not exist yet; "any": no expectation). A concurrent move makes this raise
        ConflictError. The audit event is written in the same transaction; MLflow is updated after.
        ``in_transaction(session)``: more rows to commit atomically with the move (a drift report).
        """
        from sqlalchemy import update
        from sqlalchemy.exc import IntegrityError
        from sqlmodel import select

        from promptreg.registry.models import Alias, AuditEvent, PromptVersion, utcnow

        check_alias(alias)
        check_text(reason, "reason")
        user = self.settings.user
        try:
            with self._session() as s:
                prompt = self._prompt(s, name)
                target = s.exec(select(PromptVersion).where(PromptVersion.prompt_id == prompt.id,
                                                            PromptVersion.number == version)).first()
                if target is None:
                    raise NotFoundError(f"{name} has no version {version}")
                row = s.exec(select(Alias).where(Alias.prompt_id == prompt.id, Alias.name == alias)).first()
                previous = None
                if row is not None:
                    previous = s.get(PromptVersion, row.version_id).number
                if expected_version != "any" and expected_version != previous:
                    raise ConflictError(
                        f"{name}@{alias} moved concurrently: expected {expected_version}, found {previous}")
                if row is None:
                    s.add(Alias(prompt_id=prompt.id, name=alias, version_id=target.id, row_version=1,
                                updated_at=utcnow(), updated_by=user))
                    row_version = 1
                else:
                    seen, row_version = row.row_version, row.row_version + 1
                    res = s.exec(update(Alias).where(Alias.id == row.id, Alias.row_version == seen)
                                 .values(version_id=target.id, row_version=row_version,
                                         updated_at=utcnow(), updated_by=user))
                    if res.rowcount != 1:
                        raise ConflictError(f"{name}@{alias} moved concurrently; retry")
                s.add(AuditEvent(at=utcnow(), actor=user, action=action, prompt_id=prompt.id, alias=alias,
                                 from_version=previous, to_version=version, reason=reason, details=details or {}))
                if in_transaction is not None:
                    in_transaction(s)
                mlflow_version = target.mlflow_model_version
        except IntegrityError:
            raise ConflictError(f"{name}@{alias} was created concurrently; retry") from None
        info = AliasInfo(name, alias, version, previous, row_version)
        if mlflow_version:
            try:
                self._mirror_alias(name, alias, mlflow_version)
            except PromptregError as exc:
                # The move is committed: the database holds the truth and `promptreg sync` re-applies the
                # alias. The caller is told (one warning line), the command still succeeds.
                info.warnings.append(f"{name}@{alias} moved to version {version} in the registry, but the MLflow "
                                     f"alias was not updated ({' '.join(str(exc).split())}); run `promptreg sync` to repair")
            else:
                # an alias move changes only the holders' promptreg.aliases tag (status moves on its own path)
                self._mirror_state_tags(name, {version} | ({previous} if previous is not None else set()),
                                        keys=("promptreg.aliases",))
                from promptreg.services.describe import refresh_descriptions

                refresh_descriptions(self, name, {version} | ({previous} if previous is not None else set()))
        return info

    def _mirror_alias(self, name: str, alias: str, mlflow_version: str, attempts: int = 5) -> None:
        """Copy ``name@alias`` to MLflow so that concurrent movers converge on the database's value.

        MLflow alias writes are last-writer-wins, and two movers' MLflow writes can land in the other
        order than their database commits. So after each write the database is read again: if it
        now holds another version (a later commit), that one is written too. The last writer to
        finish therefore always leaves MLflow equal to the database."""
        from sqlmodel import select

        from promptreg.registry.models import Alias, PromptVersion

        for _ in range(attempts):
            self.mirror.set_alias(name, alias, mlflow_version)
            with self._session() as s:
                prompt = self._prompt(s, name)
                now = s.exec(select(PromptVersion.mlflow_model_version).join(Alias, Alias.version_id == PromptVersion.id)
                             .where(Alias.prompt_id == prompt.id, Alias.name == alias)).first()
            if not now or now == mlflow_version:
                return
            mlflow_version = now

    # ----- reads --------------------------------------------------------------------------
    def _prompt(self, s, name: str):
        from sqlmodel import select

        from promptreg.registry.models import Prompt

        check_name(name)
        prompt = s.exec(select(Prompt).where(Prompt.name == name)).first()
        if prompt is None:
            raise NotFoundError(f"no prompt named {name!r}")
        return prompt

    def _resolve(self, s, ref: Ref):
        from sqlmodel import select

        from promptreg.registry.models import Alias, PromptVersion

        prompt = self._prompt(s, ref.name)
        if ref.alias is not None:
            row = s.exec(select(Alias).where(Alias.prompt_id == prompt.id, Alias.name == ref.alias)).first()
            if row is None:
                raise NotFoundError(f"{ref.name} has no alias {ref.alias!r}")
            return s.get(PromptVersion, row.version_id)
        q = select(PromptVersion).where(PromptVersion.prompt_id == prompt.id)
        if ref.version is not None:
            v = s.exec(q.where(PromptVersion.number == ref.version)).first()
            if v is None:
                raise NotFoundError(f"{ref.name} has no version {ref.version}")
            return v
        v = s.exec(q.order_by(PromptVersion.number.desc())).first()
        if v is None:
            raise NotFoundError(f"{ref.name} has no versions")
        return v

    def _version_info(self, version_id: int) -> VersionInfo:
        from promptreg.registry.models import PromptVersion

        with self._session() as s:
            return self._info(s, s.get(PromptVersion, version_id))

    def _info(self, s, v) -> VersionInfo:
        from sqlmodel import select

        from promptreg.registry.models import Alias, Prompt

        p = s.get(Prompt, v.prompt_id)
        aliases = sorted(a for a in s.exec(select(Alias.name).where(Alias.version_id == v.id)).all())
        manifest = v.manifest or {}
        return VersionInfo(
            name=p.name, version=v.number, sha256=v.sha256, method=v.method,
            num_virtual_tokens=int(manifest.get("num_virtual_tokens", 0)), artifact_uri=v.artifact_uri,
            size_bytes=v.size_bytes, base_model_fingerprint=v.base_model_fingerprint,
            base_model_name=v.base_model_name, dataset_fingerprint=v.dataset_fingerprint,
            metrics=dict(v.metrics or {}), method_config=dict(v.method_config or {}), task_type=p.task_type,
            aliases=aliases, status=v.status, mirror_status=v.mirror_status, mirror_error=v.mirror_error,
            mlflow_run_id=v.mlflow_run_id, mlflow_model_version=v.mlflow_model_version,
            description=v.description or "", created_by=v.created_by, created_at=_iso(v.created_at),
        )

    def show(self, ref: str | Ref) -> VersionInfo:
        ref = parse_ref(ref) if isinstance(ref, str) else ref
        with self._session() as s:
            return self._info(s, self._resolve(s, ref))

    def manifest(self, ref: str | Ref) -> dict:
        ref = parse_ref(ref) if isinstance(ref, str) else ref
        with self._session() as s:
            return dict(self._resolve(s, ref).manifest)

    def list_prompts(self) -> list[PromptSummary]:
        from sqlalchemy import func
        from sqlmodel import select

        from promptreg.registry.models import Alias, Prompt, PromptVersion

        with self._session() as s:
            counts = {pid: (n, latest) for pid, n, latest in s.exec(
                select(PromptVersion.prompt_id, func.count(), func.max(PromptVersion.number))
                .group_by(PromptVersion.prompt_id)).all()}
            aliases: dict[int, dict[str, int]] = {}
            for pid, alias, number in s.exec(
                select(Alias.prompt_id, Alias.name, PromptVersion.number)
                .join(PromptVersion, PromptVersion.id == Alias.version_id)).all():
                aliases.setdefault(pid, {})[alias] = number
            return [
                PromptSummary(p.name, p.task_type, p.description or "", counts.get(p.id, (0, None))[0],
                              counts.get(p.id, (0, None))[1], aliases.get(p.id, {}), _iso(p.created_at))
                for p in s.exec(select(Prompt).order_by(Prompt.name)).all()
            ]

    def list_versions(self, name: str) -> list[VersionInfo]:
        from sqlmodel import select

        from promptreg.registry.models import PromptVersion

        with self._session() as s:
            prompt = self._prompt(s, name)
            rows = s.exec(select(PromptVersion).where(PromptVersion.prompt_id == prompt.id)
                          .order_by(PromptVersion.number)).all()
            return [self._info(s, v) for v in rows]

    def history(self, name: str) -> list[AuditEntry]:
        from sqlmodel import select

        from promptreg.registry.models import AuditEvent

        with self._session() as s:
            prompt = self._prompt(s, name)
            rows = s.exec(select(AuditEvent).where(AuditEvent.prompt_id == prompt.id).order_by(AuditEvent.id)).all()
            return [AuditEntry(e.id, _iso(e.at), e.actor, e.action, name, e.alias, e.from_version, e.to_version,
                               e.reason, dict(e.details or {})) for e in rows]

    # ----- pull ---------------------------------------------------------------------------
    def pull(self, ref: str | Ref, dest: Path | str) -> Path:
        """Download a version into ``dest`` (which must not exist or be empty), verifying its sha256."""
        dest = Path(dest)
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise InputError(f"destination exists and is not an empty folder: {dest}")
        info = self.show(ref)
        if dest.exists():
            dest.rmdir()
        dest.parent.mkdir(parents=True, exist_ok=True)
        return self.store.fetch(info.artifact_uri, dest, info.sha256)

    def fetch_verified(self, ref: str | Ref) -> tuple[VersionInfo, Path]:
        """A verified local copy of a version, cached under the project home by sha256."""
        info = self.show(ref)
        cache = self.settings.home / "cache" / info.sha256
        if cache.is_dir():
            from promptreg.artifact.hashing import folder_sha256
            from promptreg.errors import IntegrityError

            if folder_sha256(cache) != info.sha256:
                raise IntegrityError(f"sha256 mismatch for cached {info.name}:{info.version} at {cache} "
                                     "(artifact tampered or corrupt)")
            return info, cache
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".fetch-", dir=cache.parent))
        try:
            self.store.fetch(info.artifact_uri, tmp / "a", info.sha256)
            try:
                (tmp / "a").rename(cache)
            except OSError:
                pass  # a concurrent fetch won; it is verified on the next read
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return info, cache
