"""The cell-key method: consistent perturbation of counts (as in ABS TableBuilder, ONS).

Each person has a *record key*: the first ``RECORD_KEY_BITS`` bits of HMAC-SHA256 of the person
key under a server secret, computed by DuckDB inside the job's query (the secret's pads are bound
parameters; no row leaves the engine). A *cell key* is the sum of the cell's distinct persons'
record keys modulo ``2**RECORD_KEY_BITS``, so it depends only on who is in the cell: not on the
query text, the filter order or the group order. A count's perturbation is read from the p-table
at (count, cell key): the key, read as a fraction of ``2**RECORD_KEY_BITS``, falls in one
perturbation's slice of the row's cumulative probabilities. The same persons with the same count
always get the same perturbation, so repeating or rewriting a query gains nothing; cells of
different persons get independent perturbations distributed as the table says.

This is rule-based mode plus perturbation: the query-set rule, primary suppression (on true
counts, before perturbation) and the differencing guard stay on. Only counts are released: the
table perturbs counts, and an unperturbed sum next to its mean would give the exact count back.
No rounding is applied on top: the p-table already decides every released value.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import hmac
import math
import os
import secrets
import threading
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from sandbox._errors import JobFailed, PolicyDenied
from sandbox._model import AggFunc, Cell, CellStatus, JobSpec, ResultTable
from sandbox.engine import RECORD_KEY_BITS, RawTable
from sandbox.policy import Policy, PTableSpec

RULE_CELL_KEY = "disclosure.cell_key"
RULE_COUNTS_ONLY = "cell_key.counts_only"
SECRET_FILE = "cell_key.secret"  # noqa: S105 - a file name, not a secret
"""The record-key secret's file in the server's state directory (mode 0600)."""

Row = tuple[tuple[int, Fraction], ...]
"""(perturbation, probability) pairs, perturbations ascending, probabilities summing to 1."""
Problem = tuple[tuple[str | int, ...], str, str]
"""A p-table problem: key path under ``ptable``, what is wrong, how to fix it."""

COUNTS = (AggFunc.COUNT, AggFunc.COUNT_DISTINCT)
_SCALE = 1 << RECORD_KEY_BITS
_BLOCK = 64  # SHA-256 block size (bytes)


# ---- the record-key secret ------------------------------------------------------------------


class RecordKeySecret:
    """The server's HMAC key for record keys. Never printed, logged or released."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("a record-key secret needs at least 32 bytes")
        self._key = key

    def __repr__(self) -> str:
        return "RecordKeySecret(<hidden>)"

    def pads(self) -> tuple[bytes, bytes]:
        """The HMAC-SHA256 (outer, inner) key blocks, as the engine's query binds them."""
        key = self._key if len(self._key) <= _BLOCK else hashlib.sha256(self._key).digest()
        block = key.ljust(_BLOCK, b"\0")
        return bytes(b ^ 0x5C for b in block), bytes(b ^ 0x36 for b in block)

    def record_key(self, person: str) -> int:
        """A person's record key (the engine computes the same in SQL)."""
        digest = hmac.new(self._key, person.encode(), hashlib.sha256).digest()
        return int.from_bytes(digest[: RECORD_KEY_BITS // 8], "big")

    def cell_key(self, persons: Iterable[str]) -> int:
        """The key of a cell holding these persons (each counted once)."""
        return sum(self.record_key(p) for p in set(persons)) % _SCALE


_loaded: dict[Path, RecordKeySecret] = {}
_loaded_lock = threading.Lock()


def record_key_secret(state_dir: Path) -> RecordKeySecret:
    """The secret kept in ``state_dir``, generated (with ``secrets``) on first use.

    Keep it with the state store's backups: another secret gives every cell a new
    perturbation, and a cell's old and new answers could then be averaged.

    Raises:
        JobFailed: the secret file cannot be read or created, or is malformed.
    """
    path = Path(state_dir).resolve() / SECRET_FILE
    with _loaded_lock:
        secret = _loaded.get(path)
        if secret is None:
            secret = _loaded[path] = _load_or_create(path)
        return secret


def _load_or_create(path: Path) -> RecordKeySecret:
    try:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(fd, "w", encoding="ascii") as fh:
                    fh.write(secrets.token_hex(32) + "\n")
                    fh.flush()
                    os.fsync(fh.fileno())
                # Atomic, and never replaces a secret another process created meanwhile.
                with contextlib.suppress(FileExistsError):
                    os.link(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise JobFailed(f"cannot read the cell-key secret ({type(exc).__name__})") from None
    try:
        return RecordKeySecret(bytes.fromhex(text))
    except ValueError:
        raise JobFailed(f"the cell-key secret file {SECRET_FILE} is malformed") from None


# ---- the p-table ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PTable:
    """A perturbation table: for each count, the distribution of its perturbation."""

    rows: Mapping[int, Row]
    """Rows for given counts."""
    default: Row
    """The row of every count from ``default_from`` on that ``rows`` does not list."""
    default_from: int
    min_positive: int
    """The smallest positive count the table releases (1: any)."""

    def row(self, count: int) -> Row | None:
        """The row of ``count``, or None if the table has none (such a count is suppressed)."""
        if count in self.rows:
            return self.rows[count]
        return self.default if count >= self.default_from else None

    def perturbation(self, count: int, cell_key: int) -> int | None:
        """The perturbation of ``count`` in the cell with this key (None: not in the table).

        The key picks the perturbation whose slice of ``[0, 1)`` (cumulative probabilities in
        perturbation order) holds ``cell_key / 2**RECORD_KEY_BITS``; compared exactly.
        """
        row = self.row(count)
        if row is None:
            return None
        cumulative = Fraction(0)
        for d, p in row:
            cumulative += p
            if cell_key * cumulative.denominator < cumulative.numerator * _SCALE:
                return d
        return row[-1][0]

    @property
    def max_perturbation(self) -> int:
        """The largest absolute perturbation of any row."""
        rows = [self.default, *self.rows.values()]
        return max(abs(d) for row in rows for d, _ in row)

    @property
    def variance(self) -> Fraction:
        """The variance of the default row's perturbation."""
        return _variance(self.default)


def build_ptable(spec: PTableSpec, min_persons: int) -> PTable:
    """The table a policy describes (``min_persons`` is its threshold k).

    Built tables (``max_perturbation`` D, ``variance`` V) follow the constraints of the
    standard count p-tables (e.g. the ``ptable`` package of the cell-key method): perturbations
    in [-D, D], zero mean, variance V, no negative count, and with ``block_small`` no count of
    1 to k-1 released. Rows run from the smallest count allowed to D + js (js = k-1 with
    ``block_small``, else 0); every larger count shares the symmetric default row. Instead of
    maximising entropy numerically, each row is an exact mixture of "no change", a triangular
    shape (weights D+1-|d|, the two sides balanced to zero mean) and the two extreme
    perturbations, so every probability is an exact fraction. A row whose range is cut off at
    the bottom gets the largest variance up to V that zero mean allows there (none if it cannot
    move down at all).
    """
    return _build_ptable(spec, min_persons)


@functools.lru_cache(maxsize=64)
def _build_ptable(spec: PTableSpec, min_persons: int) -> PTable:
    js = min_persons - 1 if spec.block_small else 0
    if spec.default:
        listed = {count: _cleaned(row) for count, row in spec.rows}
        return PTable(types.MappingProxyType(listed), _cleaned(spec.default), 1, js + 1)
    d_max, variance = spec.max_perturbation, spec.variance
    start = d_max + js + 1
    rows = {i: _built_row(i, d_max, variance, js) for i in range(js + 1, start)}
    default = _built_row(start, d_max, variance, js)
    return PTable(types.MappingProxyType(rows), default, start, js + 1)


def cell_key_table(policy: Policy) -> PTable:
    """The p-table of a cell-key policy.

    Raises:
        JobFailed: the policy has no p-table (a policy file always has one: it is validated).
    """
    spec = policy.disclosure.noise.ptable
    if spec is None:
        raise JobFailed("the cell-key method needs a p-table in the policy")
    return build_ptable(spec, policy.disclosure.min_persons_per_cell)


def _built_row(i: int, d_max: int, variance: Fraction, js: int) -> Row:
    support = [d for d in range(-d_max, d_max + 1) if i + d == 0 or i + d > js]
    neg = [d for d in support if d < 0]
    pos = [d for d in support if d > 0]
    if not neg or not pos or 0 not in support:
        return ((0, Fraction(1)),)
    triangular = _balanced(neg, pos, lambda d: d_max + 1 - abs(d))
    extreme = _balanced([neg[0]], [pos[-1]], lambda d: 1)
    v_tri, v_ext = _variance(triangular), _variance(extreme)
    if variance <= v_tri:
        mixed = _mix({0: Fraction(1)}, dict(triangular), variance / v_tri)
    elif variance < v_ext:
        mixed = _mix(dict(triangular), dict(extreme), (variance - v_tri) / (v_ext - v_tri))
    else:
        mixed = dict(extreme)
    return _cleaned(tuple(mixed.items()))


def _balanced(neg: list[int], pos: list[int], weight: Callable[[int], int]) -> Row:
    """Weights within each side, the two sides' masses set so that the mean is zero."""
    w_neg = sum(weight(d) for d in neg)
    w_pos = sum(weight(d) for d in pos)
    mean_neg = Fraction(sum(weight(d) * d for d in neg), w_neg)
    mean_pos = Fraction(sum(weight(d) * d for d in pos), w_pos)
    share_neg = mean_pos / (mean_pos - mean_neg)
    return tuple(
        [(d, share_neg * weight(d) / w_neg) for d in neg]
        + [(d, (1 - share_neg) * weight(d) / w_pos) for d in pos]
    )


def _mix(a: dict[int, Fraction], b: dict[int, Fraction], t: Fraction) -> dict[int, Fraction]:
    """``(1 - t) a + t b``."""
    return {d: (1 - t) * a.get(d, Fraction(0)) + t * b.get(d, Fraction(0)) for d in {*a, *b}}


def _cleaned(row: Iterable[tuple[int, Fraction]]) -> Row:
    return tuple(sorted((d, Fraction(p)) for d, p in row if p))


def _variance(row: Row) -> Fraction:
    mean = sum((p * d for d, p in row), Fraction(0))
    return sum((p * (d - mean) ** 2 for d, p in row), Fraction(0))


def ptable_problems(spec: PTableSpec, min_persons: int) -> list[Problem]:
    """What is wrong with a p-table the schema accepted (empty: nothing).

    Args:
        spec: The p-table as written.
        min_persons: The policy's threshold k: cells under k persons are suppressed before
            perturbation, so only counts from k on are perturbed.
    """
    if not spec.default:
        return _built_problems(spec)
    problems: list[Problem] = []
    block = min_persons if spec.block_small else 0
    seen: dict[int, int] = {}
    for index, (count, row) in enumerate(spec.rows):
        at: tuple[str | int, ...] = ("rows", index)
        if count in seen:
            problems.append(
                (
                    (*at, "count"),
                    f"count {count} already has a row (rows[{seen[count]}])",
                    "keep one row per count",
                )
            )
            continue
        seen[count] = index
        if count < min_persons:
            problems.append(
                (
                    (*at, "count"),
                    f"cells under min_persons_per_cell ({min_persons}) persons are suppressed "
                    f"before perturbation, so the row for count {count} is never used",
                    "remove it, or lower min_persons_per_cell",
                )
            )
            continue
        problems += _row_problems(row, (*at, "perturbations"), [count], block, "row")
    lowest = min((d for d, p in spec.default if p), default=0)
    uncovered = [c for c in range(min_persons, min_persons + abs(lowest) + 1) if c not in seen]
    problems += _row_problems(spec.default, ("default",), uncovered, block, "default")
    return problems


def _built_problems(spec: PTableSpec) -> list[Problem]:
    d_max, variance = spec.max_perturbation, spec.variance
    if variance <= 0:
        return [(("variance",), "must be above 0", "e.g. `variance: 1`")]
    if variance > d_max * d_max:
        needed = math.isqrt(math.ceil(variance) - 1) + 1
        return [
            (
                ("variance",),
                f"perturbations of at most {d_max} cannot have a variance above {d_max * d_max} "
                "(max_perturbation squared)",
                f"lower the variance, or raise max_perturbation to at least {needed}",
            )
        ]
    return []


def _row_problems(
    row: Row, at: tuple[str | int, ...], counts: list[int], block: int, what: str
) -> list[Problem]:
    values = [d for d, _ in row]
    duplicated = sorted({d for d in values if values.count(d) > 1})
    if duplicated:
        return [(at, f"perturbation {duplicated[0]} is listed twice", "list each once")]
    total = sum((p for _, p in row), Fraction(0))
    if total != 1:
        return [
            (
                at,
                f"the probabilities sum to {total}, not exactly 1",
                'make them add up to 1; write thirds and the like as fractions, e.g. "1/3"',
            )
        ]
    fix = "add a row for that count" if what == "default" else "change that perturbation"
    for count in counts:
        for d, p in row:
            released = count + d
            if p and released < 0:
                problem = f"count {count} could be released as {released}, a negative count"
            elif p and 0 < released < block:
                problem = (
                    f"count {count} could be released as {released}, under "
                    f"min_persons_per_cell ({block}), but block_small is on"
                )
            else:
                continue
            return [(at, problem, fix)]
    return []


# ---- perturbing a protected table -------------------------------------------------------------


def check_cell_key_job(spec: JobSpec) -> None:
    """Refuse what the cell-key method does not protect: anything but counts.

    Raises:
        PolicyDenied: the job asks for a sum, mean or other magnitude aggregate.
    """
    others = sorted({str(a.function) for a in spec.aggregates if a.function not in COUNTS})
    if others:
        raise PolicyDenied(
            f"this dataset's cell-key method perturbs counts only; {', '.join(others)} would "
            "be released exact, and a sum and its mean give the exact count back: ask for "
            "count or count_distinct",
            rule_ids=(RULE_COUNTS_ONLY,),
        )


def perturb_counts(table: ResultTable, raw: RawTable, spec: JobSpec, ptable: PTable) -> ResultTable:
    """Perturb every released count of a protected table by its cell's p-table entry.

    Suppressed cells stay suppressed and structural zeros stay 0. A count without a cell key or
    outside the table is suppressed (fail closed). Returns the table with status ``NOISED``,
    rule ``disclosure.cell_key`` and ``ci`` the largest perturbation (a sure bound).
    """
    keys = {c.keys: c.cell_key for c in raw.cells}
    counting = {j for j, a in enumerate(spec.aggregates) if a.function in COUNTS}
    rows = []
    for row in table.rows:
        key = keys.get(row.keys)
        cells = tuple(
            _perturbed(cell, key, ptable) if j in counting else cell
            for j, cell in enumerate(row.cells)
        )
        rows.append(dataclasses.replace(row, cells=cells))
    return dataclasses.replace(table, rows=tuple(rows), privacy=privacy_terms(ptable))


def privacy_terms(ptable: PTable) -> dict[str, str]:
    """What ``ResultTable.privacy`` says of a cell-key result (the table's shape, no key)."""
    return {
        "mechanism": "cell_key",
        "max_perturbation": str(ptable.max_perturbation),
        "variance": str(ptable.variance),
        "confidence": "1",
    }


def _perturbed(cell: Cell, key: int | None, ptable: PTable) -> Cell:
    if cell.status != CellStatus.RELEASED or cell.value is None or cell.value == 0:
        return cell
    count = int(cell.value)
    d = None if key is None else ptable.perturbation(count, key)
    released = None if d is None else count + d
    if released is None or released < 0 or 0 < released < ptable.min_positive:
        return Cell(None, CellStatus.SUPPRESSED, RULE_CELL_KEY)
    return Cell(float(released), CellStatus.NOISED, RULE_CELL_KEY, float(ptable.max_perturbation))
