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
