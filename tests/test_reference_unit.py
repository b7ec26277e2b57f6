"""LiRA and RMIA inside the unit and the sweep (issue 14): configuration, the splits the unit uses, what the
offline attacks may read, a tiny real unit end to end with its rows and budget file, the sweep building
each reference model once, the analysis of the budget, and the lira preset's target accuracy."""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `analysis/` is a folder of scripts

from analysis.data import largest_reference_count, load_experiments  # noqa: E402
from analysis.figures import fig_ratio_budget, table_ratio_budget  # noqa: E402
from miaray import results  # noqa: E402
from miaray.attacks.metrics import METRICS  # noqa: E402
from miaray.config import ADDED_FIELD_DEFAULTS, TrainConfig, UnitConfig, stable_hash  # noqa: E402
from miaray.roles import finetune_seed, role_seed  # noqa: E402
from miaray.store import Store  # noqa: E402
from miaray.sweep import PRESETS, Plan, RunSettings, run_sweep, sweep_jobs  # noqa: E402
from miaray.sweep.plan import parse_job  # noqa: E402
from miaray.unit import main, make_context, membership, unit_result  # noqa: E402
from miaray.unit.ratio import PARAMETERS, RatioPhi, budgets, fit_ratio_attack, run_ratio_attack  # noqa: E402
from miaray.vocabulary import RATIO_ATTACKS  # noqa: E402

ATTACKS = ("conf", *RATIO_ATTACKS)
TINY = UnitConfig(dataset="digits", arch="resnet18", method="l1_unstructured", sparsity=0.7, width=0.125,
                  num_shadows=2, num_references=2, attacks=ATTACKS, train=TrainConfig(max_epochs=1, patience=2))


# ---- configuration -------------------------------------------------------------------------------------
# Bad likelihood-ratio attack fields: tests/test_config.py::test_bad_field_is_named.


def test_references_are_pruned_like_the_target_with_seeds_of_their_own():
    config = UnitConfig(dataset="digits", arch="resnet18", method="slimming", sparsity=0.9, defense="ppb",
                        shadow_sparsity=0.5, num_shadows=3, num_references=4, attacks=("rmia",))
    key = config.pruned_key("reference3")
    assert key == config.pruned_key("target") | {"role": "reference3"}  # method, sparsity, defense, params
    assert config.pruned_key("shadow0")["defense"] == "basic" and config.pruned_key("shadow0")["sparsity"] == 0.5
    # Reference j is the same model whatever the number of references: the count is not in its key.
    assert key == dataclasses.replace(config, num_references=8).pruned_key("reference3")
    assert config.roles() == ["target", "shadow0", "shadow1", "shadow2", *[f"reference{j}" for j in range(4)]]
    # Originals and fine-tunings of every role of every seed apart; the paper's roles keep their seeds.
    limits = dataclasses.replace(config, num_shadows=199, num_references=300)
    seeds = [seed(0, role) for role in limits.roles() for seed in (role_seed, finetune_seed)]
    seeds += [role_seed(1, role) for role in limits.roles()]
    assert len(seeds) == len(set(seeds))
    assert [role_seed(config.seed, r) for r in ("target", "shadow2", "reference0")] == [0, 3, 200]
    assert finetune_seed(config.seed, "shadow2") == 503


def test_units_without_references_keep_their_ids():
    plain = UnitConfig(dataset="digits", arch="resnet18")
    before = {k: v for k, v in dataclasses.asdict(plain).items() if k not in ADDED_FIELD_DEFAULTS}
    assert plain.unit_id() == stable_hash(before)  # the id written before the fields existed
    with_refs = dataclasses.replace(plain, attacks=("rmia",), num_references=2)
    assert with_refs.unit_id() != dataclasses.replace(with_refs, num_references=4).unit_id()
    assert UnitConfig.from_dict(with_refs.to_dict()) == with_refs


# ---- splits and inputs ---------------------------------------------------------------------------------
def test_reference_models_train_on_half_the_pool_and_shadows_never_on_it():
    config = dataclasses.replace(TINY, dataset="mnist5k", num_shadows=4, num_references=8)
    splits = make_context(config).splits  # the splits the unit uses
    pool, half = splits.target_pool(), splits.shadow_half()
    inside = np.stack([np.isin(pool, splits.role(role).train) for role in config.reference_roles()], axis=1)
    assert inside.shape == (2250, 8)
    # Each target sample is IN for exactly half the models, and for k of the first 2k (pairs).
    for pairs in range(1, 5):
        assert (inside[:, :2 * pairs].sum(axis=1) == pairs).all()
    for role in config.reference_roles():
        split = splits.role(role)
        assert len(split.train) == 1125 and np.isin(split.train, pool).all()
        assert torch.equal(split.val, splits.target.val) and not np.isin(split.train, half).any()
    assert not any(np.isin(pool, splits.role(role).train).any() for role in config.shadow_roles())


def _phi_world(config: UnitConfig, seed: int = 0) -> tuple[RatioPhi, np.ndarray]:
    """phi of every model on the samples the unit queries, from the unit's splits: the target's level
    plus 2 where a model trained on the sample, plus noise."""
    ctx = make_context(config)
    splits, rng = ctx.splits, np.random.default_rng(seed)
    samples = torch.cat([splits.target_pool(), splits.shadow_half()])
    level = rng.normal(0, 1, len(ctx.data.y))

    def phi(role: str) -> np.ndarray:
        trained = np.isin(samples, splits.role(role).train)
        return (level[samples] + 2.0 * trained + rng.normal(0, 0.5, len(samples)))[:, None]

    shadows, references = config.shadow_roles(), config.reference_roles()
    data = RatioPhi(n_pool=len(splits.target_pool()), target=phi("target"), shadows=[phi(r) for r in shadows],
                        references=[phi(r) for r in references],
                        shadow_inside_z=np.stack([np.isin(splits.shadow_half(), splits.role(r).train)
                                                  for r in shadows], 1),
                        reference_inside_p=np.stack([np.isin(splits.target_pool(), splits.role(r).train)
                                                     for r in references], 1))
    return data, membership(ctx, "target")


def _raised(phi: np.ndarray, inside: np.ndarray, *, start: int) -> np.ndarray:
    """`phi` with 100 added to row start + i wherever inside[i]."""
    out = phi.copy()
    out[start + np.flatnonzero(inside)] += 100.0
    return out


def test_no_in_signal_reaches_an_offline_attack():
    config = dataclasses.replace(TINY, num_shadows=3, num_references=4)
    data, truth = _phi_world(config)
    n = data.n_pool
    # The shadows never trained on a target sample (RatioPhi.of checks it on the splits); the reference
    # models did, on half the pool each: their IN signals made huge change no offline result.
    leaked = dataclasses.replace(data, references=[_raised(phi, data.reference_inside_p[:, j], start=0)
                                                   for j, phi in enumerate(data.references)])
    for name in ("lira_offline", "rmia_offline"):
        clean, dirty = run_ratio_attack(name, data, truth), run_ratio_attack(name, leaked, truth)
        pd.testing.assert_frame_equal(pd.DataFrame(clean["budget"]), pd.DataFrame(dirty["budget"]))
        assert clean["params"]["models_used"] == 3
        assert clean["metrics"]["attack_auc"] > 0.9  # the target's own IN signal is what they detect
    # The online attacks do read them.
    for name in ("lira", "rmia"):
        scores = [run_ratio_attack(name, world, truth)["metrics"]["attack_auc"] for world in (data, leaked)]
        assert scores[0] != scores[1]
    # The shadows' IN signals on the shadow half (the attacker's own data) reach rmia_offline's calibration of
    # a only, which attacks a shadow with the others: at a given a, the population z reads OUT cells only.
    own = dataclasses.replace(data, shadows=[_raised(phi, data.shadow_inside_z[:, i], start=n)
                                             for i, phi in enumerate(data.shadows)])
    pd.testing.assert_frame_equal(pd.DataFrame(run_ratio_attack("lira_offline", data, truth)["budget"]),
                                  pd.DataFrame(run_ratio_attack("lira_offline", own, truth)["budget"]))
    (clean, x_clean), (dirty, x_dirty) = (fit_ratio_attack("rmia_offline", world, 1, calibrated_a=0.4)
                                          for world in (data, own))
    assert clean.a_ == 0.4 and np.array_equal(clean.predict_proba(x_clean), dirty.predict_proba(x_dirty))


def test_budgets_double_up_to_every_model():
    assert budgets(8) == [1, 2, 4, 8] and budgets(6) == [1, 2, 4, 6] and budgets(1) == [1]
    assert budgets(8, even=True) == [2, 4, 8] and budgets(2, even=True) == [2]
    data, truth = _phi_world(dataclasses.replace(TINY, num_shadows=3, num_references=4))
    lines = {name: run_ratio_attack(name, data, truth)["budget"] for name in RATIO_ATTACKS}
    assert [line["models_used"] for line in lines["lira"]] == [2, 4]
    assert [line["models_used"] for line in lines["rmia"]] == [1, 2, 4]
    offline = lines["rmia_offline"]
    assert [line["models_used"] for line in offline] == [1, 2, 3]
    # One shadow cannot calibrate a: it takes the a calibrated on all three, the full budget's.
    assert offline[0]["rmia_a"] == offline[-1]["rmia_a"] and offline[0]["rmia_gamma"] == 1.0
    assert lines["lira"][0]["lira_variance"] == "global" and math.isnan(lines["lira"][0]["rmia_a"])


# ---- a tiny real unit, end to end ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_unit(tmp_path_factory):
    root = tmp_path_factory.mktemp("reference_unit")
    store = Store(root / "store")
    result = unit_result(TINY, store=store)
    result.write_artifacts(root / "exp", TINY.unit_id())
    results.write_unit_rows(experiment=root / "exp", unit_id=TINY.unit_id(), rows=result.rows)
    return result, store, root / "exp"


def test_a_tiny_unit_runs_every_reference_attack_on_both_targets(tiny_unit):
    result, store, exp = tiny_unit
    df = pd.DataFrame(result.rows)
    assert (df["status"] == "ok").all()
    for target_model in ("pruned", "original"):
        assert list(df.loc[df["target_model"] == target_model, "attack"]) == list(ATTACKS)
    reference = df[df["attack"].isin(RATIO_ATTACKS)].set_index(["target_model", "attack"])
    assert reference[[m for m in METRICS if m != "tpr_at_fpr_0.001"]].notna().all().all()
    assert reference["tpr_at_fpr_0.001"].isna().all()  # 405 non-members: not measurable
    assert (reference["models_used"] == 2).all() and (reference["num_references"] == 2).all()
    assert (reference.loc[("pruned", "rmia_offline"), "rmia_a"] >= 0) and reference["rmia_gamma"].dropna().eq(1).all()
    assert reference.loc[("pruned", "rmia"), "n_population"] == 899  # the whole shadow half
    assert df.loc[df["attack"] == "conf", list(PARAMETERS)].isna().all().all()
    # The budget: every k of every likelihood-ratio attack on both targets; the last k is the row.
    budget = result.budget
    assert len(budget) == 2 * (2 + 2 + 1 + 2)  # offline 1, 2 shadows; lira 2; rmia 1, 2 references
    last = budget.groupby(["target_model", "attack"]).tail(1).set_index(["target_model", "attack"])
    pd.testing.assert_series_equal(last["attack_auc"].sort_index(), reference["attack_auc"].sort_index())
    assert set(result.roc["attack"]) == set(ATTACKS)
    # Stored once per model: 5 originals and 5 pruned (target, 2 shadows, 2 references), the phi of each,
    # signals of target and shadows only, and the unpruned target's 5 attacks.
    counts = {kind: store.count_built(kind) for kind in ("original", "pruned", "phi", "signals", "original_attack")}
    assert counts == {"original": 5, "pruned": 5, "phi": 10, "signals": 6, "original_attack": 5}
    again = unit_result(TINY, store=store)
    assert store.count_built() == sum(counts.values())  # nothing re-derived
    pd.testing.assert_frame_equal(again.budget, budget)


def test_the_rows_hold_each_attack_once_and_the_budget_file_the_curve(tiny_unit, tmp_path):
    _, _, exp = tiny_unit
    rows = results.load(exp)
    assert not rows.duplicated(["unit_id", "target_model", "attack"]).any() and len(rows) == 2 * len(ATTACKS)
    budget = pd.read_parquet(exp / "budget" / f"{TINY.unit_id()}.parquet")
    assert set(budget["attack"]) == set(RATIO_ATTACKS) and (budget["unit_id"] == TINY.unit_id()).all()
    experiment = load_experiments([exp])
    table = pd.read_csv(table_ratio_budget(experiment, tmp_path)[0])
    assert len(table) == len(budget) and table["tpr_at_fpr_0.001"].isna().all()
    assert table["fpr_floor"].eq(1 / 405).all() and table["n_seeds"].eq(1).all()
    [figure] = fig_ratio_budget(experiment, tmp_path)
    assert figure.name == "ratio_budget_digits_resnet18_w0.125_l1_unstructured.png" and figure.stat().st_size


def test_a_smaller_reference_count_of_the_same_cell_is_not_counted_twice():
    cell = {"dataset": "mnist5k", "arch": "resnet18", "width": 0.125, "method": "l1_unstructured", "sparsity": 0.5,
            "seed": 0, "defense": "basic", "target_model": "pruned"}
    rows = pd.DataFrame([{**cell, "unit_id": f"n{n}", "attack": attack, "num_references": n}
                         for n in (4, 8) for attack in ("conf", "lira")]
                        + [{**cell, "sparsity": 0.9, "unit_id": "plain", "attack": "conf", "num_references": 0}])
    kept = largest_reference_count(rows)
    assert sorted(kept["unit_id"]) == ["n8", "n8", "plain"]


def test_cli_prints_the_budget_and_rejects_a_missing_reference_count(tiny_unit, tmp_path, capsys):
    _, store, _ = tiny_unit
    args = ["--dataset", "digits", "--arch", "resnet18", "--sparsity", "0.7", "--shadows", "2", "--max-epochs", "1",
            "--patience", "2", "--cache", str(store.root)]
    with pytest.raises(SystemExit) as info:
        main([*args, "--attacks", "lira"])
    assert info.value.code == 2 and "even --references >= 2, got 0" in capsys.readouterr().err
    built = store.count_built()
    assert main([*args, "--attacks", ",".join(ATTACKS), "--references", "2"]) == 0
    printed = capsys.readouterr().out
    assert "likelihood-ratio attacks by number of models" in printed and "rmia_offline" in printed
    assert store.count_built() == built  # the same unit as the fixture's: everything loaded


# ---- the sweep -------------------------------------------------------------------------------------------
def test_the_sweep_builds_each_reference_model_once(ray_cluster, tmp_path):
    spec = dataclasses.replace(PRESETS["quick"], datasets=("digits",), methods=("l1_unstructured",), sparsities=(0.5,),
                               attacks=("rmia",), num_shadows=1, references=(2, 4), max_epochs=1)
    cells = spec.cells()
    assert [c.num_references for c in cells] == [2, 4]
    store = Store(tmp_path / "store")
    jobs = [parse_job(job) for job in sweep_jobs(Plan.of(cells), store)]
    builds = [(build["role"], build["pruned"]) for _, build in jobs if build]
    # Originals of every role; then the pruned models both cells use (the second cell only adds references 2, 3).
    assert builds == [(r, False) for r in cells[1].roles()] + [(r, True) for r in cells[0].roles()]
    assert [build for _, build in jobs[len(builds):]] == [None, None]
    settings = RunSettings(experiment=str(tmp_path / "exp"), store=str(store.root), data_root=None,
                           cpus_per_trial=1, gpus_per_trial=0)
    df = run_sweep(cells=cells, settings=settings, resume=False, retries=0)
    assert (df["status"] == "ok").all() and set(df["num_references"]) == {2, 4}
    built = [(e["kind"], e["hash"]) for e in store.events() if e["event"] == "built"]
    assert len(built) == len(set(built))  # no model, signal set or phi built twice
    assert store.count_built("original") == 1 + 1 + 4 and store.count_built("pruned") == 1 + 1 + 4
    assert store.count_built("phi") == 2 * 5  # target and references, pruned and original (rmia reads no shadow)

