"""Benchmark: audit log appends, offline verification of a 1 M-entry export, proofs.

    python bench/bench_audit.py                       # 1 M entries (about a minute to build)
    python bench/bench_audit.py --entries 100000 --runs 3

Targets: >= 20 k appends/s; verify a 1 M-entry export offline in <= 10 s; <= 1 ms per proof.

* appends/s, batched: ``AuditLog.append`` of a realistic job entry, ``--batch`` entries per
  write transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``, WAL, synchronous=NORMAL), as a job
  pipeline writes several entries with its state changes. Median of ``--runs`` runs.
* appends/s, one per transaction: the same, each entry in its own write transaction (the
  commit dominates).
* export: ``sandbox audit export --format jsonl`` of the whole log, in-process.
* verify: ``sandbox audit verify --log --checkpoint`` of that export in-process (reading the
  file, every leaf hash, the Merkle root, the checkpoint signature), and as a fresh process
  (the CLI, interpreter start-up included).
* proofs: median time of an inclusion proof of a random entry against the whole log (and a
  consistency proof from a random size), read from the state store; and of verifying one.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sandbox.audit import AuditLog, load_public_key, verify_consistency, verify_inclusion
from sandbox.audit._export import export
from sandbox.audit._verify_offline import verify_export
from sandbox.state import Database


def entry(i: int) -> tuple[str, dict[str, object]]:
    """The shape of a ``job.accepted`` entry the pipeline writes."""
    return "job.accepted", {
        "actor": "ana",
        "role": "researcher",
        "project": "health-equity",
        "dataset": "residents",
        "purpose": "public-health-research",
        "decision": "allow",
        "rule_ids": [],
        "job_id": f"job-{i:012d}",
        "spec_digest": f"{i:064x}",
        "policy_version": "residents@3",
        "reserved": {"jobs": 1, "rows": 1_000_000},
    }


def append_rate(log: AuditLog, db: Database, start: int, n: int, batch: int) -> float:
    t0 = time.perf_counter()
    i = start
    while i < start + n:
        with db.write() as conn:
            for j in range(i, min(i + batch, start + n)):
                event, fields = entry(j)
                log.append(conn, event, **fields)
        i += batch
    return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000, help="log size")
    parser.add_argument("--batch", type=int, default=1000, help="entries per transaction")
    parser.add_argument("--single", type=int, default=20_000, help="one-per-transaction appends")
    parser.add_argument("--runs", type=int, default=5, help="runs per append figure (median)")
    parser.add_argument("--proofs", type=int, default=2000, help="proofs timed")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary dir")
    parser.add_argument("--no-cli", action="store_true", help="skip the CLI verify run")
    args = parser.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-audit-"))
    work.mkdir(parents=True, exist_ok=True)
    db = Database(work / "state" / "state.sqlite3")
    log = AuditLog(db)
    print(f"{os.cpu_count()} cores; Python {sys.version.split()[0]}; state store in {work}")

    # Appends: the whole log is built in batched runs; the median run is the figure.
    per_run = args.entries // args.runs
    rates = []
    for r in range(args.runs):
        n = per_run if r < args.runs - 1 else args.entries - per_run * (args.runs - 1)
        rates.append(append_rate(log, db, log.size(), n, args.batch))
    print(
        f"append, {args.batch}/transaction   {statistics.median(rates):>10,.0f} entries/s "
        f"(runs: {', '.join(f'{x:,.0f}' for x in rates)})"
    )
    side = Database(work / "single" / "state.sqlite3")
    single = [
        append_rate(AuditLog(side), side, 0, args.single // args.runs, 1) for _ in range(args.runs)
    ]
    print(
        f"append, 1/transaction      {statistics.median(single):>10,.0f} entries/s "
        f"(runs: {', '.join(f'{x:,.0f}' for x in single)})"
    )

    size = log.size()
    t0 = time.perf_counter()
    checkpoint = log.checkpoint()
    print(f"checkpoint (sign + store)  {1000 * (time.perf_counter() - t0):>10.2f} ms")
    export_path = work / "audit.jsonl"
    checkpoint_path = work / "checkpoint.json"
    public_path = work / "public.pem"
    checkpoint_path.write_text(checkpoint.to_json() + "\n")
    public_path.write_text(log.public_key_pem())
    t0 = time.perf_counter()
    with export_path.open("w", encoding="utf-8", newline="\n") as out:
        export(log.scan(size), "jsonl", out)
    took = time.perf_counter() - t0
    mib = export_path.stat().st_size / (1 << 20)
    print(f"export {size:,} entries     {took:>10.2f} s ({mib:,.0f} MiB)")

    key = load_public_key(log.public_key_pem())
    t0 = time.perf_counter()
    with export_path.open("rb") as lines:
        report = verify_export(lines, [checkpoint], key)
    took = time.perf_counter() - t0
    assert report.ok and report.verified_size == size, report
    print(f"verify {size:,} offline     {took:>10.2f} s (in-process)")
    if not args.no_cli:
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "sandbox", "audit", "verify", "--log", str(export_path),
             "--checkpoint", str(checkpoint_path), "--public-key", str(public_path)],
            check=True,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        took = time.perf_counter() - t0
        print(f"verify {size:,} offline     {took:>10.2f} s (CLI process)")

    rng = random.Random(7)
    size, root = log.head()
    seqs = [rng.randrange(size) for _ in range(args.proofs)]
    times, checks = [], []
    for seq in seqs:
        t0 = time.perf_counter()
        proof = log.inclusion_proof(seq, size)
        times.append(time.perf_counter() - t0)
        leaf = log.leaf(seq)
        t0 = time.perf_counter()
        ok = verify_inclusion(seq, size, leaf, proof, root)
        checks.append(time.perf_counter() - t0)
        assert ok
    print(
        f"inclusion proof at {size:,}  {1000 * statistics.median(times):>10.3f} ms median "
        f"(p99 {1000 * sorted(times)[int(0.99 * len(times))]:.3f} ms; "
        f"verify {1000 * statistics.median(checks):.3f} ms)"
    )
    times = []
    for seq in seqs[: args.proofs // 4]:
        first = seq + 1
        first_root = log.root_at(first)
        t0 = time.perf_counter()
        proof = log.consistency_proof(first, size)
        times.append(time.perf_counter() - t0)
        assert verify_consistency(first, size, first_root, root, proof)
    print(f"consistency proof          {1000 * statistics.median(times):>10.3f} ms median")
    times = []
    for seq in seqs[:200]:
        t0 = time.perf_counter()
        log.receipt(seq)
        times.append(time.perf_counter() - t0)
    print(f"receipt (stored checkpoint){1000 * statistics.median(times):>10.3f} ms median")


if __name__ == "__main__":
    main()
