"""``promptreg drift``: re-evaluate a deployed version on fresh production data and act by policy.

Three kinds of drift are checked:

1. **Base-model drift**: the base model deployed in an environment (``promptreg env set-base-model``,
   or ``--model`` at check time) has another fingerprint than the version's. The version is flagged
   ``incompatible`` at once (its own transaction and audit event); then, when the dimensions allow it,
   the version is evaluated on the new base model, and only if it passes there (performance on the
   labelled fresh data within the policy's margin of what was recorded at promotion) is it restored
   to ``active``. Otherwise the policy acts.
2. **Data drift**: the fresh inputs against the version's reference data (``--reference``, else its
   training file recorded in the manifest if it still exists, else the suite's golden sets):
   input length in tokens (KS, or normed Wasserstein for references > 1000 rows), the version's
   prediction distribution and, when labelled, the label distribution (chi-square, PSI beside it),
   and the mean-pooled hidden states of the frozen base model (unbiased MMD² permutation test).
3. **Performance drift**: with labels, the policy's metric on the fresh data with a BCa bootstrap
   CI (scipy.stats.bootstrap, the gate's machinery) against the value recorded at promotion (the
   promotion gate's verdict, else the version's latest eval run, else its manifest metrics): drift
   when the CI's upper bound is below recorded − margin. Without labels, an ESTIMATE from the
   verbalizer confidence (mean top-label probability, KS test), and the report says so.

Actions (``report`` | ``flag`` | ``rollback``): ``flag`` marks the version ``degraded`` (visible in
``list``/``show`` and as the MLflow tag ``promptreg.status``); ``rollback`` also moves the alias to the
newest previous holder (from the audit log) that passes on the new data, through the same
compare-and-swap as ``promptreg rollback``. Every action is an audit event. The report (statistics,
decision, action), the flag and the alias move are written at the END, in ONE transaction with their
audit events: a check killed before that leaves nothing (its content-addressed report files may
remain as an orphan for ``gc``), so a scheduled slot retried after a crash starts from the same
state. Only the base-model ``incompatible`` flag is committed at once, by itself (a complete state).
"""


from promptreg.evaluation.drift import DriftOutcome
from promptreg.services.drift.check import check_drift, scheduled_check
from promptreg.services.drift.inputs import read_data, reference_rows
from promptreg.services.drift.policy import recorded_metric, resolve_policy
from promptreg.services.environments import list_environments, set_environment_model

__all__ = ["DriftOutcome", "check_drift", "list_environments", "read_data", "recorded_metric", "reference_rows",
           "resolve_policy", "scheduled_check", "set_environment_model"]
