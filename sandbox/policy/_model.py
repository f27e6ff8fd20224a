"""A dataset's usage policy, as loaded from its YAML file (frozen, validated)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from fractions import Fraction

from sandbox._model import AggFunc, ColumnRole, FilterOp, Scalar
from sandbox.policy._review import ReviewRouting


@dataclass(frozen=True)
class ColumnPolicy:
    name: str
    role: ColumnRole
    description: str = ""
    bins: tuple[float, ...] = ()
    """Bin edges (strictly increasing) for a dimension grouped into ranges."""
    values: tuple[Scalar, ...] = ()
    """Public key set of a dimension (the values it may take)."""
    bounds: tuple[float, float] | None = None
    """``(lo, hi)`` clamping bounds of a measure."""
    aggregates: tuple[AggFunc, ...] = ()
    """Functions a measure may appear in."""
    operators: tuple[FilterOp, ...] = tuple(FilterOp)
    """Filter operators allowed on a dimension."""


@dataclass(frozen=True)
class PurposePolicy:
    id: str
    description: str
    columns: tuple[str, ...]
    """Columns a job under this purpose may use."""


@dataclass(frozen=True)
class DenyRule:
    """Refuses a job when every non-empty condition matches (see ``decide``)."""

    id: str
    purposes: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()
    aggregates: tuple[AggFunc, ...] = ()
    operators: tuple[FilterOp, ...] = ()
    reason: str = ""


class Mechanism(enum.StrEnum):
    NONE = "none"
    DISCRETE_LAPLACE = "discrete_laplace"
    DISCRETE_GAUSSIAN = "discrete_gaussian"
    CELL_KEY = "cell_key"
    """Rule-based mode plus cell-key perturbation of counts (not differential privacy)."""


Perturbations = tuple[tuple[int, Fraction], ...]
"""One p-table row: (perturbation, exact probability) pairs."""


@dataclass(frozen=True)
class PTableSpec:
    """The cell-key method's perturbation table, as the steward wrote it.

    Either built by the server from ``max_perturbation`` and ``variance`` (``default`` empty),
    or listed: ``rows`` for given counts and ``default`` for every other count.
    """

    max_perturbation: int = 0
    variance: Fraction = Fraction(0)
    block_small: bool = False
    """Never release a count of 1 to k-1 (k = ``min_persons_per_cell``)."""
    rows: tuple[tuple[int, Perturbations], ...] = ()
    default: Perturbations = ()


@dataclass(frozen=True)
class NoiseSettings:
    """Differential privacy (discrete Laplace or Gaussian) or cell-key perturbation.

    Amounts are exact.
    """

    mechanism: Mechanism = Mechanism.NONE
    epsilon_per_job: Fraction = Fraction(1, 10)
    delta_per_job: Fraction = Fraction(0)
    confidence: float = 0.95
    ptable: PTableSpec | None = None
    """The p-table of ``mechanism: cell_key`` (None otherwise)."""
    max_groups_per_person: int | None = None
    """Contribution bound L: cells a person may add to (None: not declared)."""
    max_rows_per_person: int | None = None
    """Contribution bound R: rows a person may add to one cell (None: not declared)."""
    partition_selection: bool = False
    """Group keys without a public key set may come from the data, released only if their
    noisy count of persons clears a threshold (needs ``delta_per_job`` > 0)."""

    @property
    def enabled(self) -> bool:
        """Differential privacy mode (the cell-key method is rule-based mode, see ``cell_key``)."""
        return self.mechanism in (Mechanism.DISCRETE_LAPLACE, Mechanism.DISCRETE_GAUSSIAN)

    @property
    def contribution_bounds(self) -> tuple[int, int] | None:
        """``(L, R)`` if the steward declared either bound (the other defaults to 1), else None."""
        if self.max_groups_per_person is None and self.max_rows_per_person is None:
            return None
        return (self.max_groups_per_person or 1, self.max_rows_per_person or 1)

    @property
    def cell_key(self) -> bool:
        """Cell-key perturbation of counts on top of the rule-based controls."""
        return self.mechanism == Mechanism.CELL_KEY


@dataclass(frozen=True)
class BudgetSettings:
    """Privacy budget ceilings (None = no ceiling) over the last ``window_days`` (0 = ever)."""

    epsilon_per_project: Fraction | None = None
    epsilon_per_population: Fraction | None = None
    delta_per_project: Fraction | None = None
    delta_per_population: Fraction | None = None
    window_days: int = 0


@dataclass(frozen=True)
class DominanceRule:
    """The (n, k) rule: a magnitude cell fails if its ``n`` largest persons hold more than ``k``.

    Contributions are per person (a person's rows summed first) and in absolute value.
    """

    n: int
    k: Fraction


@dataclass(frozen=True)
class DisclosureSettings:
    min_persons_per_cell: int = 10
    rounding_base: int = 1
    zeros_disclosive: bool = True
    """Suppress empty cells like small ones; if False, a count of 0 is released as such."""
    noise: NoiseSettings = NoiseSettings()
    budget: BudgetSettings = BudgetSettings()
    dominance: DominanceRule | None = None
    """The (n, k) dominance rule on sums and means (None: off)."""
    p_percent: Fraction | None = None
    """The p% rule on sums and means (None: off): a cell fails if the second-largest person
    could estimate the largest to within ``p`` of its value."""


@dataclass(frozen=True)
class Limits:
    max_groups: int = 1000
    max_filters: int = 16
    max_group_by: int = 4


@dataclass(frozen=True)
class Policy:
    dataset: str
    version: int
    title: str
    description: str
    steward: str
    source: str
    """Path relative to the server's data root."""
    person_key: str
    population: str
    columns: tuple[ColumnPolicy, ...]
    purposes: tuple[PurposePolicy, ...]
    disclosure: DisclosureSettings = DisclosureSettings()
    limits: Limits = Limits()
    deny: tuple[DenyRule, ...] = ()
    review: ReviewRouting | None = None
    """Which jobs wait for human review (None: none do)."""
    digest: str = ""
    """SHA-256 (hex) of the policy file's bytes."""
    path: str = ""

    def column(self, name: str) -> ColumnPolicy | None:
        """The column named ``name`` (hidden ones included), or None."""
        for col in self.columns:
            if col.name == name:
                return col
        return None

    def purpose(self, id: str) -> PurposePolicy | None:
        """The purpose with this id, or None."""
        for purpose in self.purposes:
            if purpose.id == id:
                return purpose
        return None

    @property
    def version_label(self) -> str:
        """E.g. ``residents@v1:abcdef12`` (dataset, version, first 8 of the digest)."""
        return f"{self.dataset}@v{self.version}:{self.digest[:8]}"
