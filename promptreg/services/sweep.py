"""``promptreg sweep``: a grid of trainings (methods x prompt lengths x inits x learning rates) on one
dataset and base model, pruned by successive halving, tracked as MLflow child runs under one parent
run, and with ``push`` the best trial registered as one version whose manifest records the sweep.

How a trial runs: the Trainer of ``promptreg train`` (training/trainer.py) with its own checkpoint
folder; a rung of successive halving is ``stop_after_steps`` at that rung's budget and the next rung
resumes from the checkpoint, so a trial that survives every rung trained exactly as one uninterrupted
run of ``max_steps`` (same learning-rate schedule, same data order). The pure parts (grid, rung
budgets, who survives, who wins) are training/sweep.py.

Invariants: the data is loaded, validated and fingerprinted once, as ``promptreg train`` does; every
trial has one child run (tag ``mlflow.parentRunId`` = the parent), created before it trains and ended
when it stops or finishes; nothing is registered unless ``push`` and only the winner (by eval score,
tie -> fewer trainable parameters); the winner's artifact is written atomically from its best
checkpointed tensors. ``processes > 1`` runs each rung's trials in that many worker processes (each
loads the model once); the results are the same as in-process (same seeds, same checkpoints).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from promptreg.errors import InputError, PromptregError
from promptreg.training.sweep import Outcome, Trial, best, grid, rungs, survivors

if TYPE_CHECKING:
    from promptreg.services.registry import Registry
    from promptreg.services.train import TrainJob


@dataclass
class SweepJob:
    base: TrainJob                        # data, spec, template, batch size, max_steps, seed, device, ...
    methods: list[str]
    lengths: list[int]
    inits: list[str | None] = field(default_factory=lambda: [None])
    lrs: list[float] = field(default_factory=lambda: [3e-2])
    min_steps: int | None = None          # first rung of successive halving (None: no halving)
    eta: int = 2                          # keep the best 1/eta at each rung
    processes: int = 1
    method_options: dict[str, Any] = field(default_factory=dict)   # fixed options, for methods that have them
    plot: Path | None = None              # where to save the plot (default: the sweep folder)


@dataclass
class SweepReport:
    run_id: str | None                    # the parent MLflow run
    metric: str                           # eval_accuracy, or eval_loss (generation)
    rungs: list[int]
    rows: list[dict]                      # one per trial, best first (reporting.text.sweep_rows renders them)
    best: str
    plot: Path
    folder: Path
    artifact: Path | None = None
    pushed: Any = None                    # PushResult
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        out = {k: v for k, v in dataclasses.asdict(self).items() if k != "pushed"}
        out.update(plot=str(self.plot), folder=str(self.folder),
                   artifact=str(self.artifact) if self.artifact else None,
                   pushed=self.pushed.to_dict() if self.pushed is not None else None)
        return out


def init_choices() -> dict[str, tuple[str, ...]]:
    """The initialisations each registered method accepts (asked of the method's own config check)."""
    from promptreg.softprompt.methods import METHODS, make_config
    from promptreg.softprompt.methods.base import INIT_CHOICES
    from promptreg.softprompt.methods.prefix_tuning import PREFIX_INIT_CHOICES

    out: dict[str, tuple[str, ...]] = {}
    for name, cls in METHODS.items():
        fields = {f.name for f in dataclasses.fields(cls.config_class)}
        ok = []
        for init in dict.fromkeys((*INIT_CHOICES, *PREFIX_INIT_CHOICES)):
            try:
                make_config(name, {"init": init, **({"init_text": "x"} if "init_text" in fields else {})})
                ok.append(init)
            except (InputError, TypeError):
                pass
        out[name] = tuple(ok) if "init" in fields else ()
    return out


def trial_config(base_config, trial: Trial, fixed: dict[str, Any], min_steps: int | None):
    """The TrainConfig of one trial: the base configuration with the trial's method, length, init and
    learning rate, the fixed options the method has, and evaluations at every rung boundary."""
    from promptreg.softprompt.methods import METHODS

    fields = {f.name for f in dataclasses.fields(METHODS[trial.method].config_class)}
    options = {k: v for k, v in fixed.items() if k in fields and v is not None}
    options["num_virtual_tokens"] = trial.num_virtual_tokens
    if trial.init is not None:
        options["init"] = trial.init
    if options.get("init") != "text":
        options.pop("init_text", None)
    return dataclasses.replace(base_config, method=trial.method, method_options=options, lr=trial.lr,
                               eval_every=min_steps or base_config.eval_every, stop_after_steps=None)


# ----- one rung of one trial (in this process or a worker) -----------------------------------------
_MODEL: dict[str, Any] = {}


def _load_model(model_dir: str, precision: str, device: str):
    key = f"{model_dir}|{precision}|{device}"
    if key not in _MODEL:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from promptreg.softprompt.precision import Precision

        _MODEL.clear()
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=Precision(precision).dtype).eval().to(device)
        _MODEL[key] = (base, tokenizer)
    return _MODEL[key]


def _worker_init(model_dir: str, precision: str, device: str) -> None:
    from promptreg.quiet import quiet_libraries

    quiet_libraries(False)
    _load_model(model_dir, precision, device)


def run_rung(task: dict) -> dict:
    """Train one trial up to ``task['budget']`` steps (resuming its checkpoint after the first rung);
    returns its best eval so far, its cost and its metric rows. Picklable in and out (worker processes)."""
    from promptreg.training.trainer import Trainer

    cfg = dataclasses.replace(task["config"], stop_after_steps=None if task["last"] else task["budget"])
    base, tokenizer = _load_model(task["model_dir"], cfg.precision, task["device"])
    rows: list = []
    trainer = Trainer(base, tokenizer, cfg, task["spec"], task["train"], task["eval"],
                      checkpoint_dir=Path(task["checkpoint_dir"]), on_metrics=rows.extend, progress=False, notes=False)
    result = trainer.run(resume=task["resume"])
    soft = result.soft_prompt
    return {"score": result.best_metric, "steps": result.steps, "seconds": result.seconds,
            "parameters": result.trainable_parameters, "finished": not result.interrupted,
            "stopped_early": result.stopped_early, "best_step": result.best_step, "metrics": rows,
            "eval": result.eval_metrics, "history": result.history,
            "tensors": {k: v.detach().cpu() for k, v in soft.export_tensors().items()},
            "method_config": soft.method_config()}


# ----- the sweep --------------------------------------------------------------------------------
def run_sweep(registry: Registry, job: SweepJob) -> SweepReport:
    """Run the sweep end to end (see the module docstring); raises PromptregError (one line) on bad input."""
    from promptreg.refs import check_name
    from promptreg.runtime.loader import pick_device
    from promptreg.services.train import load_splits, prepare_data

    base = job.base
    if base.push:
        check_name(base.push)
    if not base.config.max_steps:
        raise InputError("a sweep needs --max-steps (the budget of a trial that survives every rung)")
    if job.processes < 1:
        raise InputError("--processes must be at least 1")
    trials = grid(job.methods, job.lengths, job.inits, job.lrs, init_choices())
    budgets = rungs(base.config.max_steps, job.min_steps, job.eta)
    for t in trials:
        trial_config(base.config, t, job.method_options, job.min_steps).validate()
    spec, splits = load_splits(base)
    if not splits["eval"]:
        raise InputError("a sweep needs an eval split to compare trials (--eval or --eval-fraction)")
    data = prepare_data(base, (spec, splits))
    spec, splits, validation, model_dir, info, fps = (data.spec, data.splits, data.validation, data.model_dir,
                                                      data.info, data.fps)
    device = pick_device(base.device)
    metric = "eval_accuracy" if spec.task == "classification" else "eval_loss"
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    folder = registry.settings.home / "runs" / f"sweep-{stamp}"
    folder.mkdir(parents=True, exist_ok=True)
    mirror, warnings = registry.mirror, list(validation.warnings)

    def safe(fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except PromptregError as exc:  # MLflow is best effort once the sweep runs
            warnings.append(f"MLflow: {exc}")
            return None

    experiment = f"promptreg/{base.push}/sweep" if base.push else "promptreg/sweep"
    tags = {"promptreg.base_model": info.fingerprint, "promptreg.dataset": fps["train"], "promptreg.job": "sweep"}
    parent = mirror.start_run(experiment, f"sweep-{stamp}", prompt=base.push, tags=tags)
    t0 = time.perf_counter()
    try:
        safe(mirror.log_params, parent, {
            "methods": job.methods, "num_virtual_tokens": job.lengths, "inits": job.inits, "lrs": job.lrs,
            "rungs": budgets, "eta": job.eta, "trials": len(trials), "base_model": str(model_dir),
            "train_rows": len(splits["train"]), "eval_rows": len(splits["eval"]), "processes": job.processes})
        children = {t.key: mirror.start_run(experiment, t.key, prompt=base.push, tags={
            **tags, "mlflow.parentRunId": parent, "promptreg.job": "sweep-trial", "promptreg.method": t.method})
            for t in trials}
        for t in trials:
            safe(mirror.log_params, children[t.key], {**t.to_dict(), "max_steps": base.config.max_steps,
                                                      "batch_size": base.config.batch_size, "seed": base.config.seed})
        outcomes, results = _run_rungs(job, trials, budgets, spec, splits, str(model_dir), device, folder,
                                       lambda key, rows: rows and safe(mirror.log_metrics, children[key], rows))
        winner = best(outcomes.values())
        rows = _rows(outcomes, results, children, budgets, metric, winner)
        for row in rows:
            run_id = children[row["key"]]
            safe(mirror.log_metrics, run_id, [(k, float(row[k]), row["steps"]) for k in
                                              ("score", "seconds", "parameters") if row[k] is not None]
                 + [("steps", float(row["steps"]), row["steps"])])
            safe(mirror.set_tags, run_id, {"promptreg.sweep_status": row["status"]})
            safe(mirror.end_run, run_id, "FINISHED")
        from promptreg.reporting.figures import sweep_figure

        figure = sweep_figure(rows, metric)
        plot = Path(job.plot) if job.plot else folder / "sweep.png"
        plot.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(plot, dpi=100)
        safe(mirror.log_figure, parent, figure, "plots/sweep.png")
        figure.clear()
        safe(mirror.log_table, parent, {k: [r[k] for r in rows] for k in rows[0]}, "sweep/trials.json")
        safe(mirror.log_metrics, parent, [(f"best_{metric}", float(results[winner.trial.key]["eval"].get(
            metric.removeprefix("eval_"), winner.score)), 0), ("trials", float(len(trials)), 0)])
        safe(mirror.set_tags, parent, {"promptreg.sweep_best": winner.trial.key})
        report = SweepReport(parent, metric, budgets, rows, winner.trial.key, plot, folder,
                             seconds=time.perf_counter() - t0, warnings=warnings)
        if base.push:
            _push_winner(registry, job, report, winner, results[winner.trial.key], children[winner.trial.key],
                         spec, splits, info, fps, validation, device, model_dir)
        safe(mirror.end_run, parent, "FINISHED")
        report.warnings = warnings
        return report
    except BaseException:
        safe(mirror.end_run, parent, "FAILED")
        raise
    finally:
        _MODEL.clear()  # the in-process trials' base model: not kept past the sweep


def _run_rungs(job, trials, budgets, spec, splits, model_dir, device, folder, on_rows):
    """Every rung in turn: the trials still running train to the rung's budget; after each rung but
    the last, successive halving stops those that fell behind. Returns outcomes and last results;
    ``on_rows(trial key, metric rows)`` receives each rung's per-step metrics."""
    outcomes: dict[str, Outcome] = {t.key: Outcome(t, None, 0) for t in trials}
    results: dict[str, dict] = {}
    pool = None
    if job.processes > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(max_workers=job.processes, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_worker_init,
                                   initargs=(model_dir, job.base.config.precision, device))
    try:
        for i, budget in enumerate(budgets):
            last = i == len(budgets) - 1
            running = [o for o in outcomes.values() if not o.finished and not o.stopped]
            tasks = [{"config": trial_config(job.base.config, o.trial, job.method_options, job.min_steps),
                      "spec": spec, "train": splits["train"], "eval": splits["eval"], "model_dir": model_dir,
                      "device": device, "checkpoint_dir": str(folder / "trials" / o.trial.key), "budget": budget,
                      "resume": i > 0, "last": last} for o in running]
            done = list(pool.map(run_rung, tasks)) if pool else [run_rung(t) for t in tasks]
            for o, res in zip(running, done, strict=True):
                results[o.trial.key] = res
                o.score, o.parameters, o.steps, o.seconds = res["score"], res["parameters"], res["steps"], res["seconds"]
                o.rung, o.finished = i, res["finished"] or last
                on_rows(o.trial.key, res["metrics"])
            if not last:
                keep = {o.trial.key for o in survivors(running, job.eta)}
                for o in running:
                    if o.trial.key not in keep and not o.finished:
                        o.stopped = True
    finally:
        if pool is not None:
            pool.shutdown()
    return outcomes, results


def _rows(outcomes, results, children, budgets, metric, winner) -> list[dict]:
    from promptreg.training.sweep import ranked

    out = []
    for o in ranked(outcomes.values()):
        ev = results.get(o.trial.key, {}).get("eval", {})
        value = ev.get(metric.removeprefix("eval_"))
        status = ("best" if o is winner else f"stopped at step {budgets[o.rung]}" if o.stopped
                  else "finished" if o.steps >= budgets[-1] else f"early-stopped at step {o.steps}")
        out.append({**o.trial.to_dict(), "metric": value, "score": o.score, "steps": o.steps,
                    "seconds": round(o.seconds, 3), "parameters": o.parameters, "status": status,
                    "run_id": children[o.trial.key]})
    return out


def _push_winner(registry, job, report, winner, res, run_id, spec, splits, info, fps, validation, device,
                 model_dir) -> None:
    """Write the winner's artifact (its best tensors, the sweep in ``extra.sweep``) and register it."""
    from types import SimpleNamespace

    from transformers import AutoConfig

    from promptreg.services.train import export_artifact
    from promptreg.softprompt.methods import ModelDims, method_from_tensors

    dims = ModelDims.from_config(AutoConfig.from_pretrained(model_dir))
    soft = method_from_tensors(winner.trial.method, res["method_config"], res["tensors"], dims, trainable=False)
    config = trial_config(job.base.config, winner.trial, job.method_options, job.min_steps)
    train_job = dataclasses.replace(job.base, config=config, output=report.folder / "artifact")
    result = SimpleNamespace(soft_prompt=soft, steps=res["steps"], best_step=res["best_step"],
                             stopped_early=res["stopped_early"], interrupted=False)
    metrics = {f"eval_{k}": v for k, v in res["eval"].items()}
    metrics.update(train_seconds=res["seconds"], train_steps=float(res["steps"]),
                   trainable_parameters=float(res["parameters"]))
    sweep = {"parent_run_id": report.run_id, "metric": report.metric, "rungs": report.rungs, "eta": job.eta,
             "winner": winner.trial.key, "trials": [{k: r[k] for k in ("key", "method", "num_virtual_tokens", "init",
                                                                     "lr", "metric", "steps", "seconds",
                                                                     "parameters", "status")}
                                                    for r in report.rows]}
    report.artifact = export_artifact(train_job, spec, splits, info, fps, validation, run_id,
                                      registry.settings.user, result, metrics, device=device, extra={"sweep": sweep})
    report.pushed = registry.push(report.artifact, job.base.push, description=job.base.description, run_id=run_id)
    report.warnings.extend(report.pushed.warnings)

