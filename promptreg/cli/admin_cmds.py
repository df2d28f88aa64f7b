"""init, doctor, db upgrade/downgrade/current."""

from __future__ import annotations

import click

from promptreg.cli.output import emit_json, table


def _print_checks(checks, as_json: bool) -> int:
    if as_json:
        emit_json([c.to_dict() for c in checks])
    else:
        table(["component", "target", "status", "detail", "from"],
              [[c.component, c.target, "ok" if c.ok else "FAIL", c.detail, c.source] for c in checks])
    return 0 if all(c.ok for c in checks) else 2


@click.command("init")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def init_cmd(obj, as_json):
    """Create the project's stores (embedded default: ./.promptreg/) and report them."""
    reg = obj.get()
    code = _print_checks(reg.init(), as_json)
    if code == 0 and not as_json:
        click.echo(f"initialised promptreg in {reg.settings.home}")
    return code


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--repair", is_flag=True,
              help="First rebuild a half-migrated embedded MLflow database (mlflow.db); a copy of the damaged "
                   "file is kept. Stop other promptreg processes of the project first.")
@click.pass_obj
def doctor_cmd(obj, as_json, repair):
    """Show which stores are in use and whether each works (exit 2 if one does not). Creates nothing:
    a store not created yet is reported as created on first use."""
    reg = obj.get()
    if not repair:
        return _print_checks(reg.doctor(), as_json)
    report = reg.repair_tracking_db()
    checks = reg.doctor()
    if as_json:
        emit_json({"repair": report.to_dict() if report else None, "checks": [c.to_dict() for c in checks]})
        return 0 if all(c.ok for c in checks) else 2
    click.echo(report.summary() if report else "MLflow tracking: nothing to repair")
    return _print_checks(checks, as_json)


@click.group("db")
def db_group():
    """Registry database schema (alembic migrations)."""


def _echo_revision(revision: str | None, as_json: bool, empty: str) -> None:
    if as_json:
        from promptreg.cli.output import emit_json

        emit_json({"revision": revision})
    else:
        click.echo(f"registry database at revision {revision or empty}")


@db_group.command("upgrade")
@click.argument("revision", default="head")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def db_upgrade(obj, revision, as_json):
    """Upgrade the schema to REVISION (default: head)."""
    from promptreg.registry.migrate import current_revision, upgrade

    url = obj.get().settings.db_url
    upgrade(url, revision)
    _echo_revision(current_revision(url), as_json, "base")


@db_group.command("downgrade")
@click.argument("revision")
@click.option("--yes", is_flag=True, help="Confirm: a downgrade can drop data.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def db_downgrade(obj, revision, yes, as_json):
    """Downgrade the schema to REVISION ('base' drops every table)."""
    from promptreg.errors import InputError
    from promptreg.registry.migrate import current_revision, downgrade

    if not yes:
        raise InputError("a downgrade can drop data: pass --yes to confirm")
    url = obj.get().settings.db_url
    downgrade(url, revision)
    _echo_revision(current_revision(url), as_json, "base")


@db_group.command("current")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def db_current(obj, as_json):
    """Print the schema revision."""
    from promptreg.registry.migrate import current_revision

    revision = current_revision(obj.get().settings.db_url)
    if as_json:
        from promptreg.cli.output import emit_json

        emit_json({"revision": revision})
    else:
        click.echo(revision or "base (empty)")
