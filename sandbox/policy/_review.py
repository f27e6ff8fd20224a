"""Human-review routing: which jobs a dataset's policy sends to stewards before they run.

Policy section (all keys optional; a job matching any condition is held)::

    review:
      approvals: 2              # independent stewards who must approve (1 or 2; default 1)
      all_jobs: false           # every job on this dataset
      purposes: [research]      # jobs under these purposes
      aggregates: [sum, mean]   # jobs using any of these aggregates
      disclosure: [disclosure.dominance]  # jobs whose protected table has a cell so marked:
                                # computed, then held unreleased until approved
"""

from __future__ import annotations

from dataclasses import dataclass

from sandbox._model import JobSpec


@dataclass(frozen=True)
class ReviewRouting:
    approvals: int = 1
    all_jobs: bool = False
    purposes: tuple[str, ...] = ()
    aggregates: tuple[str, ...] = ()
    disclosure: tuple[str, ...] = ()
    """Disclosure rule ids whose outcome on any cell holds the computed table for review."""


def release_review_reasons(routing: ReviewRouting | None, rules: set[str]) -> tuple[str, ...]:
    """Why a computed table whose cells carry ``rules`` must wait before release."""
    if routing is None:
        return ()
    hit = sorted(rules & set(routing.disclosure))
    return (f"cells marked {', '.join(hit)} are reviewed before release",) if hit else ()


def review_reasons(routing: ReviewRouting | None, spec: JobSpec) -> tuple[str, ...]:
    """Why ``spec`` must wait for human review (empty: it runs without)."""
    if routing is None:
        return ()
    why: list[str] = []
    if routing.all_jobs:
        why.append("every job on this dataset is reviewed")
    if spec.purpose in routing.purposes:
        why.append(f"jobs for purpose '{spec.purpose}' are reviewed")
    used = sorted({str(a.function) for a in spec.aggregates} & set(routing.aggregates))
    if used:
        why.append(f"jobs using {', '.join(used)} are reviewed")
    return tuple(why)


def build_review(data: dict[str, object] | None) -> ReviewRouting | None:
    """The routing from a validated policy's ``review`` section (None: no review)."""
    if data is None:
        return None
    purposes = data.get("purposes", [])
    aggregates = data.get("aggregates", [])
    disclosure = data.get("disclosure", [])
    assert isinstance(purposes, list) and isinstance(aggregates, list)
    assert isinstance(disclosure, list)
    return ReviewRouting(
        approvals=int(str(data.get("approvals", 1))),
        all_jobs=bool(data.get("all_jobs", False)),
        purposes=tuple(str(p) for p in purposes),
        aggregates=tuple(str(a) for a in aggregates),
        disclosure=tuple(str(r) for r in disclosure),
    )
