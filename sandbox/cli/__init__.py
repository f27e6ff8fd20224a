"""The ``sandbox`` command line (click). Usage errors exit 2; refusals and failures exit 1."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from sandbox._config import ServerConfig, load_config
from sandbox._errors import SandboxError
from sandbox._model import Project, QuotaLimits, Role
from sandbox.cli._output import render

F = TypeVar("F", bound=Callable[..., Any])
EXIT_TAMPERED = 3


class Ctx:
    def __init__(self, output: str) -> None:
        self.output = output


def _config(path: Path | None) -> ServerConfig:
    return load_config(path, os.environ)


def config_option(f: F) -> F:
    return click.option(
        "--config",
        "config_path",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        envvar="SANDBOX_CONFIG",
        help="Server config file (TOML).",
    )(f)


def client_options(f: F) -> F:
    f = click.option(
        "--target",
        envvar="SANDBOX_TARGET",
        default="127.0.0.1:50051",
        show_default=True,
        help="Server address host:port.",
    )(f)
    f = click.option("--token", envvar="SANDBOX_TOKEN", help="Bearer token (or $SANDBOX_TOKEN).")(f)
    f = click.option(
        "--tls-ca",
        envvar="SANDBOX_TLS_CA",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="CA certificate to trust (enables TLS).",
    )(f)
    return f


def _client(target: str, token: str | None, tls_ca: Path | None) -> Any:
    from sandbox.client import TLS, Client

    return Client(target, token=token, tls=TLS(ca=tls_ca) if tls_ca else None)


@click.group()
@click.option(
    "--output",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="Output format.",
)
@click.pass_context
def main(ctx: click.Context, output: str) -> None:
    """Sandbox: usable-but-not-visible compute over sensitive data."""
    ctx.obj = Ctx(output)


def run_command(fn: Callable[[], None]) -> None:
    try:
        fn()
    except SandboxError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


# ---- serve ----------------------------------------------------------------------------------
@main.command()
@config_option
@click.option("--log-level", default="INFO", show_default=True)
def serve(config_path: Path | None, log_level: str) -> None:
    """Run the gRPC server until SIGTERM/SIGINT."""
    from sandbox.server import serve_forever

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    run_command(lambda: serve_forever(_config(config_path)))


# ---- demo -----------------------------------------------------------------------------------
@main.command()
@click.option("--residents", default=1_000_000, show_default=True, type=click.IntRange(min=1000))
@click.option("--seed", default=7, show_default=True, type=int)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to put data and state (default: a fresh temporary directory).",
)
@click.option("--data-only", is_flag=True, help="Only generate the demo data into --workdir.")
def demo(residents: int, seed: int, workdir: Path | None, data_only: bool) -> None:
    """Generate demo data, start a server and run a researcher session against it."""
    from sandbox.cli._demo import generate_only, run_demo

    if data_only:
        if workdir is None:
            raise click.UsageError("--data-only needs --workdir")
        run_command(lambda: generate_only(workdir, residents, seed))
    else:
        run_command(lambda: run_demo(workdir, residents, seed))


# ---- principals (local, operator) -----------------------------------------------------------
@main.group()
def principals() -> None:
    """Manage principals and their tokens (operator; works on the state store directly)."""


@principals.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice([r.value for r in Role]), required=True)
@config_option
def principals_add(name: str, role: str, config_path: Path | None) -> None:
    """Create a principal and print its token once (only a hash is stored)."""
    from sandbox.audit import AuditLog
    from sandbox.state import Database, Principals

    def go() -> None:
        db = Database(_config(config_path).db_path)
        with db.write() as conn:
            token = Principals(db).add(conn, name, Role(role))
            AuditLog(db).append(
                conn, "principal.added", actor="operator", principal=name, role=role
            )
        click.echo(token)

    run_command(go)


@principals.command("revoke")
@click.argument("name")
@config_option
def principals_revoke(name: str, config_path: Path | None) -> None:
    """Revoke a principal's token."""
    from sandbox.audit import AuditLog
    from sandbox.state import Database, Principals

    def go() -> None:
        db = Database(_config(config_path).db_path)
        with db.write() as conn:
            Principals(db).revoke(conn, name)
            AuditLog(db).append(conn, "principal.revoked", actor="operator", principal=name)
        click.echo(f"revoked {name}")

    run_command(go)


@principals.command("list")
@config_option
@click.pass_obj
def principals_list(obj: Ctx, config_path: Path | None) -> None:
    """List principals (no tokens: only hashes are stored)."""
    from sandbox.state import Database, Principals

    def go() -> None:
        rows = Principals(Database(_config(config_path).db_path)).list()
        render(
            [{"name": n, "role": r, "created": c, "revoked": v or ""} for n, r, c, v in rows],
            obj.output,
        )

    run_command(go)


# ---- datasets -------------------------------------------------------------------------------
@main.group()
def datasets() -> None:
    """Browse and register datasets."""


@datasets.command("list")
@client_options
@click.pass_obj
def datasets_list(obj: Ctx, target: str, token: str | None, tls_ca: Path | None) -> None:
    def go() -> None:
        with _client(target, token, tls_ca) as client:
            render(
                [
                    {
                        "id": d.id,
                        "title": d.title,
                        "rows": d.row_count,
                        "purposes": list(d.purposes),
                        "policy": d.policy_version,
                    }
                    for d in client.datasets()
                ],
                obj.output,
            )

    run_command(go)


@datasets.command("describe")
@click.argument("dataset")
@client_options
@click.pass_obj
def datasets_describe(
    obj: Ctx, dataset: str, target: str, token: str | None, tls_ca: Path | None
) -> None:
    def go() -> None:
        with _client(target, token, tls_ca) as client:
            info = client.describe(dataset)
        if obj.output == "json":
            render([dataclasses.asdict(info)], "json")
            return
        click.echo(
            f"{info.id}: {info.title} (~{info.row_count:,} rows, person key "
            f"{info.person_key}, population {info.population}, policy {info.policy_version})"
        )
        render(
            [
                {
                    "column": c.name,
                    "type": c.type,
                    "role": str(c.role),
                    "bins/values": list(c.bins or c.values),
                    "aggregates": [str(a) for a in c.aggregates],
                    "description": c.description,
                }
                for c in info.columns
            ],
            "table",
        )

    run_command(go)


@datasets.command("register")
@click.argument("dataset")
@client_options
@click.pass_obj
def datasets_register(
    obj: Ctx, dataset: str, target: str, token: str | None, tls_ca: Path | None
) -> None:
    """Steward: register DATASET from policies/DATASET.yaml (its source file is in the policy)."""

    def go() -> None:
        with _client(target, token, tls_ca) as client:
            info = client.register_dataset(dataset)
        render([{"id": info.id, "rows": info.row_count, "policy": info.policy_version}], obj.output)

    run_command(go)


# ---- projects -------------------------------------------------------------------------------
@main.group()
def projects() -> None:
    """Create projects, grant purposes, set quotas."""


def _quota_options(f: F) -> F:
    for name in ("jobs-per-day", "jobs-total", "rows-per-day", "rows-total"):
        f = click.option(f"--{name}", type=click.IntRange(min=0), default=None)(f)
    return f


def _grant(value: str) -> tuple[str, str]:
    dataset, sep, purpose = value.partition(":")
    if not sep or not dataset or not purpose:
        raise click.BadParameter(f"'{value}' is not DATASET:PURPOSE")
    return dataset, purpose


@projects.command("create")
@click.argument("project_id")
@click.option("--title", default="")
@click.option("--member", "members", multiple=True, required=True)
@click.option("--grant", "grants", multiple=True, required=True, help="DATASET:PURPOSE")
@click.option("--expires", type=click.DateTime(["%Y-%m-%d"]), required=True)
@_quota_options
@client_options
@click.pass_obj
def projects_create(
    obj: Ctx,
    /,
    project_id: str,
    title: str,
    members: tuple[str, ...],
    grants: tuple[str, ...],
    expires: dt.datetime,
    target: str,
    token: str | None,
    tls_ca: Path | None,
    **quota: int | None,
) -> None:
    parsed = tuple(_grant(g) for g in grants)
    project = Project(
        project_id, title or project_id, members, parsed, expires.date(), QuotaLimits(**quota)
    )

    def go() -> None:
        with _client(target, token, tls_ca) as client:
            created = client.create_project(project)
        render([_project_row(created)], obj.output)

    run_command(go)


@projects.command("quota")
@click.argument("project_id")
@_quota_options
@client_options
@click.pass_obj
def projects_quota(
    obj: Ctx,
    /,
    project_id: str,
    target: str,
    token: str | None,
    tls_ca: Path | None,
    **quota: int | None,
) -> None:
    """Show usage; with limit options, set the project's quota (unset = unlimited)."""

    def go() -> None:
        with _client(target, token, tls_ca) as client:
            if any(v is not None for v in quota.values()):
                client.set_quota(project_id, QuotaLimits(**quota))
            usage = client.quota(project_id)
        limits = dataclasses.asdict(usage.limits)
        render(
            [
                {
                    "quota": k,
                    "used": getattr(usage, k.replace("_per_day", "_today")),
                    "limit": "unlimited" if v is None else v,
                }
                for k, v in limits.items()
            ],
            obj.output,
        )

    run_command(go)


@projects.command("list")
@client_options
@click.pass_obj
def projects_list(obj: Ctx, target: str, token: str | None, tls_ca: Path | None) -> None:
    def go() -> None:
        with _client(target, token, tls_ca) as client:
            render([_project_row(p) for p in client.projects()], obj.output)

    run_command(go)


def _project_row(p: Project) -> dict[str, Any]:
    return {
        "id": p.id,
        "title": p.title,
        "members": list(p.members),
        "grants": [f"{d}:{u}" for d, u in p.grants],
        "expires": p.expires.isoformat(),
    }


# ---- policy ---------------------------------------------------------------------------------
@main.group()
def policy() -> None:
    """Validate policy files."""


@policy.command("validate")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
def policy_validate(paths: tuple[Path, ...]) -> None:
    """Validate policy YAML files (default: ./policies). Exit 1 with one line per error."""
    from sandbox.policy import validate_paths

    errors = validate_paths(list(paths) or [Path("policies")])
    for line in errors:
        click.echo(line, err=True)
    if errors:
        sys.exit(1)
    click.echo("ok")


# ---- jobs -----------------------------------------------------------------------------------
@main.group()
def jobs() -> None:
    """List and inspect jobs."""


def _job_row(j: Any) -> dict[str, Any]:
    return {
        "job_id": j.job_id,
        "state": j.state.value,
        "dataset": j.spec.dataset,
        "project": j.spec.project,
        "purpose": j.spec.purpose,
        "created": j.created_at.isoformat(timespec="seconds"),
        "reason": j.reason,
        "rules": list(j.rule_ids),
    }


@jobs.command("list")
@click.option("--project", default="")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@client_options
@click.pass_obj
def jobs_list(
    obj: Ctx, project: str, limit: int, target: str, token: str | None, tls_ca: Path | None
) -> None:
    def go() -> None:
        with _client(target, token, tls_ca) as client:
            render([_job_row(j) for j in client.jobs(project, limit)], obj.output)

    run_command(go)


@jobs.command("show")
@click.argument("job_id")
@client_options
@click.pass_obj
def jobs_show(obj: Ctx, job_id: str, target: str, token: str | None, tls_ca: Path | None) -> None:
    def go() -> None:
        with _client(target, token, tls_ca) as client:
            info = client.job(job_id).info
        row = _job_row(info) | {
            "message": info.message,
            "rows_scanned": info.rows_scanned,
            "policy_version": info.policy_version,
        }
        if obj.output == "json":
            render([row], "json")
        else:
            for k, v in row.items():
                click.echo(f"{k:>15}: {v}")

    run_command(go)


# ---- audit ----------------------------------------------------------------------------------
@main.group()
def audit() -> None:
    """Read and verify the tamper-evident audit log (compliance)."""


@audit.command("list")
@click.option("--after", default=-1, type=int, help="Only entries with seq greater than this.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10_000))
@client_options
@click.pass_obj
def audit_list(
    obj: Ctx, after: int, limit: int, target: str, token: str | None, tls_ca: Path | None
) -> None:
    def go() -> None:
        with _client(target, token, tls_ca) as client:
            records = client.audit_entries(after, limit)
        if obj.output == "json":
            render([r.entry | {"leaf_hash": r.leaf_hash} for r in records], "json")
            return
        render(
            [
                {
                    "seq": r.seq,
                    "time": r.entry.get("time", "")[:19],
                    "event": r.entry.get("event"),
                    "actor": r.entry.get("actor", ""),
                    "project": r.entry.get("project", ""),
                    "decision": r.entry.get("decision", ""),
                    "rules": r.entry.get("rule_ids", []),
                }
                for r in records
            ],
            "table",
        )

    run_command(go)


@audit.command("verify")
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Verify the state store directly (offline, no server).",
)
@client_options
@click.pass_obj
def audit_verify(
    obj: Ctx, config_path: Path | None, target: str, token: str | None, tls_ca: Path | None
) -> None:
    """Recompute every leaf hash and the Merkle root. Exit 3 if the log was altered."""

    def go() -> None:
        if config_path is not None:
            from sandbox.audit import AuditLog
            from sandbox.state import Database

            report = AuditLog(Database(_config(config_path).db_path)).verify()
        else:
            with _client(target, token, tls_ca) as client:
                report = client.audit_verify()
        render([dataclasses.asdict(report)], obj.output)
        if not report.ok:
            click.echo(
                f"audit log verification FAILED at seq {report.first_bad_seq}: {report.problem}",
                err=True,
            )
            sys.exit(EXIT_TAMPERED)

    run_command(go)
