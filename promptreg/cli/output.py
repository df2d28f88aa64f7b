"""Printing helpers for the CLI (plain text; tables aligned by hand to keep start-up light)."""

from __future__ import annotations

import json
from typing import Any

import click


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def table(headers: list[str], rows: list[list[Any]]) -> None:
    cells = [[str(c) for c in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for i, r in enumerate(cells):
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        if i == 0:
            click.echo("  ".join("-" * w for w in widths))


def warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


def short(sha: str | None, n: int = 12) -> str:
    return (sha or "")[:n]


def echo_push(result, as_json: bool, verb: str = "pushed") -> int:
    """Print a PushResult: warnings on stderr, then JSON or one summary line."""
    for w in result.warnings:
        warn(w)
    if as_json:
        emit_json(result.to_dict())
        return 0
    v = result.version
    head = verb if result.created else "already registered (same content):"
    click.echo(f"{head} {v.name}:{v.version}  sha256 {short(v.sha256)}  {v.method}, "
               f"{v.num_virtual_tokens} virtual tokens  mlflow: {v.mirror_status}")
    return 0
