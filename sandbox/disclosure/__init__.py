"""Disclosure control applied on the server to every result before release."""

from sandbox.disclosure._noised import NoiseTerms, noise_terms, protect_noised
from sandbox.disclosure._threshold import (
    RULE_MAX_GROUPS,
    RULE_MIN_PERSONS,
    RULE_QUERY_SET,
    RULE_ROUNDING,
    Settings,
    check_query_set,
    protect,
)

__all__ = [
    "RULE_MAX_GROUPS",
    "RULE_MIN_PERSONS",
    "RULE_QUERY_SET",
    "RULE_ROUNDING",
    "NoiseTerms",
    "Settings",
    "check_query_set",
    "noise_terms",
    "protect",
    "protect_noised",
]
