"""Principals and their bearer tokens. Only a SHA-256 hash of each token is stored."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
import sqlite3

from sandbox._errors import AlreadyExists, InvalidArgument, NotFound, Unauthenticated
from sandbox._model import Principal, Role
from sandbox.state._db import Database

TOKEN_PREFIX = "sbx_"  # noqa: S105 - a prefix, not a secret
_NAME = re.compile(r"^[a-z][a-z0-9._-]{0,63}$")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Principals:
    def __init__(self, db: Database) -> None:
        self._db = db

    def add(self, conn: sqlite3.Connection, name: str, role: Role) -> str:
        """Create a principal; returns its token (shown once, never stored)."""
        if not _NAME.match(name):
            raise InvalidArgument(
                "principal names are 1-64 chars: lower-case letters, digits, '.', '_', '-'"
            )
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        try:
            conn.execute(
                "INSERT INTO principals (name, role, token_hash, created_at) VALUES (?, ?, ?, ?)",
                (name, str(role), hash_token(token), _now()),
            )
        except sqlite3.IntegrityError:
            raise AlreadyExists(f"principal '{name}' already exists") from None
        return token

    def revoke(self, conn: sqlite3.Connection, name: str) -> None:
        cur = conn.execute(
            "UPDATE principals SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
            (_now(), name),
        )
        if cur.rowcount != 1:
            raise NotFound(f"no active principal '{name}'")

    def authenticate(self, token: str) -> Principal:
        row = self._db.conn.execute(
            "SELECT name, role FROM principals WHERE token_hash = ? AND revoked_at IS NULL",
            (hash_token(token),),
        ).fetchone()
        if row is None:
            raise Unauthenticated("invalid or revoked token")
        return Principal(row[0], Role(row[1]))

    def get(self, name: str) -> Principal | None:
        row = self._db.conn.execute(
            "SELECT name, role FROM principals WHERE name = ? AND revoked_at IS NULL", (name,)
        ).fetchone()
        return Principal(row[0], Role(row[1])) if row else None

    def list(self) -> list[tuple[str, str, str, str | None]]:
        """(name, role, created_at, revoked_at) rows."""
        rows = self._db.conn.execute(
            "SELECT name, role, created_at, revoked_at FROM principals ORDER BY name"
        ).fetchall()
        return [tuple(r) for r in rows]


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
