"""Dataset usage policies: YAML files validated against a published schema, and the decision
engine that applies them to jobs."""

from sandbox.policy._canonicalize import canonicalize
from sandbox.policy._decide import Decision, Reason, Step, decide, decide_with_trace
from sandbox.policy._diff import Change, PolicyDiff, diff_policies
from sandbox.policy._explain import Trace, explain, infer_column_types
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
from sandbox.policy._review import ReviewRouting, release_review_reasons, review_reasons

__all__ = [
    "BudgetSettings",
    "Change",
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
    "PolicyDiff",
    "PurposePolicy",
    "Reason",
    "ReviewRouting",
    "Step",
    "Trace",
    "canonicalize",
    "decide",
    "decide_with_trace",
    "diff_policies",
    "explain",
    "infer_column_types",
    "load_policies",
    "load_policy",
    "policy_schema",
    "release_review_reasons",
    "review_reasons",
    "validate_paths",
]
