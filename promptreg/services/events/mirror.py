"""The MLflow mirror as a consumer of the outbox.

Commands still mirror their change into MLflow right after their commit (fast feedback; a failure is
one warning line). The outbox makes that mirror converge by itself: every committed change has an
``mlflow`` delivery, and delivering it makes MLflow equal the database for the change's prompt with
the same code as ``promptreg sync`` (:meth:`Registry.sync_prompt`: versions not mirrored yet,
aliases, alias/status tags, descriptions and the gate/drift tags). Because the delivery writes the
prompt's CURRENT state, not the event's, replaying it is idempotent and a later event supersedes an
earlier one.

Order per registered model: the worker claims a prompt's MLflow deliveries as one group, oldest
first, and no other worker can claim any of them meanwhile (promptreg.registry.delivery_queue). A
group whose delivery fails waits (backoff capped at ``mlflow_backoff_max_s``) and blocks the newer
events of that prompt, so after an MLflow outage each registered model converges as soon as the
next try of its group, at most ``mlflow_backoff_max_s`` after MLflow is back (plus the poll interval
and the time to write). The first try of an event waits ``mlflow_delay_s`` so that the command's own
mirror goes first.
"""

from __future__ import annotations

from promptreg.errors import MirrorError
from promptreg.services.views import SyncReport


def reconcile(registry, prompt: str) -> SyncReport:
    """Make MLflow equal the database for ``prompt``; raises a PromptregError when it did not."""
    registry.mirror.check()     # down: one clear error instead of a timeout per call
    report = registry.sync_prompt(prompt, mlmodels=False)
    if report.failed:
        more = f" (+{len(report.failed) - 2} more)" if len(report.failed) > 2 else ""
        raise MirrorError("; ".join(report.failed[:2]) + more)
    return report


__all__ = ["reconcile"]
