"""``promptreg promote`` and ``promptreg rollback``: alias moves guarded by the gate.

Both go through :meth:`Registry.set_alias`: a compare-and-swap on the alias row (the holder read at
the start must still hold it when the move commits; concurrent promoters: exactly one wins per
expected state, the others get a ConflictError) and the audit event in the same transaction; the
MLflow alias is mirrored after (``promptreg sync`` repairs it if that fails).

Policy per alias (from the suite's ``policies``, else the default): ``production`` requires a passing
gate against its current holder, other aliases do not. With ``--suite`` the gate runs (or is reused
from the gate cache); without it, the newest stored gate verdict for exactly this candidate and
this baseline (by sha256) is reused, and a required gate with no verdict is an error. ``force``
with a ``reason`` bypasses a failed or missing gate and records that it did.

Rollback walks the alias's history in the audit log as a stack: a promote (or plain alias set)
pushes its version, a rollback pops back to its target. So promoting 1, 2, 3 then rolling back twice
gives 2, then 1; a third rollback has no previous holder and is an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from promptreg.errors import AliasNotFoundError, ConflictError, GateFailedError, InputError
from promptreg.evaluation.results import GateReport
from promptreg.registry import queries as q

if TYPE_CHECKING:
    from promptreg.evaluation.suite import Suite
    from promptreg.services.evaluate import Evaluator
    from promptreg.services.registry import Registry
    from promptreg.services.views import VersionInfo

DEFAULT_POLICIES = {"production": {"require_gate": True}}
MOVE_ACTIONS = ("alias.set", "promote", "rollback", "drift.rollback")


def default_policy(alias: str) -> dict[str, Any]:
    return dict(DEFAULT_POLICIES.get(alias, {"require_gate": False}))


@dataclass
class MoveResult:
    name: str
    alias: str
    version: int
    previous: int | None
    action: str
    gate: GateReport | None = None
    forced: bool = False
    reason: str | None = None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "alias": self.alias, "version": self.version, "previous": self.previous,
                "action": self.action, "forced": self.forced, "reason": self.reason, "warnings": self.warnings,
                "gate": self.gate.to_dict() if self.gate is not None else None}


def _holder(registry: Registry, name: str, alias: str) -> VersionInfo | None:
    """The version ``name@alias`` points at, None when the alias is not set (an unknown prompt raises)."""
    try:
        return registry.show(f"{name}@{alias}")
    except AliasNotFoundError:
        return None


def _stored_gate(registry: Registry, cand: VersionInfo, baseline: VersionInfo | None) -> GateReport | None:
    """The newest gate verdict stored for exactly this candidate and baseline (by content)."""
    with registry.session() as s:
        row = q.latest_gate(s, cand.sha256, baseline.sha256 if baseline else "")
        if row is None:
            return None
        report = GateReport.from_dict(dict(row.report))
        report.gate_id, report.cached = int(row.id), True
    report.candidate, report.baseline = cand.version, baseline.version if baseline else None
    return report


def promote(registry: Registry, ref: str, to: str = "production", *, suite: Suite | None = None,
            evaluator: Evaluator | None = None, force: bool = False, reason: str | None = None) -> MoveResult:
    """Move ``to`` to the version ``ref`` names, if its policy's gate passes (or ``force``)."""
    from promptreg.refs import check_alias

    check_alias(to)
    if force and not (reason or "").strip():
        raise InputError("--force needs --reason TEXT: say why the gate is bypassed (it is recorded)")
    cand = registry.show(ref)
    current = _holder(registry, cand.name, to)
    if current is not None and current.version == cand.version:
        raise InputError(f"{cand.name}@{to} already points at version {cand.version}")
    policy = suite.policy(to) if suite is not None else default_policy(to)
    report = None
    warnings: list[str] = []
    if suite is not None:
        if evaluator is None:
            raise InputError("a suite needs an evaluator (base model) to run the gate")
        report = evaluator.gate(f"{cand.name}:{cand.version}", suite, against=to)
        warnings += evaluator.warnings
        if report.baseline != (current.version if current else None):
            raise ConflictError(f"{cand.name}@{to} moved while the gate ran; promote again")
    elif policy.get("require_gate"):
        report = _stored_gate(registry, cand, current)
    gate_ok = report is not None and report.passed
    if policy.get("require_gate") and not gate_ok and not force:
        if report is None:
            raise InputError(f"{cand.name}@{to} requires a passing gate and none is recorded for "
                             f"{cand.name}:{cand.version} vs {current.version if current else 'no baseline'}: "
                             "pass --suite FILE (or --force --reason TEXT)")
        raise GateFailedError(f"gate failed, {cand.name}:{cand.version} not promoted to {to}: "
                              + "; ".join(report.failures()[:3]) + (" …" if len(report.failures()) > 3 else ""),
                              report=report)
    if report is not None and not report.passed and not force and not policy.get("require_gate"):
        warnings.append(f"the gate failed but {to} does not require it: "
                        + "; ".join(report.failures()[:2]))
    forced = bool(force and not gate_ok)
    details = {"gate_id": report.gate_id if report else None, "gate_passed": report.passed if report else None,
               "suite_sha256": report.suite_sha256 if report else None, "forced": forced,
               "require_gate": bool(policy.get("require_gate"))}
    info = registry.set_alias(cand.name, to, cand.version, expected_version=current.version if current else None,
                              action="promote", reason=reason, details=details)
    return MoveResult(cand.name, to, cand.version, info.previous, "promote", report, forced, reason,
                      warnings + list(info.warnings))


def alias_stack(events) -> list[int]:
    """The holders of one alias as a stack, from its audit events (oldest first)."""
    stack: list[int] = []
    for e in events:
        if e.action not in MOVE_ACTIONS or e.to_version is None:
            continue
        v = int(e.to_version)
        if e.action.endswith("rollback") and v in stack:
            del stack[len(stack) - stack[::-1].index(v):]
        elif not stack or stack[-1] != v:
            stack.append(v)
    return stack


def rollback(registry: Registry, name: str, alias: str = "production", *, to: int | None = None,
             reason: str | None = None, action: str = "rollback", details: dict | None = None,
             in_transaction=None) -> MoveResult:
    """Move ``name@alias`` back to its previous holder (or to version ``to``)."""
    from promptreg.refs import check_alias

    check_alias(alias)
    current = _holder(registry, name, alias)
    if current is None:
        raise InputError(f"{name}@{alias} is not set: nothing to roll back")
    events = [e for e in registry.history(name) if e.alias == alias]
    stack = alias_stack(events)
    if to is None:
        if len(stack) < 2 or stack[-1] != current.version:
            raise InputError(f"{name}@{alias} has no previous holder to roll back to (history: "
                             f"{' -> '.join(map(str, stack)) or 'none'}); use --to VERSION")
        to = stack[-2]
    elif to == current.version:
        raise InputError(f"{name}@{alias} already points at version {to}")
    info = registry.set_alias(name, alias, to, expected_version=current.version, action=action, reason=reason,
                              details={"rolled_back_from": current.version, **(details or {})},
                              in_transaction=in_transaction)
    return MoveResult(name, alias, to, info.previous, action, reason=reason, warnings=list(info.warnings))
