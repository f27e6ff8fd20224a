"""Tamper-evident audit log (RFC 6962 Merkle tree over canonical JSON entries).

Inclusion and consistency proofs, Ed25519-signed checkpoints and receipts, exports for
SIEMs, and offline verification of an exported log against a signed checkpoint.
"""

from sandbox.audit._canonical import canonical_json, canonical_text
from sandbox.audit._checkpoint import (
    Checkpoint,
    Checkpointer,
    Receipt,
    SigningKey,
    load_public_key,
    read_checkpoints,
    receipt_problem,
)
from sandbox.audit._log import AuditLog
from sandbox.audit._merkle import CompactRange, Frontier, leaf_hash, node_hash, root_of
from sandbox.audit._proofs import (
    consistency_proof_of,
    inclusion_proof_of,
    root_from_inclusion,
    verify_consistency,
    verify_inclusion,
)

__all__ = [
    "AuditLog",
    "Checkpoint",
    "Checkpointer",
    "CompactRange",
    "Frontier",
    "Receipt",
    "SigningKey",
    "canonical_json",
    "canonical_text",
    "consistency_proof_of",
    "inclusion_proof_of",
    "leaf_hash",
    "load_public_key",
    "node_hash",
    "read_checkpoints",
    "receipt_problem",
    "root_from_inclusion",
    "root_of",
    "verify_consistency",
    "verify_inclusion",
]
