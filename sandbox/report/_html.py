"""The report page: one self-contained HTML document (inline CSS and SVG, nothing fetched).

A Content-Security-Policy of ``default-src 'none'`` makes the browser refuse any load anyway.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from fractions import Fraction

from sandbox.report._charts import Series, bars, esc, hbars, lines, number
from sandbox.report._data import (
    DIMENSIONS,
    OUTCOMES,
    ProjectUsage,
    ReportData,
    epsilon_in_window,
)

COLORS = {"accepted": "#1f77b4", "released": "#2ca02c", "refused": "#d62728"}
LIMIT = "#7f7f7f"
USED = "#1f77b4"
EPSILON = "#ff7f0e"
REVIEW = ("#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
TOP_REASONS = 10

_CSS = """
body { font-family: sans-serif; color: #222; margin: 24px; max-width: 1180px; }
h1 { font-size: 22px; margin: 0 0 8px; }
h2 { font-size: 17px; margin: 28px 0 8px; border-bottom: 2px solid #ddd; padding-bottom: 4px; }
h3 { font-size: 14px; margin: 16px 0 6px; }
p.note { color: #555; font-size: 12px; margin: 4px 0; }
p.alert { background: #fde2e1; border: 2px solid #d62728; padding: 8px; font-weight: bold; }
table { border-collapse: collapse; font-size: 12px; margin: 6px 0 10px; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f2f2f2; }
code { font-size: 11px; word-break: break-all; }
.charts { display: flex; flex-wrap: wrap; gap: 10px; }
svg.chart { border: 1px solid #ddd; }
svg .ct { font: bold 13px sans-serif; fill: #222; }
svg .yl { font: 10px sans-serif; fill: #555; text-anchor: end; }
svg .xl { font: 10px sans-serif; fill: #555; text-anchor: middle; }
svg .lg { font: 11px sans-serif; fill: #333; }
svg .hl { font: 12px sans-serif; fill: #222; text-anchor: end; }
svg .hv { font: 12px sans-serif; fill: #222; }
svg .empty { font: 12px sans-serif; fill: #999; text-anchor: middle; }
svg .grid { stroke: #e6e6e6; stroke-width: 1; }
svg .axis { stroke: #888; stroke-width: 1; }
"""


def render(data: ReportData) -> str:
    body = [
        _header(data),
        _summary(data),
        _activity(data),
        _quota(data),
        _epsilon(data),
        _refusals(data),
        _reviews(data),
        _events(data),
        '<p class="note">Counts of decisions, charges and log events only: this report holds'
        " no data values, no job specifications and no messages.</p>",
    ]
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        f"<title>Sandbox compliance report {esc(data.period.label())}</title>"
        f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _table(head: Sequence[str], rows: Sequence[Sequence[object]], numeric: set[int]) -> str:
    out = ["<table><tr>", *(f"<th>{esc(h)}</th>" for h in head), "</tr>"]
    for row in rows:
        out.append("<tr>")
        for i, cell in enumerate(row):
            cls = ' class="n"' if i in numeric else ""
            text = number(cell) if isinstance(cell, int | float) else str(cell)
            out.append(f"<td{cls}>{esc(text)}</td>")
        out.append("</tr>")
    out.append("</table>")
    return "".join(out)


def _header(data: ReportData) -> str:
    log = data.log
    rows: list[tuple[str, str]] = [
        ("Period", f"{data.period.label()} (UTC, {data.period.days} days; charts per "
         f"{data.buckets.unit})"),
        ("Generated", data.generated_at.astimezone(dt.UTC).isoformat(timespec="seconds")),
    ]  # fmt: skip
    if log is not None:
        rows += [
            ("Log size", f"{log.size:,} entries"),
            ("Root hash", log.root),
            ("Verification", "ok: every leaf hash and tree head recomputed" if log.ok else
             f"FAILED at seq {log.first_bad_seq}: {log.problem}"),
        ]  # fmt: skip
    else:
        rows.append(("Log", "not verified"))
    rows.append(("Entries in period", f"{data.entries_in_period:,} of {data.entries_read:,} read"))
    alert = ""
    if log is not None and not log.ok:
        alert = (
            f'<p class="alert">The audit log failed verification at seq {esc(log.first_bad_seq)}'
            f" ({esc(log.problem)}): the figures below may not be trustworthy.</p>"
        )
    cells = "".join(
        f"<tr><th>{esc(k)}</th><td>{'<code>' + esc(v) + '</code>' if k == 'Root hash' else esc(v)}"
        "</td></tr>"
        for k, v in rows
    )
    notes = "".join(f'<p class="note">{esc(n)}</p>' for n in data.notes)
    return f"<h1>Sandbox compliance report</h1>{alert}<table>{cells}</table>{notes}"


def _summary(data: ReportData) -> str:
    names = ("accepted", "replayed", "released", "partial", "denied", "failed", "cancelled")
    rows = [(n, data.outcomes.get(n, 0)) for n in names]
    rows += [(n, c) for n, c in sorted(data.outcomes.items()) if n not in names]
    return (
        "<h2>Jobs in the period</h2>"
        + _table(("outcome", "jobs"), rows, {1})
        + '<p class="note">Counted from job and federation events. A replayed job (a repeated'
        " noised query answered with its first release) counts as accepted and released.</p>"
    )


def _activity(data: ReportData) -> str:
    labels = data.buckets.labels()
    out = ["<h2>Jobs and refusals over time</h2>"]
    everything = data.activity.get("all", {}).get("all")
    zero = {o: [0] * len(labels) for o in OUTCOMES}
    out.append(
        '<div class="charts">'
        + bars(
            "activity-all",
            f"All jobs per {data.buckets.unit}",
            labels,
            _outcome_series(everything or zero),
            width=1100,
            height=240,
        )
        + "</div>"
    )
    for dimension in DIMENSIONS:
        out.append(f"<h3>Per {esc(dimension)}</h3>")
        keys = data.keys(dimension)
        if not keys:
            out.append(f'<p class="note">No jobs in this period, so no {esc(dimension)}.</p>')
            continue
        scale = max(max(v) for k in keys for v in data.activity[dimension][k].values())
        charts = [
            bars(
                f"activity-{dimension}-{key}",
                f"{dimension} {key}",
                labels,
                _outcome_series(data.activity[dimension][key]),
                width=545,
                scale=scale,
            )
            for key in keys
        ]
        out.append('<p class="note">One scale for all charts of this section.</p>')
        out.append('<div class="charts">' + "".join(charts) + "</div>")
    return "".join(out)


def _outcome_series(outcomes: dict[str, list[int]]) -> list[Series]:
    return [Series(o, COLORS[o], outcomes[o]) for o in OUTCOMES]


def _cut(data: ReportData) -> list[dt.date | None]:
    """Each bucket's last day, or None for buckets after the report was generated."""
    today = data.generated_at.astimezone(dt.UTC).date()
    out: list[dt.date | None] = []
    for i, start in enumerate(data.buckets.starts):
        out.append(min(data.buckets.last_day(i), today) if start <= today else None)
    return out


def _quota(data: ReportData) -> str:
    out = ["<h2>Quota burn-down per project</h2>"]
    shown = [u for _, u in sorted(data.usage.items()) if _exists(u, data.period.end)]
    if not shown:
        out.append('<p class="note">No project existed by the end of this period.</p>')
        return "".join(out)
    out.append(
        '<p class="note">Committed charges (jobs and rows scanned) from the start of the log,'
        " against the total limits in force each day (dashed; none drawn when unlimited).</p>"
    )
    labels = data.buckets.labels()
    days = _cut(data)
    rows: list[list[object]] = []
    charts: list[str] = []
    for usage in shown:
        created = usage.limits[0][0] if usage.limits else None
        used = [usage.used_until(d) if d and not (created and d < created) else None
                for d in days]  # fmt: skip
        limits = [usage.limits_on(d) if d else None for d in days]
        jobs_limit = [float(q.jobs_total) if q and q.jobs_total is not None else None
                      for q in limits]  # fmt: skip
        rows_limit = [float(q.rows_total) if q and q.rows_total is not None else None
                      for q in limits]  # fmt: skip
        charts.append(
            lines(
                f"quota-jobs-{usage.project}",
                f"{usage.project}: jobs used",
                labels,
                [
                    Series("jobs used", USED, [u[0] if u else None for u in used]),
                    Series("jobs_total limit", LIMIT, jobs_limit, dashed=True),
                ],
                width=545,
            )
        )
        charts.append(
            lines(
                f"quota-rows-{usage.project}",
                f"{usage.project}: rows scanned",
                labels,
                [
                    Series("rows used", USED, [u[1] if u else None for u in used]),
                    Series("rows_total limit", LIMIT, rows_limit, dashed=True),
                ],
                width=545,
            )
        )
        rows.append(_quota_row(usage, data))
    out.append('<div class="charts">' + "".join(charts) + "</div>")
    head = (
        "project", "jobs in period", "jobs used", "jobs_total", "jobs left",
        "most jobs in a day", "jobs_per_day", "rows in period", "rows used", "rows_total",
        "rows left", "most rows in a day", "rows_per_day",
    )  # fmt: skip
    out.append(_table(head, rows, set(range(1, len(head)))))
    return "".join(out)


def _exists(usage: ProjectUsage, end: dt.date) -> bool:
    return usage.limits_on(end) is not None or any(d <= end for d in usage.jobs)


def _quota_row(usage: ProjectUsage, data: ReportData) -> list[object]:
    start, end = data.period.start, data.period.end
    before = usage.used_until(start - dt.timedelta(days=1))
    total = usage.used_until(end)
    limits = usage.limits_on(end)

    def show(value: int | None) -> object:
        return "unlimited" if value is None else value

    def left(limit: int | None, used: int) -> object:
        return "" if limit is None else max(0, limit - used)

    jobs_peak = max((n for d, n in usage.jobs.items() if start <= d <= end), default=0)
    rows_peak = max((n for d, n in usage.rows.items() if start <= d <= end), default=0)
    jt = limits.jobs_total if limits else None
    rt = limits.rows_total if limits else None
    return [
        usage.project,
        total[0] - before[0],
        total[0],
        show(jt),
        left(jt, total[0]),
        jobs_peak,
        show(limits.jobs_per_day if limits else None),
        total[1] - before[1],
        total[1],
        show(rt),
        left(rt, total[1]),
        rows_peak,
        show(limits.rows_per_day if limits else None),
    ]


def _epsilon(data: ReportData) -> str:
    out = ["<h2>Privacy budget (ε) burn-down</h2>"]
    if not data.epsilon:
        out.append(
            '<p class="note">No differentially private job was charged ε up to the end of'
            " this period.</p>"
        )
        return "".join(out)
    labels = data.buckets.labels()
    days = _cut(data)
    charts: list[str] = []
    rows: list[list[object]] = []
    populations: dict[str, list[str]] = {}
    for population, project in sorted(data.epsilon):
        populations.setdefault(population, []).append(project)
    for population, projects in populations.items():
        ceiling = data.ceilings.get(population)
        window = ceiling.window_days if ceiling else 0
        per_pop: list[float | None] = [0.0 if d else None for d in days]
        for project in projects:
            per_day = data.epsilon[(population, project)]
            spent = [epsilon_in_window(per_day, d, window) if d else None for d in days]
            per_pop = [a + float(s) if a is not None and s is not None else None
                       for a, s in zip(per_pop, spent, strict=True)]  # fmt: skip
            limit = ceiling.epsilon_per_project if ceiling else None
            series = [Series("ε spent", EPSILON, [_f(s) for s in spent])]
            if limit is not None:
                series.append(
                    Series("ε per project", LIMIT, [float(limit) if d else None for d in days],
                           dashed=True)
                )  # fmt: skip
            charts.append(
                lines(
                    f"epsilon-{population}-{project}",
                    f"{project} on {population}: ε",
                    labels,
                    series,
                    width=545,
                    integer=False,
                )
            )
            end_spent = epsilon_in_window(per_day, data.period.end, window)
            rows.append([population, project, _eps(end_spent), _eps(limit), _window(window)])
        pop_limit = ceiling.epsilon_per_population if ceiling else None
        series = [Series("ε spent, all projects", EPSILON, per_pop)]
        if pop_limit is not None:
            series.append(
                Series("ε per population", LIMIT, [float(pop_limit) if d else None for d in days],
                       dashed=True)
            )  # fmt: skip
        charts.append(
            lines(
                f"epsilon-population-{population}",
                f"population {population}: ε, all projects",
                labels,
                series,
                width=545,
                integer=False,
            )
        )
        total = sum(
            (epsilon_in_window(data.epsilon[(population, p)], data.period.end, window)
             for p in projects),
            Fraction(0),
        )  # fmt: skip
        rows.append([population, "(all projects)", _eps(total), _eps(pop_limit), _window(window)])
    out.append(
        '<p class="note">ε committed within the budget window up to each day, against the'
        " ceilings of the policies now in force (dashed).</p>"
    )
    out.append('<div class="charts">' + "".join(charts) + "</div>")
    out.append(_table(("population", "project", "ε spent", "ceiling", "window"), rows, {2, 3}))
    return "".join(out)


def _f(value: Fraction | None) -> float | None:
    return None if value is None else float(value)


def _eps(value: Fraction | None) -> str:
    if value is None:
        return "none"
    shown = f"{float(value):.6g}"
    return shown if Fraction(shown) == value else f"{value} (~{shown})"


def _window(days: int) -> str:
    return f"{days} days" if days else "for ever"


def _refusals(data: ReportData) -> str:
    out = ["<h2>Top refusal reasons</h2>"]
    total = sum(data.refusals.values())
    if not total:
        out.append('<p class="note">No job was refused in this period.</p>')
        return "".join(out)
    ranked = sorted(data.refusals.items(), key=lambda kv: (-kv[1], kv[0]))
    items = [(_reason(reason, rules), n) for (reason, rules), n in ranked[:TOP_REASONS]]
    out.append(hbars("refusal-reasons", "Refusals by reason and rules", items, COLORS["refused"]))
    rows = [
        [reason, ", ".join(rules) or "(no rule)", n, f"{100 * n / total:.1f}%"]
        for (reason, rules), n in ranked[:50]
    ]
    out.append(_table(("reason", "rule ids", "refusals", "share"), rows, {2, 3}))
    if len(ranked) > 50:
        out.append(f'<p class="note">{len(ranked) - 50} rarer reasons are not listed.</p>')
    return "".join(out)


def _reason(reason: str, rules: tuple[str, ...]) -> str:
    return f"{reason} ({', '.join(rules)})" if rules else reason


def _reviews(data: ReportData) -> str:
    out = ["<h2>Review activity</h2>"]
    if not data.reviews:
        out.append('<p class="note">No review activity in this period.</p>')
        return "".join(out)
    names = sorted(data.reviews)
    series = [
        Series(name, REVIEW[i % len(REVIEW)], data.reviews[name]) for i, name in enumerate(names)
    ]
    out.append(
        '<div class="charts">'
        + bars(
            "review-activity",
            f"Review events per {data.buckets.unit}",
            data.buckets.labels(),
            series,
            width=1100,
            height=220,
            empty="no review activity",
        )
        + "</div>"
    )
    out.append(_table(("event", "count"), [(n, sum(data.reviews[n])) for n in names], {1}))
    return "".join(out)


def _events(data: ReportData) -> str:
    rows = sorted(data.events.items(), key=lambda kv: (-kv[1], kv[0]))
    if not rows:
        return '<h2>All log events in the period</h2><p class="note">None.</p>'
    return "<h2>All log events in the period</h2>" + _table(("event", "entries"), rows, {1})
