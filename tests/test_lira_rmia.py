"""LiRA and RMIA: phi from logits, queries, hand-computed scores, synthetic strength, no IN leak."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch
from scipy.special import logit
from sklearn.metrics import roc_auc_score

from miaray.attacks import (RATIO_ATTACK_CLASSES, LiRAOffline, LiRAOnline, RMIAOffline, RMIAOnline, calibrate_offline_a,
                            make_ratio_attack, model_phi, out_only, query_set, scaled_confidence)
from miaray.attacks.phi import apply_query
from miaray.config import ConfigError
from miaray.data import make_splits
from miaray.models import build_model
from miaray.vocabulary import ATTACKS, RATIO_ATTACKS


# ---- phi and queries ---------------------------------------------------------------------------------
def test_phi_is_the_log_odds_of_the_true_class_and_survives_saturated_softmax():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 3.0, 1.0]])
    # 2 - log(e^0 + e^-1) = 2 - log(1.367879) = 1.686738; sample 2: 3 - log(e^0 + e^1) = 1.686738 too.
    phi = scaled_confidence(logits, torch.tensor([0, 1]))
    assert phi.tolist() == pytest.approx([1.686738, 1.686738], abs=1e-6)
    p = torch.softmax(logits.double(), 1)[[0, 1], [0, 1]]
    assert phi.double().tolist() == pytest.approx(torch.log(p / (1 - p)).tolist(), abs=1e-6)
    # A confident member: float32 softmax rounds p_y to 1, so log(p / (1 - p)) is inf; phi stays exact.
    confident = torch.tensor([[40.0, 0.0, 0.0]])
    assert torch.softmax(confident, 1)[0, 0].item() == 1.0
    assert scaled_confidence(confident, torch.tensor([0])).item() == pytest.approx(40 - math.log(2), abs=1e-5)
    # (n, A, C) logits with labels (n,): one phi per query.
    stacked = torch.stack([logits, logits.flip(-1)], dim=1)
    both = scaled_confidence(stacked, torch.tensor([0, 1]))
    assert both.shape == (2, 2) and both[:, 0].tolist() == pytest.approx(phi.tolist())


def test_queries_start_with_the_identity_then_mirror_and_reflect_shift():
    assert query_set() == [(False, 0, 0)]
    queries = query_set(mirror=True, shift=2)
    assert len(queries) == 18 and queries[0] == (False, 0, 0) and len(set(queries)) == 18
    image = torch.zeros(1, 1, 9, 9)
    image[0, 0, 4, 3] = 1.0
    moved = apply_query(image, (False, 1, -2))  # pixel (4, 3) -> (5, 1)
    assert moved[0, 0, 5, 1] == 1.0 and moved.sum() == 1.0
    mirrored = apply_query(image, (True, 0, 0))  # column 3 of 9 -> column 5
    assert mirrored[0, 0, 4, 5] == 1.0 and mirrored.sum() == 1.0
    # Reflect padding: a pixel in row 1 moved one row down comes back in at the top border (row 0).
    edge = torch.zeros(1, 1, 5, 5)
    edge[0, 0, 1, 3] = 1.0
    assert apply_query(edge, (False, 1, 0))[0, 0, [0, 2], 3].tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="shift=-1"):
        query_set(shift=-1)


def test_model_phi_queries_each_version_and_does_not_depend_on_the_batch_size():
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=10, input_shape=(1, 12, 12), width=0.125).train()
    x, y = torch.randn(7, 1, 12, 12), torch.randint(0, 10, (7,))
    phi = model_phi(model, x, y, mirror=True, shift=1, batch_size=20)
    assert phi.shape == (7, 18) and phi.dtype == torch.float32 and model.training  # mode restored
    model.eval()
    with torch.no_grad():
        for column in (0, 5, 13):
            expected = scaled_confidence(model(apply_query(x, query_set(mirror=True, shift=1)[column])), y)
            assert torch.allclose(phi[:, column], expected, atol=1e-5)
    assert torch.allclose(model_phi(model, x, y, mirror=True, shift=1, batch_size=10_000), phi, atol=1e-5)
    tabular = build_model("fc", num_classes=3, input_shape=(6,), width=0.125)
    rows, labels = torch.randn(5, 6), torch.tensor([0, 1, 2, 0, 1])
    assert model_phi(tabular, rows, labels).shape == (5, 1)
    with pytest.raises(ValueError, match="need images"):
        model_phi(tabular, rows, labels, mirror=True)


# ---- LiRA by hand ----------------------------------------------------------------------------------------
# Two samples, four reference models. Sample 0: IN {1, 3} (mean 2, var 2), OUT {-1, 3} (mean 1, var 8);
# sample 1: IN {5, 6} (mean 5.5, var 0.5), OUT {4, 2} (mean 3, var 2). Variances with ddof 1.
HAND_REFERENCE = np.array([[1.0, 3.0, -1.0, 3.0], [5.0, 4.0, 6.0, 2.0]])
HAND_INSIDE = np.array([[True, True, False, False], [True, False, True, False]])
HAND_TARGET = np.array([2.0, 3.0])


def test_online_lira_score_is_the_gaussian_log_likelihood_ratio():
    attack = LiRAOnline(global_variance_below=0).fit(HAND_REFERENCE, HAND_INSIDE)  # per-sample variances
    assert attack.mu_in_[:, 0].tolist() == [2.0, 5.5] and attack.mu_out_[:, 0].tolist() == [1.0, 3.0]
    scores = attack.predict_proba(HAND_TARGET)
    # Sample 0: [-0 - log sqrt2] - [-(1 / (2 sqrt2))^2 / 2 - log(2 sqrt2)] = log 2 + 1/16 = 0.755647.
    # Sample 1: [-(2.5^2 / 0.5) / 2 - log sqrt0.5] - [-0 - log sqrt2] = -6.25 + log 2 = -5.556853.
    assert scores.tolist() == pytest.approx([0.755647, -5.556853], abs=1e-6)
    exact = (scipy.stats.norm.logpdf(HAND_TARGET, [2.0, 5.5], np.sqrt([2.0, 0.5]))
             - scipy.stats.norm.logpdf(HAND_TARGET, [1.0, 3.0], np.sqrt([8.0, 2.0])))
    assert scores == pytest.approx(exact)
    assert attack.predict(HAND_TARGET).tolist() == [1, 0]  # likelihood ratio >= 1


def test_offline_lira_score_is_the_log_one_sided_probability():
    out = out_only(HAND_REFERENCE, HAND_INSIDE)  # sample 0: OUT {-1, 3}; sample 1: OUT {4, 2}
    attack = LiRAOffline(global_variance_below=0).fit(out)
    scores = attack.predict_proba(HAND_TARGET)
    # P(phi_out < 2) under N(1, 8) = Phi(1 / sqrt8) = Phi(0.353553) = 0.638163; P(phi_out < 3) under
    # N(3, 2) = 0.5.
    assert np.exp(scores).tolist() == pytest.approx([0.638163, 0.5], abs=1e-6)
    assert np.exp(scores) == pytest.approx(scipy.stats.norm.cdf(HAND_TARGET, [1.0, 3.0], np.sqrt([8.0, 2.0])))
    assert attack.predict(HAND_TARGET).tolist() == [1, 1]  # at or above the OUT mean
    # Far above the OUT distribution P rounds to 1.0; the log still orders the samples.
    far = attack.predict_proba(np.array([40.0, 30.0]))
    assert far[0] < 0 and far[1] < 0 and far[0] != far[1]


def test_few_references_share_one_pooled_variance_per_side():
    attack = LiRAOnline().fit(HAND_REFERENCE, HAND_INSIDE)  # 4 < 64 references: global variance
    assert attack.global_variance_ and attack.n_models_ == 4
    # IN: squared deviations 1 + 1 (sample 0) + 0.25 + 0.25 (sample 1) over 1 + 1 degrees of freedom.
    assert np.unique(attack.sigma_in_).tolist() == pytest.approx([math.sqrt(2.5 / 2)])
    # OUT: 4 + 4 + 1 + 1 over 2.
    assert np.unique(attack.sigma_out_).tolist() == pytest.approx([math.sqrt(10 / 2)])
    # One model per sample has no within-sample spread: the variance of all values (0, 2, 7) is used.
    single = LiRAOffline().fit(np.array([[0.0], [2.0], [7.0]]))
    assert np.unique(single.sigma_out_).tolist() == pytest.approx([math.sqrt(26 / 3)])


def test_online_lira_needs_in_and_out_models_of_every_sample():
    inside = HAND_INSIDE.copy()
    inside[1] = False  # sample 1 has no IN model
    with pytest.raises(ValueError, match="1 sample.* no IN reference model"):
        LiRAOnline().fit(HAND_REFERENCE, inside)
    with pytest.raises(ValueError, match="target_phi has 3 rows; expected 2"):
        LiRAOnline().fit(HAND_REFERENCE, HAND_INSIDE).predict_proba(np.zeros(3))
    with pytest.raises(ValueError, match="finite"):
        LiRAOffline().fit(np.array([[np.inf, 1.0]]))
    with pytest.raises(RuntimeError, match="not fitted"):
        LiRAOffline().predict_proba(HAND_TARGET)


# ---- RMIA by hand ----------------------------------------------------------------------------------------
# Online, two reference models. Pr(x): x1 (0.6 + 0.8) / 2 = 0.7, x2 0.5, x3 0.4; targets 0.9, 0.5, 0.2:
# ratio(x) = 9/7 = 1.285714, 1.0, 0.5. Population: ratio(z1) = 0.6 / 0.6 = 1, ratio(z2) = 0.3 / 0.5 = 0.6,
# ratio(z3) = 0.8 / 0.5 = 1.6.
def _phi(probabilities) -> np.ndarray:
    return logit(np.asarray(probabilities, dtype=np.float64))


def test_online_rmia_ratio_and_score_on_three_samples():
    attack = RMIAOnline().fit(_phi([[0.6, 0.8], [0.5, 0.5], [0.4, 0.4]]),
                              _phi([[0.6, 0.6], [0.5, 0.5], [0.5, 0.5]]), _phi([0.6, 0.3, 0.8]))
    target = _phi([0.9, 0.5, 0.2])
    assert attack.pr_x_.tolist() == pytest.approx([0.7, 0.5, 0.4])
    assert attack.ratio(target).tolist() == pytest.approx([9 / 7, 1.0, 0.5])
    assert attack.ratio_z_.tolist() == pytest.approx([0.6, 1.0, 1.6])
    # gamma = 1: x1 beats z1 and z2; x2 ties z1 (LR = 1 >= 1 counts) and beats z2; x3 beats none.
    assert attack.predict_proba(target).tolist() == pytest.approx([2 / 3, 2 / 3, 0.0])
    assert attack.n_population_ == 3 and attack.gamma_ == 1.0
    # gamma = 2 asks LR(x, z) >= 2, i.e. ratio(z) <= ratio(x) / 2: x1 (0.643) beats z2 only.
    strict = RMIAOnline(gamma=2.0).fit(_phi([[0.6, 0.8], [0.5, 0.5], [0.4, 0.4]]),
                                       _phi([[0.6, 0.6], [0.5, 0.5], [0.5, 0.5]]), _phi([0.6, 0.3, 0.8]))
    assert strict.predict_proba(target).tolist() == pytest.approx([1 / 3, 0.0, 0.0])


def test_offline_rmia_uses_the_linear_approximation_and_only_out_signals():
    # a = 0.5: Pr(x) = 0.5 (1.5 Pr_OUT + 0.5). x1: Pr_OUT 0.6 -> 0.7; x2: (0.4 + 0.2) / 2 = 0.3 -> 0.475;
    # x3: 0.6 -> 0.7. z1: Pr_OUT 0.2 -> 0.4, target 0.2: ratio 0.5; z2: 0.6 -> 0.7, target 0.56: ratio 0.8;
    # z3 has no OUT model and is left out.
    nan = np.nan
    attack = RMIAOffline(a=0.5).fit(_phi([[0.6, nan], [0.4, 0.2], [0.6, 0.6]]),
                                    _phi([[0.2, nan], [0.8, 0.4], [nan, nan]]), _phi([0.2, 0.56, 0.9]))
    target = _phi([0.9, 0.3, 0.1])
    assert attack.a_ == 0.5 and attack.calibration_auc_ == {} and attack.n_population_ == 2
    assert attack.pr_x_.tolist() == pytest.approx([0.7, 0.475, 0.7])
    assert attack.ratio_z_.tolist() == pytest.approx([0.5, 0.8])
    # ratio(x) = 9/7, 0.3 / 0.475 = 0.631579, 0.1 / 0.7 = 0.142857.
    assert attack.ratio(target).tolist() == pytest.approx([9 / 7, 0.631579, 1 / 7], abs=1e-6)
    assert attack.predict_proba(target).tolist() == pytest.approx([1.0, 0.5, 0.0])


def test_no_in_signal_reaches_an_offline_attack():
    # On the splits: the target's members and non-members are outside every shadow's training set, so
    # the shadows' signals of target samples are all OUT signals.
    splits = make_splits(5_000, seed=0, num_shadows=5, num_references=4)
    pool = torch.cat([splits.target.train, splits.target.test])
    inside = np.stack([np.isin(pool.numpy(), splits.role(f"shadow{i}").train.numpy()) for i in range(5)], 1)
    assert not inside.any()
    # On the population z (shadow half), shadows are IN for some z: out_only blanks those cells, and
    # whatever values they held, offline scores do not change.
    rng = np.random.default_rng(0)
    n, n_z, m = 50, 80, 5
    z_inside = rng.random((n_z, m)) < 0.45
    z_phi = rng.normal(size=(n_z, m))
    x_phi, target_x, target_z = rng.normal(size=(n, m)), rng.normal(size=n), rng.normal(size=n_z)
    leaked = np.where(z_inside, z_phi + 100.0, z_phi)  # IN signals that would dominate any mean
    calibration, calibration_inside = rng.normal(size=(60, m)), rng.random((60, m)) < 0.5
    scores = [RMIAOffline().fit(x_phi, out_only(values, z_inside), target_z, calibration=calibration,
                                calibration_inside=calibration_inside).predict_proba(target_x)
              for values in (z_phi, leaked)]
    assert np.array_equal(scores[0], scores[1])
    x_inside = rng.random((n, m)) < 0.3
    lira = [LiRAOffline().fit(out_only(values, x_inside)).predict_proba(target_x)
            for values in (x_phi, np.where(x_inside, x_phi + 100.0, x_phi))]
    assert np.array_equal(lira[0], lira[1])


def test_calibration_picks_the_grid_value_with_the_best_mean_auc():
    rng = np.random.default_rng(1)
    n, k = 400, 4
    inside = rng.random((n, k)) < 0.5
    level = rng.normal(0, 2, n)[:, None]
    phi = level + 2.0 * inside + rng.normal(0, 0.5, (n, k))
    a, aucs = calibrate_offline_a(phi, inside)
    assert sorted(aucs) == pytest.approx(np.linspace(0, 1, 11)) and aucs[a] == max(aucs.values())
    # The AUC of one grid value, recomputed sample by sample: model j attacked with the others' OUT means.
    p = 1 / (1 + np.exp(-phi))
    per_model = []
    for j in range(k):
        rows = []
        for i in range(n):
            out = [p[i, o] for o in range(k) if o != j and not inside[i, o]]
            if out:  # a = 0.3: Pr(x) = 0.5 (1.3 Pr_OUT + 0.7)
                rows.append((inside[i, j], p[i, j] / (0.5 * (1.3 * np.mean(out) + 0.7))))
        per_model.append(roc_auc_score([r[0] for r in rows], [r[1] for r in rows]))
    assert aucs[0.3] == pytest.approx(np.mean(per_model))
    fitted = RMIAOffline().fit(phi[:, :2], phi[:, 2:], phi[:, 0], calibration=phi, calibration_inside=inside)
    assert fitted.a_ == a
    with pytest.raises(ValueError, match="at least two models"):
        calibrate_offline_a(phi[:, :1], inside[:, :1])
    with pytest.raises(ValueError, match="calibration and calibration_inside, or fix a"):
        RMIAOffline().fit(phi[:, :2], phi[:, 2:], phi[:, 0])


# ---- strength on synthetic signals -------------------------------------------------------------------------
def _world(*, shift: float, seed: int, n: int = 2_000, references: int = 8, shadows: int = 5,
           n_z: int = 1_500, queries: int = 2) -> dict[str, np.ndarray]:
    """phi of a sample under a model = its own level + ``shift`` if the model trained on it + noise.
    The target trains on the first half; references in complementary pairs; shadows and z from elsewhere."""
    rng = np.random.default_rng(seed)

    def phi(level: np.ndarray, inside: np.ndarray) -> np.ndarray:  # inside (n, M) -> phi (n, M, A)
        return level[:, None, None] + shift * inside[:, :, None] + rng.normal(0, 1, (*inside.shape, queries))

    level_x, level_z, level_c = rng.normal(0, 2, n), rng.normal(0, 2, n_z), rng.normal(0, 2, n_z)
    members = np.arange(n) < n // 2
    halves = [rng.permutation(n) < n // 2 for _ in range(references // 2)]
    reference_inside = np.stack([h for half in halves for h in (half, ~half)], axis=1)
    z_inside, calibration_inside = (rng.random((n_z, shadows)) < 0.45 for _ in range(2))
    return {"members": members, "target": phi(level_x, members[:, None])[:, 0],
            "reference": phi(level_x, reference_inside), "reference_inside": reference_inside,
            "shadow": phi(level_x, np.zeros((n, shadows), bool)),
            "target_z": phi(level_z, np.zeros((n_z, 1), bool))[:, 0, 0],
            "reference_z": phi(level_z, np.zeros((n_z, references), bool))[:, :, 0],
            "shadow_z": out_only(phi(level_z, z_inside)[:, :, 0], z_inside),
            "calibration": phi(level_c, calibration_inside)[:, :, 0],
            "calibration_inside": calibration_inside}


def _scores(name: str, world: dict[str, np.ndarray]) -> np.ndarray:
    attack = make_ratio_attack(name)
    if name == "lira":
        attack.fit(world["reference"], world["reference_inside"])
    elif name == "lira_offline":
        attack.fit(world["shadow"])
    elif name == "rmia":
        attack.fit(world["reference"][:, :, 0], world["reference_z"], world["target_z"])
    else:
        attack.fit(world["shadow"][:, :, 0], world["shadow_z"], world["target_z"],
                   calibration=world["calibration"], calibration_inside=world["calibration_inside"])
    return attack.predict_proba(world["target"] if name.startswith("lira") else world["target"][:, 0])


@pytest.mark.parametrize("name", RATIO_ATTACKS)
def test_every_reference_attack_separates_members_and_guesses_on_identical_signals(name):
    separable, identical = _world(shift=3.0, seed=2), _world(shift=0.0, seed=3)
    assert roc_auc_score(separable["members"], _scores(name, separable)) > 0.8
    assert roc_auc_score(identical["members"], _scores(name, identical)) == pytest.approx(0.5, abs=0.05)


def test_registry_names_the_reference_attacks_apart_from_the_paper_ones():
    assert tuple(RATIO_ATTACK_CLASSES) == RATIO_ATTACKS
    assert RATIO_ATTACKS == ("lira_offline", "rmia_offline", "lira", "rmia")
    assert not set(RATIO_ATTACKS) & set(ATTACKS)
    assert make_ratio_attack("rmia_offline", gamma=2.0, a=0.3).a == 0.3
    with pytest.raises(ConfigError, match="choose one of: lira_offline, rmia_offline, lira, rmia"):
        make_ratio_attack("lira_online")
    with pytest.raises(ValueError, match="gamma=0"):
        RMIAOnline(gamma=0)
    with pytest.raises(ValueError, match="a=1.5 must lie in"):
        RMIAOffline(a=1.5)
    with pytest.raises(ValueError, match="plain query only"):
        RMIAOnline().fit(np.zeros((3, 2, 4)), np.zeros((5, 2)), np.zeros(5))
    with pytest.raises(ValueError, match="population_phi has 3 models, reference 2"):
        RMIAOnline().fit(np.zeros((3, 2)), np.zeros((5, 3)), np.zeros(5))
