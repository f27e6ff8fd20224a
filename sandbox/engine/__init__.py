"""Compute: planning a JobSpec into SQL and running it on DuckDB."""

from sandbox.engine._duckdb import (
    Contributions,
    Engine,
    RawCell,
    RawTable,
    SourceFacts,
    file_fingerprint,
)
from sandbox.engine._plan import (
    KeySpace,
    Plan,
    bin_labels,
    contribution_top,
    plan,
    quote_ident,
)

__all__ = [
    "Contributions",
    "Engine",
    "KeySpace",
    "Plan",
    "RawCell",
    "RawTable",
    "SourceFacts",
    "bin_labels",
    "contribution_top",
    "file_fingerprint",
    "plan",
    "quote_ident",
]
