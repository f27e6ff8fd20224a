"""Compute: planning a JobSpec into SQL and running it on DuckDB."""

from sandbox.engine._duckdb import Engine, RawCell, RawTable, SourceFacts, file_fingerprint
from sandbox.engine._plan import KeySpace, Plan, bin_labels, plan, quote_ident

__all__ = [
    "Engine",
    "KeySpace",
    "Plan",
    "RawCell",
    "RawTable",
    "SourceFacts",
    "bin_labels",
    "file_fingerprint",
    "plan",
    "quote_ident",
]
