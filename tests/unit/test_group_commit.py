"""Group commit (``Database.write_together``) on a real store: bodies that wait while a
transaction runs share the next one, each in its own savepoint, and every caller returns
only after the COMMIT that covers its body (or with the error that rolled it back)."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from sandbox.state import Database


def store(tmp_path: Path) -> Database:
    db = Database(tmp_path / "state.sqlite3")
    with db.write() as conn:
        conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER NOT NULL)")
        conn.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        conn.execute(
            "CREATE TABLE child (pid INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)"
        )
    return db


def committed(db: Database) -> dict[str, int]:
    """What another connection sees: only committed rows."""
    other = sqlite3.connect(db.path)
    try:
        return dict(other.execute("SELECT k, v FROM t").fetchall())
    finally:
        other.close()


def insert(key: str, value: int) -> Callable[[sqlite3.Connection], int]:
    def body(conn: sqlite3.Connection) -> int:
        conn.execute("INSERT INTO t (k, v) VALUES (?, ?)", (key, value))
        return value

    return body


def run_while_held(
    db: Database,
    bodies: list[Callable[[sqlite3.Connection], object]],
    undone: list[str] | None = None,
) -> tuple[list[object], list[BaseException | None]]:
    """Start a transaction that blocks until every body below waits, then release it: the
    waiting bodies then run in that transaction, after it. Results and errors per body, in
    order. With ``undone``, body i's ``on_rollback`` appends "body<i>" to it."""
    entered, release = threading.Event(), threading.Event()

    def blocker(conn: sqlite3.Connection) -> None:
        entered.set()
        assert release.wait(10)

    def lead() -> None:
        with contextlib.suppress(sqlite3.Error):  # it shares the group's fate
            db.write_together(blocker)

    first = threading.Thread(target=lead)
    first.start()
    assert entered.wait(10)
    results: list[object] = [None] * len(bodies)
    errors: list[BaseException | None] = [None] * len(bodies)

    def call(i: int) -> None:
        on_rollback = None if undone is None else (lambda: undone.append(f"body{i}"))
        try:
            results[i] = db.write_together(bodies[i], on_rollback)
        except BaseException as exc:
            errors[i] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    while len(db._waiting) < len(bodies):  # every body queued behind the blocker
        threading.Event().wait(0.001)
    release.set()
    for t in [first, *threads]:
        t.join(10)
        assert not t.is_alive()
    return results, errors


def test_each_caller_gets_its_own_result_after_commit(tmp_path: Path) -> None:
    db = store(tmp_path)
    results, errors = run_while_held(db, [insert(f"k{i}", i) for i in range(12)])
    assert results == list(range(12)) and errors == [None] * 12
    assert committed(db) == {f"k{i}": i for i in range(12)}


def test_waiting_bodies_share_one_transaction_run_by_one_leader(tmp_path: Path) -> None:
    db = store(tmp_path)
    seen: list[tuple[int, int]] = []

    def body(conn: sqlite3.Connection) -> None:
        # A body sees the writes of the bodies before it: one transaction.
        (count,) = conn.execute("SELECT count(*) FROM t").fetchone()
        seen.append((threading.get_ident(), count))
        conn.execute("INSERT INTO t (k, v) VALUES (?, 0)", (f"k{count}",))

    run_while_held(db, [body] * 6)
    assert sorted(c for _, c in seen) == list(range(6))
    assert len({thread for thread, _ in seen}) == 1  # all run by the thread that led


def test_a_failing_body_rolls_back_alone(tmp_path: Path) -> None:
    db = store(tmp_path)

    def half_then_fail(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t (k, v) VALUES ('bad', 1)")
        raise ValueError("refused")

    bodies = [insert("a", 1), half_then_fail, insert("b", 2), insert("a", 3)]
    results, errors = run_while_held(db, bodies)
    assert isinstance(errors[1], ValueError) and str(errors[1]) == "refused"
    assert isinstance(errors[3], sqlite3.IntegrityError)  # "a" exists: only this body fails
    assert results[0] == 1 and results[2] == 2 and errors[0] is None and errors[2] is None
    assert committed(db) == {"a": 1, "b": 2}


def test_a_failed_commit_fails_every_body_and_undoes_their_memory(tmp_path: Path) -> None:
    """A deferred foreign key fails only at COMMIT: then no body's writes stay, every caller
    gets the error, and each body that had returned has its ``on_rollback`` called."""
    db = store(tmp_path)
    undone: list[str] = []

    def orphan(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO child (pid) VALUES (999)")

    _, errors = run_while_held(db, [insert("x", 1), orphan, insert("y", 2)], undone)
    assert all(isinstance(e, sqlite3.IntegrityError) for e in errors)
    assert sorted(undone) == ["body0", "body1", "body2"]
    assert committed(db) == {}
    # The store still works, alone too: a lone failing commit, then a good write.
    with pytest.raises(sqlite3.IntegrityError):
        db.write_together(orphan)
    assert db.write_together(insert("z", 3)) == 3 and committed(db) == {"z": 3}


def test_a_lone_failing_body_rolls_back_and_the_next_one_is_served(tmp_path: Path) -> None:
    db = store(tmp_path)

    def fail(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t (k, v) VALUES ('gone', 1)")
        raise KeyError("no")

    with pytest.raises(KeyError):
        db.write_together(fail)
    assert db.write_together(insert("kept", 2)) == 2
    assert committed(db) == {"kept": 2}
    assert not db._leading and not db._waiting


def test_grouped_and_exclusive_writers_never_overlap(tmp_path: Path) -> None:
    """Read-modify-write counters from both kinds of writer, from many threads: no update is
    lost, so no two transactions ever interleaved."""
    db = store(tmp_path)
    with db.write() as conn:
        conn.execute("INSERT INTO t (k, v) VALUES ('n', 0)")

    def bump(conn: sqlite3.Connection) -> None:
        (v,) = conn.execute("SELECT v FROM t WHERE k = 'n'").fetchone()
        conn.execute("UPDATE t SET v = ? WHERE k = 'n'", (v + 1,))

    def worker(i: int) -> None:
        for _ in range(50):
            if i % 3 == 0:
                with db.write() as conn:
                    bump(conn)
            else:
                db.write_together(bump)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert committed(db) == {"n": 450}


def test_a_write_inside_a_write_is_refused_not_deadlocked(tmp_path: Path) -> None:
    db = store(tmp_path)

    def nested(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t (k, v) VALUES ('outer', 1)")
        db.write_together(insert("inner", 2))

    with pytest.raises(RuntimeError, match="already open"):
        db.write_together(nested)
    for inner in (db.write().__enter__, lambda: db.write_together(insert("inner", 2))):
        with pytest.raises(RuntimeError, match="already open"), db.write():
            inner()
    assert db.write_together(insert("after", 3)) == 3
    assert committed(db) == {"after": 3}
