"""Registered datasets: id → file under the data root, with its schema and sizes."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from dataclasses import dataclass

from sandbox.state._db import Database


@dataclass(frozen=True)
class DatasetRecord:
    id: str
    source: str
    """Absolute path, resolved under the data root at registration."""
    file_format: str
    file_digest: str
    row_count: int
    persons: int
    persons_unique: bool
    """Every person has exactly one row, so distinct persons equal rows in any cell."""
    column_types: dict[str, str]
    policy_version: str
    measure_ranges: dict[str, tuple[float, float]]
    """Observed (min, max) of each measure, to skip clamping that cannot change a value.

    Server-internal: never released, logged or shown.
    """
    file_fingerprint: str = ""
    """Identity (inode, size, mtime) of the file registered; any other version is refused."""


_COLUMNS = (
    "id, source, file_format, file_digest, row_count, persons, persons_unique,"
    " column_types, policy_version, measure_ranges, file_fingerprint"
)


class Catalogue:
    def __init__(self, db: Database) -> None:
        self._db = db

    def put(self, conn: sqlite3.Connection, rec: DatasetRecord, registered_by: str) -> None:
        conn.execute(
            f"INSERT OR REPLACE INTO datasets ({_COLUMNS}, registered_at, registered_by)"  # noqa: S608 - fixed column list
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                rec.id,
                rec.source,
                rec.file_format,
                rec.file_digest,
                rec.row_count,
                rec.persons,
                int(rec.persons_unique),
                json.dumps(rec.column_types),
                rec.policy_version,
                json.dumps(rec.measure_ranges),
                rec.file_fingerprint,
                dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                registered_by,
            ),
        )

    def get(self, dataset_id: str) -> DatasetRecord | None:
        def load() -> DatasetRecord | None:
            row = self._db.conn.execute(
                f"SELECT {_COLUMNS} FROM datasets WHERE id = ?",  # noqa: S608 - fixed columns
                (dataset_id,),
            ).fetchone()
            return _record(row) if row else None

        return self._db.remembered(("dataset", dataset_id), load)

    def registered_by(self, dataset_id: str) -> str:
        """Who registered the dataset's current version (and so its policy), or ""."""
        row = self._db.conn.execute(
            "SELECT registered_by FROM datasets WHERE id = ?", (dataset_id,)
        ).fetchone()
        return str(row[0]) if row and row[0] else ""

    def list(self) -> list[DatasetRecord]:
        rows = self._db.conn.execute(
            f"SELECT {_COLUMNS} FROM datasets ORDER BY id"  # noqa: S608 - fixed column list
        ).fetchall()
        return [_record(r) for r in rows]


def _record(row: tuple[object, ...]) -> DatasetRecord:
    return DatasetRecord(
        id=str(row[0]),
        source=str(row[1]),
        file_format=str(row[2]),
        file_digest=str(row[3]),
        row_count=int(str(row[4])),
        persons=int(str(row[5])),
        persons_unique=bool(row[6]),
        column_types=json.loads(str(row[7])),
        policy_version=str(row[8]),
        measure_ranges={k: (v[0], v[1]) for k, v in json.loads(str(row[9])).items()},
        file_fingerprint=str(row[10]),
    )
