"""Dataset usage policies: YAML files validated against a published schema, and the decision
engine that applies them to jobs."""

from sandbox.policy._canonicalize import canonicalize
from sandbox.policy._decide import Decision, Reason, decide
from sandbox.policy._load import load_policies, load_policy, policy_schema, validate_paths
from sandbox.policy._model import (
    BudgetSettings,
    ColumnPolicy,
    DenyRule,
    DisclosureSettings,
    DominanceRule,
    Limits,
    Mechanism,
    NoiseSettings,
    Policy,
    PTableSpec,
    PurposePolicy,
)

__all__ = [
    "BudgetSettings",
    "ColumnPolicy",
    "Decision",
    "DenyRule",
    "DisclosureSettings",
    "DominanceRule",
    "Limits",
    "Mechanism",
    "NoiseSettings",
    "PTableSpec",
    "Policy",
    "PurposePolicy",
    "Reason",
    "canonicalize",
    "decide",
    "load_policies",
    "load_policy",
    "policy_schema",
    "validate_paths",
]
