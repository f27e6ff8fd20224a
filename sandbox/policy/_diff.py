"""What changed between two versions of a policy, in words.

Compares the loaded models, not the text: reordering keys, comments and layout are no change.
Every section is covered: the header (version, title, steward, source, person key,
population), columns (role, bins, values, bounds, aggregates, operators, description),
purposes and their columns, disclosure settings (threshold, rounding, zeros, dominance, p%,
noise and its settings, budget), limits, deny rules and review routing; any field added to the
model later is still reported, generically.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from sandbox._model import ColumnRole
from sandbox.policy._model import (
    ColumnPolicy,
    DenyRule,
    DisclosureSettings,
    DominanceRule,
    Limits,
    Mechanism,
    NoiseSettings,
    Policy,
    PTableSpec,
    PurposePolicy,
)

_IDENTITY = frozenset({"digest", "path"})
"""Policy fields that say where the file is and what its bytes are, not what it means."""


@dataclass(frozen=True)
class Change:
    section: str
    """``policy``, ``columns``, ``purposes``, ``disclosure``, ``limits``, ``deny``, ``review``."""
    text: str
    """The change in words, e.g. "purpose 'research' may now use column 'income'"."""


@dataclass(frozen=True)
class PolicyDiff:
    old: Policy
    new: Policy
    changes: tuple[Change, ...]

    @property
    def changed(self) -> bool:
        """Whether the policies differ in meaning (not only in comments or layout)."""
        return bool(self.changes)

    @property
    def text_only(self) -> bool:
        """The files differ, but only in text that does not change the policy."""
        return not self.changes and self.old.digest != self.new.digest

    @property
    def warnings(self) -> tuple[str, ...]:
        if self.changes and self.new.version <= self.old.version:
            return (
                f"the policy changed but its version did not go up (v{self.old.version} → "
                f"v{self.new.version}): bump `version` so jobs record which rules they ran under",
            )
        return ()


def diff_policies(old: Policy, new: Policy) -> PolicyDiff:
    """Every difference in meaning between ``old`` and ``new``, in words, section by section."""
    out: list[Change] = []
    _header(old, new, out)
    _columns(old, new, out)
    _purposes(old.purposes, new.purposes, out)
    _disclosure(old.disclosure, new.disclosure, out)
    _limits(old.limits, new.limits, out)
    _deny(old.deny, new.deny, out)
    _rest(old, new, out)
    return PolicyDiff(old, new, tuple(out))


# -- sections --------------------------------------------------------------------------------


def _header(old: Policy, new: Policy, out: list[Change]) -> None:
    if old.dataset != new.dataset:
        out.append(Change("policy", f"dataset changed from '{old.dataset}' to '{new.dataset}'"))
    if old.version != new.version:
        out.append(Change("policy", f"version {old.version} → {new.version}"))
    for field, label in (
        ("title", "title"),
        ("steward", "steward"),
        ("source", "source file"),
        ("person_key", "person key (the privacy unit)"),
        ("population", "population (privacy budgets are kept per population)"),
    ):
        a, b = getattr(old, field), getattr(new, field)
        if a != b:
            out.append(Change("policy", f"{label} changed from {_show(a)} to {_show(b)}"))
    if old.description != new.description:
        out.append(Change("policy", "description changed"))


def _columns(old: Policy, new: Policy, out: list[Change]) -> None:
    before = {c.name: c for c in old.columns}
    after = {c.name: c for c in new.columns}
    for name, col in after.items():
        if name not in before:
            out.append(Change("columns", f"column '{name}' added ({_column_summary(col)})"))
    for name, col in before.items():
        if name not in after:
            out.append(Change("columns", f"column '{name}' removed (was {_a(col.role)} column)"))
    for name, a in before.items():
        b = after.get(name)
        if b is not None and a != b:
            _column(name, a, b, out)


def _column(name: str, a: ColumnPolicy, b: ColumnPolicy, out: list[Change]) -> None:
    what = f"column '{name}'"

    def add(text: str) -> None:
        out.append(Change("columns", f"{what} {text}"))

    if a.role != b.role:
        add(f"role changed from {a.role} to {b.role}")
    if a.bins != b.bins:
        if not a.bins:
            add(f"now grouped into bins {_list(b.bins)}")
        elif not b.bins:
            add(f"no longer grouped into bins (were {_list(a.bins)})")
        else:
            add(f"bins changed from {_list(a.bins)} to {_list(b.bins)}")
    if a.values != b.values:
        if not a.values:
            add(f"now has a public value list {_list(b.values)}")
        elif not b.values:
            add(f"no longer has a public value list (was {_list(a.values)})")
        else:
            gained = [v for v in b.values if v not in a.values]
            lost = [v for v in a.values if v not in b.values]
            for v in gained:
                add(f"may now take value {_show(v)}")
            for v in lost:
                add(f"may no longer take value {_show(v)}")
            if not gained and not lost:
                add(f"values reordered from {_list(a.values)} to {_list(b.values)}")
    if a.bounds != b.bounds:
        if a.bounds is None or b.bounds is None:
            add(f"bounds changed from {_bounds(a.bounds)} to {_bounds(b.bounds)}")
        else:
            add(f"bounds changed from {_list(a.bounds)} to {_list(b.bounds)}")
    for fn in b.aggregates:
        if fn not in a.aggregates:
            add(f"may now be aggregated with {fn}")
    for fn in a.aggregates:
        if fn not in b.aggregates:
            add(f"may no longer be aggregated with {fn}")
    # Operators apply to dimensions only (other roles carry the default: all of them).
    dimensions = a.role == b.role == ColumnRole.DIMENSION
    for op in b.operators if dimensions else ():
        if op not in a.operators:
            add(f"may now be filtered with operator '{op}'")
    for op in a.operators if dimensions else ():
        if op not in b.operators:
            add(f"may no longer be filtered with operator '{op}'")
    if a.description != b.description:
        add("description changed")
    _generic(
        "columns",
        a,
        b,
        out,
        handled={
            "name",
            "role",
            "bins",
            "values",
            "bounds",
            "aggregates",
            "operators",
            "description",
        },
        prefix=f"{what} ",
    )


def _column_summary(col: ColumnPolicy) -> str:
    parts = [str(col.role)]
    if col.bins:
        parts.append(f"bins {_list(col.bins)}")
    if col.values:
        parts.append(f"values {_list(col.values)}")
    if col.bounds is not None:
        parts.append(f"bounds {_list(col.bounds)}")
    if col.aggregates:
        parts.append(f"aggregates {', '.join(map(str, col.aggregates))}")
    return "; ".join(parts)


def _purposes(
    old: Sequence[PurposePolicy], new: Sequence[PurposePolicy], out: list[Change]
) -> None:
    before = {p.id: p for p in old}
    after = {p.id: p for p in new}
    for pid, p in after.items():
        if pid not in before:
            cols = ", ".join(p.columns) or "none"
            out.append(Change("purposes", f"purpose '{pid}' added (columns: {cols})"))
    for pid in before:
        if pid not in after:
            out.append(Change("purposes", f"purpose '{pid}' removed"))
    for pid, a in before.items():
        b = after.get(pid)
        if b is None:
            continue
        for col in b.columns:
            if col not in a.columns:
                out.append(Change("purposes", f"purpose '{pid}' may now use column '{col}'"))
        for col in a.columns:
            if col not in b.columns:
                out.append(Change("purposes", f"purpose '{pid}' may no longer use column '{col}'"))
        if a.description != b.description:
            out.append(Change("purposes", f"purpose '{pid}' description changed"))
        _generic(
            "purposes",
            a,
            b,
            out,
            handled={"id", "columns", "description"},
            prefix=f"purpose '{pid}' ",
        )


def _disclosure(a: DisclosureSettings, b: DisclosureSettings, out: list[Change]) -> None:
    def add(text: str) -> None:
        out.append(Change("disclosure", text))

    _number("k (minimum persons per cell)", a.min_persons_per_cell, b.min_persons_per_cell, add)
    _number("rounding base", a.rounding_base, b.rounding_base, add)
    if a.zeros_disclosive != b.zeros_disclosive:
        add(
            "empty cells are now suppressed like small ones (zeros disclosive)"
            if b.zeros_disclosive
            else "empty cells are now released as 0 (zeros not disclosive)"
        )
    _dominance(a.dominance, b.dominance, add)
    _optional_share("p% rule: p", a.p_percent, b.p_percent, add)
    _noise(a.noise, b.noise, add)
    budget_a, budget_b = a.budget, b.budget
    for field, label in (
        ("epsilon_per_project", "epsilon budget per project"),
        ("epsilon_per_population", "epsilon budget per population"),
        ("delta_per_project", "delta budget per project"),
        ("delta_per_population", "delta budget per population"),
    ):
        _optional_number(label, getattr(budget_a, field), getattr(budget_b, field), add)
    if budget_a.window_days != budget_b.window_days:
        add(
            f"budget window changed from {_days(budget_a.window_days)} to "
            f"{_days(budget_b.window_days)}"
        )
    _generic(
        "disclosure",
        a,
        b,
        out,
        handled={
            "min_persons_per_cell",
            "rounding_base",
            "zeros_disclosive",
            "dominance",
            "p_percent",
            "noise",
            "budget",
        },
    )


def _dominance(
    a: DominanceRule | None, b: DominanceRule | None, add: Callable[[str], None]
) -> None:
    if a == b:
        return
    if a is None and b is not None:
        add(f"dominance rule turned on: the {b.n} largest may hold at most {_pct(b.k)} of a sum")
    elif b is None and a is not None:
        add(f"dominance rule turned off (was n={a.n}, k={_pct(a.k)})")
    elif a is not None and b is not None:
        _number("dominance rule n (largest contributors taken together)", a.n, b.n, add)
        if a.k != b.k:
            _number("dominance rule k (share they may hold)", a.k, b.k, add, _pct)


def _noise(a: NoiseSettings, b: NoiseSettings, add: Callable[[str], None]) -> None:
    if a.mechanism != b.mechanism and Mechanism.NONE in (a.mechanism, b.mechanism):
        # Settings of a mechanism that was (or is now) off mean nothing: summarise instead.
        if a.mechanism == Mechanism.NONE:
            add(f"noise turned on: {_noise_summary(b)}")
        else:
            add(f"noise turned off (was {_noise_summary(a)})")
        return
    if a.mechanism != b.mechanism:
        add(f"noise mechanism changed from {a.mechanism} to {b.mechanism}")
    _number("epsilon per job", a.epsilon_per_job, b.epsilon_per_job, add, _exact)
    _number("delta per job", a.delta_per_job, b.delta_per_job, add, _exact)
    _number("confidence of noise intervals", a.confidence, b.confidence, add)
    _optional_number(
        "contribution bound L (max groups per person)",
        a.max_groups_per_person,
        b.max_groups_per_person,
        add,
    )
    _optional_number(
        "contribution bound R (max rows per person in a cell)",
        a.max_rows_per_person,
        b.max_rows_per_person,
        add,
    )
    if a.partition_selection != b.partition_selection:
        add(
            "partition selection turned on (group keys may come from the data)"
            if b.partition_selection
            else "partition selection turned off (group keys must be declared)"
        )
    if a.ptable != b.ptable:
        add(f"cell-key p-table changed from {_ptable(a.ptable)} to {_ptable(b.ptable)}")


def _noise_summary(n: NoiseSettings) -> str:
    if n.cell_key:
        return f"cell_key with p-table {_ptable(n.ptable)}"
    parts = [str(n.mechanism), f"epsilon per job {_exact(n.epsilon_per_job)}"]
    if n.delta_per_job:
        parts.append(f"delta per job {_exact(n.delta_per_job)}")
    if n.max_groups_per_person is not None:
        parts.append(f"L {n.max_groups_per_person}")
    if n.max_rows_per_person is not None:
        parts.append(f"R {n.max_rows_per_person}")
    if n.partition_selection:
        parts.append("partition selection")
    return ", ".join(parts)


def _limits(a: Limits, b: Limits, out: list[Change]) -> None:
    def add(text: str) -> None:
        out.append(Change("limits", text))

    _number("max groups", a.max_groups, b.max_groups, add)
    _number("max filters", a.max_filters, b.max_filters, add)
    _number("max group-by columns", a.max_group_by, b.max_group_by, add)
    _generic("limits", a, b, out, handled={"max_groups", "max_filters", "max_group_by"})


def _deny(old: Sequence[DenyRule], new: Sequence[DenyRule], out: list[Change]) -> None:
    before = {r.id: r for r in old}
    after = {r.id: r for r in new}
    for rid, rule in after.items():
        if rid not in before:
            out.append(Change("deny", f"deny rule '{rid}' added: {_rule_summary(rule)}"))
    for rid, rule in before.items():
        if rid not in after:
            out.append(Change("deny", f"deny rule '{rid}' removed (was: {_rule_summary(rule)})"))
    for rid, a in before.items():
        b = after.get(rid)
        if b is None or a == b:
            continue
        for field in ("purposes", "columns", "aggregates", "operators"):
            x, y = getattr(a, field), getattr(b, field)
            if x != y:
                out.append(
                    Change(
                        "deny",
                        f"deny rule '{rid}' {field} changed from {_names(x)} to {_names(y)}",
                    )
                )
        if a.reason != b.reason:
            out.append(Change("deny", f"deny rule '{rid}' reason changed"))
        _generic(
            "deny",
            a,
            b,
            out,
            handled={"id", "purposes", "columns", "aggregates", "operators", "reason"},
            prefix=f"deny rule '{rid}' ",
        )


def _rule_summary(rule: DenyRule) -> str:
    parts = [
        f"{field} {', '.join(map(str, getattr(rule, field)))}"
        for field in ("purposes", "columns", "aggregates", "operators")
        if getattr(rule, field)
    ]
    return "; ".join(parts) or "every job"


def _rest(old: Policy, new: Policy, out: list[Change]) -> None:
    """Sections handled generically: review routing and any field added to the model later."""
    handled = {
        "dataset",
        "version",
        "title",
        "description",
        "steward",
        "source",
        "person_key",
        "population",
        "columns",
        "purposes",
        "disclosure",
        "limits",
        "deny",
    } | _IDENTITY
    for field in dataclasses.fields(Policy):
        if field.name in handled:
            continue
        a, b = getattr(old, field.name), getattr(new, field.name)
        if a == b:
            continue
        label = field.name.replace("_", " ")
        if a is None:
            out.append(Change(field.name, f"{label} added: {_fields_text(b)}"))
        elif b is None:
            out.append(Change(field.name, f"{label} removed (was: {_fields_text(a)})"))
        elif dataclasses.is_dataclass(a) and dataclasses.is_dataclass(b):
            _generic(field.name, a, b, out, handled=set(), prefix=f"{label} ")
        else:
            out.append(Change(field.name, f"{label} changed from {_show(a)} to {_show(b)}"))


def _generic(
    section: str,
    a: Any,
    b: Any,
    out: list[Change],
    *,
    handled: set[str],
    prefix: str = "",
) -> None:
    """Changes of the dataclass fields of ``a`` and ``b`` not in ``handled``."""
    for field in dataclasses.fields(a):
        if field.name in handled:
            continue
        x, y = getattr(a, field.name), getattr(b, field.name)
        if x == y:
            continue
        label = prefix + field.name.replace("_", " ")
        if isinstance(x, tuple) and isinstance(y, tuple):
            for v in y:
                if v not in x:
                    out.append(Change(section, f"{label}: {_show(v)} added"))
            for v in x:
                if v not in y:
                    out.append(Change(section, f"{label}: {_show(v)} removed"))
        else:
            _number(label, x, y, lambda t: out.append(Change(section, t)))


def _fields_text(value: Any) -> str:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        parts = []
        for field in dataclasses.fields(value):
            v = getattr(value, field.name)
            if v in ((), None, False):
                continue
            shown = ", ".join(map(str, v)) if isinstance(v, tuple) else _show(v)
            parts.append(f"{field.name.replace('_', ' ')} {shown}")
        return "; ".join(parts) or "defaults"
    return _show(value)


# -- words -----------------------------------------------------------------------------------


def _number(
    label: str,
    a: Any,
    b: Any,
    add: Callable[[str], None],
    show: Callable[[Any], str] | None = None,
) -> None:
    """``label raised from a to b`` (or lowered, or changed when not comparable)."""
    if a == b:
        return
    fmt = show or _show
    if _comparable(a) and _comparable(b):
        verb = "raised" if b > a else "lowered"
    elif isinstance(a, bool) and isinstance(b, bool):
        add(f"{label} turned {'on' if b else 'off'}")
        return
    else:
        verb = "changed"
    add(f"{label} {verb} from {fmt(a)} to {fmt(b)}")


def _optional_number(label: str, a: Any, b: Any, add: Callable[[str], None]) -> None:
    if a == b:
        return
    if a is None:
        add(f"{label} set to {_exact(b)} (was none)")
    elif b is None:
        add(f"{label} removed (was {_exact(a)})")
    else:
        _number(label, a, b, add, _exact)


def _optional_share(
    label: str, a: Fraction | None, b: Fraction | None, add: Callable[[str], None]
) -> None:
    if a == b:
        return
    if a is None and b is not None:
        add(f"{label.split(':')[0]} turned on with p = {_pct(b)}")
    elif b is None and a is not None:
        add(f"{label.split(':')[0]} turned off (was p = {_pct(a)})")
    else:
        _number(label, a, b, add, _pct)


def _comparable(value: Any) -> bool:
    return isinstance(value, int | float | Fraction) and not isinstance(value, bool)


def _exact(value: Any) -> str:
    """A number as a steward writes it: 0.1, not 1/10 (a fraction only if not a decimal)."""
    if isinstance(value, Fraction):
        if value.denominator == 1:
            return str(value.numerator)
        d = value.denominator
        while d % 2 == 0:
            d //= 2
        while d % 5 == 0:
            d //= 5
        if d == 1:
            digits = 0
            while (value * 10**digits).denominator != 1:
                digits += 1
            return f"{float(value):.{digits}f}"
        return str(value)
    return _show(value)


def _pct(value: Any) -> str:
    if isinstance(value, Fraction | float | int):
        return f"{_exact(Fraction(value) * 100)}%"
    return _show(value)


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f"'{value}'"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, Fraction):
        return _exact(value)
    if isinstance(value, tuple):
        return _list(value)
    return str(value)


def _list(values: Sequence[Any]) -> str:
    return "[" + ", ".join(_show(v) for v in values) + "]"


def _names(values: Sequence[Any]) -> str:
    return "[" + ", ".join(str(v) for v in values) + "]" if values else "(any)"


def _bounds(bounds: tuple[float, float] | None) -> str:
    return "none" if bounds is None else _list(bounds)


def _days(days: int) -> str:
    return "ever (no window)" if days == 0 else f"{days} days"


def _a(role: str) -> str:
    return f"an {role}" if str(role)[:1] in "aeiou" else f"a {role}"


def _ptable(ptable: PTableSpec | None) -> str:
    if ptable is None:
        return "none"
    if ptable.default:
        return f"a listed table ({len(ptable.rows)} rows and a default)"
    small = ", blocking 1 to k-1" if ptable.block_small else ""
    return f"D={ptable.max_perturbation}, V={_exact(ptable.variance)}{small}"
