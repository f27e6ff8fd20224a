"""The report straight from a state store: verify the log, then page through its entries."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from fractions import Fraction
from typing import Any

from sandbox.audit import AuditLog
from sandbox.policy import Policy
from sandbox.report._data import BudgetCeiling, LogHead, Period
from sandbox.state import Database, Projects

PAGE = 1000


def log_entries(log: AuditLog, size: int) -> Iterator[dict[str, Any]]:
    """Entries with seq below ``size`` (the verified size), a page at a time."""
    after = -1
    while after + 1 < size:
        page = log.entries(after, min(PAGE, size - after - 1))
        if not page:
            return
        for record in page:
            if record.seq >= size:
                return
            yield record.entry
        after = page[-1].seq


def ceilings_of(policies: Mapping[str, Policy]) -> list[BudgetCeiling]:
    """ε ceilings per population; where policies of one population differ, the strictest."""
    merged: dict[str, BudgetCeiling] = {}
    for policy in policies.values():
        budget = policy.disclosure.budget
        if budget.epsilon_per_project is None and budget.epsilon_per_population is None:
            continue
        new = BudgetCeiling(
            policy.population,
            budget.epsilon_per_project,
            budget.epsilon_per_population,
            budget.window_days,
        )
        old = merged.get(policy.population)
        if old is not None:
            new = BudgetCeiling(
                policy.population,
                _least(old.epsilon_per_project, new.epsilon_per_project),
                _least(old.epsilon_per_population, new.epsilon_per_population),
                0 if 0 in (old.window_days, new.window_days)
                else max(old.window_days, new.window_days),
            )  # fmt: skip
        merged[policy.population] = new
    return list(merged.values())


def _least(a: Fraction | None, b: Fraction | None) -> Fraction | None:
    if a is None:
        return b
    return a if b is None else min(a, b)


def report_from_store(
    db: Database,
    period: Period,
    *,
    policies: Mapping[str, Policy] | None = None,
    generated_at: dt.datetime | None = None,
) -> tuple[str, LogHead]:
    """The HTML report of ``period`` over the log in ``db``, and the log head it covers.

    The log is verified first; the report covers exactly the verified entries (any appended
    meanwhile are left out), and says so in its header if verification failed.
    """
    from sandbox.report import build_report

    log = AuditLog(db)
    verified = log.verify()
    head = LogHead(
        verified.size, verified.root, verified.ok, verified.first_bad_seq, verified.problem
    )
    policies = policies or {}
    html = build_report(
        log_entries(log, verified.size),
        period_start=period.start,
        period_end=period.end,
        projects={p.id: p.quota for p in Projects(db).list()},
        populations={d: p.population for d, p in policies.items()},
        ceilings=ceilings_of(policies),
        log=head,
        generated_at=generated_at,
    )
    return html, head
