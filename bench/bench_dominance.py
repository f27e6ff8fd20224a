"""Benchmark: the cost of the per-person contributions the dominance rules need.

    python bench/bench_dominance.py                     # 1 M residents (demo data, seed 7)
    python bench/bench_dominance.py --residents 200000 --runs 5

Three ways to answer the same jobs on the demo data, with the engine the server uses:
  base    the job's query without dominance rules (what a job cost before);
  same    the planner's query with the rules on: contributions in the same query (kept);
  second  the job's query plus a second query over the same filtered rows for the
          contributions (the alternative, not kept).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from fractions import Fraction
from pathlib import Path

from sandbox._model import AggFunc, Aggregate, Filter, FilterOp, JobSpec
from sandbox.engine import Engine, Plan, plan
from sandbox.policy import DisclosureSettings, DominanceRule, Policy, load_policies
from sandbox.state import DatasetRecord

REPO = Path(__file__).resolve().parents[1]
THREADS = 2


def record(engine: Engine, path: Path, policy: Policy) -> DatasetRecord:
    measures = tuple(c.name for c in policy.columns if c.bounds is not None)
    facts = engine.inspect_source(path, "parquet", policy.person_key, measures)
    registered = facts.record(policy.dataset, path, "parquet", policy.version_label)
    # Always clamp, as for a file whose values exceed the bounds.
    return dataclasses.replace(registered, measure_ranges={})


def second_query(spec: JobSpec, rec: DatasetRecord, policy: Policy) -> Plan:
    """The contributions in a query of their own over the same filtered rows.

    It is the planner's query for the job's sums alone (with a filter on a dataset with several
    rows per person it also counts the query set's persons again: a slight overestimate).
    """
    measures = dict.fromkeys(a.column for a in spec.aggregates if a.column)
    sums = tuple(Aggregate(AggFunc.SUM, m) for m in measures)
    return plan(dataclasses.replace(spec, aggregates=sums), rec, policy)


def _off(policy: Policy) -> DisclosureSettings:
    return dataclasses.replace(policy.disclosure, dominance=None, p_percent=None)


def timed(engine: Engine, plans: tuple[Plan, ...], runs: int) -> list[float]:
    """Median time of each plan; the plans take turns, so a busy machine slows all alike."""
    times: list[list[float]] = [[] for _ in plans]
    for _ in range(runs):
        for i, job in enumerate(plans):
            start = time.perf_counter()
            engine.run("bench", job)
            times[i].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--residents", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--data", type=Path, default=REPO / "bench" / "out" / "data")
    args = parser.parse_args()
    data = args.data / str(args.residents)
    if not (data / "residents.parquet").exists():
        from sandbox.demo import generate_demo_data

        generate_demo_data(data, args.residents, seed=7)
    policies = load_policies(REPO / "policies")
    engine = Engine(threads=THREADS)
    rules = {"dominance": DominanceRule(2, Fraction(85, 100)), "p_percent": Fraction(1, 10)}
    jobs: list[tuple[str, str, JobSpec]] = []

    def job(label: str, dataset: str, group_by: tuple[str, ...], *aggs: Aggregate, **kw: object):
        spec = JobSpec(dataset, "p", "public-health-research", aggs, group_by, **kw)  # type: ignore[arg-type]
        jobs.append((label, dataset, spec))

    income = (Aggregate(AggFunc.COUNT), Aggregate(AggFunc.SUM, "monthly_income"))
    income += (Aggregate(AggFunc.MEAN, "monthly_income"), Aggregate(AggFunc.SUM, "clinic_visits"))
    adults = (Filter("age", FilterOp.GE, (18,)),)
    job("residents by district", "residents", ("district",), *income)
    job("residents by district, age, sex", "residents", ("district", "age", "sex"), *income)
    job(
        "residents by sub_district, adults", "residents", ("sub_district",), *income, filters=adults
    )
    cost = (
        Aggregate(AggFunc.COUNT),
        Aggregate(AggFunc.SUM, "cost"),
        Aggregate(AggFunc.MEAN, "cost"),
    )
    h2 = (Filter("visit_date", FilterOp.GE, ("2025-07-01",)),)
    job("visits by department", "clinic_visits", ("department",), *cost)
    job("visits by district, department", "clinic_visits", ("district", "department"), *cost)
    job("visits by department, 2nd half", "clinic_visits", ("department",), *cost, filters=h2)

    print(
        f"{args.residents:,} residents, engine threads {THREADS}, median of {args.runs} runs (s)\n"
    )
    print(
        f"{'job':38s} {'base':>7s} {'same':>7s} {'second':>7s} {'same/base':>10s} {'2nd/base':>9s}"
    )
    records: dict[str, DatasetRecord] = {}
    for label, dataset, spec in jobs:
        policy = policies[dataset]
        if dataset not in records:
            records[dataset] = record(engine, data / f"{dataset}.parquet", policy)
        rec = records[dataset]
        on = dataclasses.replace(policy, disclosure=dataclasses.replace(policy.disclosure, **rules))
        off = dataclasses.replace(policy, disclosure=_off(policy))
        base, same = plan(spec, rec, off), plan(spec, rec, on)
        extra = second_query(spec, rec, on)
        t_base, t_same, t_extra = timed(engine, (base, same, extra), args.runs)
        t_second = t_base + t_extra
        print(
            f"{label:38s} {t_base:7.3f} {t_same:7.3f} {t_second:7.3f} "
            f"{t_same / t_base:10.2f} {t_second / t_base:9.2f}"
        )
    engine.close()


if __name__ == "__main__":
    main()
