"""Synthetic population register and clinic visits for Harbor City.

Two Parquet files are written: ``residents.parquet`` (one row per person) and
``clinic_visits.parquet`` (one row per visit in 2025, ``sum(residents.clinic_visits)``
rows, sorted by ``person_id`` then ``visit_date``).

Determinism: rows are drawn in fixed blocks of :data:`BLOCK_ROWS` residents, and every
block has its own PCG64 stream derived from ``SeedSequence(seed, spawn_key=(stream, block))``.
Chunks only group whole blocks for writing, so the data do not depend on ``chunk_rows``;
the files are byte-identical for the same ``seed``, ``residents`` and ``chunk_rows`` (the
chunk size sets the Parquet row groups) under the same numpy and pyarrow versions.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

BLOCK_ROWS = 10_000
"""Residents per random stream; fixed so the output is independent of the chunk size."""

DEFAULT_CHUNK_ROWS = 500_000
"""Residents generated and written per Parquet row group."""

MAX_VISITS = 40
MAX_INCOME = 500_000

_Floats = npt.NDArray[np.float64]
_Ints = npt.NDArray[np.int64]
_Bools = npt.NDArray[np.bool_]
_Columns = dict[str, npt.NDArray[Any]]

_RESIDENT_STREAM = 0
_VISIT_STREAM = 1

RESIDENTS_SCHEMA = pa.schema(
    [
        pa.field("person_id", pa.int64(), nullable=False),
        pa.field("district", pa.string(), nullable=False),
        pa.field("sub_district", pa.string(), nullable=False),
        pa.field("age", pa.int16(), nullable=False),
        pa.field("sex", pa.string(), nullable=False),
        pa.field("household_size", pa.int16(), nullable=False),
        pa.field("employment_sector", pa.string(), nullable=False),
        pa.field("monthly_income", pa.int64(), nullable=False),
        pa.field("insurance_type", pa.string(), nullable=False),
        pa.field("clinic_visits", pa.int16(), nullable=False),
    ]
)

VISITS_SCHEMA = pa.schema(
    [
        pa.field("visit_id", pa.int64(), nullable=False),
        pa.field("person_id", pa.int64(), nullable=False),
        pa.field("visit_date", pa.date32(), nullable=False),
        pa.field("department", pa.string(), nullable=False),
        pa.field("district", pa.string(), nullable=False),
        pa.field("cost", pa.int64(), nullable=False),
    ]
)

# --- Reference tables -------------------------------------------------------------------

DISTRICTS: tuple[tuple[str, float, tuple[str, ...]], ...] = (
    (
        "Old Harbor",
        0.18,
        (
            "Old Harbor Central",
            "Lantern Quarter",
            "Fishmarket",
            "Customs Hill",
            "Old Harbor Docks",
            "Saltgate",
            "Chandler's Row",
            "Admiralty",
        ),
    ),
    (
        "Riverside",
        0.15,
        (
            "Riverside North",
            "Riverside South",
            "Millbrook",
            "Willow Bend",
            "Ferry Landing",
            "Reedmarsh",
            "Stonebridge",
        ),
    ),
    (
        "Northgate",
        0.13,
        (
            "Northgate Central",
            "Northgate Heights",
            "Kingsway",
            "Foundry Lane",
            "Copper Hill",
            "Elmstead",
        ),
    ),
    (
        "Eastbank",
        0.11,
        ("Eastbank North", "Eastbank South", "Tanner's Yard", "Sunrise Park", "Brickfield"),
    ),
    (
        "Westfield",
        0.10,
        (
            "Westfield Central",
            "Westfield Gardens",
            "Orchard Vale",
            "Meadowside",
            "Ashgrove",
            "Windmill Hill",
        ),
    ),
    (
        "Lakeshore",
        0.09,
        ("Lakeshore East", "Lakeshore West", "Pier Point", "Bluewater", "Heron Bay"),
    ),
    ("Hillcrest", 0.08, ("Hillcrest Upper", "Hillcrest Lower", "Observatory", "Pinecrest")),
    (
        "Southport",
        0.06,
        (
            "Southport Quay",
            "Southport Central",
            "Container Terminal",
            "Marsh End",
            "Lighthouse Point",
            "Gullwing",
            "Dunmore",
        ),
    ),
    (
        "Ironworks",
        0.06,
        ("Ironworks North", "Ironworks South", "Smelter Row", "Railyard", "Anvil Park"),
    ),
    ("Greenmoor", 0.04, ("Greenmoor Village", "Greenmoor Common", "Heathside", "Foxhollow")),
)
"""(district, population share, sub-districts); sub-district shares fall with list position."""

CARE_HUB_FACTOR: tuple[float, ...] = (2.5, 1.0, 1.8, 1.0, 1.0, 0.8, 1.2, 0.7, 0.6, 0.4)
"""Relative pull of each district's hospitals for visits outside the home district."""

HOME_DISTRICT_VISIT_SHARE = 0.82

SECTORS: tuple[str, ...] = (
    "manufacturing",
    "retail",
    "public administration",
    "health",
    "education",
    "finance",
    "construction",
    "logistics",
    "hospitality",
    "technology",
)
STUDENT, RETIRED, UNEMPLOYED = len(SECTORS), len(SECTORS) + 1, len(SECTORS) + 2
EMPLOYMENT: tuple[str, ...] = (*SECTORS, "student", "retired", "unemployed")

_SECTOR_SHARE_F = (0.08, 0.15, 0.09, 0.18, 0.12, 0.07, 0.02, 0.05, 0.12, 0.08)
_SECTOR_SHARE_M = (0.16, 0.11, 0.07, 0.05, 0.04, 0.07, 0.16, 0.13, 0.08, 0.17)
_INCOME_MEDIAN = (
    *(5_200, 3_600, 6_000, 6_200, 5_400, 9_500, 5_000, 4_600, 3_200, 9_000),
    900,  # student side jobs
    2_400,  # pension
    1_100,  # unemployment benefit
)
_INCOME_SIGMA = (*(0.5,) * len(SECTORS), 0.5, 0.4, 0.3)

INSURANCE: tuple[str, ...] = ("employee", "resident", "government", "private", "none")
_INSURANCE_SHARE = (
    (0.86, 0.02, 0.00, 0.09, 0.03),  # employed
    (0.33, 0.60, 0.00, 0.05, 0.02),  # child or student (mostly family coverage)
    (0.00, 0.18, 0.75, 0.06, 0.01),  # retired
    (0.00, 0.35, 0.45, 0.02, 0.18),  # unemployed
    (0.60, 0.00, 0.00, 0.38, 0.02),  # employed, high earner
)
_HIGH_EARNER = 15_000

_HOUSEHOLD_SHARE = (
    (0.00, 0.22, 0.30, 0.27, 0.12, 0.05, 0.025, 0.015),  # under 18
    (0.20, 0.30, 0.22, 0.16, 0.07, 0.03, 0.012, 0.008),  # 18-69
    (0.38, 0.45, 0.09, 0.04, 0.02, 0.01, 0.006, 0.004),  # 70+
)

DEPARTMENTS: tuple[str, ...] = (
    "general practice",
    "paediatrics",
    "cardiology",
    "orthopaedics",
    "dermatology",
    "psychiatry",
    "obstetrics",
    "emergency",
)
_DEPARTMENT_SHARE = (  # by (age band, sex); paediatrics < 16, obstetrics women 16-49 only
    (0.20, 0.55, 0.01, 0.05, 0.06, 0.03, 0.00, 0.10),  # < 16 F
    (0.20, 0.55, 0.01, 0.05, 0.06, 0.03, 0.00, 0.12),  # < 16 M
    (0.40, 0.00, 0.03, 0.09, 0.08, 0.10, 0.16, 0.14),  # 16-49 F
    (0.46, 0.00, 0.04, 0.13, 0.07, 0.10, 0.00, 0.20),  # 16-49 M
    (0.45, 0.00, 0.13, 0.14, 0.07, 0.07, 0.00, 0.14),  # 50-64 F
    (0.44, 0.00, 0.17, 0.13, 0.06, 0.05, 0.00, 0.15),  # 50-64 M
    (0.42, 0.00, 0.22, 0.15, 0.05, 0.04, 0.00, 0.12),  # 65+ F
    (0.40, 0.00, 0.26, 0.13, 0.05, 0.03, 0.00, 0.13),  # 65+ M
)
_COST_MEDIAN = (55.0, 65.0, 320.0, 240.0, 85.0, 140.0, 210.0, 380.0)
_COST_SIGMA = (0.8, 0.7, 0.9, 0.9, 0.7, 0.8, 0.9, 1.0)
MIN_COST, MAX_COST = 20, 20_000

_YEAR_START = 20_089
"""2025-01-01 as days since 1970-01-01 (a Wednesday)."""
_DAYS = 365


# --- Cumulative distribution tables ------------------------------------------------------


def _cdf(weights: Sequence[float]) -> _Floats:
    w = np.asarray(weights, dtype=np.float64)
    c = np.cumsum(w / w.sum())
    c[-1] = 1.0
    return c


def _cdf_table(rows: Sequence[Sequence[float]], width: int) -> _Floats:
    """Row-wise CDFs padded with 1.0 to ``width`` columns (padding is never drawn)."""
    table = np.ones((len(rows), width), dtype=np.float64)
    for i, row in enumerate(rows):
        table[i, : len(row)] = _cdf(row)
    return table


def _age_weights() -> _Floats:
    age = np.arange(101, dtype=np.float64)
    # Gompertz survival times a cohort-size profile (low fertility, young-adult in-migration).
    survival = np.exp(-(5e-5 / 0.095) * np.expm1(0.095 * age))
    cohort = np.interp(age, [0, 17, 22, 30, 40, 55, 70], [0.82, 0.9, 1.15, 1.25, 1.15, 1.05, 1.0])
    weights: _Floats = survival * cohort
    return weights


def _day_weights() -> _Floats:
    day = np.arange(_DAYS, dtype=np.float64)
    season = 1.0 + 0.25 * np.cos(2.0 * np.pi * (day - 15.0) / _DAYS)
    weekday = np.array([1.25, 1.05, 1.0, 1.0, 1.0, 0.55, 0.3])[(day.astype(np.int64) + 2) % 7]
    weights: _Floats = season * weekday
    return weights


_DISTRICT_CDF = _cdf([d[1] for d in DISTRICTS])
_SUB_CDF = _cdf_table(
    [[1.0 / (k + 1.5) for k in range(len(d[2]))] for d in DISTRICTS],
    max(len(d[2]) for d in DISTRICTS),
)
_SUB_OFFSET = np.cumsum([0, *(len(d[2]) for d in DISTRICTS[:-1])]).astype(np.int64)
SUB_DISTRICTS: tuple[str, ...] = tuple(s for d in DISTRICTS for s in d[2])
_HUB_CDF = _cdf([d[1] * f for d, f in zip(DISTRICTS, CARE_HUB_FACTOR, strict=True)])
_AGE_CDF = _cdf(_age_weights().tolist())
_DAY_CDF = _cdf(_day_weights().tolist())
_SECTOR_CDF = _cdf_table([_SECTOR_SHARE_F, _SECTOR_SHARE_M], len(SECTORS))
_INSURANCE_CDF = _cdf_table(_INSURANCE_SHARE, len(INSURANCE))
_HOUSEHOLD_CDF = _cdf_table(_HOUSEHOLD_SHARE, 8)
_DEPARTMENT_CDF = _cdf_table(_DEPARTMENT_SHARE, len(DEPARTMENTS))
_LOG_INCOME_MEDIAN = np.log(np.asarray(_INCOME_MEDIAN, dtype=np.float64))
_INCOME_SIGMA_ARR = np.asarray(_INCOME_SIGMA, dtype=np.float64)
_LOG_COST_MEDIAN = np.log(np.asarray(_COST_MEDIAN, dtype=np.float64))
_COST_SIGMA_ARR = np.asarray(_COST_SIGMA, dtype=np.float64)


def _pick(u: _Floats, cdf: _Floats) -> _Ints:
    """Inverse-CDF draw: index of the category each uniform in [0, 1) falls into."""
    return np.searchsorted(cdf, u, side="right").astype(np.int64)


def _pick_rows(u: _Floats, table: _Floats, group: _Ints) -> _Ints:
    """Inverse-CDF draw where each row uses the CDF of its own group."""
    hits: _Bools = u[:, None] >= table[group]
    index: _Ints = hits.sum(axis=1, dtype=np.int64)
    return index


def _rng(seed: int, stream: int, block: int) -> np.random.Generator:
    return np.random.Generator(
        np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(stream, block)))
    )


# --- Block generators --------------------------------------------------------------------


def _resident_block(seed: int, block: int, n: int) -> _Columns:
    """Residents of one block as category codes and numbers; ``person_id`` is added later."""
    rng = _rng(seed, _RESIDENT_STREAM, block)
    u = rng.random((10, n))
    z = rng.standard_normal(n)

    age = _pick(u[0], _AGE_CDF)
    agef = age.astype(np.float64)
    district = _pick(u[1], _DISTRICT_CDF)
    sub_district = _SUB_OFFSET[district] + _pick_rows(u[2], _SUB_CDF, district)
    p_female = np.interp(agef, [0, 59, 100], [0.488, 0.5, 0.7])
    male = u[3] >= p_female
    hh_group = np.where(age < 18, 0, np.where(age >= 70, 2, 1))
    household = _pick_rows(u[4], _HOUSEHOLD_CDF, hh_group) + 1

    # Employment status conditional on age; student and retirement ages never overlap.
    p_student = np.interp(agef, [17, 18, 24, 30], [1.0, 0.6, 0.12, 0.0])
    p_retired = np.interp(agef, [57, 58, 64, 65, 75, 100], [0.0, 0.02, 0.35, 0.8, 0.97, 1.0])
    p_unemployed = np.interp(agef, [18, 25, 55, 65, 66], [0.10, 0.05, 0.05, 0.07, 0.0])
    t_student = p_student
    t_retired = t_student + p_retired
    t_unemployed = t_retired + (1.0 - t_retired) * p_unemployed
    sector = _pick_rows(u[6], _SECTOR_CDF, male.astype(np.int64))
    employment = np.where(
        u[5] < t_student,
        STUDENT,
        np.where(u[5] < t_retired, RETIRED, np.where(u[5] < t_unemployed, UNEMPLOYED, sector)),
    ).astype(np.int64)
    working = employment < len(SECTORS)

    # Income: log-normal by status/sector, growing with experience, a thin Pareto top tail.
    experience = np.where(working, 0.75 + 0.5 * np.clip((agef - 18.0) / 30.0, 0.0, 1.0), 1.0)
    income = np.exp(_LOG_INCOME_MEDIAN[employment] + _INCOME_SIGMA_ARR[employment] * z)
    income *= experience
    top = working & (u[7] < 0.01)
    income[top] *= 1.0 + 4.0 * rng.pareto(1.2, int(top.sum()))
    no_income = (
        (age < 16)
        | ((employment == STUDENT) & (u[8] < 0.8))
        | ((employment == UNEMPLOYED) & (u[8] < 0.35))
    )
    income = np.where(no_income, 0.0, np.minimum(np.rint(income), MAX_INCOME))

    ins_group = np.select(
        [
            employment == STUDENT,
            employment == RETIRED,
            employment == UNEMPLOYED,
            income > _HIGH_EARNER,
        ],
        [1, 2, 3, 4],
        0,
    ).astype(np.int64)
    insurance = _pick_rows(u[9], _INSURANCE_CDF, ins_group)

    # Visits: Poisson-gamma (overdispersed), rising with age, pregnancies for women 16-45.
    lam = np.interp(
        agef,
        [0, 2, 5, 12, 18, 30, 45, 60, 70, 80, 90, 100],
        [6.0, 4.5, 2.5, 1.8, 1.9, 2.2, 2.8, 3.8, 5.2, 7.0, 8.5, 9.5],
    )
    lam += np.where(~male & (age >= 16) & (age <= 45), 1.0, 0.0)
    lam *= np.where(insurance == INSURANCE.index("none"), 0.55, 1.0)
    lam *= rng.gamma(2.0, 0.5, n)
    visits = np.minimum(rng.poisson(lam), MAX_VISITS)

    return {
        "district": district,
        "sub_district": sub_district,
        "age": age.astype(np.int16),
        "sex": male.astype(np.int8),
        "household_size": household.astype(np.int16),
        "employment_sector": employment,
        "monthly_income": income.astype(np.int64),
        "insurance_type": insurance,
        "clinic_visits": visits.astype(np.int16),
    }


def _visit_block(seed: int, block: int, residents: _Columns) -> _Columns:
    """Visits of one block's residents; ``owner`` is the row index within the block."""
    counts = residents["clinic_visits"].astype(np.int64)
    owner = np.repeat(np.arange(counts.size, dtype=np.int64), counts)
    m = owner.size
    rng = _rng(seed, _VISIT_STREAM, block)
    u = rng.random((4, m))
    z = rng.standard_normal(m)

    day = _pick(u[0], _DAY_CDF)
    day = np.sort(owner * _DAYS + day) % _DAYS  # chronological per person; owner order kept
    age = residents["age"][owner]
    band = np.where(age < 16, 0, np.where(age < 50, 1, np.where(age < 65, 2, 3)))
    group = band * 2 + residents["sex"][owner].astype(np.int64)
    department = _pick_rows(u[1], _DEPARTMENT_CDF, group)
    home = residents["district"][owner]
    district = np.where(u[2] < HOME_DISTRICT_VISIT_SHARE, home, _pick(u[3], _HUB_CDF))
    cost = np.exp(_LOG_COST_MEDIAN[department] + _COST_SIGMA_ARR[department] * z)
    cost = np.clip(np.rint(cost), MIN_COST, MAX_COST)
    return {
        "owner": owner,
        "visit_date": (day + _YEAR_START).astype(np.int32),
        "department": department,
        "district": district,
        "cost": cost.astype(np.int64),
    }


# --- Arrow conversion and writing --------------------------------------------------------

_DICTIONARIES: dict[str, Any] = {
    "district": pa.array([d[0] for d in DISTRICTS], type=pa.string()),
    "sub_district": pa.array(SUB_DISTRICTS, type=pa.string()),
    "sex": pa.array(["F", "M"], type=pa.string()),
    "employment_sector": pa.array(EMPLOYMENT, type=pa.string()),
    "insurance_type": pa.array(INSURANCE, type=pa.string()),
    "department": pa.array(DEPARTMENTS, type=pa.string()),
}


def _write_schema(schema: Any) -> Any:
    """``schema`` with string columns as dictionaries: cheap to build and to encode.

    Written with ``store_schema=False``, so readers see plain strings (``schema`` itself).
    """
    fields = [
        pa.field(f.name, pa.dictionary(pa.int8(), pa.string()), nullable=f.nullable)
        if f.type == pa.string()
        else f
        for f in schema
    ]
    return pa.schema(fields)


_RESIDENTS_WRITE_SCHEMA = _write_schema(RESIDENTS_SCHEMA)
_VISITS_WRITE_SCHEMA = _write_schema(VISITS_SCHEMA)


def _block(seed: int, block: int, n: int) -> tuple[_Columns, _Columns]:
    """Residents and visits of one block, with ``person_id`` filled in."""
    residents = _resident_block(seed, block, n)
    visits = _visit_block(seed, block, residents)
    start = block * BLOCK_ROWS
    residents["person_id"] = np.arange(start + 1, start + n + 1, dtype=np.int64)
    visits["person_id"] = residents["person_id"][visits.pop("owner")]
    return residents, visits


def _batch(columns: _Columns, schema: Any) -> Any:
    arrays: list[Any] = []
    for f in schema:
        values = columns[f.name]
        if pa.types.is_dictionary(f.type):
            indices = pa.array(values.astype(np.int8))
            arrays.append(pa.DictionaryArray.from_arrays(indices, _DICTIONARIES[f.name]))
        elif f.type == pa.date32():
            arrays.append(pa.array(values.astype(np.int32)).view(pa.date32()))
        else:
            arrays.append(pa.array(values, type=f.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _temp_path(final: Path) -> Path:
    """Reserve a hidden sibling of ``final`` (created with normal umask permissions)."""
    while True:
        tmp = final.with_name(f".{final.name}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:  # pragma: no cover - 48 random bits
            continue
        os.close(fd)
        return tmp


def generate_demo_data(
    out_dir: Path,
    residents: int = 1_000_000,
    seed: int = 7,
    progress: Callable[[int, int], None] | None = None,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    workers: int = 2,
) -> dict[str, Path]:
    """Write ``residents.parquet`` and ``clinic_visits.parquet`` into ``out_dir``.

    Returns ``{"residents": path, "clinic_visits": path}``.

    The same ``seed`` and ``residents`` give the same rows whatever ``chunk_rows`` and
    ``workers`` are (``chunk_rows`` is rounded up to a multiple of :data:`BLOCK_ROWS`), and
    byte-identical files for the same ``chunk_rows``. ``workers`` threads generate blocks while
    the previous chunk is written; memory is bounded by about two chunks. ``progress(done,
    total)`` is called with resident counts after each chunk. Files appear under their final
    names only when both are complete.
    """
    if residents < 0:
        raise ValueError("residents must be >= 0")
    if seed < 0:
        raise ValueError("seed must be >= 0")
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be >= 1")
    if workers < 1:
        raise ValueError("workers must be >= 1")
    blocks_per_chunk = -(-chunk_rows // BLOCK_ROWS)
    block_rows = [BLOCK_ROWS] * (residents // BLOCK_ROWS)
    if residents % BLOCK_ROWS:
        block_rows.append(residents % BLOCK_ROWS)
    chunks = [
        range(first, min(first + blocks_per_chunk, len(block_rows)))
        for first in range(0, len(block_rows), blocks_per_chunk)
    ]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = {
        "residents": out_dir / "residents.parquet",
        "clinic_visits": out_dir / "clinic_visits.parquet",
    }
    tmp = {name: _temp_path(path) for name, path in final.items()}
    options: dict[str, Any] = {"compression": "zstd", "store_schema": False}
    try:
        with (
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="demo-gen") as pool,
            pq.ParquetWriter(tmp["residents"], _RESIDENTS_WRITE_SCHEMA, **options) as res_out,
            pq.ParquetWriter(tmp["clinic_visits"], _VISITS_WRITE_SCHEMA, **options) as vis_out,
        ):

            def submit(blocks: range) -> list[Future[tuple[_Columns, _Columns]]]:
                return [pool.submit(_block, seed, b, block_rows[b]) for b in blocks]

            pending = submit(chunks[0]) if chunks else []
            done = 0
            next_visit_id = 1
            for i in range(len(chunks)):
                parts = [f.result() for f in pending]
                pending = submit(chunks[i + 1]) if i + 1 < len(chunks) else []
                res_batches, vis_batches = [], []
                for res, vis in parts:
                    n_visits = vis["person_id"].size
                    vis["visit_id"] = np.arange(
                        next_visit_id, next_visit_id + n_visits, dtype=np.int64
                    )
                    next_visit_id += n_visits
                    res_batches.append(_batch(res, _RESIDENTS_WRITE_SCHEMA))
                    vis_batches.append(_batch(vis, _VISITS_WRITE_SCHEMA))
                res_table = pa.Table.from_batches(res_batches, schema=_RESIDENTS_WRITE_SCHEMA)
                vis_table = pa.Table.from_batches(vis_batches, schema=_VISITS_WRITE_SCHEMA)
                res_out.write_table(res_table, row_group_size=max(1, res_table.num_rows))
                vis_out.write_table(vis_table, row_group_size=max(1, vis_table.num_rows))
                done += res_table.num_rows
                if progress is not None:
                    progress(done, residents)
        for name, path in final.items():
            os.replace(tmp[name], path)
    except BaseException:
        for path in tmp.values():
            path.unlink(missing_ok=True)
        raise
    return final
