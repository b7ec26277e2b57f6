"""The unit end to end at a tiny size: every attack runs, rows are complete, the cache is reused."""

import pandas as pd
import pytest

from miaray.config import ATTACKS, TrainConfig, UnitConfig
from miaray.store import Store
from miaray.unit import main, run_unit

TINY = TrainConfig(max_epochs=3, patience=2)


def test_digits_unit_rows_artifacts_and_cache(tmp_path):
    config = UnitConfig(dataset="digits", arch="resnet18", method="l1_unstructured", sparsity=0.7,
                        width=0.125, num_shadows=2, attack_epochs=2, train=TINY)
    store = Store(tmp_path / "store")
    rows = run_unit(config, store=store, artifacts_dir=tmp_path / "exp")
    df = pd.DataFrame(rows)
    assert list(df.loc[df.target_model == "pruned", "attack"]) == list(ATTACKS)
    assert list(df.loc[df.target_model == "original", "attack"]) == ["conf"]
    assert (df.status == "ok").all()
    for column in ("attack_acc", "attack_auc", "tpr_at_fpr_0.01", "tpr_at_fpr_0.001", "advantage",
                   "confidence_gap", "sensitivity_gap", "generalization_gap", "target_test_acc"):
        assert df[column].notna().all(), column
    assert abs(df.achieved_sparsity.iloc[0] - 0.7) < 0.01
    assert ((df.attack_acc >= 0) & (df.attack_acc <= 1)).all()
    # 3 originals + 3 pruned models, and signals for each of the 6.
    assert store.count_built("original") == 3 and store.count_built("pruned") == 3
    signals = pd.read_parquet(tmp_path / "exp" / "signals" / f"{config.unit_id()}.parquet")
    assert set(signals.target_model) == {"pruned", "original"} and signals.member.any() and (~signals.member).any()
    roc = pd.read_parquet(tmp_path / "exp" / "roc" / f"{config.unit_id()}.parquet")
    assert set(roc.attack) == set(ATTACKS)

    # A second run of the same unit trains nothing and gives the same numbers.
    again = pd.DataFrame(run_unit(config, store=store))
    assert store.count_built() == len(store.events()) == 3 + 3 + 6
    pd.testing.assert_series_equal(again.attack_auc, df.attack_auc)

    # Another sparsity of the same (dataset, arch, seed) reuses the originals.
    other = UnitConfig(**{**config.__dict__, "sparsity": 0.5})
    run_unit(other, store=store)
    assert store.count_built("original") == 3 and store.count_built("pruned") == 6


def test_diverging_dp_unit_is_reported_failed(tmp_path):
    config = UnitConfig(dataset="synthetic_tabular", arch="fc", method="l1_unstructured", sparsity=0.5,
                        num_shadows=1, attacks=("conf",), defense="dp",
                        defense_params=(("noise_multiplier", 1e39),), train=TINY)
    rows = run_unit(config, store=Store(tmp_path))
    assert [r["status"] for r in rows] == ["failed"]
    assert "loss is nan" in rows[0]["error"].lower() or "loss is inf" in rows[0]["error"].lower()


def test_cli_rejects_bad_field_before_training(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["--dataset", "digits", "--arch", "fc", "--cache", str(tmp_path)])
    assert info.value.code == 2
    assert "arch='fc'" in capsys.readouterr().err
    assert not (tmp_path / "events.jsonl").exists()
