"""Sandbox: usable-but-not-visible compute over sensitive data.

Researchers send structured aggregate jobs; only results that passed disclosure control leave
the server. The public surface is small and re-exported here.
"""

from sandbox._errors import (
    AlreadyExists,
    AuditTampered,
    ConfigError,
    DisclosureControl,
    InvalidArgument,
    InvalidJobSpec,
    JobCancelled,
    JobFailed,
    JobNotFinished,
    NotFound,
    PermissionDenied,
    PolicyDenied,
    PolicyInvalid,
    QuotaExceeded,
    SandboxError,
    Timeout,
    Unauthenticated,
    Unavailable,
)
from sandbox._model import (
    Aggregate,
    AggFunc,
    CellStatus,
    DatasetInfo,
    Filter,
    FilterOp,
    JobInfo,
    JobSpec,
    JobState,
    Project,
    QuotaLimits,
    QuotaUsage,
    Role,
)
from sandbox.client import TLS, Client, Job, Query, Result

__version__ = "0.1.0"

__all__ = [
    "TLS",
    "Aggregate",
    "AggFunc",
    "AlreadyExists",
    "AuditTampered",
    "CellStatus",
    "Client",
    "ConfigError",
    "DatasetInfo",
    "DisclosureControl",
    "Filter",
    "FilterOp",
    "InvalidArgument",
    "InvalidJobSpec",
    "Job",
    "JobCancelled",
    "JobFailed",
    "JobInfo",
    "JobNotFinished",
    "JobSpec",
    "JobState",
    "NotFound",
    "PermissionDenied",
    "PolicyDenied",
    "PolicyInvalid",
    "Project",
    "Query",
    "QuotaExceeded",
    "QuotaLimits",
    "QuotaUsage",
    "Result",
    "Role",
    "SandboxError",
    "Timeout",
    "Unauthenticated",
    "Unavailable",
    "__version__",
]
