"""``sandbox demo``: generate data, start a real server, run a researcher session, shut down."""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
import time
from pathlib import Path

import click
import pandas as pd

from sandbox._config import load_config
from sandbox._errors import SandboxError
from sandbox._model import Project, QuotaLimits, Role
from sandbox.audit import AuditLog
from sandbox.client import Client
from sandbox.demo import generate_demo_data
from sandbox.server import start_server
from sandbox.state import Database, Principals

PROJECT = "health-equity-2026"


def generate_only(workdir: Path, residents: int, seed: int) -> None:
    paths = _generate(workdir / "data", residents, seed)
    for name, path in paths.items():
        click.echo(f"{name}: {path}")


def _generate(data_dir: Path, residents: int, seed: int) -> dict[str, Path]:
    start = time.perf_counter()
    with click.progressbar(length=residents, label=f"generating {residents:,} residents") as bar:
        paths = generate_demo_data(
            data_dir, residents, seed, progress=lambda done, total: bar.update(done - bar.pos)
        )
    click.echo(f"  data ready in {time.perf_counter() - start:.1f}s")
    return paths


def _write_config(workdir: Path, policy_dir: Path) -> Path:
    config = workdir / "sandbox.toml"
    config.write_text(
        "[server]\n"
        'listen = "127.0.0.1:0"\n'
        f'state_dir = "{workdir / "state"}"\n'
        f'data_root = "{workdir / "data"}"\n'
        f'policy_dir = "{policy_dir.resolve()}"\n'
        "grace_period_s = 5\n"
        "allow_plaintext_tokens = true\n"  # a local demo on loopback, without TLS
    )
    return config


def _issue_tokens(db: Database) -> dict[str, str]:
    people = {
        "olivia": Role.ADMIN,
        "sam": Role.STEWARD,
        "ana": Role.RESEARCHER,
        "chen": Role.COMPLIANCE,
    }
    tokens = {}
    with db.write() as conn:
        for name, role in people.items():
            tokens[name] = Principals(db).add(conn, name, role)
            AuditLog(db).append(
                conn, "principal.added", actor="operator", principal=name, role=str(role)
            )
    return tokens


def _show(title: str, frame: pd.DataFrame) -> None:
    click.secho(f"\n{title}", bold=True)
    click.echo(frame.to_string(index=False, na_rep="<suppressed>", float_format="{:,.1f}".format))


def run_demo(workdir: Path | None, residents: int, seed: int) -> None:
    policy_dir = Path("policies")
    if not (policy_dir / "residents.yaml").is_file():
        raise click.UsageError("run the demo from the repository root (needs ./policies)")
    temp = workdir is None
    root = Path(tempfile.mkdtemp(prefix="sandbox-demo-")) if workdir is None else workdir
    root.mkdir(parents=True, exist_ok=True)
    try:
        _generate(root / "data", residents, seed)
        config = load_config(_write_config(root, policy_dir))
        tokens = _issue_tokens(Database(config.db_path))
        server = start_server(config)
        target = f"127.0.0.1:{server.port}"
        click.echo(f"server listening on {target}")
        try:
            _session(target, tokens)
        finally:
            server.stop(grace=5)
            click.echo("\nserver shut down cleanly")
    finally:
        if temp:
            shutil.rmtree(root, ignore_errors=True)


def _session(target: str, tokens: dict[str, str]) -> None:
    with Client(target, token=tokens["sam"]) as steward:
        for dataset in ("residents", "clinic_visits"):
            info = steward.register_dataset(dataset)
            click.echo(
                f"steward registered {info.id} (~{info.row_count:,} rows, {info.policy_version})"
            )
        steward.create_project(
            Project(
                id=PROJECT,
                title="Health care use and income across districts",
                members=("ana",),
                grants=(
                    ("residents", "public-health-research"),
                    ("residents", "urban-planning"),
                    ("clinic_visits", "public-health-research"),
                ),
                expires=dt.date.today() + dt.timedelta(days=365),
                quota=QuotaLimits(jobs_per_day=100, rows_total=10_000_000_000),
            )
        )
        click.echo(f"steward created project {PROJECT} for researcher ana")

    with Client(target, token=tokens["ana"]) as ana:
        click.secho("\n== researcher session (ana) ==", bold=True)
        for d in ana.datasets():
            click.echo(f"dataset {d.id}: {d.title}; purposes: {', '.join(d.purposes)}")
        start = time.perf_counter()
        result = ana.sql(
            "SELECT district, COUNT(*) AS residents, AVG(monthly_income) AS mean_income, "
            "AVG(clinic_visits) AS mean_visits FROM residents WHERE age >= 65 GROUP BY district",
            project=PROJECT,
            purpose="public-health-research",
        )
        _show(
            f"Residents aged 65+ by district ({time.perf_counter() - start:.2f}s)",
            result.to_dataframe(),
        )

        query = (
            ana.query("residents")
            .where("district", "=", "Old Harbor")
            .where("age", ">=", 80)
            .group_by("sub_district", "household_size")
            .count_persons("persons")
            .mean("clinic_visits")
        )
        job = ana.submit(query, project=PROJECT, purpose="public-health-research")
        result = job.result(timeout=120)
        frame = result.to_dataframe()
        _show(
            f"Old Harbor, aged 80+, by sub-district and household size "
            f"({result.suppressed} cells suppressed: fewer than 10 persons)",
            frame.head(12),
        )

        click.secho("\nRefused jobs:", bold=True)
        attempts = [
            (
                "mean income for urban planning",
                "SELECT district, AVG(monthly_income) FROM residents GROUP BY district",
                "urban-planning",
            ),
            (
                "a filter that singles out a handful of people",
                "SELECT COUNT(*) FROM residents WHERE age >= 100 AND household_size = 8 "
                "AND district = 'Greenmoor'",
                "public-health-research",
            ),
        ]
        for label, sql, purpose in attempts:
            try:
                ana.sql(sql, project=PROJECT, purpose=purpose)
                click.echo(f"  {label}: unexpectedly allowed")
            except SandboxError as exc:
                click.echo(f"  {label}: {exc}")
        usage = ana.quota(PROJECT)
        click.echo(
            f"\nquota used: {usage.jobs_today} of {usage.limits.jobs_per_day} jobs today, "
            f"{usage.rows_total:,} rows scanned"
        )

    with Client(target, token=tokens["chen"]) as chen:
        report = chen.audit_verify()
        click.secho("\n== compliance (chen) ==", bold=True)
        click.echo(
            f"audit log: {report.size} entries, root {report.root[:16]}…, "
            f"verified {'OK' if report.ok else 'FAILED'}"
        )
