"""The defense search over seeds, defenses and held-out confirmation, and collapsed attacks, end to end:
real Optuna (SQLite study), real local Ray (the session fixture), real tiny units (the fc net on
synthetic_tabular at 2 epochs, as tests/test_search.py's TINY)."""

from __future__ import annotations

import math
import re

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from miaray import results
from miaray.config import TrainConfig, UnitConfig
from miaray.search import (DATASET_SAMPLES, SEARCH_PRESETS, SEARCH_SPACES, STUDY_FILE, CollapsedAttackWarning,
                           confirm_point, default_confirm_attacks, defense_search_main, spread, target_nonmembers,
                           unit_outcome)
from miaray.stats import t_interval
from miaray.sweep import full_grid_main
from miaray.sweep.cli import cell_summary
from miaray.sweep.trials import headline

# As tests/test_search.py's TINY, without its seed and confirmation (each test sets them).
CELL = ["--preset", "quick", "--datasets", "synthetic_tabular", "--archs", "fc", "--widths", "1", "--sparsities", "0.7",
        "--shadows", "1", "--attacks", "conf,mentr", "--max-epochs", "2", "--cpus-per-trial", "1",
        "--gpus-per-trial", "0"]
# Every weight pruned (round(s * n) = n in each layer): the pruned target's output is its biases', the same
# for every input, so an attack that reads only the outputs (top1_conf) scores every sample alike, while
# conf's per-class thresholds still separate the classes.
DEAD = ["--sparsities", "0.999999"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One artifact store for the module: originals are trained once for all tests."""
    return str(tmp_path_factory.mktemp("cache"))


def run(tmp_path, cache: str, name: str, *extra: str) -> int:
    return defense_search_main([*CELL, "--storage", str(tmp_path), "--name", name, "--cache", cache, *extra])


def load_study(experiment) -> optuna.Study:
    url = f"sqlite:///{experiment / STUDY_FILE}"
    (name,) = optuna.get_all_study_names(storage=url)
    return optuna.load_study(study_name=name, storage=url)


def pruned_rows(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[(rows["target_model"] == "pruned") & (rows["status"] == "ok")]


# ---- without Ray -----------------------------------------------------------------------------------------
def test_dry_run_describes_seeds_objective_and_confirmation(capsys):
    assert defense_search_main(["--defense", "ppb,adv", "--privacy-metric", "auc", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "means over seeds 0, 1" in out and "min best_attack_auc" in out
    assert "ppb: lambda in [0.25, 64] (log); adv: alpha in [0.25, 64] (log)" in out
    # The paper's grids of both defenses come first, in turn.
    assert re.search(r"starting points: ppb: lambda=1 \(paper_grid\); adv: alpha=0.5 \(paper_grid\); ppb: lambda=2", out)
    assert "held-out seeds 2, 3, 4" in out and "held out xent, top1_conf, top3_nn, nncls, blindmi, lira_offline, rmia_offline" in out


@pytest.mark.parametrize("argv, words", [
    (["--defense", "ppb", "--confirm-seeds", "1,5"], ["--confirm-seeds 1,5 overlaps --seeds 0,1 at 1"]),
    (["--defense", "ppb", "--confirm-seeds", "5"], ["at least 2 held-out seeds", "--confirm-top 0"]),
    (["--defense", "ppb", "--privacy-metric", "tpr_at_fpr_0.001"],
     ["cannot be measured on the 405 non-members", "needs at least 1000", "tpr_at_fpr_0.01"]),
    (["--defense", "ppb", "--defense-param", "lambda=1,4"], ["at most one setting per defense", "ppb lambda=1, ppb lambda=4"]),
    (["--defense", "basic,ppb"], ["defense='basic' has no search space"]),
    (["--defense", "ppb", "--confirm-attacks", "lira"], ["--confirm-attacks lira", "--references >= 2"]),
    (["--defense", "ppb", "--confirm-attacks", "nope"], ["--confirm-attacks 'nope' is not valid"]),
    (["--defense", "ppb,dp", "--point", "lambda=2,alpha=3"], ["not searched by one defense", "dp: noise_multiplier"]),
])
def test_bad_search_options_are_refused_before_ray(capsys, argv, words):
    with pytest.raises(SystemExit) as exit_:
        defense_search_main([*argv, "--dry-run"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err, err


def test_the_quick_search_is_the_defenses_preset_cell():
    from miaray.sweep import PRESETS

    quick, grid = SEARCH_PRESETS["quick"], PRESETS["defenses"]
    for axis in ("datasets", "archs", "methods", "sparsities", "widths", "num_shadows", "max_epochs", "attack_epochs"):
        assert getattr(quick, axis) == getattr(grid, axis), axis  # the same models: one store serves both
    assert quick.datasets == ("digits",) and quick.widths == (0.5,) and quick.sparsities == (0.9,)


def test_dataset_samples_give_the_readme_non_member_counts():
    from miaray.data.registry import load_dataset

    for name in ("digits", "synthetic_tabular"):
        assert len(load_dataset(name).y) == DATASET_SAMPLES[name]
    readme = {"digits": 405, "mnist5k": 1125, "cifar10": 13500, "svhn": 22340, "chmnist": 1125, "purchase": 44398,
              "texas": 15150, "location": 1128}
    for name, count in readme.items():
        arch = "fc" if name in ("purchase", "texas", "location") else "resnet18"
        assert target_nonmembers(UnitConfig(dataset=name, arch=arch)) == count, name


def test_default_confirm_attacks_are_held_out():
    cell = UnitConfig(dataset="digits", arch="resnet18", attacks=("conf", "mentr", "nn", "samia"), num_shadows=2)
    assert default_confirm_attacks(cell) == ("xent", "top1_conf", "top3_nn", "nncls", "blindmi", "lira_offline",
                                             "rmia_offline")
    one_shadow = UnitConfig(dataset="digits", arch="resnet18", attacks=("conf",), num_shadows=1)
    assert "rmia_offline" not in default_confirm_attacks(one_shadow)


def test_spread_keeps_both_ends():
    assert spread(3, 4) == [0, 1, 2]
    assert spread(9, 3) == [0, 4, 8]
    assert spread(5, 1) == [0]


def seed(acc: float, privacy: float, privacy_all: float | None = None) -> dict:
    return {"target_test_acc": acc, "privacy": privacy, "privacy_all": privacy if privacy_all is None else privacy_all,
            "strongest": "conf", "tpr": {"conf": 0.02, "lira_offline": 0.05}, "collapsed": []}


def test_a_lucky_search_value_is_flagged_and_a_typical_one_is_not():
    held_out = [seed(0.80, 0.050), seed(0.81, 0.060), seed(0.79, 0.055)]
    lucky = confirm_point(0.80, -0.200, held_out)  # one seed's draw far below what the setting does
    assert lucky["best_attack_advantage_excluded"] and lucky["flagged"]
    assert not lucky["target_test_acc_excluded"] and lucky["flag_reason"].startswith("privacy (searched attacks)")
    mean, low, high, n = t_interval([0.050, 0.060, 0.055])
    assert (lucky["confirmed_best_attack_advantage"], lucky["confirmed_best_attack_advantage_ci_low"],
            lucky["confirmed_best_attack_advantage_ci_high"], lucky["confirmed_n_seeds"]) == (mean, low, high, n)
    assert lucky["confirmed_best_tpr_attack"] == "lira_offline" and lucky["confirmed_best_tpr_at_fpr_0.01"] == pytest.approx(0.05)
    typical = confirm_point(0.80, 0.056, held_out)
    assert not typical["flagged"] and typical["flag_reason"] == ""
    # A held-out attack that leaks where the searched ones did not: flagged on all attacks only.
    leak = confirm_point(0.80, 0.056, [seed(0.8, 0.05, 0.30), seed(0.8, 0.06, 0.32), seed(0.8, 0.055, 0.31)])
    assert leak["all_attacks_excluded"] and not leak["best_attack_advantage_excluded"] and leak["flagged"]
    # Without held-out seeds nothing is confirmed, nothing flagged.
    none = confirm_point(0.80, 0.056, [])
    assert not none["confirmed"] and not none["flagged"] and math.isnan(none["confirmed_target_test_acc"])


# ---- end to end ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_seeds_store_per_seed_values_and_the_front_is_confirmed_on_held_out_seeds(ray_cluster, tmp_path, cache,
                                                                                        capsys):
    args = ["--seeds", "0,1", "--defense", "ppb", "--trials", "3", "--confirm-top", "2", "--confirm-seeds", "2,3",
            "--confirm-attacks", "top1_conf,lira_offline"]
    assert run(tmp_path, cache, "seeds", *args) == 0
    experiment = tmp_path / "seeds"
    study = load_study(experiment)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    rows = results.load(experiment)
    search = pruned_rows(rows[rows["search_phase"] == "search"])
    trials = pd.read_parquet(experiment / "trials.parquet").set_index("trial")
    for trial in study.trials:
        line = trials.loc[trial.number]
        assert line["seeds"] == "0,1"
        for s in (0, 1):  # each seed's values, as its unit's rows give them
            unit = search[(search["search_trial"] == trial.number) & (search["seed"] == s)]
            assert set(unit["attack"]) == {"conf", "mentr"}
            assert line[f"target_test_acc_seed{s}"] == unit["target_test_acc"].iloc[0]
            assert line[f"best_attack_advantage_seed{s}"] == unit["advantage"].max()
            assert line[f"strongest_attack_seed{s}"] == unit.loc[unit["advantage"].idxmax(), "attack"]
        # The objectives are the seed means.
        assert trial.values[0] == pytest.approx(np.mean([line["target_test_acc_seed0"], line["target_test_acc_seed1"]]))
        assert trial.values[1] == pytest.approx(np.mean([line["best_attack_advantage_seed0"],
                                                         line["best_attack_advantage_seed1"]]))
        assert line["conf_advantage"] == pytest.approx(search.loc[(search["search_trial"] == trial.number)
                                                                  & (search["attack"] == "conf"), "advantage"].mean())

    front = pd.read_parquet(experiment / "pareto.parquet")
    confirmed = front[front["confirmed"]]
    assert len(confirmed) == min(2, len(front)) >= 1
    confirm = pruned_rows(rows[rows["search_phase"] == "confirm"])
    # The confirmation ran on held-out seeds only, with the searched and the held-out attacks.
    assert set(confirm["seed"]) == {2, 3} and not set(confirm["seed"]) & {0, 1}
    assert set(confirm["attack"]) == {"conf", "mentr", "top1_conf", "lira_offline"}
    assert set(confirm.loc[confirm["search_origin"] == "baseline", "defense"]) == {"basic"}
    for _, point in confirmed.iterrows():
        mine = confirm[(confirm["search_trial"] == point["trial"]) & (confirm["search_origin"] == "confirm")]
        assert set(mine["seed"]) == {2, 3} and point["confirm_seeds"] == "2,3" and point["confirmed_n_seeds"] == 2
        assert (mine["defense_lambda"] == point["defense_lambda"]).all()
        accs = mine.groupby("seed")["target_test_acc"].first()
        assert (point["confirmed_target_test_acc"], point["confirmed_target_test_acc_ci_low"],
                point["confirmed_target_test_acc_ci_high"]) == pytest.approx(t_interval(accs)[:3])
        searched = mine[mine["attack"].isin(["conf", "mentr"])].groupby("seed")["advantage"].max()
        assert point["confirmed_best_attack_advantage"] == pytest.approx(searched.mean())
        every = mine.groupby("seed")["advantage"].max()
        assert point["confirmed_all_best_attack_advantage"] == pytest.approx(every.mean())
        tpr = mine.groupby("attack")["tpr_at_fpr_0.01"].mean()
        assert point["confirmed_best_tpr_attack"] == tpr.idxmax()
        assert point["confirmed_best_tpr_at_fpr_0.01"] == pytest.approx(tpr.max())
        assert point["flagged"] == (point["target_test_acc_excluded"] or point["best_attack_advantage_excluded"]
                                    or point["all_attacks_excluded"])
    assert (experiment / "pareto.png").stat().st_size > 10_000

    # The same command again: every unit's ok rows are on disk, nothing runs again.
    capsys.readouterr()
    assert run(tmp_path, cache, "seeds", *args) == 0
    out = capsys.readouterr().out
    units = 2 * (len(confirmed) + 1)
    assert f"{units} units, {units} from stored rows" in out
    assert pd.read_parquet(experiment / "pareto.parquet").drop(columns=[]).equals(front)


@pytest.mark.slow
def test_a_multi_defense_study_searches_each_defense_in_its_own_space_and_resumes(ray_cluster, tmp_path, cache):
    # DP with its noise held: its grid is one point and its space max_grad_norm, so free search starts at trial 6.
    args = ["--seeds", "0", "--defense", "ppb,dp", "--defense-param", "noise_multiplier=1", "--confirm-top", "0",
            "--privacy-metric", "tpr_at_fpr_0.01"]
    assert run(tmp_path, cache, "multi", *args, "--trials", "4") == 0
    experiment = tmp_path / "multi"
    first = {t.number: t for t in load_study(experiment).trials}
    assert [t.params for t in first.values()] == [
        {"defense": "ppb", "lambda": 1.0}, {"defense": "dp", "max_grad_norm": 1.0},
        {"defense": "ppb", "lambda": 2.0}, {"defense": "ppb", "lambda": 4.0}]

    assert run(tmp_path, cache, "multi", *args, "--trials", "8") == 0  # the same study, a larger budget
    study = load_study(experiment)
    trials = study.trials
    assert [t.number for t in trials] == list(range(8)) and all(t.state == TrialState.COMPLETE for t in trials)
    for number, old in first.items():  # kept as they were
        assert trials[number].values == old.values and trials[number].datetime_complete == old.datetime_complete
    assert [t.user_attrs["origin"] for t in trials] == ["paper_grid"] * 6 + ["search"] * 2
    spaces = {"ppb": SEARCH_SPACES["ppb"], "dp": {"max_grad_norm": SEARCH_SPACES["dp"]["max_grad_norm"]}}
    for trial in trials:  # each trial within its own defense's space, and nothing of the other's
        defense = trial.params["defense"]
        assert set(trial.params) == {"defense", *spaces[defense]}
        for name, (low, high) in spaces[defense].items():
            assert low <= trial.params[name] <= high
    assert {t.params["defense"] for t in trials} == {"ppb", "dp"}

    rows = results.load(experiment)
    ran = pruned_rows(rows[rows["search_phase"] == "search"])
    table = pd.read_parquet(experiment / "trials.parquet").set_index("trial")
    for trial in trials:
        unit = ran[ran["search_trial"] == trial.number]
        assert set(unit["defense"]) == {trial.params["defense"]}
        if trial.params["defense"] == "dp":
            assert (unit["defense_noise_multiplier"] == 1.0).all() and math.isnan(table.loc[trial.number, "defense_lambda"])
        # The privacy objective is the strongest attack's TPR at 1% FPR.
        assert trial.values[1] == unit["tpr_at_fpr_0.01"].max() == table.loc[trial.number, "best_attack_tpr_at_fpr_0.01"]
        assert table.loc[trial.number, "defense"] == trial.params["defense"]
    front = pd.read_parquet(experiment / "pareto.parquet")
    assert {"defense", "setting", "best_attack_tpr_at_fpr_0.01"} <= set(front.columns)
    assert set(front["defense"]) <= {"ppb", "dp"}
    for _, point in front.iterrows():  # the grid's defense front's way: every hyperparameter of the setting
        expected = {"ppb": f"lambda={point['defense_lambda']:g}", "dp": f"delta=1e-05, max_grad_norm="
                    f"{point['defense_max_grad_norm']:g}, noise_multiplier=1"}[point["defense"]]
        assert point["setting"] == expected


@pytest.mark.slow
def test_a_collapsed_attack_is_marked_and_left_out_of_the_grid_best_attack(ray_cluster, tmp_path, cache):
    argv = ["--datasets", "synthetic_tabular", "--archs", "fc", "--widths", "1", "--methods", "l1_unstructured", *DEAD,
            "--seeds", "0", "--shadows", "1", "--attacks", "conf,top1_conf", "--max-epochs", "2", "--storage",
            str(tmp_path), "--name", "grid", "--cache", cache, "--cpus-per-trial", "1", "--gpus-per-trial", "0"]
    assert full_grid_main(argv) == 0
    rows = results.load(tmp_path / "grid")
    pruned = rows[rows["target_model"] == "pruned"].set_index("attack")
    assert pruned.loc["top1_conf", "attack_status"] == "collapsed"
    assert pruned.loc["top1_conf", "attack_note"] == "constant scores on the target"
    assert (pruned.loc["top1_conf", "attack_auc"], pruned.loc["top1_conf", "advantage"]) == (0.5, 0.0)
    assert pruned.loc["conf", "attack_status"] == "ok" and pruned.loc["conf", "attack_note"] == ""
    assert set(rows.loc[rows["target_model"] == "original", "attack_status"]) == {"ok"}  # the unpruned target is not dead
    head = headline(rows.to_dict("records"))
    assert head["best_attack"] == "conf" and head["best_attack_acc"] == pruned.loc["conf", "attack_acc"]
    assert head["collapsed_attacks"] == "top1_conf"
    assert cell_summary(rows)["best_attack"].tolist() == ["conf"]
    # With only the collapsed attack left, there is no best attack (it used to report 0.5 as a result).
    alone = headline(rows[~((rows["target_model"] == "pruned") & (rows["attack"] == "conf"))].to_dict("records"))
    assert alone["best_attack"] == "" and math.isnan(alone["best_attack_acc"])


@pytest.mark.slow
def test_a_collapsed_attack_is_left_out_of_the_search_objective(ray_cluster, tmp_path, cache):
    common = [*DEAD, "--seeds", "0", "--defense", "ppb", "--trials", "1", "--confirm-top", "0"]
    with pytest.warns(CollapsedAttackWarning, match="attack top1_conf collapsed"):
        assert run(tmp_path, cache, "mixed", *common, "--attacks", "conf,top1_conf") == 0
    (trial,) = load_study(tmp_path / "mixed").trials
    rows = pruned_rows(results.load(tmp_path / "mixed"))
    unit = rows[rows["search_trial"] == 0].set_index("attack")
    assert unit.loc["top1_conf", "attack_status"] == "collapsed"
    assert trial.state == TrialState.COMPLETE and trial.user_attrs["strongest_attack"] == "conf"
    assert trial.values[1] == unit.loc["conf", "advantage"]
    table = pd.read_parquet(tmp_path / "mixed" / "trials.parquet")
    assert table["collapsed_attacks"].tolist() == ["top1_conf@seed0: constant scores on the target"]
    assert unit_outcome(unit.reset_index()[lambda f: f["attack"] == "top1_conf"].to_dict("records")).startswith(
        "every attack collapsed: top1_conf (constant scores on the target)")

    # Every attack collapsed: no objective, the trial fails with the reason (no front: exit status 1).
    with pytest.warns(CollapsedAttackWarning):
        assert run(tmp_path, cache, "dead", *common, "--attacks", "top1_conf") == 1
    (trial,) = load_study(tmp_path / "dead").trials
    assert trial.state == TrialState.FAIL and trial.user_attrs["error"].startswith("every attack collapsed: top1_conf")


def test_non_finite_scores_are_a_collapsed_attack_in_the_unit_rows(tmp_path, monkeypatch):
    from miaray.attacks.threshold import MentrAttack
    from miaray.store import Store
    from miaray.unit import run_unit

    monkeypatch.setattr(MentrAttack, "predict_proba", lambda self, signals: np.full(len(signals), np.nan))
    unit = UnitConfig(dataset="synthetic_tabular", arch="fc", sparsity=0.7, num_shadows=1, attacks=("conf", "mentr"),
                      original_attacks=("conf",), train=TrainConfig(max_epochs=2))
    with pytest.warns(UserWarning, match="attack mentr collapsed"):
        rows = run_unit(unit, store=Store(tmp_path))
    mentr = next(r for r in rows if r["attack"] == "mentr")
    assert mentr["attack_status"] == "collapsed" and "non-finite" in mentr["attack_note"]
    assert math.isnan(mentr["advantage"]) and mentr["n_nonmembers"] > 0 and mentr["status"] == "ok"
    assert headline(rows)["best_attack"] == "conf"
    assert unit_outcome(rows).attack == "conf"


@pytest.mark.slow
def test_a_planted_winners_curse_point_is_flagged_by_the_confirmation(ray_cluster, tmp_path, cache):
    args = ["--seeds", "0", "--defense", "ppb", "--trials", "2"]
    assert run(tmp_path, cache, "curse", *args, "--confirm-top", "0") == 0
    experiment = tmp_path / "curse"
    study = load_study(experiment)
    best_acc = max(t.values[0] for t in study.trials)
    # A point whose search value was a lucky draw: lambda=3 told with an advantage no seed reaches.
    study.add_trial(optuna.trial.create_trial(
        params={"lambda": 3.0}, distributions={"lambda": FloatDistribution(0.25, 64.0, log=True)},
        values=[best_acc, -0.9], user_attrs={"origin": "user", "defense": "ppb", "seeds": [0]}))
    planted = study.trials[-1].number

    # The same search, confirmed: nothing is left of the budget, the front runs on held-out seeds 1-3.
    assert run(tmp_path, cache, "curse", *args, "--confirm-top", "3", "--confirm-seeds", "1,2,3",
               "--confirm-attacks", "top1_conf") == 0
    assert len(load_study(experiment).trials) == 3
    front = pd.read_parquet(experiment / "pareto.parquet").set_index("trial")
    point = front.loc[planted]
    assert point["confirmed"] and point["confirmed_n_seeds"] == 3 and point["best_attack_advantage"] == -0.9
    assert point["best_attack_advantage_excluded"] and point["flagged"]
    assert point["confirmed_best_attack_advantage_ci_low"] > -0.9
    assert "privacy (searched attacks)" in point["flag_reason"]
