"""The ``promptreg`` command: parse, call the Registry, print. Errors are one line on stderr.

Exit codes: 0 success; 1 a check ran and failed (a gate, a promote refused by its gate); 2 the
command could not run: bad input, usage error, unknown name/version/alias, unreachable store, refused
artifact, or an internal error (so CI never mistakes a crash for a failed gate).
"""

from __future__ import annotations

import os
import sys
import traceback

import click

from promptreg.cli.admin_cmds import db_group, doctor_cmd, init_cmd
from promptreg.cli.completion import completion_cmd
from promptreg.cli.drift_cmds import drift_cmd, env_group
from promptreg.cli.events_cmds import events_group
from promptreg.cli.fetch_cmds import datasets_group, models_group
from promptreg.cli.gc_cmds import gc_cmd
from promptreg.cli.inspect_cmds import inspect_cmd
from promptreg.cli.lifecycle_cmds import eval_cmd, gate_cmd, promote_cmd, rollback_cmd
from promptreg.cli.output import add_output_modes, reset_output_modes
from promptreg.cli.registry_cmds import history_cmd, list_cmd, pull_cmd, push_cmd, show_cmd, sync_cmd
from promptreg.cli.schedule_cmds import schedule_group, scheduler_cmd
from promptreg.cli.serve_cmds import classify_cmd, generate_cmd, serve_cmd
from promptreg.cli.server_cmds import login_cmd, logout_cmd, server_cmd, token_group
from promptreg.cli.train_cmds import import_peft_cmd, train_cmd
from promptreg.cli.tuning_cmds import migrate_cmd, sweep_cmd
from promptreg.cli.ui_cmds import ui_cmd
from promptreg.cli.webhook_cmds import webhook_group
from promptreg.errors import PromptregError, one_line
from promptreg.quiet import quiet_libraries
from promptreg.version import __version__


class LazyRegistry:
    """Created on first use so `--help` and usage errors never touch a store.

    The one place that chooses the mode: a server URL (``--url``, PROMPTREG_URL, ``url`` in
    promptreg.toml) makes every command remote (the typed API over HTTP, a token from PROMPTREG_TOKEN
    or ``promptreg login``); otherwise the registry opens the stores directly."""

    def __init__(self, **flags: str | None):
        self.flags = flags
        self._settings = None
        self._registry = None
        self._reader = None
        self._api = None

    @property
    def settings(self):
        if self._settings is None:
            from promptreg.settings import Settings

            self._settings = Settings.load(**{k: v for k, v in self.flags.items() if v})
        return self._settings

    @property
    def remote(self) -> bool:
        return bool(self.settings.url)

    def api(self):
        """The HTTP client of remote mode."""
        if self._api is None:
            from promptreg.client.credentials import load_token
            from promptreg.client.http import ApiClient

            url = self.settings.url
            token = os.environ.get("PROMPTREG_TOKEN") or load_token(url)
            self._api = ApiClient(url, token)
        return self._api

    def get(self):
        if self._registry is None:
            if self.remote:
                from promptreg.client.remote import RemoteRegistry

                self._registry = RemoteRegistry(self.api(), self.settings)
            else:
                from promptreg.services.registry import Registry

                self._registry = Registry(self.settings)
        return self._registry

    def read(self, method: str, *args, **kwargs):
        """A read of the Registry API (list_prompts, version_page, show, manifest, prompt_names ...)
        through the SQLite fast path when it applies (no SQLAlchemy import), else through the Registry."""
        from promptreg.services.sqlite_reads import FastPathUnavailable, open_reader

        if self._reader is None and self._registry is None:
            # remote mode reads through the server, never a local database
            self._reader = False if self.remote else (open_reader(self.settings.db_url) or False)
        if self._reader:
            try:
                return getattr(self._reader, method)(*args, **kwargs)
            except FastPathUnavailable:
                self._reader = False
        return getattr(self.get(), method)(*args, **kwargs)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="promptreg")
@click.option("--home", envvar=None, help="Project folder of the embedded default (default ./.promptreg).")
@click.option("--db-url", help="Registry database URL (sqlite:///… or postgresql+psycopg://…).")
@click.option("--tracking-uri", help="MLflow tracking URI (sqlite:///… or http(s)://server).")
@click.option("--artifact-uri", help="Artifact store: a local folder or s3://bucket/prefix.")
@click.option("--url", help="A promptreg server (remote mode; also PROMPTREG_URL or url in promptreg.toml).")
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks on errors, and the libraries' own warnings and logging.")
@click.pass_context
def cli(ctx: click.Context, home, db_url, tracking_uri, artifact_uri, url, verbose):
    """promptreg: registry and lifecycle service for soft prompts."""
    ctx.obj = LazyRegistry(home=home, db_url=db_url, tracking_uri=tracking_uri, artifact_uri=artifact_uri, url=url)


for command in (init_cmd, doctor_cmd, db_group, push_cmd, list_cmd, show_cmd, history_cmd, pull_cmd, sync_cmd,
                models_group, datasets_group, train_cmd, import_peft_cmd, eval_cmd, gate_cmd, promote_cmd,
                rollback_cmd, drift_cmd, env_group, schedule_group, scheduler_cmd, generate_cmd, classify_cmd,
                serve_cmd, ui_cmd, gc_cmd, events_group, webhook_group, completion_cmd, server_cmd, token_group,
                login_cmd, logout_cmd, inspect_cmd, sweep_cmd, migrate_cmd):
    add_output_modes(command)
    cli.add_command(command)


def _verbose(argv: list[str]) -> bool:
    return "-v" in argv or "--verbose" in argv or os.environ.get("PROMPTREG_VERBOSE") == "1"


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = _verbose(argv)
    quiet_libraries(verbose)
    reset_output_modes()   # -q/--quiet sets it again while the command line is parsed
    try:
        rv = cli.main(args=argv, prog_name="promptreg", standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.exceptions.UsageError as exc:
        cmd = exc.ctx.command_path if exc.ctx else "promptreg"
        click.echo(one_line(f"error: {exc.format_message()} (see '{cmd} --help')"), err=True)
        code = 2
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        code = 130
    except click.ClickException as exc:
        click.echo(one_line(f"error: {exc.format_message()}"), err=True)
        code = exc.exit_code
    except PromptregError as exc:
        if verbose:
            traceback.print_exc()
        click.echo(one_line(f"error: {exc}"), err=True)
        code = exc.exit_code
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        code = 130
    except OSError as exc:  # a path the user gave cannot be used (name too long, permission, disk full, ...)
        if verbose:
            traceback.print_exc()
        where = f": {exc.filename}" if exc.filename is not None else ""
        click.echo(one_line(f"error: {exc.strerror or type(exc).__name__}{where}"), err=True)
        code = 2
    except Exception as exc:  # noqa: BLE001 - last line of defence: one line, no traceback
        if verbose:
            traceback.print_exc()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        click.echo(one_line(f"error: internal error: {type(exc).__name__}: {first} "
                             "(run with --verbose for the traceback)"), err=True)
        code = 2
    sys.stdout.flush()
    sys.exit(code)


if __name__ == "__main__":
    main()
