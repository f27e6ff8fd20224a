"""Disclosure control applied on the server to every result before release."""

from sandbox.disclosure._cellkey import (
    RULE_CELL_KEY,
    RULE_COUNTS_ONLY,
    PTable,
    RecordKeySecret,
    build_ptable,
    cell_key_table,
    check_cell_key_job,
    perturb_counts,
    record_key_secret,
)
from sandbox.disclosure._differencing import (
    RULE_DIFFERENCING,
    ReleasedCell,
    differencing_guard,
    job_regions,
    offending,
    region_json,
    released_cell,
)
from sandbox.disclosure._dominance import (
    RULE_DOMINANCE,
    RULE_P_PERCENT,
    failed_rule,
    nk_fails,
    p_percent_fails,
    person_contributions,
)
from sandbox.disclosure._noised import NoiseTerms, noise_terms, protect_noised
from sandbox.disclosure._quantile import (
    RULE_QUANTILE,
    quantile_interval,
    quantile_scores,
    rule_quantile,
    score_sensitivity,
)
from sandbox.disclosure._rules import RULE_MIN_PERSONS
from sandbox.disclosure._threshold import (
    RULE_MAX_GROUPS,
    RULE_QUERY_SET,
    RULE_ROUNDING,
    Settings,
    check_query_set,
    protect,
)

__all__ = [
    "RULE_CELL_KEY",
    "RULE_COUNTS_ONLY",
    "RULE_DIFFERENCING",
    "RULE_DOMINANCE",
    "RULE_MAX_GROUPS",
    "RULE_MIN_PERSONS",
    "RULE_P_PERCENT",
    "RULE_QUANTILE",
    "RULE_QUERY_SET",
    "RULE_ROUNDING",
    "NoiseTerms",
    "PTable",
    "RecordKeySecret",
    "ReleasedCell",
    "Settings",
    "build_ptable",
    "cell_key_table",
    "check_cell_key_job",
    "check_query_set",
    "differencing_guard",
    "failed_rule",
    "job_regions",
    "nk_fails",
    "noise_terms",
    "offending",
    "p_percent_fails",
    "person_contributions",
    "perturb_counts",
    "protect",
    "protect_noised",
    "quantile_interval",
    "quantile_scores",
    "record_key_secret",
    "region_json",
    "released_cell",
    "rule_quantile",
    "score_sensitivity",
]
