"""promptreg.Registry as the one typed Python API: every verb is a documented method, not-found errors
are typed (no message matching), results serialise to JSON. No model: artifacts are hand-built and
MLflow plays no part (an unreachable tracking URI only marks the mirror failed)."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest

from promptreg import Registry
from promptreg.errors import (
    AliasNotFoundError,
    EnvironmentNotFoundError,
    InputError,
    NotFoundError,
    PromptNotFoundError,
    ScheduleNotFoundError,
    VersionNotFoundError,
    error_type,
)
from tests.fixtures.services import free_port
from tests.helpers import make_artifact

VERBS = ("init", "doctor", "push", "pull", "show", "manifest", "list_prompts", "list_versions", "history", "sync",
         "set_alias", "train", "sweep", "migrate", "import_peft", "evaluator", "eval", "gate", "promote", "rollback", "drift",
         "set_environment_model", "list_environments", "add_schedule", "list_schedules", "get_schedule",
         "remove_schedule", "schedule_runs", "run_due", "scheduler", "export_schedule", "gc", "repair_tracking_db",
         "list_events", "list_deliveries", "show_event", "retry_events", "add_webhook", "list_webhooks",
         "remove_webhook", "test_webhook", "webhook_deliveries")


def _offline(tmp_path: Path) -> Registry:
    return Registry(home=str(tmp_path / ".promptreg"), tracking_uri=f"http://127.0.0.1:{free_port()}")


def test_every_verb_is_a_documented_method():
    for verb in VERBS:
        method = getattr(Registry, verb, None)
        assert callable(method), verb
        assert (inspect.getdoc(method) or "").strip(), f"Registry.{verb} has no docstring"
        params = list(inspect.signature(method).parameters.values())[1:]
        assert all(p.annotation is not inspect.Parameter.empty for p in params
                   if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)), f"Registry.{verb} has untyped parameters"


def test_not_found_errors_are_typed(tmp_path):
    reg = _offline(tmp_path)
    reg.push(make_artifact(tmp_path / "a"), "p")
    with pytest.raises(PromptNotFoundError):
        reg.show("nope")
    with pytest.raises(VersionNotFoundError):
        reg.show("p:7")
    with pytest.raises(AliasNotFoundError, match="p has no alias 'production'"):
        reg.show("p@production")
    with pytest.raises(VersionNotFoundError):
        reg.set_alias("p", "staging", 9)
    with pytest.raises(ScheduleNotFoundError):
        reg.get_schedule(41)
    with pytest.raises(AliasNotFoundError):
        reg.add_schedule("p@production", "0 3 * * *", "fresh.jsonl")
    with pytest.raises(EnvironmentNotFoundError):
        reg.drift("p:1", str(_fresh(tmp_path)), env="prod")
    # the category is what callers outside Python see (CLI exit code, HTTP status, serving's error_type)
    for exc in (PromptNotFoundError("x"), AliasNotFoundError("x"), ScheduleNotFoundError("x")):
        assert isinstance(exc, NotFoundError) and exc.exit_code == 2 and error_type(exc) == "NotFoundError"
    assert error_type(ValueError("x")) == "InternalError"


def _fresh(tmp_path: Path) -> Path:
    path = tmp_path / "fresh.jsonl"
    path.write_text('{"text": "fine"}\n', encoding="utf-8")
    return path


def test_rollback_of_an_unset_alias_is_input_error_not_not_found(tmp_path):
    """lifecycle tells 'alias not set' (nothing to roll back) from 'no such prompt' by type."""
    reg = _offline(tmp_path)
    reg.push(make_artifact(tmp_path / "a"), "p")
    with pytest.raises(InputError, match="p@production is not set"):
        reg.rollback("p")
    with pytest.raises(PromptNotFoundError):
        reg.rollback("nope")


def test_alias_moves_schedules_and_gc_through_the_facade_serialise(tmp_path):
    reg = _offline(tmp_path)
    for seed in (1, 2):
        reg.push(make_artifact(tmp_path / f"a{seed}", seed=seed), "p")
    # promote without a gate: only production requires one
    first = reg.promote("p:1", "staging")
    second = reg.promote("p:2", "staging")
    assert (first.previous, second.previous, second.version) == (None, 1, 2)
    back = reg.rollback("p", "staging")
    assert (back.version, back.previous, back.action) == (1, 2, "rollback")
    info = reg.add_schedule("p@staging", "0 3 * * *", "fresh.jsonl", policy={"action": "flag"})
    assert [s.id for s in reg.list_schedules("p")] == [info.id] == [reg.get_schedule(info.id).id]
    assert reg.schedule_runs(info.id) == []
    assert "promptreg schedule run-due" in reg.export_schedule("crontab")
    removed = reg.remove_schedule(info.id)
    assert removed.id == info.id and reg.list_schedules() == []
    report = reg.gc()
    assert report.orphans == [] and report.referenced == 2
    for obj in (first, back, info, report, reg.show("p:1"), reg.list_prompts()[0], reg.history("p")[-1]):
        json.dumps(obj.to_dict())
    assert [e.action for e in reg.history("p")][-2:] == ["schedule.add", "schedule.remove"]
