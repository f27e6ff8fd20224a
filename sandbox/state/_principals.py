"""Principals, their bearer tokens, public keys and certificate subjects.

Only a SHA-256 hash of each token is stored. A principal is authenticated by a bearer token, by
the subject of a verified client certificate (mutual TLS), or by both (then they must agree).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
import sqlite3
from dataclasses import dataclass

from sandbox._errors import AlreadyExists, InvalidArgument, NotFound, Unauthenticated
from sandbox._model import Principal, Role
from sandbox.state._db import Database

TOKEN_PREFIX = "sbx_"  # noqa: S105 - a prefix, not a secret
_NAME = re.compile(r"^[a-z][a-z0-9._-]{0,63}$")
MAX_SUBJECT_CHARS = 1024
_PLAINTEXT_REFUSED = (
    "bearer tokens are refused on a connection without TLS: configure [server.tls], or for "
    "local use only set allow_plaintext_tokens = true"
)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Peer:
    """What the transport established about a caller.

    ``secure``: the connection is encrypted and integrity-protected (TLS).
    ``cert_subject``: the subject of the client certificate the server verified (mutual TLS),
    in the form gRPC reports it (see :func:`normalise_subject`), else None.
    """

    secure: bool
    cert_subject: str | None = None


def normalise_subject(subject: str) -> str:
    """Check a certificate subject as an operator types it; a leading ``subject=`` is dropped.

    The form is the one gRPC reports for a verified client certificate (``x509_subject``):
    OpenSSL's RFC 2253 rendering, most specific attribute first, e.g.
    ``CN=ana,OU=Health,O=City,C=NL``. ``openssl x509 -in cert.pem -noout -subject -nameopt
    RFC2253`` prints exactly this after ``subject=``.
    """
    text = subject.strip()
    if text.startswith("subject="):
        text = text[len("subject=") :].strip()
    if not text or len(text) > MAX_SUBJECT_CHARS or "=" not in text:
        raise InvalidArgument(
            "a certificate subject is an RFC 2253 distinguished name such as "
            f"'CN=ana,O=City' (at most {MAX_SUBJECT_CHARS} characters)"
        )
    if not text.isprintable():
        raise InvalidArgument("a certificate subject may not contain control characters")
    return text


class Principals:
    """The principal table. ``allow_plaintext_tokens`` lets tokens in without TLS (local use)."""

    def __init__(self, db: Database, *, allow_plaintext_tokens: bool = False) -> None:
        self._db = db
        self._allow_plaintext_tokens = allow_plaintext_tokens

    def add(
        self, conn: sqlite3.Connection, name: str, role: Role, cert_subject: str | None = None
    ) -> str:
        """Create a principal; returns its token (shown once, never stored)."""
        if not _NAME.match(name):
            raise InvalidArgument(
                "principal names are 1-64 chars: lower-case letters, digits, '.', '_', '-'"
            )
        subject = None if cert_subject is None else normalise_subject(cert_subject)
        if subject is not None:
            self._check_subject_free(conn, subject, name)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        try:
            conn.execute(
                "INSERT INTO principals (name, role, token_hash, created_at, cert_subject) "
                "VALUES (?, ?, ?, ?, ?)",
                (name, str(role), hash_token(token), _now(), subject),
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

    # ---- authentication -----------------------------------------------------------------
    def authenticate(self, token: str | None, peer: Peer | None = None) -> Principal:
        """The principal a request speaks for.

        Without ``peer`` (local callers): by token alone. With ``peer`` (the server's auth
        interceptor): a verified client certificate names the principal through its mapped
        subject, and a bearer token sent with it must name the same principal; without a
        certificate, the token alone, and only on a secure connection unless plaintext tokens
        are allowed. A revoked principal authenticates by neither.
        """
        if peer is not None and peer.cert_subject is not None:
            principal = self._by_cert_subject(peer.cert_subject)
            if token and self._by_token(token) != principal:
                raise Unauthenticated(
                    "the bearer token and the client certificate name different principals"
                )
            return principal
        if not token:
            raise Unauthenticated("missing bearer token")
        if peer is not None and not peer.secure and not self._allow_plaintext_tokens:
            raise Unauthenticated(_PLAINTEXT_REFUSED)
        return self._by_token(token)

    def _by_token(self, token: str) -> Principal:
        return self._active(
            "SELECT name, role FROM principals WHERE token_hash = ? AND revoked_at IS NULL",
            hash_token(token),
            "invalid or revoked token",
        )

    def _by_cert_subject(self, subject: str) -> Principal:
        return self._active(
            "SELECT name, role FROM principals WHERE cert_subject = ? AND revoked_at IS NULL",
            subject,
            "the client certificate's subject is not mapped to an active principal",
        )

    def _active(self, sql: str, value: str, refusal: str) -> Principal:
        """The active principal ``sql`` (a fixed query) finds by ``value``, remembered."""

        def load() -> Principal:
            row = self._db.conn.execute(sql, (value,)).fetchone()
            if row is None:
                raise Unauthenticated(refusal)
            return Principal(row[0], Role(row[1]))

        return self._db.remembered((sql, value), load)

    # ---- certificate subjects ---------------------------------------------------------------
    def map_cert(self, conn: sqlite3.Connection, name: str, subject: str) -> str:
        """Map a client certificate subject to an active principal (replacing its mapping).

        Returns the subject as stored. One subject names at most one principal.
        """
        text = normalise_subject(subject)
        self._check_subject_free(conn, text, name)
        cur = conn.execute(
            "UPDATE principals SET cert_subject = ? WHERE name = ? AND revoked_at IS NULL",
            (text, name),
        )
        if cur.rowcount != 1:
            raise NotFound(f"no active principal '{name}'")
        return text

    def _check_subject_free(self, conn: sqlite3.Connection, subject: str, name: str) -> None:
        row = conn.execute(
            "SELECT name FROM principals WHERE cert_subject = ?", (subject,)
        ).fetchone()
        if row is not None and row[0] != name:
            raise AlreadyExists(f"that certificate subject is already mapped to '{row[0]}'")

    # ---- public keys ------------------------------------------------------------------------
    def set_public_key(
        self, conn: sqlite3.Connection, name: str, pem: str, fingerprint: str
    ) -> str | None:
        """Store ``name``'s public key (PEM, validated by the caller); returns the fingerprint
        of the key it replaced, or None."""
        row = conn.execute(
            "SELECT public_key_fingerprint FROM principals WHERE name = ? AND revoked_at IS NULL",
            (name,),
        ).fetchone()
        if row is None:
            raise NotFound(f"no active principal '{name}'")
        conn.execute(
            "UPDATE principals SET public_key = ?, public_key_fingerprint = ? WHERE name = ?",
            (pem, fingerprint, name),
        )
        previous: str | None = row[0]
        return previous

    def public_key(self, name: str) -> tuple[bytes, str] | None:
        """(PEM, fingerprint) of the key registered for ``name``, revoked or not, or None.

        Revocation does not drop the key: a revoked researcher's results stay sealed to it.
        """

        def load() -> tuple[bytes, str] | None:
            row = self._db.conn.execute(
                "SELECT public_key, public_key_fingerprint FROM principals WHERE name = ?",
                (name,),
            ).fetchone()
            if row is None or row[0] is None:
                return None
            return str(row[0]).encode("ascii"), str(row[1])

        return self._db.remembered(("public key", name), load)

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
