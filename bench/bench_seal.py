"""Benchmark: sealed results (seal, unseal) and data at rest (seal, open) throughput.

    python bench/bench_seal.py                         # 1 KiB, 64 KiB, 1 MiB; median of 7 runs
    python bench/bench_seal.py --runs 5 --sizes 1024 1048576 --batch-seconds 0.1

``seal`` includes validating the researcher's public key PEM and one RSA-OAEP wrap (public
operation, pycryptodome); AES-256-GCM runs on OpenSSL (``cryptography``); ``unseal`` one
RSA-OAEP unwrap (private operation, the dominant cost for small results). Each run times a
batch sized from a warm-up call to last about ``--batch-seconds``; the figure is the median
over runs of operations per second. Single-threaded.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from functools import partial

import Crypto
import cryptography

from sandbox.crypto import (
    DEFAULT_RSA_BITS,
    KeyRing,
    export_public_key,
    generate_key_pair,
    seal,
    unseal,
)

JOB = "job-bench"
SPEC = "sha256:" + "00" * 32
CONTEXT = b"result:job-bench"


def ops_per_second(fn: Callable[[], object], runs: int, batch_seconds: float) -> float:
    """Median over ``runs`` batches of ``fn`` calls per second."""
    start = time.perf_counter()
    fn()  # warm-up, and the batch size
    single = max(time.perf_counter() - start, 1e-6)
    batch = max(1, round(batch_seconds / single))
    rates = []
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(batch):
            fn()
        rates.append(batch / (time.perf_counter() - start))
    return statistics.median(rates)


def label(size: int) -> str:
    return f"{size >> 20} MiB" if size >= 1 << 20 else f"{size >> 10} KiB"


def row(name: str, size: int, rate: float) -> str:
    mib_s = rate * size / (1 << 20)
    return f"{name:<16} {label(size):>8} {rate:>10.1f} {mib_s:>9.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1 << 10, 64 << 10, 1 << 20])
    parser.add_argument("--runs", type=int, default=7, help="batches per figure (median)")
    parser.add_argument("--batch-seconds", type=float, default=0.2)
    parser.add_argument("--bits", type=int, default=DEFAULT_RSA_BITS)
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")

    key = generate_key_pair(args.bits)
    public_pem = export_public_key(key)
    ring = KeyRing([os.urandom(32)], source="bench")
    print(
        f"{os.cpu_count()} cores; pycryptodome {Crypto.__version__} (RSA-{args.bits}), "
        f"cryptography {cryptography.__version__} (AES-GCM); "
        f"median of {args.runs} runs of ~{args.batch_seconds}s"
    )
    print(f"{'operation':<16} {'payload':>8} {'ops/s':>10} {'MiB/s':>9}")
    for size in args.sizes:
        plaintext = os.urandom(size)
        blob = seal(plaintext, public_pem, job_id=JOB, spec_digest=SPEC)
        at_rest = ring.seal_at_rest(plaintext, context=CONTEXT)
        cases: list[tuple[str, Callable[[], object]]] = [
            ("seal", partial(seal, plaintext, public_pem, job_id=JOB, spec_digest=SPEC)),
            ("unseal", partial(unseal, blob, key, job_id=JOB, spec_digest=SPEC)),
            ("at-rest seal", partial(ring.seal_at_rest, plaintext, context=CONTEXT)),
            ("at-rest open", partial(ring.open_at_rest, at_rest, context=CONTEXT)),
        ]
        for name, fn in cases:
            rate = ops_per_second(fn, args.runs, args.batch_seconds)
            print(row(name, size, rate), flush=True)


if __name__ == "__main__":
    main()
