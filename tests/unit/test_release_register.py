"""The release register's per-dataset views on a real store, with group commit: a view that
took in rows of a transaction whose COMMIT then failed is forgotten and rebuilt from what
was committed."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from sandbox.state import Database, ReleaseRegister


class Rows:
    """A view that keeps what it is fed."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, int, str]] = []

    def add_row(self, region: str, persons: int, data_version: str) -> None:
        self.rows.append((region, persons, data_version))


def record(register: ReleaseRegister[Rows], conn: sqlite3.Connection, job: str) -> None:
    register.record(
        conn,
        dataset="d",
        population="p",
        project="x",
        job_id=job,
        data_version="v1",
        cells=[(f'{{"job":"{job}"}}', 12)],
    )


def regions(view: Rows) -> list[str]:
    return [r for r, _, _ in view.rows]


def test_views_top_up_and_a_forgotten_view_is_rebuilt(tmp_path: Path) -> None:
    db = Database(tmp_path / "state.sqlite3")
    register = ReleaseRegister(Rows)
    with db.write() as conn:
        record(register, conn, "a")
    with db.write() as conn:
        first = register.cells(conn, "d")
        assert regions(first) == ['{"job":"a"}']
        record(register, conn, "b")
    with db.write() as conn:
        assert register.cells(conn, "d") is first  # the same view, topped up
        assert regions(first) == ['{"job":"a"}', '{"job":"b"}']
    register.forget()
    with db.write() as conn:
        again = register.cells(conn, "d")
    assert again is not first and again.rows == first.rows


def test_rows_seen_inside_a_group_whose_commit_failed_are_forgotten(tmp_path: Path) -> None:
    """Body 1 records a release; body 2, in the same transaction, reads it into the view;
    a deferred foreign key then fails the COMMIT. With ``forget`` as the bodies'
    ``on_rollback`` the view is rebuilt without the row that never committed."""
    db = Database(tmp_path / "state.sqlite3")
    with db.write() as conn:
        conn.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        conn.execute(
            "CREATE TABLE child (pid REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)"
        )
        ReleaseRegister(Rows).record(
            conn,
            dataset="d",
            population="p",
            project="x",
            job_id="committed",
            data_version="v1",
            cells=[("{}", 20)],
        )
    register = ReleaseRegister(Rows)
    entered, release = threading.Event(), threading.Event()
    seen: list[list[str]] = []

    def first(conn: sqlite3.Connection) -> None:
        entered.set()
        assert release.wait(10)
        record(register, conn, "doomed")
        conn.execute("INSERT INTO child (pid) VALUES (404)")  # fails only at COMMIT

    def second(conn: sqlite3.Connection) -> None:
        seen.append(regions(register.cells(conn, "d")))

    errors: list[BaseException] = []

    def call(body: Callable[[sqlite3.Connection], None]) -> None:
        try:
            db.write_together(body, register.forget)
        except sqlite3.IntegrityError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(first,))]
    threads[0].start()
    assert entered.wait(10)
    threads.append(threading.Thread(target=call, args=(second,)))
    threads[1].start()
    while not db._waiting:
        threading.Event().wait(0.001)
    release.set()
    for t in threads:
        t.join(10)
    assert seen == [["{}", '{"job":"doomed"}']]  # read inside the group, uncommitted
    assert len(errors) == 2
    with db.write() as conn:
        assert regions(register.cells(conn, "d")) == ["{}"]
    with pytest.raises(sqlite3.IntegrityError):
        db.write_together(lambda conn: conn.execute("INSERT INTO child (pid) VALUES (1)"))


def test_the_committed_view_holds_no_uncommitted_row_and_since_gives_the_rest(
    tmp_path: Path,
) -> None:
    """``committed`` reads outside any transaction (what another writer has not committed
    is not in it); ``since`` inside the write transaction gives every row after the view's
    last one: those committed meanwhile, and this transaction's own."""
    db = Database(tmp_path / "state.sqlite3")
    other = Database(tmp_path / "state.sqlite3")  # another process's store handle
    register = ReleaseRegister(Rows)
    with db.write() as conn:
        record(register, conn, "a")
    done = threading.Event()
    holding = threading.Event()

    def writer() -> None:
        with other.write() as conn:
            record(register, conn, "b")
            holding.set()
            assert done.wait(10)

    t = threading.Thread(target=writer)
    t.start()
    assert holding.wait(10)
    with register.committed(db.conn, "d") as (view, last):
        assert regions(view) == ['{"job":"a"}']  # b is not committed yet
    done.set()
    t.join(10)
    with db.write() as conn:
        record(register, conn, "c")
        assert [r for r, _, _ in register.since(conn, "d", last)] == [
            '{"job":"b"}',
            '{"job":"c"}',
        ]
    with (
        db.write() as conn,
        pytest.raises(RuntimeError, match="outside a transaction"),
        register.committed(conn, "d"),
    ):
        pass
    with register.committed(db.conn, "d") as (view, last_now):
        assert regions(view) == ['{"job":"a"}', '{"job":"b"}', '{"job":"c"}']
        assert last_now > last
