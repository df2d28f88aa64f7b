"""Figures (matplotlib, always through the Agg canvas: no pyplot state, safe in servers and threads):
the gate/eval comparison, the training loss curve, the drift report (reference vs current).

Invariants: pure functions of result objects returning a ``Figure``; matplotlib is imported inside
them only (it is slow to import).
"""

from __future__ import annotations

import math
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

from promptreg.evaluation.drift import DriftOutcome
from promptreg.evaluation.results import EvalResult, MetricDecision
from promptreg.reporting.markdown import pct

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure


def comparison_figure(candidate: EvalResult, baseline: EvalResult | None,
                      decisions: list[MetricDecision] | None = None) -> Figure:
    """Grouped bars per (golden set, metric): candidate vs baseline (omitted when None).

    With ``decisions``, a second, smaller panel under the bars shows each gated metric's difference
    (candidate - baseline) with its paired confidence interval as an error bar, the zero line and the
    non-inferiority bound; a red marker means the metric failed the gate."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    pairs: list[tuple[str, str]] = [(d.name, k) for d in candidate.datasets for k in d.metrics]
    by_id = {m.id: m for m in decisions or []}
    for m in decisions or []:
        if (m.dataset, m.metric) not in pairs:
            pairs.append((m.dataset, m.metric))

    def value(result: EvalResult | None, ds: str, metric: str) -> float | None:
        if result is None:
            return None
        for d in result.datasets:
            if d.name == ds:
                v = d.metrics.get(metric)
                return None if v is None else float(v)
        return None

    cand_vals = [value(candidate, ds, k) for ds, k in pairs]
    base_vals = [value(baseline, ds, k) for ds, k in pairs]
    for i, (ds, k) in enumerate(pairs):  # fall back on the decisions' numbers
        m = by_id.get(f"{ds}/{k}")
        if m is not None:
            if cand_vals[i] is None:
                cand_vals[i] = m.candidate
            if base_vals[i] is None and baseline is not None:
                base_vals[i] = m.baseline

    n = max(len(pairs), 1)
    show_ci = decisions is not None
    fig = Figure(figsize=(max(6.0, 1.1 * n + 2.0), 6.5 if show_ci else 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    if show_ci:
        ax, ax_ci = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1.4]})
    else:
        ax, ax_ci = fig.subplots(1, 1), None

    xs = list(range(len(pairs)))
    width = 0.38 if baseline is not None else 0.6
    c_off = -width / 2 if baseline is not None else 0.0
    finite = [v for v in cand_vals + base_vals if v is not None and math.isfinite(v)]
    top = max([1.0] + finite) * 1.15
    bottom = min([0.0] + finite)
    cand_label = f"candidate {candidate.prompt}:{candidate.version}"
    bars = ax.bar([x + c_off for x in xs], [0.0 if v is None else v for v in cand_vals], width,
                  label=cand_label, color="#4C72B0")
    _label_bars(ax, bars, cand_vals)
    if baseline is not None:
        bars = ax.bar([x + width / 2 for x in xs], [0.0 if v is None else v for v in base_vals], width,
                      label=f"baseline {baseline.prompt}:{baseline.version}", color="#A0A0A0")
        _label_bars(ax, bars, base_vals)
    ax.set_ylim(bottom, top)
    ax.set_ylabel("value")
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=2, fontsize=8, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    labels = [f"{ds}\n{k}" for ds, k in pairs]
    if not pairs:
        ax.text(0.5, 0.5, "no metrics", ha="center", va="center", transform=ax.transAxes)

    vs = f"{baseline.prompt}:{baseline.version}" if baseline is not None else "no baseline"
    fig.suptitle(f"{candidate.prompt}:{candidate.version} vs {vs} — suite {candidate.suite_name}",
                 fontsize=11)

    target = ax
    if ax_ci is not None:
        target = ax_ci
        ax_ci.axhline(0.0, color="black", linewidth=0.8)
        drew = bound_labelled = False
        for x, (ds, k) in zip(xs, pairs, strict=True):
            m = by_id.get(f"{ds}/{k}")
            if m is None or m.diff is None:
                continue
            color = "#2CA02C" if m.passed else "#D62728"
            lo = m.diff - m.ci_low if m.ci_low is not None else 0.0
            hi = m.ci_high - m.diff if m.ci_high is not None else 0.0
            ax_ci.errorbar([x], [m.diff], yerr=[[max(lo, 0.0)], [max(hi, 0.0)]], fmt="o", color=color,
                           capsize=4)
            if m.margin is not None and m.higher_is_better is not None:
                bound = -abs(m.margin) if m.higher_is_better else abs(m.margin)
                ax_ci.hlines(bound, x - 0.4, x + 0.4, colors="#D62728", linestyles="dashed", linewidth=1,
                             label=None if bound_labelled else "non-inferiority bound")
                bound_labelled = True
            drew = True
        ax_ci.set_ylabel(f"diff, {pct(next((m.confidence for m in decisions or [] if m.confidence), None))} CI",
                         fontsize=8)
        ax_ci.grid(axis="y", alpha=0.3)
        if bound_labelled:
            ax_ci.legend(loc="best", fontsize=7, frameon=False)
        if not drew:
            ax_ci.set_yticks([])
            ax_ci.text(0.5, 0.5, "no baseline: no paired difference to show", ha="center", va="center",
                       transform=ax_ci.transAxes, fontsize=9)
    target.set_xticks(xs)
    target.set_xticklabels(labels, fontsize=8)
    if pairs:
        target.set_xlim(-0.6, len(pairs) - 0.4)
    return fig


def _label_bars(ax, bars, values: list[float | None]) -> None:
    for bar, v in zip(bars, values, strict=True):
        text = "n/a" if v is None else f"{v:.3f}"
        ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom",
                    fontsize=7, xytext=(0, 2), textcoords="offset points")


def figure_png_bytes(fig: Figure, dpi: int = 100) -> bytes:
    """The figure rendered as PNG by the Agg canvas."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def loss_figure(history: dict[str, Any]) -> Figure:
    """The training loss per optimizer step, with the eval metric (accuracy, else loss) on a second axis."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.plot(history["step"], history["loss"], lw=1, label="train loss")
    if history["eval_step"]:
        ax2 = ax.twinx()
        key = "accuracy" if "accuracy" in history["eval"][0] else "loss"
        ax2.plot(history["eval_step"], [m[key] for m in history["eval"]], "o-", color="C1", label=f"eval {key}")
        ax2.set_ylabel(f"eval {key}")
        ax2.legend(loc="upper right")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.legend(loc="upper left")
    ax.set_title("promptreg training")
    fig.tight_layout()
    return fig


def sweep_figure(rows: list[dict[str, Any]], metric: str) -> Figure:
    """A sweep (services.sweep rows): the eval metric against the prompt length, one line per method (the
    best trial of each length), trials stopped by successive halving as hollow markers at their last score."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for i, method in enumerate(sorted({r["method"] for r in rows})):
        mine = [r for r in rows if r["method"] == method and r["metric"] is not None]
        done = [r for r in mine if not r["status"].startswith("stopped")]
        best: dict[int, float] = {}
        for r in done:
            n = r["num_virtual_tokens"]
            sign = -1 if metric == "eval_loss" else 1
            if n not in best or sign * r["metric"] > sign * best[n]:
                best[n] = r["metric"]
        xs = sorted(best)
        ax.plot(xs, [best[x] for x in xs], "o-", color=f"C{i}", label=method)
        stopped = [r for r in mine if r["status"].startswith("stopped")]
        if stopped:
            ax.plot([r["num_virtual_tokens"] for r in stopped], [r["metric"] for r in stopped], "o",
                    mfc="none", color=f"C{i}", label=f"{method} (stopped early)")
    lengths = sorted({r["num_virtual_tokens"] for r in rows})
    if lengths and lengths[-1] / max(lengths[0], 1) >= 10:
        ax.set_xscale("log")
    ax.set_xticks(lengths)
    ax.set_xticklabels([str(n) for n in lengths])
    ax.set_xlabel("virtual tokens")
    ax.set_ylabel(metric)
    ax.legend(loc="best", fontsize="small")
    ax.set_title("promptreg sweep")
    fig.tight_layout()
    return fig


def drift_figure(out: DriftOutcome, plot: dict[str, Any]) -> Figure:
    """Reference vs current: token lengths, predicted-label shares, top-label confidence."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 3.6))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    length_test = next(t for t in out.tests if t["name"].startswith("input length"))
    axes[0].hist([plot["ref_len"], plot["cur_len"]], bins=20, density=True, label=["reference", "current"])
    axes[0].set_xlabel("tokens")
    axes[0].set_title(length_test["explain"][:70], fontsize=8)
    axes[0].legend(fontsize=8)
    probs, ref_probs, labels = plot["probs"], plot["ref_probs"], plot["labels"]
    if probs is not None and labels:
        import numpy as np

        k = len(labels)
        ref_share = np.bincount(ref_probs.argmax(-1), minlength=k) / len(ref_probs)
        cur_share = np.bincount(probs.argmax(-1), minlength=k) / len(probs)
        x = np.arange(k)
        axes[1].bar(x - 0.2, ref_share, 0.4, label="reference")
        axes[1].bar(x + 0.2, cur_share, 0.4, label="current")
        axes[1].set_xticks(x, labels)
        axes[1].set_title("predicted label share", fontsize=9)
        axes[1].legend(fontsize=8)
        axes[2].hist([ref_probs.max(-1), probs.max(-1)], bins=20, range=(0, 1), density=True,
                     label=["reference", "current"])
        axes[2].set_title("top-label confidence", fontsize=9)
    else:
        axes[1].axis("off")
        axes[2].axis("off")
    fig.suptitle(f"{out.prompt}:{out.version} drift on {PurePath(out.data_uri).name}: {out.decision}", fontsize=10)
    fig.tight_layout()
    return fig
