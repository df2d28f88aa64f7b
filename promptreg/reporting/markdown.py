"""The one markdown toolkit: every markdown promptreg writes (gate and eval summaries, MLflow
descriptions, notes) escapes and formats its values here.

Invariants: :func:`cell` output is one line that cannot break a table (pipes and backslashes escaped),
open an HTML tag or form an entity, and carries no character XML 1.0 forbids; missing numbers render
as ``—``; nothing here reads a database, MLflow or a model.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

MAX_CELL_CHARS = 300            # one markdown table cell, by default
MISSING = "—"

# XML 1.0 Char ::= #x9 | #xA | #xD | [#x20-#xD7FF] | [#xE000-#xFFFD] | [#x10000-#x10FFFF]
_XML_FORBIDDEN = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_safe(text: Any) -> str:
    """``str(text)`` without the characters XML 1.0 cannot carry (controls, lone surrogates, U+FFFE/F)."""
    return _XML_FORBIDDEN.sub("", "" if text is None else str(text))


def cell(text: Any, limit: int | None = MAX_CELL_CHARS) -> str:
    """Text made safe for one markdown table cell / list item: one line (whitespace runs become one
    space), backslashes and pipes escaped, no HTML tag or entity, at most ``limit`` characters."""
    s = " ".join(xml_safe(text).split())
    if limit is not None and len(s) > limit:
        s = s[: limit - 1] + "…"
    s = s.replace("\\", "\\\\").replace("|", "\\|")
    s = re.sub(r"&(?=#?\w+;)", "&amp;", s)               # keep "&" readable unless it forms an entity
    return re.sub(r"<(?=[A-Za-z/!?])", "&lt;", s)        # keep "<=" readable, defuse tags / comments


md_escape = cell  # the name the gate/eval summaries used


def code(value: Any, limit: int = 120) -> str:
    """A value as inline code (backticks inside become quotes); ``none`` when empty."""
    text = cell(value, limit).replace("`", "'")
    return f"`{text}`" if text else "`none`"


def _missing(x: Any) -> str | None:
    if x is None:
        return MISSING
    if isinstance(x, float) and math.isnan(x):
        return "nan"
    return None


def f3(x: Any) -> str:
    """0.861; — when missing."""
    return _missing(x) or f"{float(x):.3f}"


def signed(x: Any) -> str:
    """+0.011 / -0.004; — when missing."""
    return _missing(x) or f"{float(x):+.3f}"


def num(x: Any, digits: int = 4) -> str:
    """A number with ``digits`` significant digits (tiny ones in scientific notation); — when missing."""
    if x is None:
        return MISSING
    try:
        f = float(x)
    except (TypeError, ValueError):
        return cell(x)
    if math.isnan(f):
        return "nan"
    return f"{f:.{digits}g}" if abs(f) >= 1e-3 or f == 0 else f"{f:.2e}"


def pct(confidence: float | None) -> str:
    """A confidence level as a percentage (95% when unknown)."""
    c = 0.95 if confidence is None else confidence
    return f"{c * 100:g}%"


def table(headers: list[str], rows: list[list[str]]) -> list[str]:
    """A GitHub-flavoured markdown table (cells already escaped)."""
    return (["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
            + ["| " + " | ".join(r) + " |" for r in rows])


def link(label: str, href: str | None, run_id: str | None = None) -> str:
    """``[label](href)``, or ``label (run `id`)`` when there is no href to link to."""
    if href:
        return f"[{label}]({href})"
    return f"{label} (run `{run_id}`)" if run_id else label


def fit(render: Callable[[int], str], levels: int, limit: int, truncated: str) -> str:
    """The most detailed rendering (level 0 = everything) that fits ``limit`` characters, else the
    least detailed one cut at a line end, followed by ``truncated``."""
    text = ""
    for level in range(levels):
        text = render(level)
        if len(text) <= limit:
            return text
    cut = text[: limit - len(truncated)]
    cut = cut[: cut.rfind("\n")] if "\n" in cut else cut
    return cut + truncated


def write_github_step_summary(markdown: str, env: Mapping[str, str] = os.environ) -> bool:
    """Append ``markdown`` to the file named by ``$GITHUB_STEP_SUMMARY`` (created if missing).

    Returns True when it wrote; False when the variable is unset/empty or the file cannot be written
    (a summary is a convenience: it never makes a gate fail)."""
    path = env.get("GITHUB_STEP_SUMMARY")
    if not path:
        return False
    text = markdown if markdown.endswith("\n") else markdown + "\n"
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(text + "\n")  # a blank line keeps consecutive summaries apart
    except OSError:
        return False
    return True


def pushed_version_markdown(name: str, v: Any) -> str:
    """The MLflow description a version gets when it is first mirrored (``v``: a version row); the
    full description (promptreg.reporting.descriptions) replaces it right after."""
    lines = [f"**{cell(name)}:{v.number}** — {cell(v.method)}, sha256 `{v.sha256}`", "",
             f"- base model: {code(v.base_model_fingerprint)} ({cell(v.base_model_name or 'unnamed')})",
             f"- dataset: {code(v.dataset_fingerprint or 'none')}"]
    if v.metrics:
        lines += ["", *table(["metric", "value"], [[cell(k), f"{val:.4g}"] for k, val in sorted(v.metrics.items())])]
    if v.description:
        lines += ["", v.description]
    return "\n".join(lines)
