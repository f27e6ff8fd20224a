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
    RECORD_KEY_BITS,
    KeySpace,
    Plan,
    RecordKeySlot,
    bin_labels,
    contribution_top,
    plan,
    quote_ident,
)

__all__ = [
    "RECORD_KEY_BITS",
    "Contributions",
    "Engine",
    "KeySpace",
    "Plan",
    "RawCell",
    "RawTable",
    "RecordKeySlot",
    "SourceFacts",
    "bin_labels",
    "contribution_top",
    "file_fingerprint",
    "plan",
    "quote_ident",
]
