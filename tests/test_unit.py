"""The unit end to end at a tiny size: every attack runs on the pruned and the unpruned target, rows
are complete, models and the unpruned target's attacks are cached; the command line."""

import dataclasses

import pandas as pd
import pytest

from miaray import results
from miaray.attacks.metrics import METRICS
from miaray.config import TrainConfig, UnitConfig
from miaray.store import Store
from miaray.unit import main, original_attack_key, run_unit
from miaray.vocabulary import ATTACKS

TINY = TrainConfig(max_epochs=3, patience=2)
CONFIG = UnitConfig(dataset="digits", arch="resnet18", method="l1_unstructured", sparsity=0.7, width=0.125,
                    num_shadows=2, attack_epochs=2, train=TINY)
# The same unit from the command line (width 0.125 is digits' default there).
CLI = ["--dataset", "digits", "--arch", "resnet18", "--method", "l1_unstructured", "--sparsity", "0.7",
       "--shadows", "2", "--attack-epochs", "2", "--max-epochs", "3", "--patience", "2"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return Store(tmp_path_factory.mktemp("store"))


def test_digits_unit_rows_artifacts_and_cache(tmp_path, store):
    rows = run_unit(CONFIG, store=store, artifacts_dir=tmp_path / "exp")
    df = pd.DataFrame(rows)
    # Like with like: the unpruned target is attacked with the same list, fitted on unpruned shadows.
    assert list(df.loc[df.target_model == "pruned", "attack"]) == list(ATTACKS)
    assert list(df.loc[df.target_model == "original", "attack"]) == list(ATTACKS)
    assert (df.status == "ok").all()
    for column in (*METRICS, "confidence_gap", "sensitivity_gap", "generalization_gap", "target_test_acc"):
        if column != "tpr_at_fpr_0.001":
            assert df[column].notna().all(), column
    assert df["tpr_at_fpr_0.001"].isna().all()  # 405 non-members: below one false positive, not measured
    assert (df.attack_acc == 0.5 * (df.tpr + 1 - df.fpr)).all() and (df.advantage == df.tpr - df.fpr).all()
    assert (df.max_advantage >= df.advantage).all()  # the oracle bound is never below the attack's own
    assert (df.n_members == 403).all() and (df.n_nonmembers == 405).all()
    assert abs(df.achieved_sparsity.iloc[0] - 0.7) < 0.01
    # 3 originals + 3 pruned models, signals for each of the 6, and the 9 attacks on the original.
    assert store.count_built("original") == 3 and store.count_built("pruned") == 3
    assert store.count_built("original_attack") == len(ATTACKS)
    signals = pd.read_parquet(tmp_path / "exp" / "signals" / f"{CONFIG.unit_id()}.parquet")
    assert set(signals.target_model) == {"pruned", "original"} and signals.member.any() and (~signals.member).any()
    roc = pd.read_parquet(tmp_path / "exp" / "roc" / f"{CONFIG.unit_id()}.parquet")
    assert set(roc.attack) == set(ATTACKS) and set(roc.target_model) == {"pruned", "original"}

    # A second run of the same unit trains and fits nothing new on the original, and gives the same numbers.
    again = pd.DataFrame(run_unit(CONFIG, store=store))
    assert store.count_built() == len(store.events()) == 3 + 3 + 6 + len(ATTACKS)
    pd.testing.assert_series_equal(again.attack_auc, df.attack_auc)

    # Another sparsity of the same (dataset, arch, seed) reuses the originals and their attack results.
    other = dataclasses.replace(CONFIG, sparsity=0.5, original_attacks=("conf", "samia"))
    other_rows = pd.DataFrame(run_unit(other, store=store))
    assert store.count_built("original") == 3 and store.count_built("pruned") == 6
    assert store.count_built("original_attack") == len(ATTACKS)
    assert list(other_rows.loc[other_rows.target_model == "original", "attack"]) == ["conf", "samia"]
    original = df[df.target_model == "original"].set_index("attack")
    loaded = other_rows[other_rows.target_model == "original"].set_index("attack")
    pd.testing.assert_frame_equal(loaded[list(METRICS)], original.loc[["conf", "samia"], list(METRICS)])


def test_cli_writes_rows_and_artifacts_where_results_and_analysis_read_them(tmp_path, store, capsys):
    out = tmp_path / "rows.csv"
    assert main([*CLI, "--attacks", "conf,mentr", "--original-attacks", "conf", "--cache", str(store.root),
                 "--artifacts", str(tmp_path / "exp"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "org." in printed and "max_advantage" in printed
    # The two attacks side by side: mentr did not run on the original ('-').
    mentr = next(line for line in printed.splitlines() if line.startswith("mentr"))
    assert " - " in mentr + " "
    df = results.load(tmp_path / "exp")
    unit_id = dataclasses.replace(CONFIG, attacks=("conf", "mentr"), original_attacks=("conf",)).unit_id()
    assert set(df.unit_id) == {unit_id} and len(df) == 3
    assert list(df.sort_values("target_model").attack) == ["conf", "conf", "mentr"]
    for kind in ("signals", "roc"):
        assert (tmp_path / "exp" / kind / f"{unit_id}.parquet").is_file()
    columns = ["target_model", "attack", "attack_acc"]  # --out holds the same rows, in the same order
    pd.testing.assert_frame_equal(pd.read_csv(out)[columns], df[columns], check_exact=False)


def test_original_attack_key_is_what_determines_the_result():
    key = original_attack_key
    # Not the pruning or the defense: every cell of a (dataset, arch, seed) shares it.
    cell = dataclasses.replace(CONFIG, method="slimming", sparsity=0.9, defense="ppb", attacks=("conf",))
    assert key(cell, "samia") == key(CONFIG, "samia")
    # The attack, its schedule (trained attacks only), the originals (seed, shadows, split, training).
    assert key(CONFIG, "conf") != key(CONFIG, "mentr")
    shorter = dataclasses.replace(CONFIG, attack_epochs=1)
    assert key(shorter, "samia") != key(CONFIG, "samia") and key(shorter, "conf") == key(CONFIG, "conf")
    for changes in ({"seed": 1}, {"num_shadows": 1}, {"split": (60, 30, 10)}, {"width": 0.25},
                    {"train": TrainConfig(max_epochs=4, patience=2)}):
        assert key(dataclasses.replace(CONFIG, **changes), "conf") != key(CONFIG, "conf"), changes


def test_diverging_dp_unit_is_reported_failed(tmp_path):
    config = UnitConfig(dataset="synthetic_tabular", arch="fc", method="l1_unstructured", sparsity=0.5,
                        num_shadows=1, attacks=("conf",), defense="dp",
                        defense_params=(("noise_multiplier", 1e39),), train=TINY)
    rows = run_unit(config, store=Store(tmp_path))
    assert [r["status"] for r in rows] == ["failed"]
    assert "loss is nan" in rows[0]["error"].lower() or "loss is inf" in rows[0]["error"].lower()


@pytest.mark.parametrize("extra, message", [
    (["--arch", "fc"], "arch='fc'"),
    (["--attacks", ","], "--attacks ',' is empty"),
    (["--original-attacks", "conf,lira_online"], "--original-attacks='lira_online'"),
    (["--attacks", "rmia"], "'rmia' (online RMIA) needs --references >= 1"),
    (["--out", "rows.json"], "--out 'rows.json': the file must end in .csv or .parquet"),
    (["--out", "no/such/folder/rows.csv"], "the folder 'no/such/folder' does not exist"),
])
def test_cli_rejects_bad_options_before_training(tmp_path, capsys, extra, message):
    args = ["--dataset", "digits", "--arch", "resnet18", "--cache", str(tmp_path)]
    with pytest.raises(SystemExit) as info:
        main([*args, *extra])
    assert info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "events.jsonl").exists()
