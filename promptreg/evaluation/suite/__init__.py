"""Regression suites: a declarative YAML file naming golden sets (with metric thresholds) and behavioural
checks (CheckList style) that a soft-prompt version must pass. The format is documented in
``docs/suites.md``.

:func:`load_suite` reads and validates a suite file, loads every data file it names and returns a
:class:`Suite`. Every problem is an :class:`~promptreg.errors.InputError` whose message is one line that
starts with the suite file's path and the place in it, e.g.
``suite.yaml: golden[0].metrics.accurcy: unknown metric 'accurcy' (known: accuracy, macro_f1, ece,
recall_<label>)``.

``Suite.sha256`` identifies what the suite tests, not how the file is written: it is the sha256 hex of
a canonical JSON document (``promptreg-suite-v1``) holding the parsed suite with every default filled in
(keys sorted), where each golden set's file path and column names are replaced by the dataset
fingerprint and row count of the rows it loaded (after ``limit``), and a check's data file path likewise
by that file's fingerprint. Comments, whitespace, key order, quoting, moving or renaming a data file
(with the suite updated to point at it) do not change it; changing a data row, a threshold, a check or
the gate settings does.

This module must import fast: no torch / transformers / mlflow.
"""

from promptreg.evaluation.suite.build import load_suite
from promptreg.evaluation.suite.model import CheckCase, ExpandedCheck, GoldenSet, Suite
from promptreg.evaluation.suite.spec import (
           SUITE_FORMAT,
           DriftPolicy,
           GateConfig,
           MetricRule,
           Policy,
           SuiteSpec,
)

__all__ = ["SUITE_FORMAT", "CheckCase", "DriftPolicy", "ExpandedCheck", "GateConfig", "GoldenSet", "MetricRule",
           "Policy", "Suite", "SuiteSpec", "load_suite"]
