"""The suite file's schema (pydantic models, strict: unknown keys and wrong types are refused) and its
constants (see docs/suites.md)."""

from __future__ import annotations

import string
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

SUITE_FORMAT = "promptreg-suite-v1"
NAME_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
CLASSIFICATION_METRICS = ("accuracy", "macro_f1", "ece")  # plus recall_<label>
GENERATION_METRICS = ("exact_match", "token_f1", "rouge_l", "length_ratio")
NO_DIRECTION_METRICS = ("length_ratio",)
CHECK_TYPES = ("mft", "invariance", "directional")
DATA_SUFFIXES = (".jsonl", ".json", ".csv")
MAX_MFT_CASES = 10_000

_CONFIG = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

Name = Annotated[str, Field(pattern=NAME_PATTERN)]
Text = Annotated[str, Field(min_length=1)]
Rate = Annotated[float, Field(ge=0.0, le=1.0)]
# a fill value: a string; a YAML integer (`n: [1, 2, 3]`) is taken as its decimal text
FillValue = Annotated[str, BeforeValidator(lambda v: str(v) if type(v) is int else v)]


# --------------------------------------------------------------------------------------------------
# the file's schema (pydantic, strict: YAML gives real types; unknown keys are errors)


class MetricRule(BaseModel):
    model_config = _CONFIG
    margin: float | None = Field(default=None, ge=0.0)
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _check(self) -> MetricRule:
        if self.margin is None and self.min is None and self.max is None:
            raise ValueError("a metric rule needs at least one of margin, min, max")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is greater than max {self.max}")
        return self


class GoldenSpec(BaseModel):
    model_config = _CONFIG
    name: Name
    path: Text
    text_column: Text = "text"
    label_column: Text = "label"
    target_column: Text = "target"
    limit: int | None = Field(default=None, ge=1)
    metrics: dict[str, MetricRule] = Field(min_length=1)


class _CheckBase(BaseModel):
    model_config = _CONFIG
    name: Name
    max_failure_rate: Rate = 0.0


class MftCheck(_CheckBase):
    type: Literal["mft"]
    template: Text
    fill: dict[str, Annotated[list[FillValue], Field(min_length=1)]] = Field(default_factory=dict)
    label: Text | None = None     # classification
    expect: Text | None = None    # generation


class _PerturbationCheck(_CheckBase):
    data: Text
    perturbation: Any
    samples: int | None = Field(default=None, ge=1)
    seed: int = 0
    only_labels: Annotated[list[Text], Field(min_length=1)] | None = None
    # only when `data` is a file path (a golden set brings its own columns)
    text_column: Text | None = None
    label_column: Text | None = None
    target_column: Text | None = None


class InvarianceCheck(_PerturbationCheck):
    type: Literal["invariance"]


class DirectionalCheck(_PerturbationCheck):
    type: Literal["directional"]
    label: Text
    direction: Literal["decrease", "increase"]
    tolerance: float = Field(default=0.0, ge=0.0)


Check = MftCheck | InvarianceCheck | DirectionalCheck
_CHECK_MODELS: dict[str, type[_CheckBase]] = {
    "mft": MftCheck, "invariance": InvarianceCheck, "directional": DirectionalCheck,
}


class GateConfig(BaseModel):
    model_config = _CONFIG
    confidence: float = Field(default=0.95, gt=0.0, lt=1.0)
    resamples: int = Field(default=2000, ge=100, le=1_000_000)
    seed: int = 0


class DriftPolicy(BaseModel):
    """What counts as drift for an alias and what to do about it (``promptreg drift``, schedules)."""

    model_config = _CONFIG
    action: Literal["report", "flag", "rollback"] = "report"
    alpha: float = Field(default=0.05, gt=0.0, lt=1.0)            # KS / chi-square / MMD p-value threshold
    psi_threshold: float = Field(default=0.2, gt=0.0)
    mmd_permutations: int = Field(default=500, ge=50, le=100_000)
    embedding_sample: int = Field(default=200, ge=10, le=100_000)  # rows per side for the embedding test
    metric: str = "accuracy"                                      # performance metric (labelled data)
    margin: float = Field(default=0.05, ge=0.0)                   # allowed drop vs the recorded value


class Policy(BaseModel):
    model_config = _CONFIG
    require_gate: bool | None = None       # None: production requires the gate, other aliases do not
    drift: DriftPolicy | None = None


class SuiteSpec(BaseModel):
    model_config = _CONFIG
    name: Name
    task: Literal["classification", "generation"] = "classification"
    golden: list[GoldenSpec] = Field(default_factory=list)
    checks: list[dict[str, Any]] = Field(default_factory=list)  # each validated by its type's model
    gate: GateConfig = Field(default_factory=GateConfig)
    policies: dict[str, Policy] = Field(default_factory=dict)


def placeholders(template: str) -> list[str]:
    """The template's placeholder names in order of first appearance (ValueError when malformed)."""
    names: list[str] = []
    for _, field_name, spec, conversion in string.Formatter().parse(template):
        if field_name is None:
            continue
        if not field_name.isidentifier():
            raise ValueError(f"placeholder {{{field_name}}} must be a plain name (letters, digits, '_')")
        if spec or conversion:
            raise ValueError(f"placeholder {{{field_name}}} may not have a conversion or format spec")
        if field_name not in names:
            names.append(field_name)
    return names
