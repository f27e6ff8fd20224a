"""Benchmark: Paillier encryption of federated partials, plain phe vs fixed-base obfuscators.

    python bench/bench_paillier.py                        # 2048-bit keys, 10 nodes x 1,000 cells
    python bench/bench_paillier.py --runs 7 --workers 1 2 --nodes 10 --cells 1000

Part 1: encryptions per second of one value, plain ``phe`` (``PaillierPublicKey.encrypt``)
vs ``FastEncryptor`` (median of ``--runs`` runs). Part 2: an in-process federation: job key
generation, then on each node encode + pack + encrypt its per-cell (count, sum, distinct
count), then combine, decrypt and decode on the coordinator; checked against the plain sums.
``--workers 2`` runs the nodes in 2 processes (nodes are separate machines in production).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from decimal import Decimal
from fractions import Fraction

import phe

from sandbox.federation import (
    EncryptedPartial,
    FastEncryptor,
    FieldSpec,
    JobEncoding,
    JobPublicKey,
    combine,
    decrypt_combined,
    encrypt_partials,
    generate_job_keys,
)
from sandbox.federation._encoding import layout

ROWS = 10**6  # rows of one node in one cell, at most
INCOME = (-(10**5), 10**6)  # per row, currency units; sums kept in cents (2 decimals)
Cells = list[list[int | Decimal]]


def encoding(cells: int, nodes: int) -> JobEncoding:
    return JobEncoding(
        "bench-job",
        (
            FieldSpec("count", 0, ROWS),
            FieldSpec("sum_income", INCOME[0] * ROWS * 100, INCOME[1] * ROWS * 100, decimals=2),
            FieldSpec("persons", 0, ROWS),
        ),
        cells=cells,
        max_parties=nodes,
    )


def node_data(cells: int, seed: int) -> Cells:
    rng = random.Random(seed)
    out: Cells = []
    for _ in range(cells):
        n = rng.randint(0, 5000)
        cents = sum(rng.randint(INCOME[0] * 100, INCOME[1] * 100) for _ in range(3)) * n // 3
        out.append([n, Decimal(cents).scaleb(-2), rng.randint(0, n)])
    return out


def median_rate(fn: Callable[[], object], count: int, runs: int) -> float:
    rates = []
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(count):
            fn()
        rates.append(count / (time.perf_counter() - start))
    return statistics.median(rates)


def encrypt_node(
    args: tuple[Cells, JobEncoding, JobPublicKey, str, int],
) -> tuple[EncryptedPartial, float]:
    """One node's work (fast setup included) and its wall time."""
    start = time.perf_counter()
    values, enc, pub, party, exponent_bits = args
    expected = len(layout(enc, pub.capacity))
    encryptor = FastEncryptor(pub, exponent_bits=exponent_bits or None, expected=expected)
    partial = encrypt_partials(values, enc, pub, party=party, encryptor=encryptor)
    return partial, time.perf_counter() - start


def federation_run(
    data: list[Cells], nodes: int, cells: int, exponent_bits: int, pool: ProcessPoolExecutor | None
) -> dict[str, float]:
    t0 = time.perf_counter()
    pub, sec = generate_job_keys()
    enc = encoding(cells, nodes)
    t1 = time.perf_counter()
    jobs = [(data[i], enc, pub, f"agency-{i}", exponent_bits) for i in range(nodes)]
    done = list(pool.map(encrypt_node, jobs) if pool else map(encrypt_node, jobs))
    partials = [partial for partial, _ in done]
    t2 = time.perf_counter()
    combined = combine(partials, pub, enc)
    t3 = time.perf_counter()
    totals = decrypt_combined(combined, sec, enc)
    t4 = time.perf_counter()
    for c in (0, cells // 2, cells - 1):  # spot check against the plain sums (untimed)
        want = tuple(sum(Fraction(d[c][j]) for d in data[:nodes]) for j in range(3))
        assert totals.cells[c] == want, c
    return {
        "keygen": t1 - t0,
        "nodes": t2 - t1,
        "combine": t3 - t2,
        "decrypt": t4 - t3,
        "total": t4 - t0,
        "per_node": statistics.median(seconds for _, seconds in done),
        "ciphertexts": len(partials[0].ciphertexts),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", type=int, default=2048, help="Paillier modulus bits")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--phe-count", type=int, default=40, help="plain phe encryptions per run")
    parser.add_argument("--fast-count", type=int, default=400, help="fast encryptions per run")
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--cells", type=int, default=1000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--exponent-bits", type=int, default=0, help="obfuscator exponent (0: bits/2)"
    )
    args = parser.parse_args()

    pk, _ = phe.generate_paillier_keypair(n_length=args.bits)
    pub = JobPublicKey(pk.n)
    value = 123_456_789
    plain = median_rate(lambda: pk.encrypt(value), args.phe_count, args.runs)
    fast_enc = FastEncryptor(pub, exponent_bits=args.exponent_bits or None, expected=64)
    fast = median_rate(lambda: fast_enc.encrypt(value), args.fast_count, args.runs)
    setups = []
    for _ in range(args.runs):
        s = time.perf_counter()
        FastEncryptor(pub, exponent_bits=args.exponent_bits or None, expected=64)
        setups.append(time.perf_counter() - s)
    print(f"{os.cpu_count()} cores; {args.bits}-bit keys; median of {args.runs} runs")
    print(
        f"exponent {fast_enc.exponent_bits} bits, window {fast_enc.window}: "
        f"plain phe {plain:,.0f} enc/s, fast {fast:,.0f} enc/s ({fast / plain:.1f}x); "
        f"fast setup per node and key {statistics.median(setups) * 1000:.0f} ms"
    )

    data = [node_data(args.cells, seed) for seed in range(args.nodes)]
    per_cell = args.cells / plain  # plain phe: one ciphertext per cell
    per_value = 3 * args.cells / plain  # plain phe: one ciphertext per value
    print(
        f"\n{args.nodes} nodes x {args.cells:,} cells (count, sum, distinct count); "
        f"plain phe per node (estimated from its rate): {per_cell:.1f} s at one ciphertext "
        f"per cell, {per_value:.1f} s at one per value"
    )
    for workers in args.workers:
        pool = ProcessPoolExecutor(workers) if workers > 1 else None
        try:
            if pool is not None:
                list(pool.map(abs, range(workers * 4)))  # warm the worker processes
            results = [
                federation_run(data, args.nodes, args.cells, args.exponent_bits, pool)
                for _ in range(args.runs)
            ]
        finally:
            if pool is not None:
                pool.shutdown()
        med = {k: statistics.median(r[k] for r in results) for k in results[0]}
        node = med["per_node"]
        print(
            f"workers {workers}: total {med['total']:.2f} s = keygen {med['keygen']:.2f} + "
            f"nodes {med['nodes']:.2f} + combine {med['combine']:.3f} + decrypt "
            f"{med['decrypt']:.2f}; {med['ciphertexts']:.0f} ciphertexts per node"
        )
        print(
            f"  per node {node:.3f} s vs plain phe per node {per_cell:.1f} s "
            f"({per_cell / node:.0f}x); whole federation vs plain phe per node: "
            f"{med['total'] / per_cell:.3f}"
        )


if __name__ == "__main__":
    main()
