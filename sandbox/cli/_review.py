"""``sandbox review``: stewards list jobs held for human review and decide on them."""

from __future__ import annotations

from pathlib import Path

import click

from sandbox.cli import Ctx, _client, client_options, run_command
from sandbox.cli._output import render


@click.group()
def review() -> None:
    """Human review of held jobs (stewards and admins)."""


@review.command("list")
@client_options
@click.pass_obj
def review_list(obj: Ctx, target: str, token: str | None, tls_ca: Path | None) -> None:
    """Jobs awaiting approval, oldest first, with why they were held."""

    def go() -> None:
        with _client(target, token, tls_ca) as client:
            pending = client.pending_reviews()
        render(
            [
                {
                    "job_id": p.job.job_id,
                    "researcher": p.job.principal,
                    "project": p.job.spec.project,
                    "dataset": p.job.spec.dataset,
                    "purpose": p.job.spec.purpose,
                    "why": "; ".join(p.why),
                    "approvals": f"{len(p.approved_by)}/{p.approvals_required}",
                }
                for p in pending
            ],
            obj.output,
        )

    run_command(go)


def _decide(approve: bool) -> click.Command:
    verb = "approve" if approve else "reject"

    @click.command(verb)
    @click.argument("job_id")
    @click.option("--reason", required=True, help="Why (logged; shown to the researcher).")
    @client_options
    @click.pass_obj
    def decide(
        obj: Ctx, job_id: str, reason: str, target: str, token: str | None, tls_ca: Path | None
    ) -> None:
        def go() -> None:
            with _client(target, token, tls_ca) as client:
                info = client.review(job_id, approve=approve, reason=reason)
            render(
                [{"job_id": info.job_id, "state": str(info.state), "message": info.message}],
                obj.output,
            )

        run_command(go)

    decide.help = f"{verb.capitalize()} a held job (you cannot review your own, nor a job "
    decide.help += "under a policy you registered)."
    return decide


review.add_command(_decide(True))
review.add_command(_decide(False))
