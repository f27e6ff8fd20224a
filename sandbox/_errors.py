"""One error root; each error maps to one gRPC status code and one stable reason.

Messages never contain data values: they name columns, rules and ids only.
"""

from __future__ import annotations

from typing import ClassVar


class SandboxError(Exception):
    """Root of every error the sandbox raises, on the server and in the client."""

    code: ClassVar[str] = "INTERNAL"
    """gRPC status code name (``grpc.StatusCode`` member name)."""
    reason: ClassVar[str] = "INTERNAL"
    """Stable UPPER_SNAKE reason carried in ``google.rpc.ErrorInfo``."""

    def __init__(
        self,
        message: str,
        *,
        rule_ids: tuple[str, ...] = (),
        job_id: str = "",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.rule_ids = tuple(rule_ids)
        self.job_id = job_id

    def __str__(self) -> str:
        rules = f" [rules: {', '.join(self.rule_ids)}]" if self.rule_ids else ""
        return f"{self.reason}: {self.message}{rules}"


class Unauthenticated(SandboxError):
    code = "UNAUTHENTICATED"
    reason = "UNAUTHENTICATED"


class PermissionDenied(SandboxError):
    """The caller's role may not call this operation."""

    code = "PERMISSION_DENIED"
    reason = "PERMISSION_DENIED"


class PolicyDenied(SandboxError):
    """The dataset's policy refuses the job (purpose, membership, column use, limits)."""

    code = "PERMISSION_DENIED"
    reason = "POLICY_DENIED"


class NotFound(SandboxError):
    """Does not exist, or the caller may not see it (the two are indistinguishable)."""

    code = "NOT_FOUND"
    reason = "NOT_FOUND"


class AlreadyExists(SandboxError):
    code = "ALREADY_EXISTS"
    reason = "ALREADY_EXISTS"


class InvalidJobSpec(SandboxError):
    code = "INVALID_ARGUMENT"
    reason = "INVALID_JOB_SPEC"


class InvalidArgument(SandboxError):
    code = "INVALID_ARGUMENT"
    reason = "INVALID_ARGUMENT"


class PolicyInvalid(SandboxError):
    """A policy file fails validation; the message names file, line, key and a fix."""

    code = "INVALID_ARGUMENT"
    reason = "POLICY_INVALID"


class QuotaExceeded(SandboxError):
    code = "RESOURCE_EXHAUSTED"
    reason = "QUOTA_EXCEEDED"


class DisclosureControl(SandboxError):
    """Refused by disclosure control (e.g. a filter isolating too few persons)."""

    code = "FAILED_PRECONDITION"
    reason = "DISCLOSURE_CONTROL"


class DatasetChanged(SandboxError):
    """The dataset's source file differs from the one registered: a steward must re-register."""

    code = "FAILED_PRECONDITION"
    reason = "DATASET_CHANGED"


class BudgetExhausted(SandboxError):
    """The privacy budget (epsilon or delta) of a project or population cannot cover a job."""

    code = "RESOURCE_EXHAUSTED"
    reason = "BUDGET_EXHAUSTED"


class JobNotFinished(SandboxError):
    code = "FAILED_PRECONDITION"
    reason = "JOB_NOT_FINISHED"


class JobCancelled(SandboxError):
    code = "CANCELLED"
    reason = "JOB_CANCELLED"


class JobFailed(SandboxError):
    code = "ABORTED"
    reason = "JOB_FAILED"


class Timeout(SandboxError):
    code = "DEADLINE_EXCEEDED"
    reason = "TIMEOUT"


class Unavailable(SandboxError):
    code = "UNAVAILABLE"
    reason = "UNAVAILABLE"


class ResourceExhausted(SandboxError):
    """The server is overloaded or a message exceeds its size limit (not a quota)."""

    code = "RESOURCE_EXHAUSTED"
    reason = "RESOURCE_EXHAUSTED"


class ConfigError(SandboxError):
    code = "FAILED_PRECONDITION"
    reason = "CONFIG_INVALID"


class AuditTampered(SandboxError):
    code = "DATA_LOSS"
    reason = "AUDIT_TAMPERED"


class SealBroken(SandboxError):
    """A sealed blob does not open: tampered, damaged, or not sealed for this key, job and spec.

    One class and one message for every cause, so a failure never says which part was wrong.
    """

    code = "DATA_LOSS"
    reason = "SEAL_INVALID"


class KeyInvalid(SandboxError):
    """A key is unusable: not PEM, not RSA, too short, wrong exponent, not protected."""

    code = "INVALID_ARGUMENT"
    reason = "KEY_INVALID"


class KeyPassphraseInvalid(SandboxError):
    """An encrypted private key does not decrypt: wrong passphrase or damaged key file."""

    code = "INVALID_ARGUMENT"
    reason = "KEY_PASSPHRASE_INVALID"


class KeyFileInvalid(SandboxError):
    """A data-at-rest key file (or value) is missing or malformed; the message names the line."""

    code = "FAILED_PRECONDITION"
    reason = "KEY_FILE_INVALID"


class KeyFileInsecure(SandboxError):
    """A data-at-rest key file is readable or writable by its group or by others."""

    code = "FAILED_PRECONDITION"
    reason = "KEY_FILE_INSECURE"


class KeyUnknown(SandboxError):
    """A blob at rest names a key id that is not in the key ring."""

    code = "FAILED_PRECONDITION"
    reason = "KEY_UNKNOWN"


class KeyMismatch(SandboxError):
    """A request names a key other than the one registered for the job's submitter.

    Results are sealed only to the submitting researcher's registered public key, never to a
    key a request names; a client asserting another key (or a key where none is registered)
    is refused and nothing is sealed.
    """

    code = "PERMISSION_DENIED"
    reason = "KEY_MISMATCH"


class PrivateKeyRequired(SandboxError):
    """A result arrived sealed to the researcher's public key, and the client holds no key."""

    code = "FAILED_PRECONDITION"
    reason = "PRIVATE_KEY_REQUIRED"


def _all_errors() -> list[type[SandboxError]]:
    out: list[type[SandboxError]] = [SandboxError]
    stack = list(SandboxError.__subclasses__())
    while stack:
        cls = stack.pop()
        out.append(cls)
        stack.extend(cls.__subclasses__())
    return out


def error_for_reason(reason: str) -> type[SandboxError]:
    """The error class for a stable reason (used by the client to re-raise)."""
    for cls in _all_errors():
        if cls.reason == reason:
            return cls
    return SandboxError


# --- federation (Paillier-encrypted partial aggregates) ---


class InvalidCiphertext(SandboxError):
    """A ciphertext is not a unit below n² of the job's key (names the party and index only)."""

    code = "INVALID_ARGUMENT"
    reason = "INVALID_CIPHERTEXT"


class JobKeyMismatch(SandboxError):
    """A partial or combined result belongs to a different job key."""

    code = "INVALID_ARGUMENT"
    reason = "JOB_KEY_MISMATCH"


class EncodingMismatch(SandboxError):
    """A partial was encoded under a different job encoding (fields, scale, bounds, layout)."""

    code = "INVALID_ARGUMENT"
    reason = "ENCODING_MISMATCH"


class ValueOutOfBound(SandboxError):
    """A cell value lies outside the bounds the job encoding declares for its field."""

    code = "INVALID_ARGUMENT"
    reason = "VALUE_OUT_OF_BOUND"


class TooFewParties(SandboxError):
    """Fewer distinct nodes contributed than the job's minimum for decryption."""

    code = "FAILED_PRECONDITION"
    reason = "TOO_FEW_PARTIES"


class AggregateCorrupt(SandboxError):
    """A decrypted combined total breaks the slot bounds: some contribution was malformed."""

    code = "DATA_LOSS"
    reason = "AGGREGATE_CORRUPT"


# --- human review ---


class AwaitingApproval(SandboxError):
    """The job waits for human review; it runs once stewards approve (see the job's message)."""

    code = "FAILED_PRECONDITION"
    reason = "AWAITING_APPROVAL"


class ReviewRejected(SandboxError):
    """A steward rejected the job in human review (the message carries their reason)."""

    code = "PERMISSION_DENIED"
    reason = "REVIEW_REJECTED"


# --- audit log checkpoints and proofs ---


class CheckpointInvalid(SandboxError):
    """A checkpoint, proof or receipt document is malformed (not a verification failure)."""

    code = "INVALID_ARGUMENT"
    reason = "CHECKPOINT_INVALID"
