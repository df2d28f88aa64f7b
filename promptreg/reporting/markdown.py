"""Markdown renderings."""

from __future__ import annotations

from typing import Any


def pushed_version_markdown(name: str, v: Any) -> str:
    """The MLflow description a version gets when it is first mirrored (``v``: a version row)."""
    lines = [f"**{name}:{v.number}** — {v.method}, sha256 `{v.sha256}`", "",
             f"- base model: `{v.base_model_fingerprint}` ({v.base_model_name or 'unnamed'})",
             f"- dataset: `{v.dataset_fingerprint or 'none'}`"]
    if v.metrics:
        lines += ["", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {val:.4g} |" for k, val in sorted(v.metrics.items())]
    if v.description:
        lines += ["", v.description]
    return "\n".join(lines)
