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
from sandbox.engine._quantile import (
    RULE_QUANTILE_BOUNDS,
    RULE_QUANTILE_ONE_ROW,
    QuantileGrid,
    quantile_grid,
)

__all__ = [
    "RECORD_KEY_BITS",
    "RULE_QUANTILE_BOUNDS",
    "RULE_QUANTILE_ONE_ROW",
    "Contributions",
    "Engine",
    "KeySpace",
    "Plan",
    "QuantileGrid",
    "RawCell",
    "RawTable",
    "RecordKeySlot",
    "SourceFacts",
    "bin_labels",
    "contribution_top",
    "file_fingerprint",
    "plan",
    "quantile_grid",
    "quote_ident",
]
