"""Rule ids shared by several disclosure steps (published in every result's cell report)."""

RULE_MIN_PERSONS = "disclosure.min_persons"
"""A cell with fewer than k distinct persons (or none, where empty cells are disclosive)."""
