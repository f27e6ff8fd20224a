"""A reconstruction attack (Dinur-Nissim) against DP mode, through a real server.

n = 200 persons each hold a secret bit. The attacker asks 8n counts of "secret = 1" over random
subsets of persons (selected through a per-person dimension, the tracker-friendly shape) and
solves the linear system by least squares. On exact answers this recovers every bit; under DP
at total ε it may recover at most e^ε / (1 + e^ε) of the bits (plus slack for sampling), and
the budget ledger stops the attack once ε is spent.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sandbox import BudgetExhausted, Query
from tests.conftest import World

N = 200
QUERIES = 8 * N
TOTAL_EPSILON = Fraction(1)

POLICY = f"""\
dataset: recon
version: 1
title: Reconstruction target
steward: test-office
source: recon.parquet
person_key: pid
population: recon-persons
columns:
  pid: {{role: identifier}}
  household: {{role: dimension}}
  secret: {{role: dimension, values: [0, 1]}}
purposes:
  research: {{description: Research, columns: [household, secret]}}
disclosure:
  min_persons_per_cell: 1
  rounding_base: 1
  noise: {{mechanism: discrete_laplace, epsilon_per_job: "{float(TOTAL_EPSILON / QUERIES)}"}}
  budget: {{epsilon_per_project: {TOTAL_EPSILON}}}
limits: {{max_groups: 10, max_filters: 4, max_group_by: 2}}
"""


def _population(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(20261122)
    households = rng.permutation(np.arange(1000, 1000 + N))
    secret = rng.integers(0, 2, N)
    path = tmp_path / "recon.parquet"
    frame = pd.DataFrame({"pid": np.arange(N), "household": households, "secret": secret})
    frame.to_parquet(path, index=False)
    return path, households, secret


def _subsets() -> np.ndarray:
    return np.random.default_rng(7).integers(0, 2, (QUERIES, N))


def _least_squares_bits(subsets: np.ndarray, answers: np.ndarray) -> np.ndarray:
    estimate, *_ = np.linalg.lstsq(subsets.astype(float), answers.astype(float), rcond=None)
    return (estimate > 0.5).astype(int)


def test_the_attack_recovers_every_bit_from_exact_answers() -> None:
    # The attack itself is sound: without noise it reconstructs the whole secret column.
    secret = np.random.default_rng(1).integers(0, 2, N)
    subsets = _subsets()
    assert (_least_squares_bits(subsets, subsets @ secret) == secret).all()


def test_dp_mode_defeats_reconstruction_and_the_budget_stops_it(
    world_factory: Callable[..., World], tmp_path: Path
) -> None:
    path, households, secret = _population(tmp_path)
    world = world_factory({"recon": POLICY}, {"recon.parquet": path}, rpc_threads=8, workers=2)
    world.register("recon")
    world.project("attack", (("recon", "research"),))
    subsets = _subsets()
    clients = threading.local()

    def ask(i: int) -> float:
        if not hasattr(clients, "client"):
            clients.client = world.client("ana", timeout=60)
        members = sorted(int(h) for h in households[subsets[i] == 1])
        query = Query("recon").where("household", "in", members).where("secret", "=", 1).count()
        result = clients.client.run(query, project="attack", purpose="research")
        value = result.to_dataframe()["count"].iloc[0]
        return 0.0 if pd.isna(value) else float(value)  # a suppressed noisy count: near 0

    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = np.array(list(pool.map(ask, range(QUERIES))))

    recovered = (_least_squares_bits(subsets, answers) == secret).mean()
    eps = float(TOTAL_EPSILON)
    bound = math.exp(eps) / (1 + math.exp(eps)) + 0.05
    assert recovered <= bound, f"recovered {recovered:.3f} of the bits, bound {bound:.3f}"

    # The whole budget is spent, exactly; one more query is refused before reading anything.
    spent = world.db.conn.execute(
        "SELECT epsilon FROM privacy_ledger WHERE state = 'committed'"
    ).fetchall()
    assert sum((Fraction(e) for (e,) in spent), Fraction(0)) == TOTAL_EPSILON
    one_more = Query("recon").where("household", "in", [int(households[0])]).count()
    with pytest.raises(BudgetExhausted):
        world.client("ana").run(one_more, project="attack", purpose="research")
