"""Printing helpers for the CLI (plain text; tables aligned by hand to keep start-up light)."""

from __future__ import annotations

import json
from typing import Any

import click


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def table(headers: list[str], rows: list[list[Any]]) -> None:
    from promptreg.reporting.text import text_table

    for line in text_table(headers, rows):
        click.echo(line)


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
