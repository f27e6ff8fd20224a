"""The compliance report (``sandbox audit report``): self-contained HTML with inline SVG charts.

``build_report`` is transport-free: it takes audit entries (dicts, as the log stores them)
and returns the page. ``report_from_store`` verifies and reads a state store's log for it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sandbox._model import QuotaLimits
from sandbox.report._data import (
    PERIOD_HELP,
    BudgetCeiling,
    LogHead,
    Period,
    ReportData,
    parse_period,
    summarise,
)
from sandbox.report._html import render
from sandbox.report._store import ceilings_of, log_entries, report_from_store


def build_report(
    entries: Iterable[Mapping[str, Any]],
    *,
    period_start: dt.date,
    period_end: dt.date,
    projects: Mapping[str, QuotaLimits] | None = None,
    populations: Mapping[str, str] | None = None,
    ceilings: Sequence[BudgetCeiling] = (),
    log: LogHead | None = None,
    generated_at: dt.datetime | None = None,
) -> str:
    """The HTML report of the days ``period_start`` to ``period_end`` (UTC, both included).

    Args:
        entries: audit entries in log order (from the start of the log: charges before the
            period are the burn-down's starting point; entries after it are ignored).
        projects: project id → quota limits now in force (used where the log logs none).
        populations: dataset id → population, to place ε charges (from the policies).
        ceilings: ε ceilings per population (from the policies).
        log: size, root and verification outcome of the log the entries came from.
        generated_at: the generation time shown (default: now).
    """
    data = summarise(
        entries,
        period=Period(period_start, period_end),
        projects=projects,
        populations=populations,
        ceilings=ceilings,
        log=log,
        generated_at=generated_at,
    )
    return render(data)


__all__ = [
    "PERIOD_HELP",
    "BudgetCeiling",
    "LogHead",
    "Period",
    "ReportData",
    "build_report",
    "ceilings_of",
    "log_entries",
    "parse_period",
    "report_from_store",
    "summarise",
]
