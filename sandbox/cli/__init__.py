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
from sandbox._model import (
    ExceptionState,
    Grant,
    Project,
    ProjectUpdate,
    QuotaLimits,
    Role,
)
from sandbox.cli._output import render
from sandbox.crypto import DEFAULT_RSA_BITS, MAX_RSA_BITS, MIN_RSA_BITS

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


def _remember(ctx: click.Context, param: click.Parameter, value: Path | None) -> None:
    """Keep a client certificate option for ``_client`` (not passed to every command)."""
    if value is not None and param.name:
        ctx.meta[f"sandbox.{param.name}"] = value


def client_options(f: F) -> F:
    for name, help_text in (
        ("key", "Client private key (PEM) for mutual TLS."),
        ("cert", "Client certificate (PEM) for mutual TLS; needs --tls-key and --tls-ca."),
    ):
        f = click.option(
            f"--tls-{name}",
            f"tls_{name}",
            envvar=f"SANDBOX_TLS_{name.upper()}",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            expose_value=False,
            callback=_remember,
            help=help_text,
        )(f)
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

    meta = click.get_current_context().meta
    cert, key = meta.get("sandbox.tls_cert"), meta.get("sandbox.tls_key")
    if (cert is None) != (key is None) or (cert is not None and tls_ca is None):
        raise click.UsageError("mutual TLS needs --tls-cert, --tls-key and --tls-ca together")
    tls = TLS(ca=tls_ca, cert=cert, key=key) if tls_ca else None
    return Client(target, token=token, tls=tls)


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


_SUBJECT_HELP = (
    "Client certificate subject (mutual TLS) naming this principal, as "
    "`openssl x509 -in CERT -noout -subject -nameopt RFC2253` prints it, e.g. 'CN=ana,O=City'."
)


@principals.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice([r.value for r in Role]), required=True)
@click.option("--cert-subject", default=None, help=_SUBJECT_HELP)
@config_option
def principals_add(
    name: str, role: str, cert_subject: str | None, config_path: Path | None
) -> None:
    """Create a principal and print its token once (only a hash is stored)."""
    from sandbox.audit import AuditLog
    from sandbox.state import Database, Principals, normalise_subject

    subject = _subject(cert_subject, normalise_subject) if cert_subject is not None else None

    def go() -> None:
        db = Database(_config(config_path).db_path)
        with db.write() as conn:
            token = Principals(db).add(conn, name, Role(role), cert_subject=subject)
            extra = {"cert_subject": subject} if subject else {}
            AuditLog(db).append(
                conn, "principal.added", actor="operator", principal=name, role=role, **extra
            )
        click.echo(token)

    run_command(go)


def _subject(text: str, normalise: Callable[[str], str]) -> str:
    try:
        return normalise(text)
    except SandboxError as exc:
        raise click.BadParameter(exc.message, param_hint="SUBJECT") from None


@principals.command("map-cert")
@click.argument("name")
@click.argument("subject")
@config_option
def principals_map_cert(name: str, subject: str, config_path: Path | None) -> None:
    """Map a client certificate SUBJECT (mutual TLS) to principal NAME.

    SUBJECT is the certificate's subject as `openssl x509 -in CERT -noout -subject -nameopt
    RFC2253` prints it (a leading 'subject=' is dropped), e.g. 'CN=ana,OU=Health,O=City'. A
    client presenting a certificate with that subject, signed by the server's client_ca, then
    acts as NAME with NAME's role.
    """
    from sandbox.audit import AuditLog
    from sandbox.state import Database, Principals, normalise_subject

    text = _subject(subject, normalise_subject)

    def go() -> None:
        db = Database(_config(config_path).db_path)
        with db.write() as conn:
            stored = Principals(db).map_cert(conn, name, text)
            AuditLog(db).append(
                conn, "principal.cert_mapped", actor="operator", principal=name, cert_subject=stored
            )
        click.echo(f"mapped {stored} to {name}")

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


# ---- researcher keys ------------------------------------------------------------------------
@main.group()
def keys() -> None:
    """Your key pair: once the public key is registered, results are sealed to it."""


def _read_passphrase(passphrase_file: Path | None) -> str:
    if passphrase_file is not None:
        lines = passphrase_file.read_text().splitlines()
        passphrase = lines[0] if lines else ""
    else:
        passphrase = click.prompt(
            "Passphrase for the private key", hide_input=True, confirmation_prompt=True
        )
    if not passphrase:
        raise click.UsageError("the passphrase must not be empty")
    return passphrase


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with exactly ``mode``; never overwrite."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


@keys.command("new")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for private_key.pem (mode 0600) and public_key.pem.",
)
@click.option(
    "--bits",
    default=DEFAULT_RSA_BITS,
    show_default=True,
    type=click.IntRange(MIN_RSA_BITS, MAX_RSA_BITS),
    help="RSA modulus size.",
)
@click.option(
    "--passphrase-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Read the passphrase from the first line of this file instead of prompting.",
)
def keys_new(out_dir: Path, bits: int, passphrase_file: Path | None) -> None:
    """Create a key pair on this machine. The private key never leaves it; it is written as
    passphrase-protected PKCS#8. Register the public key with `sandbox keys register`."""
    private = out_dir / "private_key.pem"
    public = out_dir / "public_key.pem"
    existing = [str(p) for p in (private, public) if p.exists()]
    if existing:
        click.echo(f"error: {', '.join(existing)} already exists: not overwritten", err=True)
        sys.exit(1)
    passphrase = _read_passphrase(passphrase_file)
    from sandbox.crypto import export_private_key, export_public_key, generate_key_pair
    from sandbox.crypto._keys import key_fingerprint

    def go() -> None:
        key = generate_key_pair(bits)
        out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_new(private, export_private_key(key, passphrase), 0o600)
        _write_new(public, export_public_key(key), 0o644)
        click.echo(f"private key: {private} (keep it; it cannot be recovered)")
        click.echo(f"public key:  {public}")
        click.echo(f"fingerprint: {key_fingerprint(key).hex()}")

    run_command(go)


@keys.command("register")
@click.argument("public_pem", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@client_options
@click.pass_obj
def keys_register(
    obj: Ctx, public_pem: Path, target: str, token: str | None, tls_ca: Path | None
) -> None:
    """Register (or replace) your public key PUBLIC_PEM: results of your jobs are then sealed
    to it. Only researchers register keys; a replacement is logged."""

    def go() -> None:
        with _client(target, token, tls_ca) as client:
            fingerprint = client.register_public_key(public_pem.read_bytes())
        render([{"registered": str(public_pem), "fingerprint": fingerprint}], obj.output)

    run_command(go)


@keys.command("show")
@client_options
@click.pass_obj
def keys_show(obj: Ctx, target: str, token: str | None, tls_ca: Path | None) -> None:
    """The fingerprint of the public key registered for you."""

    def go() -> None:
        with _client(target, token, tls_ca) as client:
            fingerprint = client.public_key_fingerprint()
        render([{"fingerprint": fingerprint or "(none registered)"}], obj.output)

    run_command(go)


@keys.command("rotate")
@config_option
@click.option(
    "--rewrap-only",
    is_flag=True,
    help="Add no key: move stored results to the active key (after changing SANDBOX_AT_REST_KEYS).",
)
@click.pass_obj
def keys_rotate(obj: Ctx, config_path: Path | None, rewrap_only: bool) -> None:
    """Operators: rotate the server's data-at-rest key and re-seal every stored result.

    Safe while the server runs; the old keys stay in the key file so nothing becomes unreadable.
    """
    from sandbox._rotate import rewrap_results, rotate_at_rest_keys

    def go() -> None:
        config = _config(config_path)
        done = rewrap_results(config) if rewrap_only else rotate_at_rest_keys(config)
        render(
            [
                {
                    "previous_key_id": done.previous_key_id,
                    "active_key_id": done.active_key_id,
                    "results_resealed": done.results_moved,
                }
            ],
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
    """Create, update, expire and revoke projects; set quotas; exceptions to refusals."""


def _quota_options(f: F) -> F:
    for name in ("jobs-per-day", "jobs-total", "rows-per-day", "rows-total"):
        f = click.option(f"--{name}", type=click.IntRange(min=0), default=None)(f)
    return f


def _grant(value: str) -> tuple[str, str]:
    dataset, sep, purpose = value.partition(":")
    if not sep or not dataset or not purpose:
        raise click.BadParameter(f"'{value}' is not DATASET:PURPOSE")
    return dataset, purpose


def _dated_grant(value: str) -> Grant:
    """DATASET:PURPOSE or DATASET:PURPOSE:YYYY-MM-DD (the grant's last day)."""
    head, sep, last = value.rpartition(":")
    if sep and head.count(":") == 1:
        try:
            return Grant(*_grant(head), dt.date.fromisoformat(last))
        except ValueError:
            raise click.BadParameter(f"'{last}' in '{value}' is not a date YYYY-MM-DD") from None
    return Grant(*_grant(value))


@projects.command("create")
@click.argument("project_id")
@click.option("--title", default="")
@click.option("--member", "members", multiple=True, required=True)
@click.option(
    "--grant",
    "grants",
    multiple=True,
    required=True,
    help="DATASET:PURPOSE, or DATASET:PURPOSE:YYYY-MM-DD for a grant ending on that day.",
)
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
    parsed = [_dated_grant(g) for g in grants]
    project = Project(
        project_id,
        title or project_id,
        members,
        tuple((g.dataset, g.purpose) for g in parsed),
        expires.date(),
        QuotaLimits(**quota),
        grant_expiry=tuple((g.dataset, g.purpose, g.expires) for g in parsed if g.expires),
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


@projects.command("update")
@click.argument("project_id")
@click.option("--title", default=None)
@click.option("--add-member", "add_members", multiple=True)
@click.option("--remove-member", "remove_members", multiple=True)
@click.option(
    "--grant",
    "add_grants",
    multiple=True,
    help="DATASET:PURPOSE[:YYYY-MM-DD]: grant, or re-grant with this last day (or none).",
)
@click.option("--remove-grant", "remove_grants", multiple=True, help="DATASET:PURPOSE")
@click.option("--expires", type=click.DateTime(["%Y-%m-%d"]), default=None)
@_quota_options
@client_options
@click.pass_obj
def projects_update(
    obj: Ctx,
    /,
    project_id: str,
    title: str | None,
    add_members: tuple[str, ...],
    remove_members: tuple[str, ...],
    add_grants: tuple[str, ...],
    remove_grants: tuple[str, ...],
    expires: dt.datetime | None,
    target: str,
    token: str | None,
    tls_ca: Path | None,
    **quota: int | None,
) -> None:
    """Change a project; the next job is decided on it. Any limit option replaces the whole
    quota (limits not given become unlimited), as `projects quota` does."""
    update = ProjectUpdate(
        title=title,
        add_members=add_members,
        remove_members=remove_members,
        add_grants=tuple(_dated_grant(g) for g in add_grants),
        remove_grants=tuple(_grant(g) for g in remove_grants),
        expires=expires.date() if expires else None,
        quota=QuotaLimits(**quota) if any(v is not None for v in quota.values()) else None,
    )
    if update == ProjectUpdate():
        raise click.UsageError("nothing to change: give at least one option")

    def go() -> None:
        with _client(target, token, tls_ca) as client:
            updated = client.update_project(project_id, update)
        render([_project_row(updated)], obj.output)

    run_command(go)


@projects.command("expire")
@click.argument("project_id")
@click.option("--reason", default="", help="Recorded in the audit log.")
@client_options
@click.pass_obj
def projects_expire(
    obj: Ctx, project_id: str, reason: str, target: str, token: str | None, tls_ca: Path | None
) -> None:
    """End a project now: from today it refuses every new job."""

    def go() -> None:
        with _client(target, token, tls_ca) as client:
            expired = client.expire_project(project_id, reason)
        render([_project_row(expired)], obj.output)

    run_command(go)


@projects.command("revoke")
@click.argument("project_id")
@click.option("--reason", default="", help="Recorded in the audit log.")
@click.confirmation_option(prompt="Revocation is final and stops the project's jobs. Go on?")
@client_options
@click.pass_obj
def projects_revoke(
    obj: Ctx, project_id: str, reason: str, target: str, token: str | None, tls_ca: Path | None
) -> None:
    """Revoke a project (final): refuse every new job, cancel its queued jobs uncharged and
    interrupt its running ones."""

    def go() -> None:
        with _client(target, token, tls_ca) as client:
            revoked, stopped = client.revoke_project(project_id, reason)
        render([_project_row(revoked) | {"jobs_stopped": stopped}], obj.output)

    run_command(go)


def _exception_row(r: Any) -> dict[str, Any]:
    return {
        "id": r.id,
        "state": r.state.value,
        "job_id": r.job_id,
        "principal": r.principal,
        "project": r.project,
        "purpose": r.purpose,
        "rules": list(r.rule_ids),
        "justification": r.justification,
        "decided_by": r.decided_by,
        "reason": r.decision_reason,
        "used_by_job": r.used_by_job,
    }


@projects.command("request-exception")
@click.argument("job_id")
@click.option("--rule", "rules", multiple=True, required=True, help="A refusal rule id to waive.")
@click.option("--justification", required=True)
@client_options
@click.pass_obj
def projects_request_exception(
    obj: Ctx,
    job_id: str,
    rules: tuple[str, ...],
    justification: str,
    target: str,
    token: str | None,
    tls_ca: Path | None,
) -> None:
    """Researcher: ask for an exception to the policy refusal of your job JOB_ID."""

    def go() -> None:
        with _client(target, token, tls_ca) as client:
            made = client.request_exception(job_id, rules, justification)
        render([_exception_row(made)], obj.output)

    run_command(go)


@projects.command("exceptions")
@click.option("--state", type=click.Choice([s.value.lower() for s in ExceptionState]), default=None)
@click.option("--project", default="")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 1000))
@client_options
@click.pass_obj
def projects_exceptions(
    obj: Ctx,
    state: str | None,
    project: str,
    limit: int,
    target: str,
    token: str | None,
    tls_ca: Path | None,
) -> None:
    """List exception requests, newest first."""
    wanted = ExceptionState(state.upper()) if state else None

    def go() -> None:
        with _client(target, token, tls_ca) as client:
            found = client.exception_requests(wanted, project, limit)
        render([_exception_row(r) for r in found], obj.output)

    run_command(go)


@projects.command("decide-exception")
@click.argument("request_id")
@click.option("--grant/--reject", required=True)
@click.option("--reason", required=True, help="Recorded in the audit log.")
@client_options
@click.pass_obj
def projects_decide_exception(
    obj: Ctx,
    request_id: str,
    grant: bool,
    reason: str,
    target: str,
    token: str | None,
    tls_ca: Path | None,
) -> None:
    """Steward: grant (one job, the named rules only) or reject an exception request."""

    def go() -> None:
        with _client(target, token, tls_ca) as client:
            decided = client.decide_exception(request_id, grant, reason)
        render([_exception_row(decided)], obj.output)

    run_command(go)


def _project_row(p: Project) -> dict[str, Any]:
    grants = []
    for d, u in p.grants:
        last = p.grant_expires(d, u)
        grants.append(f"{d}:{u}:{last.isoformat()}" if last else f"{d}:{u}")
    return {
        "id": p.id,
        "title": p.title,
        "members": list(p.members),
        "grants": grants,
        "expires": p.expires.isoformat(),
        "revoked": p.revoked,
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
@click.option(
    "--log",
    "log_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="An unfiltered JSON Lines export to verify offline (needs --checkpoint).",
)
@click.option(
    "--checkpoint",
    "checkpoint_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Signed checkpoint(s) to verify --log against (`sandbox audit checkpoint`).",
)
@click.option(
    "--proof",
    "proof_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="An inclusion proof or receipt (`sandbox audit prove`) to verify offline.",
)
@click.option(
    "--public-key",
    "public_key_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The server's checkpoint key (`sandbox audit public-key`); default: the key the "
    "checkpoint carries.",
)
@click.option(
    "--strict", is_flag=True, help="With --log: fail if entries follow the last checkpoint."
)
@client_options
@click.pass_obj
def audit_verify(
    obj: Ctx,
    config_path: Path | None,
    log_path: Path | None,
    checkpoint_path: Path | None,
    proof_path: Path | None,
    public_key_path: Path | None,
    strict: bool,
    target: str,
    token: str | None,
    tls_ca: Path | None,
) -> None:
    """Recompute every leaf hash and the Merkle root. Exit 3 if the log was altered.

    With --log EXPORT --checkpoint FILE: verify an exported log offline (no server, no state
    store) against signed checkpoints; detects edited, deleted, inserted and reordered
    entries, a truncated tail, a forked history and a wrong signing key, and prints the first
    bad index. The export must be whole and unfiltered (`sandbox audit export --format
    jsonl`). With --proof FILE: check one inclusion proof or receipt offline.
    """
    offline = log_path is not None or checkpoint_path is not None or proof_path is not None
    if offline and config_path is not None:
        raise click.UsageError("--log/--checkpoint/--proof verify offline: drop --config")
    if proof_path is None and (log_path is None) != (checkpoint_path is None):
        raise click.UsageError("--log and --checkpoint go together")
    if proof_path is not None and log_path is not None:
        raise click.UsageError("verify either --log or --proof, not both")

    def go() -> None:
        if proof_path is not None:
            _verify_proof(obj, proof_path, public_key_path)
        elif log_path is not None and checkpoint_path is not None:
            _verify_export(obj, log_path, checkpoint_path, public_key_path, strict)
        else:
            _verify_live(obj, config_path, target, token, tls_ca)

    run_command(go)


def _verify_live(
    obj: Ctx, config_path: Path | None, target: str, token: str | None, tls_ca: Path | None
) -> None:
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


def _trusted_key(public_key_path: Path | None) -> bytes | None:
    from sandbox.audit import load_public_key

    return None if public_key_path is None else load_public_key(public_key_path.read_bytes())


def _verify_export(
    obj: Ctx, log_path: Path, checkpoint_path: Path, public_key_path: Path | None, strict: bool
) -> None:
    from sandbox.audit import read_checkpoints
    from sandbox.audit._verify_offline import verify_export

    checkpoints = read_checkpoints(checkpoint_path.read_bytes())
    key = _trusted_key(public_key_path)
    with log_path.open("rb") as lines:
        report = verify_export(lines, checkpoints, key, strict=strict)
    render([report.as_dict()], obj.output)
    for note in report.notes:
        click.echo(f"note: {note}", err=True)
    if not report.ok:
        where = "" if report.first_bad_index is None else f" at index {report.first_bad_index}"
        click.echo(f"audit log verification FAILED{where}: {report.problem}", err=True)
        sys.exit(EXIT_TAMPERED)


def _verify_proof(obj: Ctx, proof_path: Path, public_key_path: Path | None) -> None:
    import json

    from sandbox._errors import CheckpointInvalid
    from sandbox.audit import Receipt, receipt_problem

    try:
        doc = json.loads(proof_path.read_bytes())
    except ValueError:
        raise CheckpointInvalid(f"{proof_path} is not a JSON proof document") from None
    receipt = Receipt.from_dict(doc)
    problem = receipt_problem(receipt, _trusted_key(public_key_path), doc.get("entry"))
    render(
        [
            {
                "ok": not problem,
                "seq": receipt.seq,
                "tree_size": receipt.checkpoint.size,
                "root": receipt.checkpoint.root,
                "problem": problem,
            }
        ],
        obj.output,
    )
    if problem:
        click.echo(f"proof verification FAILED at index {receipt.seq}: {problem}", err=True)
        sys.exit(EXIT_TAMPERED)


def _local_log(config_path: Path | None) -> Any:
    """The audit log of the state store named by --config (operator commands)."""
    if config_path is None:
        raise click.UsageError("this command reads the state store directly: give --config")
    from sandbox.audit import AuditLog
    from sandbox.state import Database

    return AuditLog(Database(_config(config_path).db_path))


def _write_or_echo(text: str, out_path: Path | None) -> None:
    if out_path is None:
        click.echo(text, nl=False)
    else:
        out_path.write_text(text, encoding="utf-8")


def _when(ctx: click.Context, param: click.Parameter, value: str | None) -> dt.datetime | None:
    from sandbox.audit._export import parse_time

    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


_OUT = click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write to this file instead of standard output.",
)


@audit.command("export")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "ocsf", "cef", "syslog"]),
    default="jsonl",
    show_default=True,
    help="jsonl: verifiable (`audit verify --log`); ocsf, cef, syslog: for SIEMs.",
)
@click.option("--since", callback=_when, help="Entries at or after this ISO time (UTC if bare).")
@click.option("--until", callback=_when, help="Entries before this ISO time (UTC if bare).")
@click.option("--project", default=None, help="Only entries of this project.")
@click.option("--principal", default=None, help="Only entries whose actor is this principal.")
@_OUT
@click.option(
    "--checkpoint-out",
    "checkpoint_out",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="With --config, jsonl and no filters: also write a signed checkpoint covering "
    "exactly the exported entries (for `audit verify --log`).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Read the state store directly (operator) instead of the server.",
)
@client_options
def audit_export(
    fmt: str,
    since: dt.datetime | None,
    until: dt.datetime | None,
    project: str | None,
    principal: str | None,
    out_path: Path | None,
    checkpoint_out: Path | None,
    config_path: Path | None,
    target: str,
    token: str | None,
    tls_ca: Path | None,
) -> None:
    """Export the audit log: JSON Lines (verifiable offline), OCSF API Activity, CEF or RFC
    5424 syslog. Filters (--since --until --project --principal) select entries; a filtered
    export is for reading, it does not verify as a whole log."""
    from sandbox.audit._export import ExportFilter, export

    where = ExportFilter(since, until, project, principal)
    if checkpoint_out is not None and (config_path is None or fmt != "jsonl" or not where.empty):
        raise click.UsageError("--checkpoint-out needs --config, --format jsonl and no filters")

    def go() -> None:
        out = out_path.open("w", encoding="utf-8", newline="\n") if out_path else sys.stdout
        try:
            if config_path is not None:
                log = _local_log(config_path)
                upto = None
                if checkpoint_out is not None:
                    checkpoint = log.checkpoint()
                    checkpoint_out.write_text(checkpoint.to_json() + "\n", encoding="utf-8")
                    upto = checkpoint.size
                count = export(log.scan(upto), fmt, out, where)
            else:
                with _client(target, token, tls_ca) as client:
                    count = export(_served_rows(client), fmt, out, where)
        finally:
            if out_path:
                out.close()
        click.echo(f"exported {count} entries", err=True)

    run_command(go)


def _served_rows(client: Any) -> Any:
    """``(seq, canonical entry, leaf hash)`` of every entry, a page at a time over the API."""
    from sandbox.audit import canonical_text

    after = -1
    while True:
        page = client.audit_entries(after, 10_000)
        if not page:
            return
        for record in page:
            yield record.seq, canonical_text(record.entry), record.leaf_hash
        after = page[-1].seq


@audit.command("checkpoint")
@config_option
@click.option("--all", "all_", is_flag=True, help="Every stored checkpoint, as JSON Lines.")
@_OUT
def audit_checkpoint(config_path: Path | None, all_: bool, out_path: Path | None) -> None:
    """Print a signed checkpoint of the whole log (signing one now if the log grew since the
    last), or with --all every stored checkpoint. Reads the state store directly."""

    def go() -> None:
        log = _local_log(config_path)
        if all_:
            text = "".join(cp.to_json() + "\n" for cp in log.checkpoints())
        else:
            text = log.checkpoint().to_json() + "\n"
        _write_or_echo(text, out_path)

    run_command(go)


@audit.command("prove")
@click.argument("seq", type=click.IntRange(min=0))
@config_option
@_OUT
def audit_prove(seq: int, config_path: Path | None, out_path: Path | None) -> None:
    """Print the inclusion proof of entry SEQ against the latest checkpoint (one is signed if
    none covers SEQ yet), as JSON with the entry itself; `audit verify --proof` checks it
    offline. Reads the state store directly (--config)."""
    import json

    def go() -> None:
        from sandbox.audit import Receipt

        log = _local_log(config_path)
        record = log.entry(seq)
        checkpoint = log.latest_checkpoint()
        if checkpoint is None or checkpoint.size <= seq:
            checkpoint = log.checkpoint()
        proof = tuple(p.hex() for p in log.inclusion_proof(seq, checkpoint.size))
        receipt = Receipt(seq, record.leaf_hash, checkpoint, proof)
        doc = receipt.to_dict() | {"entry": record.entry, "tree_size": checkpoint.size}
        _write_or_echo(json.dumps(doc, indent=2, sort_keys=True) + "\n", out_path)

    run_command(go)


@audit.command("consistency")
@click.argument("first", type=click.IntRange(min=0))
@click.argument("second", type=click.IntRange(min=0), required=False)
@config_option
@_OUT
def audit_consistency(
    first: int, second: int | None, config_path: Path | None, out_path: Path | None
) -> None:
    """Print the consistency proof that the log of FIRST entries is a prefix of the log of
    SECOND entries (default: the latest checkpoint), with both roots, as JSON."""
    import json

    def go() -> None:
        log = _local_log(config_path)
        checkpoint = None
        upto = second
        if upto is None:
            checkpoint = log.checkpoint()
            upto = checkpoint.size
        if first > upto:
            raise click.BadParameter(f"FIRST ({first}) is beyond SECOND ({upto})")
        doc: dict[str, Any] = {
            "first": first,
            "second": upto,
            "first_root": log.root_at(first).hex(),
            "second_root": log.root_at(upto).hex(),
            "proof": [p.hex() for p in log.consistency_proof(first, upto)],
        }
        if checkpoint is not None:
            doc["checkpoint"] = checkpoint.to_dict()
        _write_or_echo(json.dumps(doc, indent=2, sort_keys=True) + "\n", out_path)

    run_command(go)


@audit.command("public-key")
@config_option
@_OUT
def audit_public_key(config_path: Path | None, out_path: Path | None) -> None:
    """Print the server's checkpoint signing public key (PEM; created on first use). Give it
    to reviewers for `audit verify --public-key`."""

    def go() -> None:
        log = _local_log(config_path)
        _write_or_echo(log.public_key_pem(), out_path)
        click.echo(f"key id {log.signing_key().key_id}", err=True)

    run_command(go)


from sandbox.cli._review import review as _review  # noqa: E402

main.add_command(_review)

from sandbox.cli._report import report as _report  # noqa: E402

audit.add_command(_report)

from sandbox.cli._policy_tools import policy_diff, policy_explain, policy_test  # noqa: E402

policy.add_command(policy_diff, "diff")
policy.add_command(policy_test, "test")
policy.add_command(policy_explain, "explain")
