"""The row schema of a unit: the configuration columns every row carries, the gaps, the rows of a
failed unit, and the per-unit tables a sweep keeps beside the rows (`UnitResult`). The names the analysis
scripts read too (the gaps, the tables' folders) are defined in `miaray.results`, which they import without torch."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from miaray.attacks.signals import Signals, confidence_gap, generalization_gap, sensitivity_gap
from miaray.config import UnitConfig
from miaray.results import UNIT_TABLES, write_parquet
from miaray.unit.context import UnitContext, membership
from miaray.vocabulary import DEFENSE_PARAMS, format_split


def gaps(ctx: UnitContext, signals: Signals, accuracies: dict) -> dict[str, float]:
    """The target's generalisation gaps (`miaray.results.GAPS`) from its signals and accuracies."""
    n_members = len(ctx.split("target").train)
    members = signals.subset(torch.arange(n_members))
    nonmembers = signals.subset(torch.arange(n_members, len(signals)))
    return {"confidence_gap": confidence_gap(members, nonmembers),
            "sensitivity_gap": sensitivity_gap(members, nonmembers),
            "generalization_gap": generalization_gap(accuracies["train_acc"], accuracies["test_acc"])}


def signal_table(ctx: UnitContext, signals: Signals, target_model: str) -> pd.DataFrame:
    """Per-sample true-class confidence and sensitivity of the target (for the paper's Fig. 1 and 4), its
    predicted class, and the sample's dataset index."""
    truth = membership(ctx, "target").astype(bool)
    s = ctx.split("target")
    return pd.DataFrame({"target_model": target_model, "sample": torch.cat([s.train, s.test]).numpy(),
                         "member": truth, "label": signals.labels.numpy(),
                         "predicted": signals.probs.argmax(dim=1).numpy(),
                         "confidence": signals.true_class(signals.probs).numpy(),
                         "sensitivity": signals.true_class(signals.sensitivity).numpy()})


def config_columns(config: UnitConfig) -> dict[str, Any]:
    """The configuration part of every result row: the cell's axes, the other settings that change
    its results (`UnitConfig.result_settings`: epochs, shadows, attack epochs, ...; analysis keeps
    cells that differ in them apart) and the defense's hyperparameters."""
    cols = {"unit_id": config.unit_id(), "dataset": config.dataset, "arch": config.arch,
            "method": config.method, "sparsity": config.sparsity, "seed": config.seed,
            "width": config.width, "shadow_method": config.resolved_shadow_method,
            "shadow_sparsity": config.resolved_shadow_sparsity, "defense": config.defense,
            "adaptive": config.adaptive, "split_ratio": format_split(config.split),
            "num_references": config.num_references, **config.result_settings()}
    for name in sorted({p for params in DEFENSE_PARAMS.values() for p in params}):
        cols[f"defense_{name}"] = config.resolved_defense_params.get(name, math.nan)
    return cols


def failed_rows(config: UnitConfig, error: str, **extra: Any) -> list[dict[str, Any]]:
    """What a unit that failed leaves in the results: one 'failed' row per attack, with the error."""
    return [{**config_columns(config), "target_model": "pruned", "attack": attack, "status": "failed",
             "error": error, **extra} for attack in config.attacks]


@dataclass
class UnitResult:
    """What one unit produces: its rows, and the per-unit tables a sweep keeps beside them: the
    target's per-sample signals, the attacks' ROC points, the likelihood-ratio attacks' budget lines and
    each attack's per-sample membership scores (`sample`: the dataset index; each with `target_model`;
    empty for a failed unit)."""

    rows: list[dict[str, Any]]
    signals: pd.DataFrame
    roc: pd.DataFrame
    budget: pd.DataFrame
    scores: pd.DataFrame

    # Written by `write_artifacts` as <dir>/<name>/<unit_id>.parquet (a table without lines is not written).
    TABLES = UNIT_TABLES

    def write_artifacts(self, directory: str | Path, unit_id: str) -> None:
        root = os.fspath(directory).rstrip("/")  # a local folder or a URI such as s3://bucket/prefix
        for name in self.TABLES:
            table = getattr(self, name)
            if len(table):
                write_parquet(table.assign(unit_id=unit_id), f"{root}/{name}/{unit_id}.parquet")
