"""Secondary (complementary) cell suppression for additive tables with margins.

A table maps key tuples to true values. A key component equal to `TOTAL` stands for the sum over
every category of that dimension, so margins and grand totals are ordinary cells. The attacker
sees every released cell exactly, knows that the table adds up and that no interior cell (one
without TOTAL) is below a lower bound, and solves for the suppressed cells. Released tables may
also say why each cell was suppressed, which tells the attacker more: a cell suppressed for
having fewer than k persons holds 0..k-1 of them (`known`), and a complementary cell is not one
of those, so holds at least k (`complement_lower`). `complementary_suppression` picks extra cells
so that every primary cell can still take any value in an interval at least `protection` wide,
or as much of its known interval as there is.

Method (the hypercube method, with a proof kept for every primary cell): choosing, in each
dimension that has a margin, a partner level for the primary cell p gives a hypercube of cells
with signs such that adding t times the signs keeps every margin equation true. Once all its
cells are suppressed, the shifted table is consistent with the release as long as every
suppressed cell stays within what the attacker knows of it. From the true table we walk p up and
down along such hypercubes, each step as far as those bounds allow, until the two tables reached
are far enough apart in p. Both tables are consistent with the release, which proves the
interval; every proof is checked again against the final pattern. If that fails, every cell that
may be a complement is suppressed and proved again; if even that fails, the table cannot be
released (`UnprotectableError`).
"""

from __future__ import annotations

import enum
import itertools
import math
import numbers
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

Key = tuple[object, ...]
Index = tuple[int, ...]
Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.intp]
Bools = npt.NDArray[np.bool_]


class _Margin(enum.Enum):
    TOTAL = "TOTAL"

    def __repr__(self) -> str:
        return "TOTAL"


TOTAL: Final = _Margin.TOTAL
"""Key component meaning "summed over every category of this dimension"."""


Bounds = tuple[float | None, float | None]
"""A closed interval [low, high]; None for an end that is unbounded."""


class UnprotectableError(ValueError):
    """No suppression pattern could be proved safe, even with every possible complement.

    The attacker's knowledge (known intervals, `complement_lower`) can pin a primary cell however
    much is suppressed, e.g. cells a = b = 1 under a total of 2 with k = 2: a, b <= 1 and a total
    of at least 2 force a = b = 1. Release nothing of such a table, not even which cells are
    suppressed.
    """


def complementary_suppression(
    values: Mapping[Key, float],
    primary: Collection[Key],
    *,
    lower_bound: float | None = 0.0,
    protection: float,
    known: Mapping[Key, Bounds] | None = None,
    complement_lower: float | None = None,
) -> frozenset[Key]:
    """Return the cells to suppress besides `primary` so that no primary cell can be pinned down.

    `values` must hold every combination of each dimension's categories (plus `TOTAL` where the
    dimension has margins), and every margin must equal the sum of its cells.

    The attacker knows every released cell exactly, that margins are the sums of their cells,
    that every interior cell is >= `lower_bound` (None: no bound), that each primary cell lies
    in its `known` interval (primary cells not in `known`: no further bound), and that every
    returned cell is >= `complement_lower` (None: nothing more). Call F the set of real tables
    consistent with all of that. A cell whose value is below `complement_lower` and that is not
    primary is never returned, so the true table lies in F.

    Guarantee: for every primary cell p, the values p takes over F span an interval at least
    min(`protection`, W_p) wide, where W_p is the width of p's known interval after clipping it
    to the least value `lower_bound` allows (`lower_bound` for an interior cell, times the number
    of interior cells summed for a margin). The proof is two tables of F that differ by that
    much in p. They are integer tables when every value and bound is an integer, so for count
    tables with `protection` >= 1 and W_p >= 1 the attacker is left with at least two whole
    numbers. With no `known` and no `complement_lower` this is the old guarantee: an interval
    `protection` wide.

    Suppresses every cell that may be a complement if that is what it takes, and raises
    `UnprotectableError` if even that cannot be proved (never without `known` or
    `complement_lower`). Raises ValueError for a table that is incomplete or does not add up, or
    for a known interval that is empty, not about a primary cell, or does not hold its value.
    """
    if not (math.isfinite(protection) and protection >= 0):
        raise ValueError("protection must be a finite number >= 0")
    for name, bound in (("lower_bound", lower_bound), ("complement_lower", complement_lower)):
        if bound is not None and not math.isfinite(bound):
            raise ValueError(f"{name} must be finite or None")
    known = {} if known is None else known
    if not values:
        if primary or known:
            raise ValueError("suppressed cells are not in the (empty) table")
        return frozenset()
    table = _read(values)
    x = table.values
    tolerance = 1e-9 * (1.0 + float(np.abs(x).sum()))
    margins = _margin_count(table)
    if lower_bound is not None and bool((x[margins == 0] < lower_bound).any()):
        raise ValueError("a cell lies below lower_bound")
    if _misfit(x, table) > tolerance:
        raise ValueError("the table does not add up: a margin differs from the sum of its cells")
    primary_mask = np.zeros(x.size, dtype=np.bool_)
    for key in primary:
        primary_mask[np.ravel_multi_index(table.index(key), x.shape)] = True
    problem = _problem(
        table, margins, primary_mask, known, lower_bound, complement_lower, protection
    )
    added = (_suppress(problem, primary_mask, tolerance) & ~primary_mask).reshape(x.shape)
    return frozenset(table.key(tuple(int(i) for i in at)) for at in np.argwhere(added))


@dataclass(frozen=True)
class _Table:
    """A complete table as a dense array; TOTAL is the last level of a dimension with margins."""

    levels: tuple[tuple[object, ...], ...]
    positions: tuple[dict[object, int], ...]
    values: Floats

    @property
    def ndim(self) -> int:
        return len(self.levels)

    def total_at(self, d: int) -> int | None:
        """Position of TOTAL in dimension d, or None when d has no margin."""
        return len(self.levels[d]) - 1 if self.levels[d][-1] is TOTAL else None

    def index(self, key: Key) -> Index:
        if len(key) != self.ndim or any(
            c not in p for c, p in zip(key, self.positions, strict=True)
        ):
            raise ValueError(f"suppressed cell {key!r} is not in the table")
        return tuple(p[c] for c, p in zip(key, self.positions, strict=True))

    def key(self, index: Index) -> Key:
        return tuple(lv[i] for lv, i in zip(self.levels, index, strict=True))


def _read(values: Mapping[Key, float]) -> _Table:
    keys = list(values)
    ndim = len(keys[0]) if keys else 0
    if any(len(k) != ndim for k in keys):
        raise ValueError("every key must have the same number of components")
    levels: list[tuple[object, ...]] = []
    for d in range(ndim):
        seen = {k[d] for k in keys}
        categories = sorted((c for c in seen if c is not TOTAL), key=_order)
        if not categories:
            raise ValueError(f"dimension {d} has no categories")
        levels.append((*categories, *((TOTAL,) if TOTAL in seen else ())))
    shape = tuple(len(lv) for lv in levels)
    if math.prod(shape) != len(keys):
        raise ValueError("the table must hold every combination of its categories and margins")
    positions = tuple({c: i for i, c in enumerate(lv)} for lv in levels)
    array = np.zeros(shape, dtype=np.float64)
    for key, value in values.items():
        if not math.isfinite(value):
            raise ValueError(f"cell {key!r} is not a finite number")
        array[tuple(p[c] for c, p in zip(key, positions, strict=True))] = value
    return _Table(tuple(levels), positions, array)


def _order(level: object) -> tuple[int, float, str]:
    if level is None:
        return (0, 0.0, "")
    if isinstance(level, numbers.Real):
        return (1, float(level), "")
    if isinstance(level, str):
        return (2, 0.0, level)
    return (3, 0.0, repr(level))


def _misfit(z: Floats, table: _Table) -> float:
    """Largest gap between a margin and the sum of its cells, over every margin of z."""
    worst = 0.0
    for d in range(table.ndim):
        total = table.total_at(d)
        if total is not None:
            parts = np.take(z, np.arange(total), axis=d).sum(axis=d)
            worst = max(worst, float(np.max(np.abs(parts - np.take(z, total, axis=d)))))
    return worst


def _margin_count(table: _Table) -> Floats:
    """How many of each cell's key components are TOTAL (0 for interior cells)."""
    margins = np.zeros(table.values.shape, dtype=np.float64)
    for d in range(table.ndim):
        total = table.total_at(d)
        if total is not None:
            margins[(slice(None),) * d + (total,)] += 1.0
    return margins


def _weights(table: _Table, margins: Floats) -> Floats:
    """Information lost by suppressing a cell: its size, and margins only after every interior."""
    loss = 1.0 + np.abs(table.values)
    return loss + margins * (1.0 + float(loss[margins == 0].sum()))


def _problem(
    table: _Table,
    margins: Floats,
    primary: Bools,
    known: Mapping[Key, Bounds],
    lower: float | None,
    complement_lower: float | None,
    protection: float,
) -> _Problem:
    """What the attacker knows of each cell once it is suppressed, and what each must reach."""
    x = table.values.ravel()
    interior = (margins == 0).ravel()
    floor, ceiling = np.full(x.size, -np.inf), np.full(x.size, np.inf)
    if lower is not None:
        floor[interior] = lower
    for key, (low, high) in known.items():
        at = int(np.ravel_multi_index(table.index(key), table.values.shape))
        if not primary[at]:
            raise ValueError(f"known interval for {key!r}, which is not a primary cell")
        if any(end is not None and not math.isfinite(end) for end in (low, high)):
            raise ValueError(f"known interval for {key!r} must have finite ends or None")
        floor[at] = max(floor[at], -math.inf if low is None else float(low))
        ceiling[at] = math.inf if high is None else float(high)
        if not floor[at] <= x[at] <= ceiling[at]:
            raise ValueError(f"cell {key!r} is not within its known interval")
    eligible = np.ones(x.size, dtype=np.bool_)
    if complement_lower is not None:
        floor[~primary] = np.maximum(floor[~primary], complement_lower)
        eligible = primary | (x >= complement_lower)
    least = floor
    if lower is not None:  # a margin is at least lower times the number of its interior cells
        count = np.ones(table.values.shape)
        for d in range(table.ndim):
            total = table.total_at(d)
            if total is not None:
                count[(slice(None),) * d + (total,)] *= total
        least = np.maximum(floor, count.ravel() * lower)
    target = np.minimum(protection, np.maximum(ceiling - least, 0.0))
    return _Problem(
        table, _weights(table, margins).ravel(), interior, lower, floor, ceiling, eligible, target
    )


def _suppress(problem: _Problem, primary: Bools, tolerance: float) -> Bools:
    """The whole pattern: primary cells and their complements, or all that may be suppressed."""
    suppressed = primary.copy()
    cubes = {
        p: problem.cubes_at(p) for p in map(int, np.flatnonzero(primary)) if problem.target[p] > 0
    }
    proofs: dict[int, _Proof] = {}
    for p, around in cubes.items():
        walk = _protect(problem, p, around, suppressed)
        if walk is None:
            return _everything(problem, primary, cubes, tolerance)
        suppressed |= walk.added
        proofs[p] = walk.proof
    _prune(problem, cubes, proofs, suppressed, primary)
    if all(_proves(proof, problem, ~suppressed, tolerance) for proof in proofs.values()):
        return suppressed
    return _everything(problem, primary, cubes, tolerance)


def _everything(
    problem: _Problem, primary: Bools, cubes: Mapping[int, _Cubes], tolerance: float
) -> Bools:
    """Every cell that may be suppressed, each primary cell proved again, or raise."""
    suppressed = primary | problem.eligible
    for p, around in cubes.items():
        walk = _walk(problem, p, around, suppressed, "closed", relieve=True)
        if walk is None or not _proves(walk.proof, problem, ~suppressed, tolerance):
            at = tuple(int(i) for i in np.unravel_index(p, problem.table.values.shape))
            raise UnprotectableError(
                f"no suppression pattern could be proved to protect cell "
                f"{problem.table.key(at)!r} from what the attacker knows"
            )
    return suppressed


def _protect(problem: _Problem, p: int, cubes: _Cubes, suppressed: Bools) -> _Walk | None:
    """The cheaper of a greedy walk and the cheapest single hypercube."""
    greedy = _walk(problem, p, cubes, suppressed, "greedy", relieve=True)
    walks = [greedy]
    if greedy is None or greedy.steps > 1:  # one greedy step is already the cheapest hypercube
        walks.append(_walk(problem, p, cubes, suppressed, "single"))
    return min((w for w in walks if w is not None), key=lambda w: w.cost, default=None)


def _prune(
    problem: _Problem,
    cubes: Mapping[int, _Cubes],
    proofs: dict[int, _Proof],
    suppressed: Bools,
    primary: Bools,
) -> None:
    """Release complements, costliest first, if every primary cell can be proved without them."""
    values = problem.table.values.ravel()
    for c in sorted(
        map(int, np.flatnonzero(suppressed & ~primary)), key=lambda i: (-problem.weights[i], i)
    ):
        suppressed[c] = False
        touched = [p for p, proof in proofs.items() if proof.moves(c, values)]
        redone = [_walk(problem, p, cubes[p], suppressed, "closed") for p in touched]
        if any(w is None for w in redone):
            suppressed[c] = True
        else:
            proofs.update((w.proof.cell, w.proof) for w in redone if w is not None)


@dataclass(frozen=True)
class _Problem:
    """The table and, per flat position, what the attacker knows once the cell is suppressed.

    `floor` and `ceiling` bound a suppressed cell (interior cells: `lower` at least; primary
    cells: their known interval; complements: `complement_lower` at least); `eligible` says
    whether the cell may be suppressed at all; `target` is how wide a primary cell's interval
    must be.
    """

    table: _Table
    weights: Floats
    interior: Bools
    lower: float | None
    floor: Floats
    ceiling: Floats
    eligible: Bools
    target: Floats
    cache: dict[int, _Cubes] = field(default_factory=dict, compare=False, repr=False)

    def cubes_at(self, cell: int) -> _Cubes:
        """Every hypercube through a flat position (computed once)."""
        if cell not in self.cache:
            self.cache[cell] = _cubes(self.table, cell)
        return self.cache[cell]


@dataclass(frozen=True)
class _Cubes:
    """Every hypercube through one cell: per corner, flat positions and signs over all choices."""

    shape: tuple[int, ...]
    corners: tuple[tuple[Ints, Ints], ...]


def _cubes(table: _Table, p: int) -> _Cubes:
    """Hypercubes through flat position p: one partner level per dimension that has a margin.

    Per dimension the shift is e_p - e_j for two categories and e_p + e_j when one of them is
    TOTAL; dimensions without a margin keep p's level. Their outer product adds up everywhere.
    """
    sizes = table.values.shape
    at = np.unravel_index(p, sizes)
    free = [d for d in range(table.ndim) if table.total_at(d) is not None]
    shape = tuple(sizes[d] - 1 for d in free)
    offset: dict[int, Ints] = {}
    flip: dict[int, Ints] = {}
    for axis, d in enumerate(free):
        total, stride = sizes[d] - 1, math.prod(sizes[d + 1 :])
        j = np.array([i for i in range(total + 1) if i != at[d]], dtype=np.intp)
        view = tuple(-1 if a == axis else 1 for a in range(len(free)))
        offset[d] = ((j - at[d]) * stride).reshape(view)
        flip[d] = np.where((j != total) & (at[d] != total), -1, 1).reshape(view)
    corners: list[tuple[Ints, Ints]] = []
    for moved in itertools.product((False, True), repeat=len(free)):
        flat = np.full(shape, p, dtype=np.intp)
        sign = np.ones(shape, dtype=np.intp)
        for d, m in zip(free, moved, strict=True):
            if m:
                flat = flat + offset[d]
                sign = sign * flip[d]
        corners.append((flat, sign))
    return _Cubes(shape, tuple(corners))


@dataclass(frozen=True)
class _Proof:
    """Two consistent tables far apart in `cell`, flattened; `cell` is a flat position."""

    cell: int
    low: Floats
    high: Floats

    def moves(self, cell: int, values: Floats) -> bool:
        """Whether the proof needs `cell` suppressed."""
        return bool(self.low[cell] != values[cell] or self.high[cell] != values[cell])


@dataclass(frozen=True)
class _Walk:
    proof: _Proof
    added: Bools
    cost: float
    steps: int


def _walk(
    problem: _Problem,
    p: int,
    cubes: _Cubes,
    suppressed: Bools,
    mode: Literal["single", "greedy", "closed"],
    *,
    relieve: bool = False,
) -> _Walk | None:
    """Protect p by one hypercube, or greedily by the cheapest gain per step.

    "closed" walks only along hypercubes that are already fully suppressed. A step that no bound
    stops goes just far enough (rounded up to a whole number, so count tables stay integers).
    With `relieve`, when every hypercube through p is blocked, `_relieve` may move the cells in
    the way (not when pruning: it is slow when it fails, and pruning can afford to fail).
    """
    shape = cubes.shape
    low, high = problem.table.values.ravel().copy(), problem.table.values.ravel().copy()
    taken = suppressed.copy()
    weights = [
        np.where(problem.eligible[flat], problem.weights[flat], np.inf) for flat, _ in cubes.corners
    ]
    for step in range(4 * low.size + 16):  # a safety stop; walks take a few steps
        need = float(problem.target[p] - (high[p] - low[p]))
        if need <= 0:
            return _finish(problem, _Proof(p, low, high), taken, suppressed, step)
        up, down = _room(problem, cubes, high, 1.0), _room(problem, cubes, low, -1.0)
        cost = np.zeros(shape)
        for (flat, _), weight in zip(cubes.corners, weights, strict=True):
            cost += np.where(taken[flat], 0.0, weight)
        gain = np.minimum(up + down, need)
        score = np.full(shape, np.inf)
        if mode == "single":
            score = np.where(up + down >= need, cost, np.inf)
        elif mode == "closed":
            score = np.where((gain > 0) & (cost == 0), 0.0, np.inf)
        else:
            np.divide(cost, gain, out=score, where=gain > 0)
        best = _first_best(score, -gain, cost)
        at = np.unravel_index(best, shape)
        if not math.isfinite(float(score[at])):
            if relieve and (
                _relieve(problem, p, cubes, high, taken, 1.0, need)
                or _relieve(problem, p, cubes, low, taken, -1.0, need)
            ):
                continue
            return None
        cells = np.array([flat[at] for flat, _ in cubes.corners], dtype=np.intp)
        signs = np.array([sign[at] for _, sign in cubes.corners], dtype=np.float64)
        taken[cells] = True
        rise, fall = float(up[at]), float(down[at])
        if math.isinf(rise):
            rise, fall = float(math.ceil(need)), 0.0
        elif math.isinf(fall):
            fall = float(math.ceil(need))
        high[cells] += signs * rise
        low[cells] -= signs * fall
    return None


def _room(problem: _Problem, cubes: _Cubes, z: Floats, direction: float) -> Floats:
    """How far table z can move by `direction` times each hypercube's signs within the bounds."""
    room = np.full(cubes.shape, np.inf)
    for flat, sign in cubes.corners:
        rising = sign * direction > 0
        np.minimum(
            room,
            np.where(rising, problem.ceiling[flat] - z[flat], z[flat] - problem.floor[flat]),
            out=room,
        )
    np.maximum(room, 0.0, out=room)
    return room


def _relieve(
    problem: _Problem,
    p: int,
    cubes: _Cubes,
    z: Floats,
    taken: Bools,
    direction: float,
    need: float,
) -> bool:
    """Unblock a suppressed hypercube through p in table z, moving p by `direction`.

    Each cell at a bound that stops it moves away from the bound along another fully suppressed
    hypercube that leaves p alone, so z stays consistent and keeps its value of p (e.g. a
    grand total at its known maximum goes down with a cell other than p). Updates z and returns
    True once some hypercube through p can move.
    """
    closed = np.ones(cubes.shape, dtype=np.bool_)
    for flat, _ in cubes.corners:
        closed &= taken[flat]
    stops = np.zeros(cubes.shape, dtype=np.intp)  # how many cells stop each hypercube
    for flat, sign in cubes.corners:
        rising = sign * direction > 0
        stops += np.where(rising, z[flat] >= problem.ceiling[flat], z[flat] <= problem.floor[flat])
    blocked = np.flatnonzero(closed & (stops > 0))
    movable: dict[tuple[int, float], bool] = {}  # whether a cell can leave its bound in z at all
    order = blocked[np.argsort(stops.ravel()[blocked], kind="stable")]  # fewest stops first
    for at in zip(*np.unravel_index(order, cubes.shape), strict=True):
        moves = [(int(flat[at]), direction * float(sign[at])) for flat, sign in cubes.corners]
        stuck = [
            (c, way)
            for c, way in moves
            if (z[c] >= problem.ceiling[c] if way > 0 else z[c] <= problem.floor[c])
        ]
        for c, way in stuck:
            if (c, way) not in movable:
                movable[c, way] = _shift(problem, p, c, -way, z.copy(), taken, need)
        if not all(movable[stop] for stop in stuck):
            continue
        trial = z.copy()
        for c, way in stuck:
            still = trial[c] >= problem.ceiling[c] if way > 0 else trial[c] <= problem.floor[c]
            if still and not _shift(problem, p, c, -way, trial, taken, need):
                break
        else:
            if all(
                (problem.ceiling[c] - trial[c] if way > 0 else trial[c] - problem.floor[c]) > 0
                for c, way in moves
            ):
                z[:] = trial
                return True
    return False


def _shift(
    problem: _Problem, p: int, c: int, way: float, z: Floats, taken: Bools, need: float
) -> bool:
    """Move cell c of z by `way` along a fully suppressed hypercube without p, as far as useful."""
    cubes = problem.cubes_at(c)
    usable = np.ones(cubes.shape, dtype=np.bool_)
    for flat, _ in cubes.corners:
        usable &= taken[flat] & (flat != p)
    room = np.where(usable, _room(problem, cubes, z, way), 0.0)
    at = np.unravel_index(_first_best(-room), cubes.shape)
    step = min(float(room[at]), float(math.ceil(need)))
    if not step > 0:
        return False
    for flat, sign in cubes.corners:
        z[flat[at]] += way * float(sign[at]) * step
    return True


def _first_best(*keys: Floats) -> int:
    """Flat position of the smallest entry by the first key, ties broken by the next ones."""
    chosen = np.arange(keys[0].size)
    for key in keys:
        values = key.ravel()[chosen]
        chosen = chosen[values == values.min()]
    return int(chosen[0])


def _finish(problem: _Problem, proof: _Proof, taken: Bools, suppressed: Bools, steps: int) -> _Walk:
    added = taken & ~suppressed
    return _Walk(proof, added, float(problem.weights[added].sum()), steps)


def _proves(proof: _Proof, problem: _Problem, released: Bools, tolerance: float) -> bool:
    """Check a proof against the final pattern, independently of how it was found."""
    table, lower, hidden = problem.table, problem.lower, ~released
    floor, ceiling = problem.floor[hidden], problem.ceiling[hidden]

    def consistent(z: Floats) -> bool:
        return bool(
            np.array_equal(z[released], table.values.ravel()[released])
            and _misfit(z.reshape(table.values.shape), table) <= tolerance
            and (lower is None or z[problem.interior].min() >= lower - tolerance)
            and (z[hidden] >= floor - tolerance).all()
            and (z[hidden] <= ceiling + tolerance).all()
        )

    width = proof.high[proof.cell] - proof.low[proof.cell]
    return bool(
        problem.eligible[hidden].all()
        and consistent(proof.low)
        and consistent(proof.high)
        and width >= problem.target[proof.cell]
    )
