"""``--config FILE``: every option of a command as a key of a YAML/JSON mapping (``train.yaml``).

Invariants: a key is an option's long name with or without dashes (``max-steps``, ``max_steps``,
``train``); a value given on the command line wins over the file, the file wins over the option's
default (click's ``default_map``, so types and choices are checked exactly as on the command line);
an unknown key, a non-mapping file or an unreadable file is a one-line error naming the file (and the
key). The resolved values reach the command as if typed, so what the command records (the manifest's
training config) is the resolved configuration.
"""

from __future__ import annotations

from pathlib import Path

import click


def _keys(command: click.Command) -> dict[str, str]:
    """Accepted key -> parameter name, for every option except --config and --help."""
    keys: dict[str, str] = {}
    for p in command.params:
        if not isinstance(p, click.Option) or p.name in ("config", "help") or p.hidden:
            continue
        for opt in p.opts:
            if opt.startswith("--"):
                keys[opt[2:]] = keys[opt[2:].replace("-", "_")] = p.name
        keys[p.name] = p.name
    return keys


def load_config(path: Path, command: click.Command) -> dict:
    """The file as {parameter name: value} for ``command`` (click.BadParameter when it cannot be)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc.strerror or exc}", param_hint="'--config'") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise click.BadParameter(f"{path} is not valid YAML/JSON: {first}", param_hint="'--config'") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise click.BadParameter(f"{path} must be a mapping of option names to values, got "
                                 f"{type(data).__name__}", param_hint="'--config'")
    keys = _keys(command)
    out: dict = {}
    for key, value in data.items():
        name = keys.get(str(key))
        if name is None:
            known = ", ".join(sorted({o[2:].replace("-", "_") for p in command.params if isinstance(p, click.Option)
                                      and p.name in keys.values() for o in p.opts if o.startswith("--")}))
            raise click.BadParameter(f"{path}: unknown key {key!r} (known: {known})", param_hint="'--config'")
        if name in out:
            raise click.BadParameter(f"{path}: {key!r} repeats another key for the same option",
                                     param_hint="'--config'")
        out[name] = [str(v) for v in value] if isinstance(value, list) else value
    return out


def _apply(ctx: click.Context, _param: click.Parameter, value: Path | None) -> Path | None:
    if value is not None:
        ctx.default_map = {**(ctx.default_map or {}), **load_config(value, ctx.command)}
    return value


def config_option(f):
    """Add ``--config FILE`` to a command (eager: the file is read before the other options)."""
    return click.option("--config", type=click.Path(path_type=Path, dir_okay=False), is_eager=True,
                        expose_value=False, callback=_apply,
                        help="YAML/JSON file of option values (keys: the long option names); options given "
                             "on the command line override it.")(f)
