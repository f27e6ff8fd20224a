"""Job records: what insert, start and finish return is exactly what a later read gets.

The pipeline hands these returned records to long-polling callers instead of reading the
store again, so any drift between the two would show a caller a state that was never stored.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

from sandbox._model import AggFunc, Aggregate, Filter, FilterOp, JobSpec, JobState
from sandbox.state import Database, Jobs

SPEC = JobSpec(
    "residents",
    "p1",
    "research",
    (Aggregate(AggFunc.COUNT), Aggregate(AggFunc.QUANTILE, "income", "q", Fraction(9, 10))),
    ("district",),
    (Filter("age", FilterOp.BETWEEN, (18, 65)),),
)


def test_each_transition_returns_the_record_as_stored(tmp_path: Path) -> None:
    db = Database(tmp_path / "state.sqlite3")
    jobs = Jobs(db)
    with db.write() as conn:
        queued = jobs.insert(
            conn,
            job_id="j1",
            request_id="r1",
            principal="ana",
            spec=SPEC,
            state=JobState.QUEUED,
            policy_version="v1@abc",
        )
    assert queued == jobs.get("j1")
    with db.write() as conn:
        running = jobs.start(conn, queued)
    assert running is not None and running.state == JobState.RUNNING
    assert running == jobs.get("j1")
    with db.write() as conn:
        assert jobs.start(conn, queued) is None  # no longer queued
        final = jobs.finish(
            conn,
            running,
            JobState.DENIED,
            reason="DISCLOSURE_CONTROL",
            message="too few persons",
            rule_ids=("disclosure.min_persons",),
            rows_scanned=10,
        )
    assert final == jobs.get("j1")
    assert final.finished_at is not None and final.started_at is not None
    db.close()


def test_a_record_inserted_terminal_reads_back_equal(tmp_path: Path) -> None:
    db = Database(tmp_path / "state.sqlite3")
    jobs = Jobs(db)
    with db.write() as conn:
        denied = jobs.insert(
            conn,
            job_id="j2",
            request_id="r2",
            principal="ana",
            spec=SPEC,
            state=JobState.DENIED,
            policy_version="",
            reason="POLICY_DENIED",
            message="purpose not granted",
            rule_ids=("purpose.granted",),
        )
    assert denied == jobs.get("j2")
    assert denied.finished_at == denied.created_at
    db.close()
