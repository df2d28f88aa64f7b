"""Shell completion: ``promptreg completion bash|zsh|fish`` prints the script to source (click's
completion), and the arguments that name prompts and versions complete from the registry.

Invariants: completing never writes anything, never prints an error or a traceback into the shell
(a failure completes nothing), and on a SQLite registry imports no SQLAlchemy/sqlmodel (the
:mod:`promptreg.services.sqlite_reads` fast path); other databases go through the Registry.
"""

from __future__ import annotations

import click

SHELLS = ("bash", "zsh", "fish")
COMPLETE_VAR = "_PROMPTREG_COMPLETE"


def _read(ctx: click.Context, method: str, *args):
    """``method`` of the fast SQLite reader (else the Registry) for the stores the command line names."""
    from promptreg.services.sqlite_reads import FastPathUnavailable, open_reader
    from promptreg.settings import Settings

    root = ctx.find_root().params
    flags = {k: root.get(k) for k in ("home", "db_url", "tracking_uri", "artifact_uri") if root.get(k)}
    settings = Settings.load(**flags)
    reader = open_reader(settings.db_url)
    if reader is not None:
        try:
            return getattr(reader, method)(*args)
        except FastPathUnavailable:
            pass
        finally:
            reader.close()
    from pathlib import Path

    if settings.db_url.startswith("sqlite") and not Path(settings.db_url.split("///", 1)[-1]).exists():
        return []   # no registry here yet: do not create one by pressing TAB
    from promptreg.services.registry import Registry

    return getattr(Registry(settings), method)(*args)


def _safe(fn):
    def wrapper(ctx, param, incomplete):
        try:
            return fn(ctx, param, incomplete)
        except Exception:  # noqa: BLE001 - a completion never fails loudly
            return []
    return wrapper


@_safe
def complete_name(ctx, _param, incomplete: str) -> list[str]:
    return _read(ctx, "prompt_names", incomplete)


@_safe
def complete_ref(ctx, _param, incomplete: str) -> list[str]:
    """``NAME``, then ``NAME@ALIAS`` / ``NAME:VERSION`` of that prompt."""
    if "@" in incomplete:
        name, part = incomplete.split("@", 1)
        return [f"{name}@{a}" for a in _read(ctx, "alias_names", name) if a.startswith(part)]
    if ":" in incomplete:
        name, part = incomplete.split(":", 1)
        return [f"{name}:{v}" for v in _read(ctx, "version_numbers", name) if str(v).startswith(part)]
    return _read(ctx, "prompt_names", incomplete)


@_safe
def complete_version_of_ref(ctx, _param, incomplete: str) -> list[str]:
    """An option naming a version of the prompt the command's REF/NAME names: its aliases and numbers."""
    # while an option's value is being completed, click leaves the positional ref in ctx.args
    given = ctx.params.get("ref") or ctx.params.get("name") or next(iter(ctx.args), None)
    if not given:
        return complete_ref(ctx, _param, incomplete)
    name = given.split("@", 1)[0].split(":", 1)[0]
    if "@" in incomplete or ":" in incomplete:
        return complete_ref(ctx, _param, incomplete)
    values = _read(ctx, "alias_names", name) + [str(v) for v in _read(ctx, "version_numbers", name)]
    return [v for v in values if v.startswith(incomplete)]


@click.command("completion")
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def completion_cmd(ctx, shell):
    """Print the completion script for SHELL. Enable it with, e.g.:

    \b
      bash: eval "$(promptreg completion bash)"      (in ~/.bashrc)
      zsh:  eval "$(promptreg completion zsh)"       (in ~/.zshrc)
      fish: promptreg completion fish > ~/.config/fish/completions/promptreg.fish
    """
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    click.echo(cls(ctx.find_root().command, {}, "promptreg", COMPLETE_VAR).source())
    return 0
