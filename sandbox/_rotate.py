"""Rotation of the data-at-rest key: a new active key, every stored result re-sealed under it."""

from __future__ import annotations

from dataclasses import dataclass

from sandbox._config import ServerConfig
from sandbox._errors import ConfigError
from sandbox.audit import AuditLog
from sandbox.crypto import rotate_key_file
from sandbox.state import AtRestKeys, Database, Jobs
from sandbox.state._at_rest import DEFAULT_KEY_FILE


@dataclass(frozen=True)
class Rotation:
    previous_key_id: str
    active_key_id: str
    results_moved: int


def rotate_at_rest_keys(config: ServerConfig, actor: str = "operator") -> Rotation:
    """Add a new active key to the key file, then move every stored result to it.

    Safe while the server runs: it rereads the key file when it changes, and older keys stay
    in the file, so every result opens at every moment. Logged in the audit log.
    """
    if config.at_rest_keys:
        raise ConfigError(
            "the data-at-rest keys come from SANDBOX_AT_REST_KEYS: add a new key at the end of "
            "that list, restart the server, then run `sandbox keys rotate --rewrap-only`"
        )
    path = config.at_rest_key_file or config.state_dir / DEFAULT_KEY_FILE
    keys = AtRestKeys.from_file(path)
    previous = keys.ring().active_key_id
    active = rotate_key_file(path).active_key_id
    return _rewrap(config, keys, actor, previous, active)


def rewrap_results(config: ServerConfig, actor: str = "operator") -> Rotation:
    """Move every stored result to the active key (after a key was added by other means)."""
    keys = AtRestKeys.configured(config.at_rest_key_file, config.at_rest_keys, config.state_dir)
    active = keys.ring().active_key_id
    return _rewrap(config, keys, actor, active, active)


def _rewrap(
    config: ServerConfig, keys: AtRestKeys, actor: str, previous: str, active: str
) -> Rotation:
    db = Database(config.db_path)
    try:
        moved = Jobs(db, keys).rewrap_results()
        with db.write() as conn:
            AuditLog(db).append(
                conn,
                "keys.rotated",
                actor=actor,
                previous_key_id=previous,
                active_key_id=active,
                results_moved=moved,
            )
    finally:
        db.close()
    return Rotation(previous, active, moved)
