"""Every setting that changes a result is part of a cell's identity in analysis (issue 22, item 2): two
grids run under one experiment name with another --max-epochs stay two cells in every table, the
claims, the report and the figures, and the analysis says so. Rows are written in the real layout
with the real configuration columns of a unit (`miaray.unit.config_columns`)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `analysis/` is a folder of scripts

from analysis.claims import claims_table, main as claims_main  # noqa: E402
from analysis.data import SETTINGS, load_experiments  # noqa: E402
from analysis.report import main as report_main  # noqa: E402
from analysis.tables import (cell_table, defense_front_points, defense_front_table, defense_fronts,  # noqa: E402
                             defense_points, ratio_budget_table, split_ratio_table, unknown_pruning_loss)
from miaray.config import RESULT_SETTINGS, TrainConfig, UnitConfig  # noqa: E402
from miaray.unit import config_columns, failed_rows  # noqa: E402
from test_analysis import _unit  # noqa: E402

EPOCHS = (1, 3)
ACC = {1: 0.6, 3: 0.8}  # every attack's accuracy under each setting: a mean over both would read 0.7


def _settings(max_epochs: int | None) -> dict:
    """The settings columns a real unit of this --max-epochs writes (none: a row written before them)."""
    if max_epochs is None:
        return {}
    config = UnitConfig(dataset="digits", arch="resnet18", width=0.25, train=TrainConfig(max_epochs=max_epochs))
    return {k: v for k, v in config_columns(config).items() if k in RESULT_SETTINGS}


def two_epoch_settings(exp: Path, *, epochs=EPOCHS, files: bool = True) -> Path:
    """The same small grid twice in one experiment, once per --max-epochs: known pruning at two sparsities
    and two seeds, unknown-pruning units, PPB and ADV (adaptive and not) and another split at 0.5."""
    rng = np.random.default_rng(0)
    n = 0
    for max_epochs in epochs:
        acc = ACC.get(max_epochs, 0.7)
        for sparsity in (0.5, 0.9):
            for seed in (0, 1):
                cell = {"dataset": "digits", "arch": "resnet18", "method": "l1_unstructured", "sparsity": sparsity,
                        "seed": seed, **_settings(max_epochs)}
                variants = [({}, files), ({"shadow_sparsity": round(1.4 - sparsity, 1)}, False),
                            ({"shadow_method": "slimming"}, False)]
                if sparsity == 0.5:
                    variants += [({"split_ratio": "60/30/10"}, False)]
                    variants += [({"defense": d, "adaptive": a, f"defense_{p}": v}, False)
                                 for a in (False, True) for d, p, v in (("ppb", "lambda", 1.0), ("ppb", "lambda", 16.0),
                                                                        ("adv", "alpha", 2.0))]
                for extra, with_files in variants:
                    _unit(exp, f"u{n:03d}", {**cell, **extra}, rng, files=with_files, acc=acc)
                    n += 1
    return exp


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return two_epoch_settings(tmp_path_factory.mktemp("mixed") / "exp")


def _two_cells_each(table: pd.DataFrame, name: str) -> None:
    """`table` holds each of its lines once per epoch setting, with the setting as its first column."""
    assert table.columns[0] == "max_epochs", (name, list(table.columns))
    assert sorted(table["max_epochs"].unique()) == list(EPOCHS), name
    one, three = (table[table["max_epochs"] == e].drop(columns="max_epochs").reset_index(drop=True) for e in EPOCHS)
    assert len(one) == len(three) > 0, name
    keys = [c for c in ("dataset", "arch", "width", "method", "sparsity", "defense", "setting", "adaptive", "attack",
                        "study", "target_model", "models_used", "claim") if c in one.columns]
    assert one[keys].astype(str).equals(three[keys].astype(str)), name  # the same cells, once per setting


def test_units_record_the_settings_that_change_their_results():
    config = UnitConfig(dataset="digits", arch="resnet18", num_shadows=2, attack_epochs=20,
                        train=TrainConfig(max_epochs=3))
    row = failed_rows(config, "x")[0]
    assert set(RESULT_SETTINGS) <= set(row) and SETTINGS == RESULT_SETTINGS
    assert {k: row[k] for k in ("max_epochs", "finetune_max_epochs", "num_shadows", "attack_epochs")} == {
        "max_epochs": 3, "finetune_max_epochs": 1, "num_shadows": 2, "attack_epochs": 20}
    # The default filled in: an explicit cap equal to it is the same setting (and the same models).
    assert config_columns(UnitConfig(dataset="digits", arch="resnet18"))["max_epochs"] == 100


def test_two_epoch_settings_in_one_experiment_stay_two_cells_in_every_table(mixed: Path):
    exp = load_experiments([mixed])
    assert "cells differ in max_epochs: 1, 3; kept apart" in "\n".join(exp.notes)
    rows = exp.rows
    tables = {"cell_table": cell_table(rows), "split_ratio_table": split_ratio_table(rows),
              "unknown_pruning_loss": unknown_pruning_loss(rows, pairs=exp.pairs),
              "ratio_budget_table": ratio_budget_table(exp), "claims_table": claims_table(exp)}
    for adaptive in (False, True):
        points = defense_points(rows, adaptive=adaptive)
        tables[f"defense_points {adaptive}"] = points
        tables[f"defense_fronts {adaptive}"] = defense_fronts(points)
    front = defense_front_points(rows)
    tables.update({"defense_front_points": front, "defense_front_table": defense_front_table(front)})
    for name, table in tables.items():
        _two_cells_each(table, name)
    cells = tables["cell_table"].set_index("max_epochs")
    for max_epochs in EPOCHS:  # each setting's own numbers, over its own two seeds: never the 0.7 of both
        assert cells.loc[max_epochs, "best_attack_acc"].tolist() == pytest.approx([ACC[max_epochs]] * 2)
        assert (cells.loc[max_epochs, "n_seeds"] == 2).all()
    points = tables["defense_points False"]
    assert points.groupby("max_epochs")["attack_acc"].unique().map(list).to_dict() == {
        1: [pytest.approx(0.6)], 3: [pytest.approx(0.8)]}


def test_the_claims_and_the_report_say_so_and_keep_them_apart(mixed: Path, tmp_path: Path, capsys):
    assert claims_main([str(mixed)]) == 0
    printed = capsys.readouterr().out
    assert "note: cells differ in max_epochs: 1, 3; kept apart" in printed
    assert printed.splitlines()[1].split()[0] == "max_epochs"  # the table's first column
    assert "C2 [max_epochs 1] " not in printed  # C2 ran for both: two sparsities each
    page = tmp_path / "report.html"
    assert report_main([str(mixed), "--out", str(page)]) == 0
    assert "note: cells differ in max_epochs: 1, 3" in capsys.readouterr().out
    text = page.read_text(encoding="utf-8")
    assert "cells differ in max_epochs: 1, 3; kept apart" in text
    assert text.count("<th>max_epochs</th>") >= 6  # headline, fronts, defense front, claims, tables of the figures
    for max_epochs in EPOCHS:  # each figure drawn per setting
        assert f"Fig. 6 (test accuracy vs sparsity) [max_epochs {max_epochs}]" in text


def test_rows_written_before_the_settings_were_recorded(tmp_path: Path):
    # Old rows only: nothing to tell apart, no column added to the tables, as before.
    old = two_epoch_settings(tmp_path / "old", epochs=(None,), files=False)
    exp = load_experiments([old])
    assert exp.rows["max_epochs"].isna().all() and "max_epochs" not in cell_table(exp.rows).columns
    assert not any("differ" in note for note in exp.notes)
    # Old rows beside new ones: kept apart, the old as "not recorded".
    both = load_experiments([two_epoch_settings(tmp_path / "both", epochs=(None, 3), files=False)])
    assert "cells differ in max_epochs: 3, not recorded" in "\n".join(both.notes)
    table = cell_table(both.rows)
    assert table["max_epochs"].isna().sum() == 2 and (table["max_epochs"] == 3).sum() == 2
    # Two old grids that differ in a setting they did not record: their numbers differ, and that is said.
    rng = np.random.default_rng(0)
    cell = {"dataset": "digits", "arch": "resnet18", "method": "l1_unstructured", "sparsity": 0.5}
    _unit(tmp_path / "old2", "a", cell, rng, files=False, acc=0.6)
    _unit(tmp_path / "old2", "b", {**cell, "sparsity": 0.5}, rng, files=False, acc=0.6)
    rows = pd.read_parquet(tmp_path / "old2" / "rows" / "b.parquet").assign(target_test_acc=0.5)
    rows.to_parquet(tmp_path / "old2" / "rows" / "b.parquet")
    notes = "\n".join(load_experiments([tmp_path / "old2"]).notes)
    assert "1 cell(s) hold units of one seed whose results differ though every recorded setting agrees" in notes
    assert not math.isnan(cell_table(load_experiments([tmp_path / "old2"]).rows)["pruned_test_acc"].iloc[0])
