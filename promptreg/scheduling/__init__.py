"""Recurring drift checks: cron expressions (:mod:`.cron`), schedules (:mod:`.schedules`), exactly-once
claims of due slots (:mod:`.claims`), the run-due loop and daemon (:mod:`.runner`) and ready-made
crontab / Kubernetes / GitHub Actions snippets (:mod:`.export`). The verbs are also methods of
``promptreg.Registry`` (``add_schedule``, ``run_due``, ``scheduler``, ...)."""

from promptreg.scheduling.claims import (
    DEFAULT_LEASE_S,
    MAX_ATTEMPTS,
    RUN_STATUSES,
    Claim,
    claim_due,
    complete,
    default_owner,
    release,
    renew_lease,
)
from promptreg.scheduling.cron import CronExpr, next_fire, parse_cron, prev_fire
from promptreg.scheduling.export import EXPORT_FORMATS, export_snippet
from promptreg.scheduling.runner import (
    DEFAULT_GRACE_S,
    CheckFn,
    CheckInterrupted,
    GracefulStop,
    RunResult,
    Scheduler,
    run_due,
)
from promptreg.scheduling.schedules import (
    ScheduleInfo,
    ScheduleRunInfo,
    add_schedule,
    get_schedule,
    list_runs,
    list_schedules,
    remove_schedule,
)

__all__ = [
    "DEFAULT_GRACE_S", "DEFAULT_LEASE_S", "EXPORT_FORMATS", "MAX_ATTEMPTS", "RUN_STATUSES", "CheckFn",
    "CheckInterrupted", "Claim", "CronExpr", "GracefulStop", "RunResult", "ScheduleInfo", "ScheduleRunInfo",
    "Scheduler", "add_schedule", "claim_due", "complete", "default_owner", "export_snippet", "get_schedule",
    "list_runs", "list_schedules", "next_fire", "parse_cron", "prev_fire", "release", "remove_schedule",
    "renew_lease", "run_due",
]
