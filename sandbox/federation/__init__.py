"""Federated aggregates: nodes encrypt packed partials under a per-job Paillier key; the
coordinator adds them and decrypts only combined totals of at least ``min_parties`` nodes."""

from sandbox.client._federated import FederatedResult, run_federated
from sandbox.federation._coordinator import (
    Coordinator,
    FederatedPlan,
    FederatedRelease,
    NodeCall,
    NodeOutcome,
)
from sandbox.federation._encoding import FieldSpec, JobEncoding, Number
from sandbox.federation._node import (
    FederationNode,
    PartialsReply,
    PartialsRequest,
    partial_digest,
)
from sandbox.federation._paillier import (
    CombinedCiphertexts,
    EncryptedPartial,
    FastEncryptor,
    JobPublicKey,
    JobSecretKey,
    Totals,
    ciphertext_from_bytes,
    ciphertext_to_bytes,
    combine,
    decrypt_combined,
    encrypt_partials,
    generate_job_keys,
    validate_ciphertext,
)

__all__ = [
    "CombinedCiphertexts",
    "Coordinator",
    "EncryptedPartial",
    "FastEncryptor",
    "FederatedPlan",
    "FederatedRelease",
    "FederatedResult",
    "FederationNode",
    "FieldSpec",
    "JobEncoding",
    "JobPublicKey",
    "JobSecretKey",
    "NodeCall",
    "NodeOutcome",
    "Number",
    "PartialsReply",
    "PartialsRequest",
    "Totals",
    "ciphertext_from_bytes",
    "ciphertext_to_bytes",
    "combine",
    "decrypt_combined",
    "encrypt_partials",
    "generate_job_keys",
    "partial_digest",
    "run_federated",
    "validate_ciphertext",
]
