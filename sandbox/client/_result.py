"""A released result: a pandas view with suppressed cells as NA, and the disclosure report."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from sandbox._model import TOTAL, CellStatus, ResultTable

_RULE_TEXT = {
    "disclosure.min_persons": "fewer than {min_persons_per_cell} distinct persons in the cell",
    "disclosure.rounding": "rounded to a multiple of {rounding_base}",
    "disclosure.cell_key": "perturbed by the cell-key method (the same cell always gets the same)",
    "disclosure.secondary": "suppressed so that no suppressed cell can be solved from margins",
    "disclosure.quantile": (
        "fewer than {min_persons_per_cell} persons below or above the grid interval holding "
        "the quantile"
    ),
    "disclosure.differencing": (
        "subtracted from an earlier release it would isolate fewer than "
        "{min_persons_per_cell} persons"
    ),
}


@dataclass(frozen=True)
class Result:
    job_id: str
    table: ResultTable
    digest: str
    sealed: bool = False
    """Whether the table arrived sealed to the researcher's key (and was opened here)."""
    receipt: dict[str, Any] | None = None
    """The release's audit receipt: log index, leaf hash, signed checkpoint, inclusion proof
    (check it offline with ``sandbox audit verify --proof``)."""

    def to_dataframe(self, *, status: bool = False, margins_name: str = "All") -> pd.DataFrame:
        """Group keys plus one nullable float column per aggregate (suppressed → NA).

        With ``status=True``, a ``<column>_status`` column follows each aggregate. Margin keys
        (``TOTAL``) are shown as ``margins_name``, as ``pandas.crosstab`` does.
        """
        data: dict[str, list[object]] = {c: [] for c in self.table.key_columns}
        for name in self.table.value_columns:
            data[name] = []
            if status:
                data[f"{name}_status"] = []
        for row in self.table.rows:
            for col, key in zip(self.table.key_columns, row.keys, strict=True):
                data[col].append(margins_name if key is TOTAL else key)
            for name, cell in zip(self.table.value_columns, row.cells, strict=True):
                data[name].append(pd.NA if cell.value is None else cell.value)
                if status:
                    data[f"{name}_status"].append(str(cell.status))
        frame = pd.DataFrame(data)
        for name in self.table.value_columns:
            frame[name] = frame[name].astype("Float64")
        return frame

    @property
    def report(self) -> pd.DataFrame:
        """One row per cell: its status, the rule that changed it, and why."""
        records = []
        for row in self.table.rows:
            keys = dict(zip(self.table.key_columns, row.keys, strict=True))
            for name, cell in zip(self.table.value_columns, row.cells, strict=True):
                text = _RULE_TEXT.get(cell.rule, "")
                records.append(
                    {
                        **keys,
                        "column": name,
                        "status": str(cell.status),
                        "rule": cell.rule,
                        "reason": text.format(**self.table.settings) if text else "",
                    }
                )
        return pd.DataFrame(records)

    @property
    def suppressed(self) -> int:
        return sum(c.status == CellStatus.SUPPRESSED for r in self.table.rows for c in r.cells)

    def __repr__(self) -> str:
        return f"Result(job_id={self.job_id!r}, rows={len(self.table.rows)})"
