"""analysis/figures.py and analysis/report.py: hand-made results for the rules, then a real sweep.

The hand-made experiment is written through `miaray.results.write_unit_rows` in the real layout, with
signal and ROC files shaped like the unit's; the last tests run the real quick-preset sweep (tiny
settings) and draw everything its results allow.
"""

from __future__ import annotations

import base64
import io
import itertools
import math
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `analysis/` is a folder of scripts at the root, not an installed package

from analysis.data import load_experiments
from analysis.figures import FIGURES, main as figures_main, write_figures
from analysis.report import main as report_main
from analysis.tables import defense_fronts, defense_points, unknown_pruning_loss
from miaray import results
from miaray.stats import t_interval
from miaray.sweep import record_pairs
from miaray.unknown_pruning import accuracy_loss_table, headline_attack, matched_losses, sparsity_matrix_table
from miaray.vocabulary import ATTACKS, RATIO_ATTACKS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PARAMS = ("alpha", "delta", "k", "lambda", "max_grad_norm", "noise_multiplier")


# ---- a hand-made experiment ------------------------------------------------------------------------
def _unit(exp: Path, uid: str, cell: dict, rng: np.random.Generator, *, files: bool, acc: float | None = None,
          failed: bool = False, attacks: tuple[str, ...] = ATTACKS) -> None:
    base = {"unit_id": uid, "seed": 0, "width": 0.25, "defense": "basic", "adaptive": False,
            **{f"defense_{p}": math.nan for p in PARAMS}, **cell}
    base.setdefault("shadow_method", base["method"])
    base.setdefault("shadow_sparsity", base["sparsity"])
    if failed:
        rows = [{**base, "target_model": "pruned", "attack": a, "status": "failed", "error": "TrainingDiverged"}
                for a in ATTACKS]
        results.write_unit_rows(experiment=exp, unit_id=uid, rows=rows)
        return
    test_acc = 0.9 - 0.2 * base["sparsity"]
    rows = []
    for model, attack in [("pruned", a) for a in attacks] + [("original", "conf")]:
        rows.append({**base, "status": "ok", "error": "", "target_model": model, "attack": attack,
                     "target_train_acc": 1.0, "target_test_acc": test_acc if model == "pruned" else 0.9,
                     "attack_acc": acc if acc is not None else 0.5 + 0.2 * rng.random(),
                     "attack_auc": 0.6, "tpr_at_fpr_0.01": 0.02, "tpr_at_fpr_0.001": 0.002, "advantage": 0.1,
                     "confidence_gap": 0.1, "sensitivity_gap": 0.5, "generalization_gap": 1 - test_acc,
                     "epsilon": math.nan})
    results.write_unit_rows(experiment=exp, unit_id=uid, rows=rows)
    if not files:
        return
    member = np.r_[np.ones(100, bool), np.zeros(100, bool)]
    signals = pd.concat([pd.DataFrame({"unit_id": uid, "target_model": model, "member": member,
                                       "label": rng.integers(0, 10, 200), "confidence": rng.random(200),
                                       "sensitivity": rng.exponential(1.0, 200)})
                         for model in ("original", "pruned")])
    fpr = np.r_[0.0, np.sort(rng.random(20)), 1.0]
    roc = pd.concat([pd.DataFrame({"unit_id": uid, "target_model": model, "attack": attack, "fpr": fpr,
                                   "tpr": np.sqrt(fpr)})
                     for model, attack in [("pruned", a) for a in ATTACKS] + [("original", "conf")]])
    # The likelihood-ratio attacks at 1, 2 and 4 models, stronger with more (what unit.UnitResult.budget holds).
    budget = pd.DataFrame([{"unit_id": uid, "target_model": model, "attack": attack, "models_used": k,
                            "attack_auc": 0.55 + 0.02 * k, "tpr_at_fpr_0.01": 0.01 * k, "tpr_at_fpr_0.001": math.nan,
                            "n_nonmembers": 405}
                           for model in ("pruned", "original") for attack in RATIO_ATTACKS for k in (1, 2, 4)])
    for kind, frame in (("signals", signals), ("roc", roc), ("budget", budget)):
        (exp / kind).mkdir(parents=True, exist_ok=True)
        frame.to_parquet(exp / kind / f"{uid}.parquet")


def make_experiment(exp: Path, *, unknown: bool = True, defenses: bool = True, files: bool = True,
                    seeds: tuple[int, ...] = (0, 1)) -> Path:
    """One (dataset, arch) x two methods x two sparsities per seed, plus whatever the flags add, and one
    failed unit: what a grid, an unknown-pruning study and a defense search leave together. Two seeds,
    so that every mean has an interval to draw. Small on purpose: every PNG costs about a second to
    draw on this machine."""
    rng = np.random.default_rng(0)
    n = 0

    def unit(cell: dict, **kwargs) -> None:
        nonlocal n
        _unit(exp, f"u{n:03d}", cell, rng, **kwargs)
        n += 1

    for method, sparsity, seed in itertools.product(("l1_unstructured", "slimming"), (0.5, 0.9), seeds):
        cell = {"dataset": "digits", "arch": "resnet18", "method": method, "sparsity": sparsity, "seed": seed}
        unit(cell, files=files)
        if unknown:
            for shadow in (0.0, round(1.4 - sparsity, 1)):  # the other sparsity, exactly
                unit({**cell, "shadow_sparsity": shadow}, files=False)
            other = "slimming" if method == "l1_unstructured" else "l1_unstructured"
            unit({**cell, "shadow_method": other}, files=False)
        if defenses and sparsity == 0.5:
            for adaptive in (False, True):
                for lam in (1.0, 16.0):
                    unit({**cell, "defense": "ppb", "adaptive": adaptive, "defense_lambda": lam}, files=False)
                unit({**cell, "defense": "adv", "adaptive": adaptive, "defense_alpha": 2.0}, files=False)
    unit({"dataset": "digits", "arch": "resnet18", "method": "l2_structured", "sparsity": 0.5}, files=False,
         failed=True)
    return exp


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_experiment(tmp_path_factory.mktemp("full") / "exp")


@pytest.fixture(scope="module")
def full_figures(full: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[list, Path]:
    out = tmp_path_factory.mktemp("full_figures")
    return write_figures(load_experiments([full]), out), out


def _png_ok(data: bytes) -> None:
    assert data.startswith(PNG_MAGIC)
    with Image.open(io.BytesIO(data)) as image:
        image.load()  # decodes every pixel: a truncated file raises
        assert image.width > 100 and image.height > 100


# ---- the rules, on hand-made results ----------------------------------------------------------------
def test_every_figure_written_from_complete_results(full_figures: tuple[list, Path]) -> None:
    outcomes, out = full_figures
    assert [o.name for o in outcomes] == list(FIGURES)
    assert not [o for o in outcomes if o.error]
    skipped = {o.name: o.skipped for o in outcomes if o.skipped}
    # Only Table 2 lacks its input (no split ratios in any grid) and says so.
    assert list(skipped) == ["Table 2 (split ratios)"] and "split_ratio" in skipped["Table 2 (split ratios)"]
    names = {p.name for o in outcomes for p in o.files}
    # One file (or panel) per model: dataset, arch and width.
    assert names == {"fig01_histograms_digits_resnet18_w0.25.png", "fig04_per_class_digits_resnet18_w0.25.png",
                     "fig06_test_accuracy.png", "fig07_attack_vs_test_accuracy.png", "fig08_attack_vs_sparsity.png",
                     "fig09_gaps_digits_resnet18_w0.25.png", "fig10_attacks_digits_resnet18_w0.25.png",
                     "fig11_attacks_l1_unstructured.png", "fig12_unknown_sparsity_digits_resnet18_w0.25.png",
                     "fig13_unknown_sparsity_l1_unstructured.png", "table1_unknown_pruning.csv",
                     "table1_unknown_pruning.md", "fig16_defenses_digits_resnet18_w0.25_s0.5.png",
                     "fig17_defenses_l1_unstructured_s0.5.png", "fig18_adaptive_digits_resnet18_w0.25_s0.5.png",
                     "fig19_adaptive_l1_unstructured_s0.5.png", "roc_digits_resnet18_w0.25.png",
                     "ratio_budget_digits_resnet18_w0.25_l1_unstructured.png",
                     "ratio_budget_digits_resnet18_w0.25_slimming.png", "table_ratio_budget.csv",
                     "table_ratio_budget.md", "defense_front_digits_resnet18_w0.25_l1_unstructured_s0.5.png",
                     "defense_front_digits_resnet18_w0.25_slimming_s0.5.png", "table_defense_front.csv",
                     "table_defense_front.md"}
    assert names == {p.name for p in out.iterdir()}
    for path in out.glob("*.png"):
        _png_ok(path.read_bytes())


def test_partial_results_skip_with_reasons(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    exp = make_experiment(tmp_path / "grid_only", unknown=False, defenses=False, files=False)
    assert figures_main([str(exp), "--out", str(tmp_path / "figs")]) == 0
    printed = capsys.readouterr().out
    assert "wrote    Fig. 6" in printed and "wrote    Fig. 10" in printed
    for name, reason in (("Fig. 1", "no signals/<unit_id>.parquet files"), ("Fig. 4", "no signals/"),
                         ("Fig. 12", "shadow_sparsity != sparsity"), ("Table 1", "pruned differently"),
                         ("Fig. 16", "no non-adaptive defense rows"), ("Fig. 18", "no adaptive defense rows"),
                         ("ROC curves", "no roc/<unit_id>.parquet files")):
        assert re.search(rf"skipped  {re.escape(name)} .*{re.escape(reason)}", printed), name

    # Only failed units, an empty experiment, a folder that is not one: skipped, never a crash.
    failed = tmp_path / "failed"
    _unit(failed, "f0", {"dataset": "digits", "arch": "resnet18", "method": "slimming", "sparsity": 0.5},
          np.random.default_rng(0), files=False, failed=True)
    (tmp_path / "nothing_here").mkdir()
    for results_dir in (failed, tmp_path / "nothing_here"):
        assert figures_main([str(results_dir), "--out", str(tmp_path / "figs2")]) == 0
        printed = capsys.readouterr().out
        assert "ERROR" not in printed and "wrote" not in printed
        assert printed.count("skipped") == len(FIGURES)


def test_unknown_pruning_tables_match_hand_computation(tmp_path: Path) -> None:
    exp = tmp_path / "exp"
    rng = np.random.default_rng(0)
    cell = {"dataset": "digits", "arch": "resnet18", "method": "l1_unstructured", "sparsity": 0.5}
    ppb = {**cell, "defense": "ppb", "defense_lambda": 4.0}
    _unit(exp, "known", cell, rng, files=False, acc=0.8)
    _unit(exp, "sparsity", {**cell, "shadow_sparsity": 0.9}, rng, files=False, acc=0.7)
    _unit(exp, "method", {**cell, "shadow_method": "slimming"}, rng, files=False, acc=0.6)
    _unit(exp, "orphan", {**cell, "sparsity": 0.9, "shadow_method": "slimming"}, rng, files=False, acc=0.1)
    # The same target under PPB: its unknown unit is matched to the PPB known unit, never to Basic's.
    _unit(exp, "ppb_known", ppb, rng, files=False, acc=0.5)
    _unit(exp, "ppb_method", {**ppb, "shadow_method": "slimming"}, rng, files=False, acc=0.4)
    _unit(exp, "failed", {**cell, "shadow_sparsity": 0.0}, rng, files=False, failed=True)
    _unit(exp, "other_split", {**cell, "shadow_method": "slimming", "split_ratio": "60/30/10"}, rng, files=False,
          acc=0.2)
    rows = load_experiments([exp]).rows

    table = accuracy_loss_table(rows)
    assert list(table.columns) == ["dataset", "arch", "study", *sorted(ATTACKS), "pairs"]
    # Analysis's Table 1 has these means, per width, with intervals over seeds (none: one seed).
    analysis_table = unknown_pruning_loss(rows)
    pd.testing.assert_frame_equal(analysis_table[table.columns], table)
    assert (analysis_table["width"] == 0.25).all() and (analysis_table["n_seeds"] == 1).all()
    assert analysis_table[[f"{a}_ci_{side}" for a in ATTACKS for side in ("low", "high")]].isna().all(axis=None)
    table = table.set_index("study")
    for attack in ATTACKS:  # _unit gives every attack of a unit the same accuracy
        assert table.loc["sparsity", attack] == pytest.approx((0.8 - 0.7) / 0.8)
        assert table.loc["method", attack] == pytest.approx(((0.8 - 0.6) / 0.8 + (0.5 - 0.4) / 0.5) / 2)
    # The orphan (no known row of its target), the failed unit and the one of another split are in no pair.
    assert table["pairs"].to_dict() == {"method": 2, "sparsity": 1}

    # The paper's statistic: the mean over exactly the drawn (known, unknown) pairs the sweep recorded.
    known_pairs = [("known", "sparsity"), ("known", "method")]
    record_pairs(str(exp), known_pairs[:1])
    record_pairs(str(exp), known_pairs)  # a rerun adds its new draws
    loaded = load_experiments([exp])
    assert list(map(tuple, loaded.pairs.to_numpy())) == known_pairs  # recorded once each, in order
    with_pairs = unknown_pruning_loss(loaded.rows, pairs=loaded.pairs).set_index("study")
    for attack in ATTACKS:
        assert with_pairs.loc["random pairs", attack] == pytest.approx(((0.8 - 0.7) + (0.8 - 0.6)) / 0.8 / 2)
        assert with_pairs.loc["method", attack] == table.loc["method", attack]  # the studies stay as they were
    assert with_pairs["pairs"].to_dict() == {"method": 2, "random pairs": 2, "sparsity": 1}

    assert headline_attack(rows) == "samia"
    # Without SAMIA: the attack with the highest mean accuracy.
    no_samia = rows[rows["attack"] != "samia"]
    no_samia = no_samia.assign(attack_acc=no_samia["attack_acc"] + (no_samia["attack"] == "mentr"))
    assert headline_attack(no_samia) == "mentr"
    assert headline_attack(rows[rows["status"] == "failed"]) is None
    matrix = sparsity_matrix_table(rows[rows["defense"] == "basic"], attack="samia")
    assert matrix.to_dict("records") == [{"dataset": "digits", "arch": "resnet18", "method": "l1_unstructured",
                                          "sparsity": 0.5, 0.5: pytest.approx(0.8), 0.9: pytest.approx(0.7)}]


def test_the_sweep_prints_the_tables_analysis_makes(full: Path) -> None:
    from miaray.sweep import _format, unknown_pruning_summary

    raw = results.load(full)  # the rows as a sweep returns them, not normalised by analysis
    rows = load_experiments([full]).rows
    table = unknown_pruning_loss(rows)
    assert set(table["study"]) == {"method", "sparsity"}
    expected = accuracy_loss_table(raw)
    # Each seed has the same pairs, so the mean of the seeds' means is the mean over all pairs.
    pd.testing.assert_frame_equal(table[expected.columns], expected)
    printed = unknown_pruning_summary(raw, matrix=True)
    assert _format(expected) in printed
    assert _format(sparsity_matrix_table(rows, attack=headline_attack(rows))) in printed
    # The interval is over the two seeds' mean losses.
    matched = matched_losses(rows)
    per_seed = matched[(matched["study"] == "sparsity") & (matched["attack"] == "samia")].groupby("seed")["loss"].mean()
    _, low, high, n = t_interval(per_seed)
    line = table.set_index("study").loc["sparsity"]
    assert (line["samia_ci_low"], line["samia_ci_high"], line["n_seeds"]) == pytest.approx((low, high, 2))


def test_defense_points_are_seed_means_with_the_papers_filter_and_fronts(tmp_path: Path) -> None:
    exp = tmp_path / "exp"
    rng = np.random.default_rng(0)
    for seed in (0, 1):  # the second seed's attacks are 0.02 stronger
        cell = {"dataset": "digits", "arch": "resnet18", "method": "l1_unstructured", "sparsity": 0.5, "seed": seed}
        _unit(exp, f"basic{seed}", cell, rng, files=False, acc=0.7 + 0.02 * seed)   # test acc 0.8
        for uid, lam, acc in (("good", 1.0, 0.55), ("same", 2.0, 0.55), ("leaky", 4.0, 0.75)):
            # The defense runs used fewer attacks than the grid (no SAMIA): the points use one they share.
            _unit(exp, f"{uid}{seed}", {**cell, "defense": "ppb", "defense_lambda": lam}, rng, files=False,
                  acc=acc + 0.02 * seed, attacks=("conf", "mentr"))
    rows = load_experiments([exp]).rows
    points = defense_points(rows, adaptive=False)
    assert set(points["attack"]) <= {"conf", "mentr"} and points["attack"].nunique() == 1
    assert len(points) == 4 and (points["n_seeds"] == 2).all()  # one point per hyperparameter, over both seeds
    by_lambda = points.set_index(points["defense_lambda"].fillna(0.0))
    assert by_lambda.loc[1.0, "attack_acc"] == pytest.approx(0.56)
    _, low, high, _ = t_interval([0.55, 0.57])
    assert (by_lambda.loc[1.0, "attack_acc_ci_low"], by_lambda.loc[1.0, "attack_acc_ci_high"]) == pytest.approx((low, high))
    assert list(by_lambda.index[by_lambda["paper_dropped"]]) == [4.0]  # leakier than Basic, on the means
    fronts = defense_fronts(points)
    assert set(fronts.loc[fronts["defense"] == "ppb", "defense_lambda"]) == {1.0, 2.0}  # tied points both kept


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.sources.append(dict(attrs)["src"] or "")


def _check_report(page: Path) -> int:
    """Every <img> of the page is an embedded PNG that decodes; returns how many."""
    parser = _Images()
    parser.feed(page.read_text(encoding="utf-8"))
    for src in parser.sources:
        assert src.startswith("data:image/png;base64,"), src[:60]
        _png_ok(base64.b64decode(src.split(",", 1)[1], validate=True))
    return len(parser.sources)


def test_report_embeds_every_figure(full: Path, full_figures: tuple[list, Path], tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    assert report_main([str(full), "--out", str(page)]) == 0
    assert _check_report(page) == len(list(full_figures[1].glob("*.png")))
    text = page.read_text(encoding="utf-8")
    assert "Original vs pruned" in text and "Pareto fronts (adaptive attacks)" in text
    assert "claims: verdicts" in text and "inconclusive" in text
    assert re.search(r"\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]", text)  # a mean with its interval over the two seeds
    assert "lambda=1" in text               # a defense front point with its hyperparameter
    assert "TrainingDiverged" in text       # the failed unit is listed
    assert "split_ratio" in text            # Table 2's skip reason


# ---- the real pipeline: a tiny quick-preset sweep, then figures and report on what it wrote ----------
# Narrow nets, two epochs, one shadow, the two cheapest attacks: every real stage, in seconds per cell.
TINY = ["--preset", "quick", "--width", "0.125", "--max-epochs", "2", "--shadows", "1", "--attacks", "conf,mentr",
        "--methods", "l1_unstructured", "--sparsities", "0.5,0.9", "--gpus-per-trial", "0"]  # the GPU is fake


@pytest.fixture(scope="module")
def real_results(ray_cluster, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The unknown-sparsity matrix (its diagonal is the known-pruning grid) and a PPB defense,
    non-adaptive and adaptive, run by the real sweep entry points on the shared Ray instance and
    sharing one model cache."""
    from miaray.sweep import full_grid_main, unknown_pruning_main

    storage = tmp_path_factory.mktemp("sweeps")
    defense = ["--sparsities", "0.5", "--defense", "ppb", "--defense-param", "lambda=4"]
    runs = {"unknown": (unknown_pruning_main, ["--study", "sparsity"]),
            "ppb": (full_grid_main, defense),
            "ppb-adaptive": (full_grid_main, [*defense, "--adaptive"])}
    for name, (main, extra) in runs.items():
        # A later --sparsities overrides TINY's; rc 1 only means a unit failed, which analysis must cope with.
        main([*TINY, *extra, "--storage", str(storage), "--name", name])
        assert results.unit_files(storage / name), f"sweep {name} wrote no rows"
    return [storage / name for name in runs]


@pytest.mark.slow
def test_figures_from_a_real_sweep(real_results: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    capsys.readouterr()
    assert figures_main([*map(str, real_results), "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "ERROR" not in printed
    has_signals = any((r / "signals").is_dir() for r in real_results)
    has_roc = any((r / "roc").is_dir() for r in real_results)
    expected = {"Fig. 6", "Fig. 7", "Fig. 8", "Fig. 9", "Fig. 10", "Fig. 11", "Fig. 12", "Fig. 13", "Table 1",
                "Fig. 16", "Fig. 17", "Fig. 18", "Fig. 19", "Defenses compared:"}
    expected |= {"Fig. 1", "Fig. 4"} if has_signals else set()
    expected |= {"ROC curves"} if has_roc else set()
    for name in expected:
        assert re.search(rf"^wrote    {re.escape(name)} ", printed, re.M), (name, printed)
    skipped = set(re.findall(r"^skipped  (.+?): ", printed, re.M))
    assert skipped == {n for n in FIGURES if not any(n.startswith(e + " ") for e in expected)}
    assert "split_ratio" in printed  # Table 2 names what it lacks
    for reason, present in (("no signals/<unit_id>.parquet", has_signals), ("no roc/<unit_id>.parquet", has_roc)):
        assert (reason in printed) != present
    for path in tmp_path.glob("*.png"):
        _png_ok(path.read_bytes())
    table = pd.read_csv(tmp_path / "table1_unknown_pruning.csv")
    assert set(table["study"]) == {"sparsity"} and (table["pairs"] > 0).all()


@pytest.mark.slow
def test_report_from_a_real_sweep(real_results: list[Path], tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    assert report_main([*map(str, real_results), "--out", str(page)]) == 0
    assert _check_report(page) >= 11  # Fig. 6-13 and 16-19 at least
    text = page.read_text(encoding="utf-8")
    assert "lambda=4" in text and "best_attack" in text


@pytest.mark.slow
def test_claims_from_a_real_sweep(real_results: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """analysis/claims.py end to end on what the real sweeps wrote: one seed, so every tested claim is
    inconclusive; SAMIA did not run, so C4 is 'not run' with its command."""
    from analysis.claims import COLUMNS, main as claims_main

    capsys.readouterr()
    out = tmp_path / "claims.csv"
    assert claims_main([*map(str, real_results), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    table = pd.read_csv(out, keep_default_na=False)
    assert list(table.columns) == COLUMNS
    # The tiny sweep ran conf and mentr only, one defense beyond Basic: no offline attack (C5c), DP (C7),
    # second defense to rank (C8), two-model attack (C9) or cell without fine-tuning (C10).
    assert set(table.loc[table["verdict"] == "not run", "claim"]) == {"C4", "C5c", "C7", "C8", "C9", "C10"}
    assert "C4 not run" in printed
    assert set(table["claim"]) == {"C1", "C2", "C3", "C4", "C5a", "C5b", "C5c", "C6", "C7", "C8", "C9", "C10"}
    assert set(table.loc[table["claim"] == "C1", "attack"]) == {"conf", "mentr", "best"}  # like with like
    one_seed = table[table["claim"].isin(["C1", "C2", "C4", "C5a", "C5b", "C6"]) & (table["verdict"] != "not run")]
    assert set(one_seed["verdict"]) == {"inconclusive"} and (one_seed["n"] == 1).all()


def test_unknown_sparsity_figures_use_an_attack_the_study_ran(tmp_path: Path) -> None:
    """A full grid (all nine attacks) with an unknown-sparsity study run on fewer attacks: Fig. 12/13
    draw the study's headline attack (here Mentr or Conf), not SAMIA, which has no off-diagonal row."""
    rng = np.random.default_rng(0)
    cell = {"dataset": "digits", "arch": "resnet18", "method": "l1_unstructured"}
    for sparsity in (0.5, 0.9):
        _unit(tmp_path / "grid", f"g{sparsity}", {**cell, "sparsity": sparsity}, rng, files=False)
        _unit(tmp_path / "unknown", f"u{sparsity}", {**cell, "sparsity": sparsity,
                                                      "shadow_sparsity": round(1.4 - sparsity, 1)},
              rng, files=False, attacks=("conf", "mentr"))
    outcomes = write_figures(load_experiments([tmp_path / "grid", tmp_path / "unknown"]), tmp_path / "out")
    drawn = {o.name.split(" (")[0]: o for o in outcomes}
    for name in ("Fig. 12", "Fig. 13"):
        assert drawn[name].error is None and drawn[name].files, drawn[name]
