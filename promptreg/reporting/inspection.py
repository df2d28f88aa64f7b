"""Rendering a soft prompt's inspection (softprompt.inspection): the terminal text of ``promptreg inspect``
and the section of the version's MLflow description (from the stored summary).

Invariants: pure functions; every rendering carries the waywardness caveat as one line; token strings
are shown as JSON string literals (leading spaces and control characters stay visible).
"""

from __future__ import annotations

import json
from typing import Any

from promptreg.reporting.markdown import cell, code, table
from promptreg.reporting.text import text_table
from promptreg.softprompt.inspection import WAYWARDNESS_CAVEAT, PromptInspection

MATRIX_MAX = 16   # pairwise cosine matrix printed in full up to this many virtual tokens


def _tok(token: str, limit: int = 24) -> str:
    text = json.dumps(token, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 2] + "…\""


def inspection_text(r: PromptInspection) -> list[str]:
    """``promptreg inspect`` output for a terminal."""
    lines = [f"{r.prompt}:{r.version}  {r.method}  sha256 {r.sha256[:12]}  base model {r.base_model_fingerprint[:12]}",
             f"inspected: {r.space}" + (f" for text {json.dumps(r.text, ensure_ascii=False)}" if r.text else ""),
             WAYWARDNESS_CAVEAT, ""]
    rows = [[t["index"], f"{t['norm']:.3f}", f"{t['norm_percentile']:.1f}",
             "  ".join(f"{_tok(n['token'])} {n['cosine']:.3f}" for n in t["nearest"])] for t in r.tokens]
    lines += text_table(["#", "norm", "norm pct", f"nearest {r.top_k} tokens (cosine)"], rows)
    vn = r.vocab_norm
    lines += ["", f"vocabulary norms: min {vn['min']:.3f}  p5 {vn['p5']:.3f}  median {vn['median']:.3f}  "
                  f"p95 {vn['p95']:.3f}  max {vn['max']:.3f}"]
    n = len(r.pairwise)
    lines.append(f"pairwise cosine of the {n} virtual tokens: mean off-diagonal {r.pairwise_mean:.3f}")
    if 1 < n <= MATRIX_MAX:
        lines += text_table(["#", *[str(j) for j in range(n)]],
                            [[i, *[f"{v:.2f}" for v in row]] for i, row in enumerate(r.pairwise)])
    return lines


def inspection_markdown(summary: dict[str, Any], level: int = 0) -> list[str]:
    """The MLflow description section from a stored summary (``PromptInspection.summary`` plus ``at`` /
    ``actor``); ``level`` > 0 shortens it (the description's fitting levels)."""
    shown = summary.get("tokens") or []
    cap = (20, 10, 5, 3)[min(level, 3)]
    lines = [f"*{cell(WAYWARDNESS_CAVEAT, 300)}*", "",
             f"- **inspected:** {cell(summary.get('space') or '', 200)}"
             + (f" for text {code(summary['text'], 120)}" if summary.get("text") else ""),
             f"- **when:** {cell(summary.get('at') or '', 40)} by {cell(summary.get('actor') or 'unknown', 80)}; "
             f"base model {code(str(summary.get('base_model_fingerprint') or '')[:12], 20)}",
             f"- **pairwise cosine (mean off-diagonal):** {float(summary.get('pairwise_mean') or 0.0):.3f}; "
             f"vocabulary median norm {float(summary.get('vocab_norm_median') or 0.0):.3f}", ""]
    rows = [[str(i), f"{float(t.get('norm') or 0.0):.3f}", f"{float(t.get('norm_percentile') or 0.0):.1f}",
             ", ".join(f"{code(json.dumps(tok, ensure_ascii=False), 40)} {float(c):.2f}" for tok, c in t.get("nearest") or [])]
            for i, t in enumerate(shown[:cap])]
    lines += table(["#", "norm", "norm pct", "nearest tokens (cosine)"], rows)
    total = int(summary.get("num_virtual_tokens") or len(shown))
    if total > len(rows):
        lines.append(f"*… {total - len(rows)} more virtual tokens: `promptreg inspect` shows all*")
    return lines


__all__ = ["inspection_markdown", "inspection_text"]
