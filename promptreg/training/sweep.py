"""The pure logic of a hyper-parameter sweep (``promptreg sweep``): the grid of trials, the step
budgets of successive halving, which trials go on to the next rung, and which trial wins.

Invariants: no model, no torch, no I/O — functions of hand-buildable values (tested as such).
Scores are "higher is better" (accuracy, or minus the eval loss); every ordering breaks ties by
fewer trainable parameters, then by the trial's key, so a sweep's outcome never depends on dict order.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

from promptreg.errors import InputError


@dataclass(frozen=True)
class Trial:
    """One point of the grid. ``init`` is None for a method without an initialisation choice."""

    method: str
    num_virtual_tokens: int
    init: str | None
    lr: float

    @property
    def key(self) -> str:
        return f"{self.method}-n{self.num_virtual_tokens}-{self.init or 'default'}-lr{self.lr:g}"

    def to_dict(self) -> dict:
        return {**asdict(self), "key": self.key}


@dataclass
class Outcome:
    """A trial's result so far: its best eval score (higher is better), its cost, how far it went."""

    trial: Trial
    score: float | None          # None: never evaluated
    parameters: int
    steps: int = 0
    seconds: float = 0.0
    rung: int = 0                # the last rung it ran (0-based)
    stopped: bool = False        # stopped by successive halving (fell behind)
    finished: bool = False       # ran its whole budget (or stopped early by patience)


def grid(methods: Sequence[str], lengths: Sequence[int], inits: Sequence[str | None], lrs: Sequence[float],
         init_choices: Mapping[str, Iterable[str]]) -> list[Trial]:
    """Every (method, length, init, lr) the methods accept, in the order given. ``init_choices``: the
    inits each method accepts (a method absent or with none takes ``init=None`` whatever ``inits`` says);
    an init no given method accepts is refused, so a typo never silently shrinks the grid."""
    if not methods or not lengths or not lrs:
        raise InputError("a sweep needs at least one method, one --num-virtual-tokens and one --lr")
    for n in lengths:
        if not isinstance(n, int) or n < 1:
            raise InputError(f"--num-virtual-tokens must be positive integers, got {n!r}")
    for lr in lrs:
        if not (lr > 0 and math.isfinite(lr)):
            raise InputError(f"--lr must be positive numbers, got {lr!r}")
    wanted = [i for i in inits if i is not None]
    accepted = {i for m in methods for i in init_choices.get(m, ())}
    unknown = [i for i in wanted if i not in accepted]
    if unknown:
        raise InputError(f"--init {', '.join(unknown)} is not an initialisation of "
                         f"{', '.join(methods)} (they accept: {', '.join(sorted(accepted)) or 'none'})")
    out: list[Trial] = []
    for method in methods:
        choices = set(init_choices.get(method, ()))
        method_inits = [i for i in wanted if i in choices] or [None]
        for n in lengths:
            for init in method_inits:
                for lr in lrs:
                    trial = Trial(method, int(n), init, float(lr))
                    if trial not in out:
                        out.append(trial)
    return out


def rungs(max_steps: int, min_steps: int | None, eta: int) -> list[int]:
    """The cumulative step budgets of successive halving: ``min_steps``, ``min_steps * eta``, ... and
    ``max_steps`` last. No ``min_steps`` (or one not below ``max_steps``): one rung, no halving."""
    if max_steps < 1:
        raise InputError("--max-steps must be at least 1")
    if eta < 2:
        raise InputError("--eta must be at least 2")
    if not min_steps or min_steps >= max_steps:
        return [max_steps]
    if min_steps < 1:
        raise InputError("--min-steps must be at least 1")
    out, budget = [], min_steps
    while budget < max_steps:
        out.append(budget)
        budget *= eta
    return [*out, max_steps]


def _order_key(o: Outcome) -> tuple:
    score = o.score if o.score is not None and math.isfinite(o.score) else -math.inf
    return (-score, o.parameters, o.trial.key)


def ranked(outcomes: Iterable[Outcome]) -> list[Outcome]:
    """Best first: higher score, then fewer parameters, then the key."""
    return sorted(outcomes, key=_order_key)


def survivors(outcomes: Sequence[Outcome], eta: int) -> list[Outcome]:
    """Successive halving's cut: the best ``ceil(n / eta)`` of the trials still running (at least one);
    a trial already finished is not counted (it has nothing left to run)."""
    running = [o for o in outcomes if not o.finished and not o.stopped]
    keep = max(1, math.ceil(len(running) / eta)) if running else 0
    return ranked(running)[:keep]


def best(outcomes: Iterable[Outcome]) -> Outcome:
    """The winner among trials that were evaluated and not stopped by halving (by score, then fewer
    parameters); a sweep where nothing was evaluated has no winner."""
    candidates = [o for o in outcomes if o.score is not None and not o.stopped]
    if not candidates:
        raise InputError("no trial of the sweep was evaluated (is the eval split empty?)")
    return ranked(candidates)[0]
