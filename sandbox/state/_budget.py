"""Privacy budget ledger: ε and δ per (population, project), with a ceiling per population.

Amounts are exact fractions, stored as ``"numerator/denominator"`` text and summed with
``fractions.Fraction``: no float ever decides whether a budget is exhausted. Like the quota
ledger, every call takes the open ``BEGIN IMMEDIATE`` transaction, so checking and reserving
are one atomic step and concurrent jobs cannot overspend. A reservation is committed with the
result, or given back only if no data was read.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from dataclasses import dataclass
from fractions import Fraction

from sandbox.state._ledger import Shortfall


@dataclass(frozen=True)
class BudgetLimits:
    """Ceilings in force for one job (None = no ceiling); ``window_days`` 0 = for ever."""

    epsilon_per_project: Fraction | None = None
    epsilon_per_population: Fraction | None = None
    delta_per_project: Fraction | None = None
    delta_per_population: Fraction | None = None
    window_days: int = 0


@dataclass(frozen=True)
class BudgetSpent:
    """ε and δ held (committed plus reserved) within the window."""

    epsilon_project: Fraction
    epsilon_population: Fraction
    delta_project: Fraction
    delta_population: Fraction


def to_text(amount: Fraction) -> str:
    return f"{amount.numerator}/{amount.denominator}"


def from_text(text: str) -> Fraction:
    return Fraction(text)


class PrivacyLedger:
    def spent(
        self,
        conn: sqlite3.Connection,
        population: str,
        project: str,
        window_days: int,
        today: dt.date,
    ) -> BudgetSpent:
        since = (today - dt.timedelta(days=window_days - 1)).isoformat() if window_days else ""
        rows = conn.execute(
            "SELECT project, epsilon, delta FROM privacy_usage WHERE population = ? AND day >= ?",
            (population, since),
        ).fetchall()
        eps_project = eps_population = delta_project = delta_population = Fraction(0)
        for owner, eps_text, delta_text in rows:
            eps, delta = from_text(eps_text), from_text(delta_text)
            eps_population += eps
            delta_population += delta
            if owner == project:
                eps_project += eps
                delta_project += delta
        return BudgetSpent(eps_project, eps_population, delta_project, delta_population)

    def shortfalls(
        self,
        conn: sqlite3.Connection,
        population: str,
        project: str,
        epsilon: Fraction,
        delta: Fraction,
        limits: BudgetLimits,
        today: dt.date,
    ) -> list[Shortfall]:
        """Which ceilings spending ``epsilon`` and ``delta`` now would exceed."""
        used = self.spent(conn, population, project, limits.window_days, today)
        checks = [
            ("budget.epsilon_per_project", limits.epsilon_per_project, used.epsilon_project,
             epsilon, f"project '{project}'", "epsilon"),
            ("budget.epsilon_per_population", limits.epsilon_per_population,
             used.epsilon_population, epsilon, f"population '{population}'", "epsilon"),
            ("budget.delta_per_project", limits.delta_per_project, used.delta_project, delta,
             f"project '{project}'", "delta"),
            ("budget.delta_per_population", limits.delta_per_population, used.delta_population,
             delta, f"population '{population}'", "delta"),
        ]  # fmt: skip
        window = f" in {limits.window_days} days" if limits.window_days else ""
        return [
            Shortfall(
                rule,
                f"{who} would exceed its privacy budget of {_show(limit)} {what}{window}"
                f" ({_show(held)} spent or reserved, this job needs {_show(need)})",
            )
            for rule, limit, held, need, who, what in checks
            if limit is not None and held + need > limit
        ]

    def reserve(
        self,
        conn: sqlite3.Connection,
        population: str,
        project: str,
        job_id: str,
        epsilon: Fraction,
        delta: Fraction,
        today: dt.date,
    ) -> None:
        conn.execute(
            "INSERT INTO privacy_ledger (population, project, job_id, day, epsilon, delta, state)"
            " VALUES (?, ?, ?, ?, ?, ?, 'reserved')",
            (population, project, job_id, today.isoformat(), to_text(epsilon), to_text(delta)),
        )
        self._add(conn, population, project, today.isoformat(), epsilon, delta)

    def commit(self, conn: sqlite3.Connection, job_id: str) -> None:
        conn.execute(
            "UPDATE privacy_ledger SET state = 'committed' WHERE job_id = ? AND state = 'reserved'",
            (job_id,),
        )

    def release(self, conn: sqlite3.Connection, job_id: str) -> None:
        """Give a reservation back (only when no data was read)."""
        row = conn.execute(
            "SELECT population, project, day, epsilon, delta FROM privacy_ledger"
            " WHERE job_id = ? AND state = 'reserved'",
            (job_id,),
        ).fetchone()
        if row is None:
            return
        conn.execute("UPDATE privacy_ledger SET state = 'released' WHERE job_id = ?", (job_id,))
        self._add(conn, row[0], row[1], row[2], -from_text(row[3]), -from_text(row[4]))

    def _add(
        self,
        conn: sqlite3.Connection,
        population: str,
        project: str,
        day: str,
        epsilon: Fraction,
        delta: Fraction,
    ) -> None:
        row = conn.execute(
            "SELECT epsilon, delta FROM privacy_usage WHERE population = ? AND project = ?"
            " AND day = ?",
            (population, project, day),
        ).fetchone()
        if row is not None:
            epsilon += from_text(row[0])
            delta += from_text(row[1])
        conn.execute(
            "INSERT OR REPLACE INTO privacy_usage (population, project, day, epsilon, delta)"
            " VALUES (?, ?, ?, ?, ?)",
            (population, project, day, to_text(epsilon), to_text(delta)),
        )

    def charged(self, conn: sqlite3.Connection, job_id: str) -> tuple[Fraction, Fraction] | None:
        """(ε, δ) held by a job (reserved or committed), or None."""
        row = conn.execute(
            "SELECT epsilon, delta FROM privacy_ledger"
            " WHERE job_id = ? AND state IN ('reserved', 'committed')",
            (job_id,),
        ).fetchone()
        return (from_text(row[0]), from_text(row[1])) if row else None


def _show(amount: Fraction) -> str:
    """An exact amount for people: a short decimal when it has one, else the fraction."""
    as_decimal = f"{float(amount):.6g}"
    return as_decimal if Fraction(as_decimal) == amount else f"{amount} (~{as_decimal})"
