"""The defense search end to end: real Optuna (SQLite study), real local Ray, real units (tiny settings).

Each defense runs in one scenario: PPB resumes a shorter budget, DP meets a real divergence, ADV
survives a SIGKILL of its driver. Every scenario then checks the outputs against a brute force.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from miaray import results
from miaray.search import STUDY_FILE, defense_search_main

REPO = Path(__file__).resolve().parents[1]
# One cell, as small as the real code paths allow: the (256, 128) fc net on synthetic_tabular, one seed,
# 1 shadow, 2 epochs (1 of fine-tuning), 2 attacks; no confirmation unless a test asks for one.
TINY = ["--preset", "quick", "--datasets", "synthetic_tabular", "--archs", "fc", "--widths", "1", "--sparsities", "0.7",
        "--seeds", "0", "--shadows", "1", "--attacks", "conf,mentr", "--max-epochs", "2",
        "--cpus-per-trial", "1", "--gpus-per-trial", "0", "--confirm-top", "0"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One artifact store for the module: the originals are trained once for all scenarios."""
    return tmp_path_factory.mktemp("cache")


def search_args(storage: Path, cache: Path, defense: str, trials: int, *extra: str) -> list[str]:
    return [*TINY, "--defense", defense, "--trials", str(trials), "--storage", str(storage),
            "--name", defense, "--cache", str(cache), *extra]


def load_study(experiment: Path, defense: str) -> optuna.Study:
    names = optuna.get_all_study_names(storage=f"sqlite:///{experiment / STUDY_FILE}")
    (name,) = [n for n in names if n.startswith(defense)]
    return optuna.load_study(study_name=name, storage=f"sqlite:///{experiment / STUDY_FILE}")


def dominated(p: tuple[float, float], q: tuple[float, float]) -> bool:
    """q dominates p for (accuracy up, advantage down)."""
    return q[0] >= p[0] and q[1] <= p[1] and (q[0] > p[0] or q[1] < p[1])


def check_outputs(experiment: Path, study: optuna.Study) -> pd.DataFrame:
    """The front equals the brute-force front over all complete trials; rows and plot are there."""
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    points = {t.number: tuple(t.values) for t in complete}
    expected = {n for n, p in points.items() if not any(dominated(p, q) for m, q in points.items() if m != n)}
    front = pd.read_parquet(experiment / "pareto.parquet")
    assert set(front["trial"]) == expected and expected
    for _, line in front.iterrows():
        assert (line["target_test_acc"], line["best_attack_advantage"]) == points[line["trial"]]
        # The objective is the largest advantage at the attacks' own decisions (TPR - FPR), not the
        # per-attack oracle bound max_advantage.
        assert line["best_attack_advantage"] == max(line["conf_advantage"], line["mentr_advantage"])
        for attack in ("conf", "mentr"):
            assert line[f"{attack}_advantage"] == pytest.approx(line[f"{attack}_tpr"] - line[f"{attack}_fpr"])
            assert line[f"{attack}_max_advantage"] >= line[f"{attack}_advantage"]
    rows = results.load(experiment)
    assert set(rows["search_trial"].dropna().astype(int)) >= set(points)
    assert (rows["search_origin"] == "baseline").any()  # the undefended reference unit
    ok_units = set(rows.loc[rows["status"] == "ok", "unit_id"])
    for kind in ("signals", "roc"):  # per-sample signals and ROC curves of every unit that ran, as a sweep's
        assert {p.stem for p in (experiment / kind).glob("*.parquet")} >= ok_units
    assert (experiment / "pareto.png").stat().st_size > 10_000
    return front


def test_budget_extension_resumes_and_free_search_follows_the_grid(ray_cluster, tmp_path, cache):
    assert defense_search_main(search_args(tmp_path, cache, "ppb", 2)) == 0
    first = {t.number: t for t in load_study(tmp_path / "ppb", "ppb").trials}
    assert [t.params["lambda"] for t in first.values()] == [1.0, 2.0]  # the paper's grid comes first

    assert defense_search_main(search_args(tmp_path, cache, "ppb", 6)) == 0
    study = load_study(tmp_path / "ppb", "ppb")
    counted = [t for t in study.trials if t.state.is_finished()]
    assert [t.number for t in counted] == list(range(6))
    for number, old in first.items():  # finished trials are kept as they were
        assert study.trials[number].values == old.values
        assert study.trials[number].datetime_complete == old.datetime_complete
    assert [t.user_attrs["origin"] for t in counted] == ["paper_grid"] * 5 + ["search"]
    assert [t.params["lambda"] for t in counted[:5]] == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert 0.25 <= counted[5].params["lambda"] <= 64.0
    front = check_outputs(tmp_path / "ppb", study)
    assert {"defense_lambda", "target_test_acc", "conf_attack_auc", "mentr_tpr_at_fpr_0.01"} <= set(front.columns)


def test_diverging_trial_is_failed_and_the_search_goes_on(ray_cluster, tmp_path, cache):
    # Noise 1e40 overflows float32: the DP-SGD step turns the weights, then the loss, into NaN/inf.
    args = search_args(tmp_path, cache, "dp", 2, "--point", "noise_multiplier=1e40")
    with pytest.warns(UserWarning, match="out of range"):  # Optuna's note: the point leaves the space
        assert defense_search_main(args) == 0
    study = load_study(tmp_path / "dp", "dp")
    failed, done = study.trials
    assert failed.state == TrialState.FAIL
    assert failed.params == {"noise_multiplier": 1e40, "max_grad_norm": 1.0}  # unnamed: the default
    assert "loss" in failed.user_attrs["error"]
    assert done.state == TrialState.COMPLETE and done.params == {"noise_multiplier": 0.01, "max_grad_norm": 1.0}
    rows = results.load(tmp_path / "dp")
    assert set(rows.loc[rows["search_trial"] == 0, "status"]) == {"failed"}
    front = check_outputs(tmp_path / "dp", study)
    assert (front["epsilon"] > 0).all()
    trials = pd.read_parquet(tmp_path / "dp" / "trials.parquet")
    assert trials.set_index("trial")["state"].to_dict() == {0: "FAIL", 1: "COMPLETE"}


def _states(db: Path) -> dict[int, str]:
    """Trial number -> state, read-only (the study has one writer, the driver); {} before it exists."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            return dict(con.execute("SELECT number, state FROM trials").fetchall())
    except sqlite3.OperationalError:  # no file or no tables yet, or locked by a write in progress
        return {}


def test_killed_driver_resumes_without_losing_or_leaving_trials(ray_cluster, tmp_path, cache):
    args = search_args(tmp_path, cache, "adv", 3, "--concurrency", "1")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    driver = subprocess.Popen([sys.executable, str(REPO / "sweeps" / "defense_search.py"), *args], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = tmp_path / "adv" / STUDY_FILE
    deadline = time.monotonic() + 240  # a new driver's Ray workers start cold: slow on a busy machine
    try:
        # Kill once trial 0 is told and trial 1 is running: one finished and one orphaned trial.
        while (states := _states(db)).get(0) != "COMPLETE" or states.get(1) != "RUNNING":
            assert driver.poll() is None, "the driver ended before the kill"
            assert time.monotonic() < deadline, "trial 0 did not finish in time"
            time.sleep(0.1)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    before = load_study(tmp_path / "adv", "adv").trials[0]

    assert defense_search_main(args) == 0  # the same command
    study = load_study(tmp_path / "adv", "adv")
    trials = study.trials
    assert trials[0].values == before.values and trials[0].datetime_complete == before.datetime_complete
    assert trials[1].state == TrialState.FAIL and all(t.state != TrialState.RUNNING for t in trials)
    assert study.user_attrs["interrupted"] == [1]
    # The orphan's work (grid point alpha=1) runs next, as trial 2; its params may not have been
    # written yet when the kill came, so compare with the grid, not with trials[1].params.
    (reasked,) = [t for t in trials if t.user_attrs.get("reasked_from") == 1]
    assert reasked.number == 2 and reasked.params == {"alpha": 1.0} and reasked.state == TrialState.COMPLETE
    table = pd.read_parquet(tmp_path / "adv" / "trials.parquet")  # the budget excludes the orphan
    assert table["trial"].tolist() == [0, 2, 3] and table["defense_alpha"].tolist() == [0.5, 1.0, 2.0]
    assert set(table["origin"]) == {"paper_grid"}
    check_outputs(tmp_path / "adv", study)


def test_the_printed_front_is_ordered_by_accuracy_then_trial_not_by_completion():
    from miaray.search import ADVANTAGE, pareto_table

    # Completion order 3, 2, 1; trials 1 and 3 are the same point, so both are on the front.
    table = pd.DataFrame({"trial": [3, 2, 1], "state": ["COMPLETE"] * 3, "on_front": [True] * 3,
                          "target_test_acc": [0.9, 0.8, 0.9], ADVANTAGE: [0.2, 0.1, 0.2]})
    assert list(pareto_table(table)["trial"]) == [1, 3, 2]
