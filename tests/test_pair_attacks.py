"""Two-model attacks (miaray.attacks.pair): hand-checked fits, the synthetic case the issue sets (a rise
only members show is found by the pair and by neither model alone), chance on identical models, and a
real unit whose target membership never reaches a fit."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from miaray.attacks.pair import PairDifferenceAttack, PairLogisticAttack, PairPhi
from miaray.attacks.threshold import best_threshold


def _rising_for_members(n: int, seed: int, *, rise: float = 1.5) -> tuple[PairPhi, np.ndarray]:
    """phi of the original spread widely over samples (N(0, 20)); the pruned model's phi is the
    original's plus `rise` for members only, plus small noise: each model alone barely tells them apart."""
    rng = np.random.default_rng(seed)
    member = np.repeat([1, 0], n)
    original = rng.normal(0.0, 20.0, 2 * n)
    return PairPhi(original, original + rise * member + rng.normal(0.0, 0.5, 2 * n)), member


def test_the_difference_attack_is_a_threshold_on_the_oriented_change_hand_checked():
    shadows = PairPhi(original=[1.0, 2.0, 3.0, 4.0], pruned=[1.0, 1.0, 3.5, 4.5])  # changes 0, -1, 0.5, 0.5
    attack = PairDifferenceAttack().fit(shadows, [0, 0, 1, 1])
    assert (attack.sign_, attack.threshold_) == (1.0, 0.5)  # members rose by 0.5: threshold at 0.5
    target = PairPhi(original=[0.0, 0.0], pruned=[1.0, 0.2])
    np.testing.assert_allclose(attack.predict_proba(target), [0.5, -0.3])
    assert attack.predict(target).tolist() == [1, 0]
    falling = PairDifferenceAttack().fit(shadows, [1, 1, 0, 0])  # members fell: the attack turns round
    assert falling.sign_ == -1.0 and falling.threshold_ == best_threshold([0.0, 1.0], [-0.5, -0.5])[0]


def test_a_rise_only_members_show_is_found_by_the_pair_and_by_neither_model_alone():
    shadows, shadow_member = _rising_for_members(2000, seed=0)
    target, truth = _rising_for_members(2000, seed=1)
    for attack in (PairDifferenceAttack(), PairLogisticAttack()):
        scores = attack.fit(shadows, shadow_member).predict_proba(target)
        assert roc_auc_score(truth, scores) > 0.8, attack.name
    for alone in (target.original, target.pruned):  # a single-model score: its phi
        assert abs(roc_auc_score(truth, alone) - 0.5) < 0.06


def test_identical_models_leave_the_difference_attack_at_chance():
    rng = np.random.default_rng(2)
    phi = rng.normal(0.0, 3.0, 4000)
    member = np.repeat([1, 0], 2000)
    shadows = PairPhi(phi + 2.0 * member, phi + 2.0 * member)  # members stand out, but not by any change
    target = PairPhi(phi[::-1] + 2.0 * member, phi[::-1] + 2.0 * member)
    scores = PairDifferenceAttack().fit(shadows, member).predict_proba(target)
    assert np.ptp(scores) == 0  # constant: marked collapsed by the unit, never a result
    assert roc_auc_score(member, scores) == pytest.approx(0.5, abs=0.05)


def test_pairs_of_unequal_length_are_refused():
    with pytest.raises(ValueError, match="cover 3 and 2 samples"):
        PairPhi([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(RuntimeError, match=r"fit\(shadow_pairs, membership\)"):
        PairLogisticAttack().predict_proba(PairPhi([1.0], [1.0]))
