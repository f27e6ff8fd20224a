"""``sandbox audit report``: the compliance report, straight from the state store (operator)."""

from __future__ import annotations

import datetime as dt
import os
import sys
import tempfile
from pathlib import Path

import click

from sandbox._errors import SandboxError
from sandbox.cli import EXIT_TAMPERED, _config, config_option, run_command
from sandbox.report import PERIOD_HELP, parse_period

REPORT_MODE = 0o644


@click.command("report")
@config_option
@click.option(
    "--period",
    default="last-30d",
    show_default=True,
    metavar="PERIOD",
    help=f"The days to report on: {PERIOD_HELP}",
)
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The HTML file to write (not overwritten unless --force).",
)
@click.option("--force", is_flag=True, help="Replace --out if it exists.")
def report(config_path: Path | None, period: str, out_path: Path, force: bool) -> None:
    """Write a self-contained HTML compliance report of PERIOD to --out.

    Reads the state store named by --config directly (no server needed) and verifies the
    audit log first. Charts (inline SVG, no network assets): jobs and refusals over time per
    project, purpose and dataset; quota and ε burn-down per project; top refusal reasons;
    review activity. The header gives the period, the log size and root hash it covers and
    the generation time. Exits 3 (after writing the report, which says so) if the log fails
    verification.
    """
    now = dt.datetime.now(dt.UTC)
    try:
        parsed = parse_period(period, now.date())
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--period") from None
    if not out_path.parent.is_dir():
        raise click.BadParameter(
            f"directory '{out_path.parent}' does not exist", param_hint="--out"
        )
    if out_path.exists() and not force:
        click.echo(f"error: {out_path} already exists: not overwritten (use --force)", err=True)
        sys.exit(1)

    def go() -> None:
        from sandbox.policy import load_policies
        from sandbox.report import report_from_store
        from sandbox.state import Database

        config = _config(config_path)
        if not config.db_path.is_file():
            click.echo(f"error: no state store at {config.db_path} (check --config)", err=True)
            sys.exit(1)
        try:
            policies = load_policies(config.policy_dir)
        except SandboxError as exc:
            click.echo(f"warning: policies not loaded, ε ceilings left out: {exc}", err=True)
            policies = {}
        html, head = report_from_store(
            Database(config.db_path), parsed, policies=policies, generated_at=now
        )
        if not _write(out_path, html.encode(), force):
            click.echo(f"error: {out_path} already exists: not overwritten (use --force)", err=True)
            sys.exit(1)
        click.echo(
            f"wrote {out_path}: {parsed.label()}, log of {head.size} entries, root {head.root}"
        )
        if not head.ok:
            click.echo(
                f"audit log verification FAILED at seq {head.first_bad_seq}: {head.problem}",
                err=True,
            )
            sys.exit(EXIT_TAMPERED)

    run_command(go)


def _write(path: Path, data: bytes, force: bool) -> bool:
    """Write ``path`` atomically (a temporary file beside it, then renamed over it).

    Without ``force`` an existing file is left alone (False); the check and the rename are
    one step (a hard link), so a file appearing meanwhile is not replaced either.
    """
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), REPORT_MODE)
            os.fsync(f.fileno())
        if force:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:  # no hard links here: check, then rename
            if path.exists():
                return False
            os.replace(tmp, path)
        return True
    finally:
        tmp.unlink(missing_ok=True)
