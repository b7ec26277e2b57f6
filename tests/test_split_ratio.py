"""The split-ratio study (paper Table 2): the option on the command lines and grids, rows that carry it,
and the table built from two real tiny units of different splits."""

import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `analysis/` is a folder of scripts at the root, not an installed package

from analysis.data import Skipped, normalise
from analysis.tables import cell_table, split_ratio_table
from miaray.config import ConfigError, TrainConfig, UnitConfig
from miaray.options import parse_split
from miaray.store import Store
from miaray.sweep import PRESETS, Plan, build_parser, spec_from_args
from miaray.unit import failed_rows, main, make_context, run_unit
from miaray.vocabulary import TABLE2_SPLITS

TINY = TrainConfig(max_epochs=2, patience=2)


# ---- parsing and grids (no training) ----------------------------------------------------------------
def test_parse_split_names_the_option_and_the_form():
    assert parse_split("50/40/10", option="--split") == (50, 40, 10)
    for bad in ("50/50/10", "50-40-10", "50/40", "50/40/10.0", "0/90/10"):
        with pytest.raises(ConfigError, match="--split=.*train/test/validation.*45/45/10"):
            parse_split(bad, option="--split")


def _spec(*argv: str):
    parser = build_parser(prog="full_grid.py", description="", presets=PRESETS)
    return spec_from_args(parser.parse_args(list(argv)), PRESETS)


def test_splits_axis_expands_like_seeds_and_shares_no_model():
    spec = _spec("--preset", "quick", "--methods", "l1_unstructured", "--sparsities", "0.5",
                 "--splits", "45/45/10,60/30/10", "--seeds", "0,1")
    cells = spec.cells()
    assert sorted((c.seed, c.split) for c in cells) == [(0, (45, 45, 10)), (0, (60, 30, 10)),
                                                        (1, (45, 45, 10)), (1, (60, 30, 10))]
    assert len(Plan.of(cells).originals) == 4 * 6  # each split trains its own target and 5 shadows
    with pytest.raises(ConfigError, match="--splits=45/45.*45/45/10"):
        _spec("--splits", "45/45/10,45/45")
    # A study that does not expand the axis (the unknown-pruning ones) refuses several splits.
    with pytest.raises(ConfigError, match="one split ratio"):
        spec.unit(dataset="digits", arch="resnet18")


def test_table2_preset_is_the_papers_cell_under_its_four_splits():
    cells = PRESETS["table2"].cells()
    assert [c.split for c in cells] == list(TABLE2_SPLITS)
    assert {(c.dataset, c.arch, c.method, c.sparsity) for c in cells} == {("cifar10", "resnet18", "l1_unstructured", 0.7)}


def test_cli_rejects_a_bad_split_before_training(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["--dataset", "digits", "--arch", "resnet18", "--split", "50/50/10", "--cache", str(tmp_path)])
    assert info.value.code == 2
    assert "--split=50/50/10 is not valid" in capsys.readouterr().err
    assert not (tmp_path / "events.jsonl").exists()


def test_old_rows_without_the_column_read_as_the_papers_split():
    old = pd.DataFrame([{"unit_id": "a", "target_model": "pruned", "attack": "conf"}])
    new = pd.DataFrame([{"unit_id": "b", "target_model": "pruned", "attack": "conf", "split_ratio": "60/30/10"}])
    assert list(normalise(old)["split_ratio"]) == ["45/45/10"]
    assert list(normalise(pd.concat([old, new]))["split_ratio"]) == ["45/45/10", "60/30/10"]


# ---- real tiny units --------------------------------------------------------------------------------
def test_units_of_two_splits_fill_table2(tmp_path):
    uneven = UnitConfig(dataset="digits", arch="resnet18", width=0.125, num_shadows=1, attacks=("conf",),
                        split=(60, 30, 10), train=TINY)
    paper = UnitConfig(**{**uneven.__dict__, "split": (45, 45, 10)})
    # 1,797 digits, 898 in the target half: test ceil(0.3 * 898) = 270, val ceil(628 / 7) = 90, train 538.
    target = make_context(uneven).split("target")
    assert [len(target.train), len(target.val), len(target.test)] == [538, 90, 270]
    assert failed_rows(uneven, "boom")[0]["split_ratio"] == "60/30/10"

    store = Store(tmp_path)
    rows = run_unit(uneven, store=store)
    assert {r["split_ratio"] for r in rows} == {"60/30/10"} and all(r["status"] == "ok" for r in rows)
    rows += run_unit(paper, store=store)
    assert store.count_built("original") == 4  # the two splits share no model
    frame = normalise(pd.DataFrame(rows))
    with pytest.raises(Skipped, match="split_ratio 45/45/10.*--preset table2"):
        split_ratio_table(frame[frame["split_ratio"] == "45/45/10"])
    table = split_ratio_table(frame)
    assert list(table.columns) == ["dataset", "arch", "width", "method", "sparsity",
                                   *[f"{r}{s}" for r in ("45/45/10", "60/30/10") for s in ("", "_ci_low", "_ci_high")],
                                   "n_seeds"]
    assert len(table) == 1 and table[["45/45/10", "60/30/10"]].notna().all(axis=None)
    # Every other table reads the paper's split only: the uneven unit's numbers are not averaged in.
    paper_rows = frame[(frame["split_ratio"] == "45/45/10") & (frame["target_model"] == "pruned")]
    cells = cell_table(frame)
    assert len(cells) == 1
    assert cells["pruned_test_acc"].item() == pytest.approx(paper_rows["target_test_acc"].iloc[0])
    assert cells["conf_acc"].item() == pytest.approx(paper_rows.loc[paper_rows["attack"] == "conf", "attack_acc"].item())
