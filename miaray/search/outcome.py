"""Objectives from a unit's rows: test accuracy and, per seed, the strongest attack on the pruned target
by the privacy metric; a collapsed attack (constant or non-finite scores, marked by
`miaray.unit.attack_rows`) is left out of it, with a warning naming it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from miaray.search.space import DEFAULT_PRIVACY_METRIC, PRIVACY_METRICS


class CollapsedAttackWarning(UserWarning):
    """An attack's scores on a trial's target were constant or not finite: it was left out of the objective."""


def collapsed(row: Mapping[str, Any]) -> bool:
    """Whether a row's attack collapsed (`miaray.unit.attack_rows`); rows from before the mark did not."""
    return row.get("attack_status") == "collapsed"


@dataclass(frozen=True)
class UnitOutcome:
    """What one unit (one seed of a trial) scores: test accuracy, the privacy objective and the attack
    that reached it, and the attacks left out because they collapsed (attack -> why)."""

    target_test_acc: float
    privacy: float
    attack: str
    collapsed: dict[str, str] = field(default_factory=dict)


def unit_outcome(rows: Sequence[Mapping[str, Any]], *, metric: str = DEFAULT_PRIVACY_METRIC,
                 attacks: Sequence[str] | None = None) -> UnitOutcome | str:
    """The objectives of a unit, or the reason it has none: the strongest attack on the pruned target is
    the one with the largest `metric` (among `attacks`, when given) that did not collapse."""
    column = PRIVACY_METRICS[metric]
    pruned = [r for r in rows if r.get("target_model") == "pruned" and (attacks is None or r["attack"] in attacks)]
    failed = [r for r in pruned if r.get("status") != "ok"]
    if failed or not pruned:
        return str(failed[0].get("error") or "failed") if failed else "the unit returned no rows"
    gone = {str(r["attack"]): str(r.get("attack_note") or "collapsed") for r in pruned if collapsed(r)}
    valid = [r for r in pruned if not collapsed(r)]
    if not valid:
        return "every attack collapsed: " + "; ".join(f"{a} ({why})" for a, why in gone.items())
    acc = float(pruned[0]["target_test_acc"])
    non_finite = [r["attack"] for r in valid if not math.isfinite(float(r[column]))]
    if non_finite or not math.isfinite(acc):
        return f"non-finite objective (test accuracy {acc}, {column} of {non_finite})"
    strongest = max(valid, key=lambda r: float(r[column]))
    return UnitOutcome(acc, float(strongest[column]), str(strongest["attack"]), gone)


def objectives(rows: Sequence[Mapping[str, Any]], *, metric: str = DEFAULT_PRIVACY_METRIC
               ) -> tuple[float, float, str] | str:
    """(test accuracy, privacy objective, strongest attack) of a unit, or the reason it has none."""
    outcome = unit_outcome(rows, metric=metric)
    return outcome if isinstance(outcome, str) else (outcome.target_test_acc, outcome.privacy, outcome.attack)
