"""The distributed sweep on a real local Ray instance (2 CPUs, 1 fake GPU) with tiny units."""

import dataclasses
import json
import math
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from miaray import results
from miaray.config import stable_hash
from miaray.search import defense_search_main
from miaray.store import Store
from miaray.sweep import (PRESETS, Plan, RunSettings, cell_summary, full_grid_main, method_pairs, run_sweep,
                          sparsity_matrix, sweep_jobs, unknown_pruning_main)
from miaray.sweep.cluster import cluster_info, resource_problems
from miaray.vocabulary import METHODS

ROOT = Path(__file__).resolve().parents[1]
ATTACKS = ("conf",)
# Narrow nets, one epoch, the cheapest attack: every real stage runs, a cell takes seconds on a CPU.
# The quick preset narrowed by TINY_ARGS: the scripts' flags and this spec name the same cells.
TINY = dataclasses.replace(PRESETS["quick"], datasets=("digits",), archs=("resnet18",),
                           methods=("l1_unstructured", "l1_structured"), sparsities=(0.5, 0.9), widths=(0.125,),
                           attacks=ATTACKS, max_epochs=1)
TINY_ARGS = ["--datasets", "digits", "--archs", "resnet18", "--methods", "l1_unstructured,l1_structured",
             "--sparsities", "0.5,0.9", "--width", "0.125", "--attacks", ",".join(ATTACKS), "--max-epochs", "1"]


def _script(name: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "sweeps" / name), *args], capture_output=True,
                          text=True, timeout=kwargs.pop("timeout", 300), **kwargs)


# ---- plans and configuration (no Ray) -----------------------------------------------------------
def test_paper_dry_run_counts_the_255_pruned_models():
    out = _script("full_grid.py", "--preset", "paper", "--dry-run", timeout=120)
    assert out.returncode == 0, out.stderr
    assert "pruned target models: 255 (l1_unstructured 75, l1_structured 60, l2_structured 60, slimming 60)" \
        in out.stdout
    assert "originals: 90" in out.stdout and "pruned shadow models: 1275" in out.stdout
    assert "Ray instance" not in out.stdout + out.stderr  # a dry run starts nothing

    plan = Plan.of(PRESETS["paper"].cells())
    table = plan.table()
    pairs = table.drop(index="total")
    assert len(pairs) == 15 and (pairs["originals"] == 6).all()
    assert table.loc[("total", ""), list(METHODS)].to_dict() == {"l1_unstructured": 75, "l1_structured": 60,
                                                       "l2_structured": 60, "slimming": 60}
    tabular = pairs.loc[["purchase", "texas", "location"]]
    assert set(tabular.index.get_level_values("arch")) == {"fc"} and (tabular["l1_unstructured"] == 5).all()


def test_sweep_trials_build_the_missing_models_first_then_cells_sparsest_first(tmp_path):
    plan = Plan.of(sparsity_matrix(TINY))
    store = Store(tmp_path)
    done = next(iter(plan.originals.values()))  # one original already in the store, with its signals
    for key in (done[0].original_key(done[1]), {**done[0].original_key(done[1]), "kind": "signals"}):
        store.get_or_build(key, lambda: ({}, {}))
    jobs = [json.loads(job) for job in sweep_jobs(plan, store)]
    builds = [job["build"] for job in jobs if job["build"] is not None]
    assert [b["pruned"] for b in builds] == [False] * 5 + [True] * len(plan.shared_pruned())
    assert done[1] not in [b["role"] for b in builds if not b["pruned"]]
    assert all(job["build"] is not None for job in jobs[:len(builds)])  # every build before any cell
    cells = jobs[len(builds):]
    assert len(cells) == len(plan.cells)
    sparsities = [job["unit"]["sparsity"] for job in cells]
    assert sparsities == sorted(sparsities, reverse=True)


def test_unknown_pruning_plan_shares_shadows_and_draws_seeded_pairs():
    matrix = sparsity_matrix(TINY)
    assert len(matrix) == 2 * 2 * 3  # methods x target sparsities x shadow sparsities {0, 0.5, 0.9}
    assert {c.resolved_shadow_sparsity for c in matrix} == {0.0, 0.5, 0.9}
    diagonal = [c for c in matrix if c.resolved_shadow_sparsity == c.sparsity]
    assert {c.unit_id() for c in diagonal} == {c.unit_id() for c in TINY.cells()}  # same cells as the grid
    plan = Plan.of(matrix)
    assert len(plan.originals) == 6
    # Each pruned shadow set serves two targets, each pruned target three shadow sparsities.
    assert len(plan.shared_pruned()) == 2 * 2 * 5 + 2 * 2

    pairs = method_pairs(TINY, pairs=20, seed=0)
    # TINY has 4 (method, sparsity) settings: 4 x 4 = 16 (target, shadow) draws, less the 4 that pair a
    # setting with itself (the known cell, not an unknown one), which are no longer drawn: 12, all once.
    assert len(pairs) == 12
    wide = dataclasses.replace(TINY, methods=METHODS, sparsities=(0.5, 0.6, 0.7, 0.8, 0.9))
    first, again = method_pairs(wide, pairs=20, seed=0), method_pairs(wide, pairs=20, seed=0)
    assert len(first) == 20 and [u.unit_id() for _, u in first] == [u.unit_id() for _, u in again]
    assert [u.unit_id() for _, u in first] != [u.unit_id() for _, u in method_pairs(wide, pairs=20, seed=1)]
    assert all(k.shadow_method is None and k.shadow_sparsity is None for k, _ in first)


def test_method_pairs_never_pair_a_target_with_its_own_setting():
    wide = dataclasses.replace(TINY, datasets=("digits", "purchase"), archs=("resnet18", "fc"), methods=METHODS,
                               sparsities=(0.5, 0.6, 0.7, 0.8, 0.9), seeds=(0, 1))
    for spec, pairs in ((wide, 20), (TINY, 1000)):
        drawn = method_pairs(spec, pairs=pairs, seed=3)
        assert drawn, spec
        for known, unknown in drawn:
            shadow = (unknown.resolved_shadow_method, unknown.resolved_shadow_sparsity)
            assert shadow != (known.method, known.sparsity)
            assert unknown.unit_id() != known.unit_id()
        assert [(k.unit_id(), u.unit_id()) for k, u in drawn] == \
            [(k.unit_id(), u.unit_id()) for k, u in method_pairs(spec, pairs=pairs, seed=3)]  # seeded
    # Per (dataset, arch, seed): digits/resnet18 draws 20 of its 20 x 19 distinct pairs; purchase/fc has
    # l1_unstructured only, so 5 x 4 = 20 exist and all are drawn.
    per_model = Counter((k.dataset, k.seed) for k, _ in method_pairs(wide, pairs=20, seed=3))
    assert per_model == {(d, s): 20 for d in ("digits", "purchase") for s in (0, 1)}
    # More pairs asked than exist: capped at the 12 distinct non-self pairs of TINY, each drawn once.
    capped = method_pairs(TINY, pairs=1000, seed=3)
    assert len(capped) == 12 and len({u.unit_id() for _, u in capped}) == 12
    assert {(k.method, k.sparsity, u.resolved_shadow_method, u.resolved_shadow_sparsity) for k, u in capped} == {
        (tm, ts, sm, ss) for tm in TINY.methods for ts in TINY.sparsities for sm in TINY.methods
        for ss in TINY.sparsities if (tm, ts) != (sm, ss)}


@pytest.mark.parametrize("args, words", [
    (["--methods", "random"], ["methods='random'", "l1_unstructured", "slimming"]),
    (["--datasets", "purchase", "--archs", "resnet18"], ["grid is empty", "fc"]),
    (["--sparsities", "0.5,1.5"], ["--sparsities=1.5"]),
    (["--defense", "ppb", "--defense-param", "alpha=2"], ["--defense-param alpha=2", "belongs to adv", "--defenses (ppb)"]),
    (["--defense-param", "lambda=4"], ["--defense-param lambda=4", "belongs to ppb", "--defenses (basic)"]),
    (["--defenses", "basic,dropout"], ["--defenses='dropout'", "ppb"]),
    (["--defenses", "ppb", "--defense-param", "lambda=1,x"], ["--defense-param 'lambda=1,x'", "NAME=VALUE[,VALUE...]"]),
    (["--defenses", "ppb", "--defense-param", "lambda=1", "--defense-param", "lambda=4"],
     ["--defense-param names 'lambda' twice", "lambda=1,4"]),
    (["--defenses", "ppb", "--defense-param", "gamma=1"], ["no defense takes 'gamma'", "alpha, k (adv)"]),
    (["--defenses", "ppb", "--defense-param", "lambda=1,-4"], ["lambda=-4.0"]),
    (["--defenses", "ppb", "--adaptive", "maybe"], ["--adaptive='maybe'", "no, yes"]),
    (["--cpus-per-trial", "0"], ["--cpus-per-trial", "(0, 1024]"]),
    (["--cpus-per-trial", "-1"], ["--cpus-per-trial", "(0, 1024]"]),
    (["--cpus-per-trial", "nan"], ["--cpus-per-trial", "(0, 1024]"]),
    (["--gpus-per-trial", "-0.5"], ["--gpus-per-trial", "[0, 1]"]),
    (["--gpus-per-trial", "nan"], ["--gpus-per-trial", "[0, 1]"]),
    (["--gpus-per-trial", "2"], ["--gpus-per-trial", "[0, 1]"]),
    (["--retries", "-1"], ["--retries", "integer >= 0"]),
    (["--shadows", "0"], ["--shadows=0 is not valid", "integer in [1, 199]"]),
    (["--max-epochs", "0"], ["--max-epochs", "integer >= 1"]),
    (["--name", "../../x"], ["--name", "one folder name under --storage"]),
    (["--name", "/tmp/elsewhere"], ["--name", "one folder name under --storage"]),
])
@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]])
def test_bad_config_is_rejected_before_ray_starts(tmp_path, capsys, args, words, dry_run):
    with pytest.raises(SystemExit) as exit_info:
        full_grid_main([*args, *dry_run, "--storage", str(tmp_path / "results")])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    for word in words:
        assert word in message
    assert not (tmp_path / "results").exists()  # rejected before connecting or writing anything


@pytest.mark.parametrize("main, args, words", [
    (unknown_pruning_main, ["--pairs", "0"], ["--pairs", "integer >= 1"]),
    (unknown_pruning_main, ["--retries", "-2"], ["--retries", "integer >= 0"]),
    (defense_search_main, ["--defense", "ppb", "--trials", "0"], ["--trials", "integer >= 1"]),
    (defense_search_main, ["--defense", "ppb", "--concurrency", "0"], ["--concurrency", "integer >= 1"]),
    (defense_search_main, ["--defense", "ppb", "--cpus-per-trial", "0"], ["--cpus-per-trial", "(0, 1024]"]),
])
def test_the_other_scripts_reject_out_of_range_options_in_a_dry_run(tmp_path, capsys, main, args, words):
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--dry-run", "--storage", str(tmp_path / "results")])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    for word in words:
        assert word in message


def test_the_cell_table_is_sorted_by_the_cells_not_by_completion():
    # Rows as a sweep leaves them when seeds finished in the order 0, 1, 4, 3, 2 (seen in a real run).
    rows = [{"unit_id": f"u{seed}-{sparsity}", "dataset": "digits", "arch": "resnet18", "width": 0.125,
             "method": "l1_unstructured",
             "sparsity": sparsity, "split_ratio": "45/45/10", "shadow_method": "l1_unstructured",
             "shadow_sparsity": sparsity, "defense": "basic", "seed": seed, "status": "ok", "error": "",
             "target_model": model, "attack": "conf", "attack_acc": 0.5 + seed / 100, "target_test_acc": 0.8}
            for seed in (0, 1, 4, 3, 2) for sparsity in (0.9, 0.5) for model in ("pruned", "original")]
    table = cell_summary(pd.DataFrame(rows))
    assert list(zip(table["sparsity"], table["seed"])) == [(s, seed) for s in (0.5, 0.9) for seed in range(5)]
    assert table.equals(cell_summary(pd.DataFrame(rows[::-1])))  # whatever order the rows came in


def test_resources_no_node_has_are_refused_naming_what_was_asked_and_what_exists(ray_cluster):
    info = cluster_info()  # this session's instance: 2 CPUs, 1 (fake) GPU, no autoscaler config
    fits = RunSettings(experiment="x", store="y", data_root=None, cpus_per_trial=2, gpus_per_trial=1)
    assert resource_problems(fits, info) == []
    problems = resource_problems(dataclasses.replace(fits, cpus_per_trial=3, gpus_per_trial=0.5), info)
    assert problems == ["--cpus-per-trial 3: each trial asks 3 CPU, but the cluster has 2 CPUs on 1 node(s) and no "
                        "node has more than 2; ask at most 2"]


def test_defenses_are_an_axis_and_share_the_undefended_models():
    spec = dataclasses.replace(PRESETS["defenses"], seeds=(0, 1))
    cells = spec.cells()
    # Per seed: Basic once, and each of the 7 defended settings with undefended and with adaptive shadows.
    assert len(cells) == 2 * (1 + 7 * 2)
    assert Counter((c.defense, c.adaptive) for c in cells) == {
        ("basic", False): 2, ("ppb", False): 6, ("ppb", True): 6, ("dp", False): 4, ("dp", True): 4,
        ("adv", False): 4, ("adv", True): 4}
    plan = Plan.of(cells)
    assert len(plan.originals) == 2 * 3  # a target and two shadows per seed, whatever the defense
    # Pruned per seed: 8 targets (Basic + 7 settings; adaptive or not attacks the same target), the 2 undefended
    # shadows (shared by Basic and the 7 non-adaptive cells) and 2 defended shadows per adaptive cell.
    assert len(plan.pruned) == 2 * (8 + 2 + 7 * 2)
    undefended_shadow = cells[0].model_key("shadow0")
    assert plan.users[stable_hash(undefended_shadow)] == 1 + 7
    assert "cells per defense setting: basic 2; ppb lambda=1 2; ppb lambda=1 adaptive 2" in plan.describe()


# ---- sweeps on Ray --------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_defense_grid_runs_each_setting_and_builds_each_model_once(ray_cluster, tmp_path, capsys):
    """Two defenses with two values each, undefended and adaptive shadows, through the script's main."""
    args = [*TINY_ARGS, "--methods", "l1_unstructured", "--sparsities", "0.9", "--shadows", "1",
            "--defenses", "basic,ppb,adv", "--defense-param", "lambda=1,4", "--defense-param", "alpha=1,2",
            "--adaptive", "no,yes", "--gpus-per-trial", "0", "--storage", str(tmp_path), "--name", "defenses"]
    assert full_grid_main(args) == 0
    printed = capsys.readouterr().out
    assert "cells per defense setting: basic 1; ppb lambda=1 1; ppb lambda=1 adaptive 1" in printed
    store = Store(tmp_path / "cache")
    assert store.count_built("original") == 2  # the target and its shadow, shared by the 9 cells
    # Targets: Basic + 4 settings; shadows: the undefended one + one per adaptive cell (4).
    assert store.count_built("pruned") == 5 + 1 + 4
    df = results.load(tmp_path / "defenses")
    assert (df["status"] == "ok").all()
    pruned = df[df["target_model"] == "pruned"]
    cells = {(r.defense, r.defense_lambda if r.defense == "ppb" else r.defense_alpha, r.adaptive)
             for r in pruned.itertuples()}
    nan = math.nan
    expected = {("basic", nan, False), *{(d, v, a) for d in ("ppb", "adv") for v in (1.0, 2.0 if d == "adv" else 4.0)
                                          for a in (False, True)}}
    assert len(cells) == len(expected) == 9
    assert {c for c in cells if c[0] != "basic"} == {c for c in expected if c[0] != "basic"}



@pytest.fixture(scope="module")
def packed_sweep(ray_cluster, tmp_path_factory):
    """The tiny grid with half a CPU per trial (four cells fit at once), and last a cell that raises:
    its dataset file exists in the real layout but is broken."""
    root = tmp_path_factory.mktemp("packed")
    (root / "data").mkdir()
    (root / "data" / "bangkok").write_text("this is not the Location30 CSV\n")
    broken = TINY.unit(dataset="location", arch="fc", method="l1_unstructured", sparsity=0.5)
    settings = RunSettings(experiment=str(root / "exp"), store=str(root / "cache"), data_root=str(root / "data"),
                           cpus_per_trial=0.5, gpus_per_trial=0)
    df = run_sweep(cells=[*TINY.cells(), broken], settings=settings, resume=False, retries=0)
    return df, settings, broken


def test_small_grid_trains_each_original_once(packed_sweep, ray_cluster):
    df, settings, broken = packed_sweep
    store = Store(settings.store)
    assert store.count_built("original") == 6  # one target + five shadows, shared by the four cells
    assert store.count_built("pruned") == 4 * 6
    assert len(results.unit_files(settings.experiment)) == 5
    digits = df[df["dataset"] == "digits"]
    assert (digits["status"] == "ok").all()
    for _, rows in digits.groupby("unit_id"):
        assert sorted(rows["attack"]) == sorted([*ATTACKS, "conf"])  # the attacks + the Conf (Org.) row
        assert (rows["target_model"] == "original").sum() == 1
        assert rows["trial_end"].gt(rows["trial_start"]).all()
    # The Ray node beside the host name: nodes behind one host name are told apart.
    assert set(df["trial_node_id"]) == {ray_cluster.get_runtime_context().get_node_id()}


def test_half_cpu_trials_run_four_at_once(packed_sweep):
    _, settings, _ = packed_sweep
    # Every trial that finished (model builds and cells) reported its span; Tune logs it per trial.
    spans = [(r["trial_start"], r["trial_end"]) for f in Path(settings.experiment).glob("tune/*/*/result.json")
             for r in map(json.loads, f.read_text().splitlines())]
    assert len(spans) == 6 + 4  # the digits originals and cells (the broken location trials fail)
    running = max(sum(start <= t < end for start, end in spans) for t, _ in spans)
    assert running == 4, sorted(spans)  # four 0.5-CPU trials at once on the 2 CPUs, never more


def test_a_raising_trial_is_recorded_and_the_others_finish(packed_sweep):
    df, _, broken = packed_sweep
    failed = df[df["unit_id"] == broken.unit_id()]
    assert len(failed) == len(ATTACKS) and (failed["status"] == "failed").all()
    assert failed["error"].str.contains("Error: location: .*bangkok has 0 feature columns").all(), \
        failed["error"].iloc[0]
    assert df.loc[df["unit_id"] != broken.unit_id(), "status"].eq("ok").all()


def test_a_finished_experiment_rerun_with_a_lost_store_keeps_its_rows_and_runs_nothing(packed_sweep, tmp_path):
    df, settings, _ = packed_sweep
    # The store is gone (a fresh folder): a sweep that trusted anything but the rows would rebuild and rerun.
    lost = dataclasses.replace(settings, store=str(tmp_path / "lost-store"))
    again = run_sweep(cells=TINY.cells(), settings=lost, resume=True, retries=0)
    assert Store(lost.store).events() == []  # no model built, so no cell ran
    before = df[df["dataset"] == "digits"].sort_values(["unit_id", "attack", "target_model"], ignore_index=True)
    after = again.sort_values(["unit_id", "attack", "target_model"], ignore_index=True)
    assert after[["unit_id", "trial_id", "trial_end", "attack_acc"]].equals(
        before[["unit_id", "trial_id", "trial_end", "attack_acc"]])


def test_failed_rows_never_replace_ok_rows(tmp_path):
    experiment = tmp_path / "exp"
    ok = [{"unit_id": "u", "attack": "conf", "status": "ok", "error": "", "attack_acc": 0.7}]
    failed = [{"unit_id": "u", "attack": "conf", "status": "failed", "error": "RuntimeError: store damaged"}]
    results.write_unit_rows(experiment=experiment, unit_id="u", rows=failed)  # a first try failed
    results.write_unit_rows(experiment=experiment, unit_id="u", rows=ok)      # the retry succeeded: replaces
    path = results.write_unit_rows(experiment=experiment, unit_id="u", rows=failed)  # a later rerun fails
    assert path == f"{experiment}/failures/u.parquet"
    assert results.load(experiment).to_dict("records") == ok  # each unit's rows once, the ok ones
    assert results.load_failures(experiment)[["unit_id", "status", "error"]].to_dict("records") == [
        {"unit_id": "u", "status": "failed", "error": "RuntimeError: store damaged"}]
    assert results.load_failures(tmp_path / "no-failures").empty


def test_a_gpu_trial_without_cuda_fails_with_the_reason(packed_sweep, tmp_path):
    _, settings, _ = packed_sweep
    # This session's Ray has one fake GPU and torch no CUDA: the trial gets a GPU it cannot use.
    on_gpu = dataclasses.replace(settings, experiment=str(tmp_path / "exp"), gpus_per_trial=0.5)
    df = run_sweep(cells=TINY.cells()[:1], settings=on_gpu, resume=False, retries=0)  # its models are cached
    assert (df["status"] == "failed").all() and len(df) == len(ATTACKS)
    error = df["error"].iloc[0]
    assert "asked for 0.5 GPU" in error and "finds no CUDA device" in error, error
    assert "pass --gpus-per-trial 0" in error


def test_resume_after_the_driver_is_killed_reruns_no_finished_cell(ray_cluster, tmp_path):
    storage, cache = tmp_path / "results", tmp_path / "cache"
    # The driver joins this session's Ray by address: another Ray on the machine may be the "auto" one.
    address = ray_cluster.get_runtime_context().gcs_address
    args = [*TINY_ARGS, "--shadows", "1", "--storage", str(storage), "--cache", str(cache), "--name", "killed",
            "--cpus-per-trial", "1", "--gpus-per-trial", "0", "--address", address]
    experiment = storage / "killed"
    driver = subprocess.Popen([sys.executable, str(ROOT / "sweeps" / "full_grid.py"), *args],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not results.unit_files(experiment) and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    time.sleep(2)  # Ray stops the dead driver's trials; one may still write the rows it has finished
    finished = results.load(experiment).groupby("unit_id")["trial_id"].first().to_dict()
    assert 1 <= len(finished) < 4, f"kill came too late or never: {len(finished)} row files"

    out = _script("full_grid.py", *args, "--resume", timeout=400)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert f"Ray: joined the cluster at {address}: 1 node, 2 CPUs, 1 GPUs" in out.stdout  # the first line
    assert f"{len(finished)} of 4 cells have ok rows and are kept" in out.stdout
    assert "best_attack" in out.stdout  # the summary table
    df = results.load(experiment)
    assert set(df["unit_id"]) == {c.unit_id() for c in dataclasses.replace(TINY, num_shadows=1).cells()}
    assert df.groupby("unit_id").size().eq(len(ATTACKS) + 1).all()  # nothing lost, nothing twice
    assert not df.duplicated(["unit_id", "attack", "target_model"]).any()
    assert (df["status"] == "ok").all()
    # No finished cell ran again: its rows still carry the trial that wrote them before the kill.
    assert {u: df.loc[df["unit_id"] == u, "trial_id"].iloc[0] for u in finished} == finished
    store = Store(cache)
    assert store.count_built("original") == 2  # target + one shadow, all built before the kill
    builds = Counter(e["hash"] for e in store.events())
    assert max(builds.values()) == 1  # no model, original or pruned, was built twice
