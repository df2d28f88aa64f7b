"""Printing helpers for the CLI (plain text; tables aligned by hand to keep start-up light), and the
three output modes every command has:

- default, for people: tables and summary lines on stdout, ``warning:`` lines and progress on stderr;
- ``--json``, for machines: one JSON document on stdout (warnings stay on stderr);
- ``-q/--quiet``, for scripts: nothing on stdout (JSON still, when ``--json`` asks for it), no
  warnings, no progress or per-evaluation lines; the exit code carries the result and a failure is
  still its one ``error:`` line on stderr.

:func:`add_output_modes` gives every command ``-q/--quiet`` (one definition, added in cli.main).
"""

from __future__ import annotations

import json
from typing import Any

import click

_QUIET = {"on": False}


def quiet() -> bool:
    """True when the command runs with -q/--quiet."""
    return _QUIET["on"]


def reset_output_modes() -> None:
    """Back to the default mode (before a command line is parsed)."""
    _QUIET["on"] = False


def _set_quiet(_ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        _QUIET["on"] = True


def add_output_modes(command: click.Command) -> None:
    """Add ``-q/--quiet`` to ``command`` (and to every subcommand of a group); when it is given the
    command's stdout is dropped unless it prints ``--json``."""
    import contextlib
    import functools
    import io

    if isinstance(command, click.Group):
        for sub in command.commands.values():
            add_output_modes(sub)
        return
    if any(p.name == "quiet" for p in command.params):
        return
    command.params.append(click.Option(["-q", "--quiet"], is_flag=True, expose_value=False, is_eager=True,
                                       callback=_set_quiet,
                                       help="Nothing on stdout but --json, no warnings or progress: for scripts "
                                            "(the exit code says how it went; errors stay on stderr)."))
    callback = command.callback

    @functools.wraps(callback)
    def run(*args, **kwargs):
        if not quiet() or kwargs.get("as_json"):
            return callback(*args, **kwargs)
        with contextlib.redirect_stdout(io.StringIO()):
            return callback(*args, **kwargs)

    command.callback = run


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def table(headers: list[str], rows: list[list[Any]]) -> None:
    from promptreg.reporting.text import text_table

    for line in text_table(headers, rows):
        click.echo(line)


def warn(message: str) -> None:
    if not quiet():
        click.echo(f"warning: {message}", err=True)


def note(message: str) -> None:
    """One informational line on stderr (not with -q)."""
    if not quiet():
        click.echo(f"note: {message}", err=True)


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
