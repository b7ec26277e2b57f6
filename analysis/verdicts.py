"""A claim's verdict: the claim (its statement, the side of a threshold its effect must lie on, the
statistic), the row it gives for a scope and an interval, and the verdict that interval earns. Shared by
the paper's claims (`analysis.claims`) and those beyond it (`analysis.claims_beyond`).

Verdict: `holds` when the interval lies entirely on the claim's side of its threshold, `contradicted`
when entirely on the other side, `inconclusive` otherwise, and also when there is no interval (one
seed). A claim the results cannot test gets one `not run` row with the command that would produce its
input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

HOLDS, CONTRADICTED, INCONCLUSIVE, NOT_RUN = "holds", "contradicted", "inconclusive", "not run"
COLUMNS = ["claim", "statement", "dataset", "arch", "width", "method", "sparsity", "attack", "setting",
           "statistic", "effect", "ci_low", "ci_high", "n", "threshold", "verdict", "command"]


@dataclass(frozen=True)
class Claim:
    """A claim: its statement, which side of `threshold` the effect must lie on, and the statistic."""

    name: str
    statement: str
    side: str            # ">": holds when the effect exceeds the threshold; "<": when below it
    threshold: float
    statistic: str

    def verdict(self, low: float, high: float) -> str:
        """Where the interval [low, high] lies: holds / contradicted / inconclusive."""
        if math.isnan(low) or math.isnan(high):
            return INCONCLUSIVE
        above, below = low > self.threshold, high < self.threshold
        if self.side == ">":
            return HOLDS if above else CONTRADICTED if below else INCONCLUSIVE
        return HOLDS if below else CONTRADICTED if above else INCONCLUSIVE

    def row(self, scope: dict, effect: float, low: float, high: float, n: int) -> dict:
        return {"claim": self.name, "statement": self.statement, **_scope(scope), "statistic": self.statistic,
                "effect": effect, "ci_low": low, "ci_high": high, "n": int(n), "threshold": self.threshold,
                "verdict": self.verdict(low, high), "command": ""}

    def not_run(self, reason: str, command: str) -> dict:
        return {"claim": self.name, "statement": self.statement, **_scope({}), "statistic": reason,
                "effect": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": 0, "threshold": self.threshold,
                "verdict": NOT_RUN, "command": command}


def _text(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:g}" if isinstance(value, (float, np.floating)) else str(value)


def _scope(scope: dict) -> dict:
    """The scope columns as text ('all' where a claim pools over a column, '' where it does not apply)."""
    return {c: _text(scope.get(c, "")) for c in ("dataset", "arch", "width", "method", "sparsity", "attack",
                                                 "setting")}



def effect_rows(claim: Claim, effects: pd.DataFrame, scope_columns: list[str]) -> list[dict]:
    """A row per line of an effects table (effect, ci_low, ci_high, n_seeds), scoped by its columns."""
    return [claim.row({c: line[c] for c in scope_columns}, line["effect"], line["ci_low"], line["ci_high"],
                      line["n_seeds"]) for _, line in effects.iterrows()]
