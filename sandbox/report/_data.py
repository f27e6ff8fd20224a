"""What the compliance report shows, summarised from audit entries (no transport, no HTML).

Only decisions, charges and event counts are read from the entries: never a job's spec, its
message or any other free text, so nothing a researcher typed and nothing derived from data
reaches the report beyond identifiers (projects, purposes, datasets, reasons, rule ids).
"""

from __future__ import annotations

import bisect
import calendar
import datetime as dt
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from sandbox._model import QuotaLimits

OUTCOMES = ("accepted", "released", "refused")
"""The series of the activity charts."""

_OUTCOME_OF = {
    # <kind>.<suffix> for kind in job, federation
    "accepted": ("accepted",),
    "replayed": ("accepted", "released"),  # answered with an earlier release, charged nothing
    "released": ("released",),
    "partial": ("released",),  # a federation node's encrypted partial
    "denied": ("refused",),
}
_JOB_KINDS = ("job", "federation")
DIMENSIONS = ("project", "purpose", "dataset")
_QUOTA_EVENTS = ("project.created", "project.quota_set")
MAX_KEYS = 12
"""Small multiples per dimension; the rest are folded into one ``(other)`` chart."""
OTHER = "(other)"
NONE = "(none)"

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_YEAR = re.compile(r"^(\d{4})$")
_LAST = re.compile(r"^last-(\d{1,4})d$")
MAX_DAYS = 3660


@dataclass(frozen=True)
class Period:
    """Calendar days ``start`` to ``end`` (both included), in UTC."""

    start: dt.date
    end: dt.date

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ValueError("the period ends before it starts")

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def label(self) -> str:
        if self.start == self.end:
            return self.start.isoformat()
        return f"{self.start.isoformat()} to {self.end.isoformat()}"


PERIOD_HELP = (
    "YYYY-MM (a calendar month), YYYY (a year), YYYY-MM-DD (one day), "
    "YYYY-MM-DD..YYYY-MM-DD (both days included) or last-Nd (the N days up to today). "
    "Days are UTC."
)


def parse_period(text: str, today: dt.date) -> Period:
    """A period from ``text`` (see ``PERIOD_HELP``); ValueError says what is wrong."""
    text = text.strip()
    try:
        if m := _LAST.match(text):
            n = int(m.group(1))
            if not 1 <= n <= MAX_DAYS:
                raise ValueError(f"last-Nd needs 1 <= N <= {MAX_DAYS}")
            return Period(today - dt.timedelta(days=n - 1), today)
        if m := _MONTH.match(text):
            year, month = int(m.group(1)), int(m.group(2))
            last = calendar.monthrange(year, month)[1]
            return Period(dt.date(year, month, 1), dt.date(year, month, last))
        if m := _YEAR.match(text):
            year = int(m.group(1))
            return Period(dt.date(year, 1, 1), dt.date(year, 12, 31))
        if ".." in text:
            first, _, last_text = text.partition("..")
            period = Period(dt.date.fromisoformat(first), dt.date.fromisoformat(last_text))
        else:
            day = dt.date.fromisoformat(text)
            period = Period(day, day)
    except ValueError as exc:
        raise ValueError(f"'{text}' is not a period ({exc}); use {PERIOD_HELP}") from None
    if period.days > MAX_DAYS:
        raise ValueError(f"'{text}' spans more than {MAX_DAYS} days")
    return period


@dataclass(frozen=True)
class BudgetCeiling:
    """ε ceilings of one population (from the policies; None = no ceiling)."""

    population: str
    epsilon_per_project: Fraction | None = None
    epsilon_per_population: Fraction | None = None
    window_days: int = 0
    """ε is counted over the last ``window_days`` days (0 = for ever)."""


@dataclass(frozen=True)
class LogHead:
    """The log as verified when the report was generated."""

    size: int
    root: str
    ok: bool = True
    first_bad_seq: int | None = None
    problem: str = ""


@dataclass(frozen=True)
class Buckets:
    """The period cut into days (or weeks or months for long periods) for the x axes."""

    starts: tuple[dt.date, ...]
    unit: str  # "day", "week" or "month"
    end: dt.date

    @classmethod
    def of(cls, period: Period) -> Buckets:
        starts: list[dt.date] = []
        if period.days <= 92:
            unit = "day"
            starts = [period.start + dt.timedelta(days=i) for i in range(period.days)]
        elif period.days <= 3 * 366:
            unit = "week"
            day = period.start
            while day <= period.end:
                starts.append(day)
                day += dt.timedelta(days=7 - day.weekday())  # the next Monday
        else:
            unit = "month"
            day = period.start
            while day <= period.end:
                starts.append(day)
                day = (day.replace(day=1) + dt.timedelta(days=32)).replace(day=1)
        return cls(tuple(starts), unit, period.end)

    def index(self, day: dt.date) -> int:
        return bisect.bisect_right(self.starts, day) - 1

    def last_day(self, i: int) -> dt.date:
        """The last day of bucket ``i``."""
        if i + 1 < len(self.starts):
            return self.starts[i + 1] - dt.timedelta(days=1)
        return self.end

    def labels(self) -> list[str]:
        same_year = self.starts[0].year == self.end.year
        return [d.isoformat()[5:] if same_year else d.isoformat() for d in self.starts]

    def __len__(self) -> int:
        return len(self.starts)


@dataclass
class ProjectUsage:
    """One project's quota: committed charges per day (from the log) and limits in force."""

    project: str
    jobs: dict[dt.date, int] = field(default_factory=lambda: defaultdict(int))
    rows: dict[dt.date, int] = field(default_factory=lambda: defaultdict(int))
    limits: list[tuple[dt.date, QuotaLimits]] = field(default_factory=list)
    """(first day, limits) as logged by project.created / project.quota_set, in order."""
    current: QuotaLimits | None = None
    """The limits in the state store now (used when the log names none)."""

    def limits_on(self, day: dt.date) -> QuotaLimits | None:
        found: QuotaLimits | None = None
        for since, limits in self.limits:
            if since <= day:
                found = limits
        if found is None and not self.limits:
            return self.current
        return found

    def used_until(self, day: dt.date) -> tuple[int, int]:
        return (
            sum(n for d, n in self.jobs.items() if d <= day),
            sum(n for d, n in self.rows.items() if d <= day),
        )


@dataclass
class ReportData:
    period: Period
    buckets: Buckets
    log: LogHead | None
    generated_at: dt.datetime
    entries_in_period: int = 0
    entries_read: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    """Job events in the period by outcome (accepted, released, refused, failed, ...)."""
    events: Counter[str] = field(default_factory=Counter)
    """Every event in the period by name."""
    activity: dict[str, dict[str, dict[str, list[int]]]] = field(default_factory=dict)
    """dimension → key → outcome → count per bucket (dimension "all": key "all")."""
    refusals: Counter[tuple[str, tuple[str, ...]]] = field(default_factory=Counter)
    usage: dict[str, ProjectUsage] = field(default_factory=dict)
    epsilon: dict[tuple[str, str], dict[dt.date, Fraction]] = field(default_factory=dict)
    """(population, project) → ε charged per day, up to the end of the period."""
    ceilings: dict[str, BudgetCeiling] = field(default_factory=dict)
    reviews: dict[str, list[int]] = field(default_factory=dict)
    """review.* event → count per bucket."""
    notes: list[str] = field(default_factory=list)

    def keys(self, dimension: str) -> list[str]:
        """Keys of a dimension, busiest first, at most MAX_KEYS (then OTHER)."""
        series = self.activity.get(dimension, {})
        return sorted(series, key=lambda k: (k == OTHER, -_total(series[k]), k))


def _total(outcomes: Mapping[str, list[int]]) -> int:
    return sum(sum(v) for v in outcomes.values())


def _day(entry: Mapping[str, Any]) -> dt.date | None:
    text = entry.get("time")
    if not isinstance(text, str):
        return None
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).date()


def _text(value: Any) -> str:
    return value if isinstance(value, str) and value else NONE


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _fraction(value: Any) -> Fraction:
    try:
        return Fraction(str(value))
    except (ValueError, ZeroDivisionError):
        return Fraction(0)


def _quota(value: Any) -> QuotaLimits | None:
    if not isinstance(value, Mapping):
        return None
    names = ("jobs_per_day", "jobs_total", "rows_per_day", "rows_total")
    return QuotaLimits(**{n: (v if isinstance(v := value.get(n), int) else None) for n in names})


def summarise(
    entries: Iterable[Mapping[str, Any]],
    *,
    period: Period,
    projects: Mapping[str, QuotaLimits] | None = None,
    populations: Mapping[str, str] | None = None,
    ceilings: Sequence[BudgetCeiling] = (),
    log: LogHead | None = None,
    generated_at: dt.datetime | None = None,
) -> ReportData:
    """Fold audit entries into what the report shows.

    ``projects`` maps project ids to their current quota limits (the state store's);
    ``populations`` maps dataset ids to their population (from the policies), for ε. Entries
    after the period are ignored; entries before it count only towards quota and ε used so
    far (the starting point of the burn-down charts).
    """
    buckets = Buckets.of(period)
    data = ReportData(
        period=period,
        buckets=buckets,
        log=log,
        generated_at=generated_at or dt.datetime.now(dt.UTC),
        ceilings={c.population: c for c in ceilings},
    )
    populations = populations or {}
    for project_id, limits in (projects or {}).items():
        data.usage[project_id] = ProjectUsage(project_id, current=limits)
    n = len(buckets)
    for entry in entries:
        data.entries_read += 1
        day = _day(entry)
        event = entry.get("event")
        if day is None or not isinstance(event, str):
            continue
        project = entry.get("project")
        if event in _QUOTA_EVENTS:  # also after the period: a project created later is absent
            _limits(data, entry, day, project)
        if day > period.end:
            continue
        in_period = day >= period.start
        _charges(data, entry, day, project, populations)
        if not in_period:
            continue
        data.entries_in_period += 1
        data.events[event] += 1
        i = buckets.index(day)
        kind, _, suffix = event.partition(".")
        if kind == "review":
            data.reviews.setdefault(event, [0] * n)[i] += 1
        if kind not in _JOB_KINDS:
            continue
        data.outcomes[suffix] += 1
        for outcome in _OUTCOME_OF.get(suffix, ()):
            _count(data, "all", "all", outcome, i, n)
            for dimension in DIMENSIONS:
                _count(data, dimension, _text(entry.get(dimension)), outcome, i, n)
        if suffix == "denied":
            rules = entry.get("rule_ids")
            rule_ids = tuple(str(r) for r in rules) if isinstance(rules, list) else ()
            data.refusals[(_text(entry.get("reason")), rule_ids)] += 1
    for dimension in DIMENSIONS:
        _fold(data, dimension, n)
    return data


def _limits(data: ReportData, entry: Mapping[str, Any], day: dt.date, project: Any) -> None:
    """Quota limits as logged when a project is created or its quota set."""
    limits = _quota(entry.get("quota"))
    if isinstance(project, str) and project and limits is not None:
        data.usage.setdefault(project, ProjectUsage(project)).limits.append((day, limits))


def _charges(
    data: ReportData,
    entry: Mapping[str, Any],
    day: dt.date,
    project: Any,
    populations: Mapping[str, str],
) -> None:
    """Committed charges (quota and ε), from the start of the log."""
    if not isinstance(project, str) or not project:
        return
    charged = entry.get("charged")
    if not isinstance(charged, Mapping):
        return
    usage = data.usage.setdefault(project, ProjectUsage(project))
    usage.jobs[day] += _int(charged.get("jobs"))
    usage.rows[day] += _int(charged.get("rows"))
    epsilon = _fraction(charged.get("epsilon", 0))
    if epsilon:
        dataset = _text(entry.get("dataset"))
        population = populations.get(dataset, f"dataset {dataset}")
        per_day = data.epsilon.setdefault((population, project), defaultdict(Fraction))
        per_day[day] += epsilon


def _count(data: ReportData, dimension: str, key: str, outcome: str, i: int, n: int) -> None:
    series = data.activity.setdefault(dimension, {}).setdefault(key, {o: [0] * n for o in OUTCOMES})
    series[outcome][i] += 1


def _fold(data: ReportData, dimension: str, n: int) -> None:
    """Keep the busiest MAX_KEYS keys of a dimension; add up the rest as OTHER."""
    series = data.activity.get(dimension)
    if not series or len(series) <= MAX_KEYS:
        return
    ranked = sorted(series, key=lambda k: (-_total(series[k]), k))
    other = {o: [0] * n for o in OUTCOMES}
    for key in ranked[MAX_KEYS - 1 :]:
        folded = series.pop(key)
        for o in OUTCOMES:
            other[o] = [a + b for a, b in zip(other[o], folded[o], strict=True)]
    series[OTHER] = other
    data.notes.append(
        f"{dimension}: the {len(ranked) - MAX_KEYS + 1} least busy are shown together as {OTHER}"
    )


def epsilon_in_window(
    per_day: Mapping[dt.date, Fraction], day: dt.date, window_days: int
) -> Fraction:
    """ε charged in the ``window_days`` days up to ``day`` (0: ever), as the ledger counts."""
    since = day - dt.timedelta(days=window_days - 1) if window_days else dt.date.min
    return sum((e for d, e in per_day.items() if since <= d <= day), Fraction(0))
