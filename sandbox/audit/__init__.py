"""Tamper-evident audit log (RFC 6962 Merkle tree over canonical JSON entries)."""

from sandbox.audit._canonical import canonical_json
from sandbox.audit._log import AuditLog
from sandbox.audit._merkle import Frontier, leaf_hash, node_hash, root_of

__all__ = ["AuditLog", "Frontier", "canonical_json", "leaf_hash", "node_hash", "root_of"]
