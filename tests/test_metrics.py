"""Privacy metrics at the attack's own decision, and from the ROC of its scores, by hand; the
label-only case; a real uneven split where calling everyone a member scores exactly 0.5."""

import math

import numpy as np
import pytest
import torch

from miaray.attacks import Signals, attack_metrics, evaluate_attack, make_attack
from miaray.attacks.metrics import METRICS, measurable_fpr
from miaray.data.splits import make_splits
from miaray.vocabulary import TABLE2_SPLITS

# 1,000 non-members at 0.000, 0.001, ..., 0.999 and 5 members.
NONMEMBER_SCORES = np.arange(1000) / 1000
MEMBER_SCORES = np.array([1.5, 1.2, 0.9985, 0.9975, 0.25])
MEMBERSHIP = np.r_[np.ones(5, np.int64), np.zeros(1000, np.int64)]
SCORES = np.r_[MEMBER_SCORES, NONMEMBER_SCORES]


def test_metrics_at_the_attacks_own_decision_and_from_the_roc_by_hand():
    # The attack's own decision, "member iff score >= 0.5": 4 of 5 members, 500 of 1,000 non-members.
    predictions = (SCORES >= 0.5).astype(np.int64)
    m = attack_metrics(MEMBERSHIP, scores=SCORES, predictions=predictions)
    assert list(m) == list(METRICS)
    assert m["tpr"] == pytest.approx(0.8) and m["fpr"] == pytest.approx(0.5)
    assert m["attack_acc"] == 0.5 * (m["tpr"] + 1 - m["fpr"]) == pytest.approx(0.65)  # balanced
    assert m["advantage"] == m["tpr"] - m["fpr"] == pytest.approx(0.3)
    # (plain accuracy would be (4 + 500) / 1005 = 0.5015: not what attack_acc is)
    # ROC points: t=1.2 -> (FPR 0, TPR 2/5); t=0.9985 -> (1/1000, 3/5); t=0.9975 -> (2/1000, 4/5);
    # 4/5 holds down to t=0.25 -> (750/1000, 1). So TPR at FPR <= 0.1% is 3/5, at FPR <= 1% it is 4/5.
    assert m["tpr_at_fpr_0.001"] == pytest.approx(0.6)
    assert m["tpr_at_fpr_0.01"] == pytest.approx(0.8)
    # The oracle's best threshold (t = 0.9975): 0.8 - 0.002, above the attack's own 0.3.
    assert m["max_advantage"] == pytest.approx(0.798)
    # AUC = P(member > non-member) + P(tie) / 2: (1000 + 1000 + 999 + 998 + 250 + 0.5) / (5 * 1000)
    assert m["attack_auc"] == pytest.approx(0.8495)
    assert (m["n_members"], m["n_nonmembers"]) == (5, 1000)

    # A decision worse than guessing keeps its sign (Yeom's advantage is not an absolute value).
    worse = attack_metrics(MEMBERSHIP, scores=SCORES, predictions=1 - predictions)
    assert worse["advantage"] == pytest.approx(-0.3) and worse["attack_acc"] == pytest.approx(0.35)
    assert worse["max_advantage"] == m["max_advantage"]  # the ROC is the scores', not the decision's


def test_tpr_at_an_fpr_below_one_false_positive_is_not_measured():
    # 200 non-members: one false positive is an FPR of 0.005, so 0.1% cannot be measured; 1% can.
    membership, scores = MEMBERSHIP[:205], np.r_[MEMBER_SCORES, NONMEMBER_SCORES[-200:]]
    m = attack_metrics(membership, scores=scores, predictions=(scores >= 0.9).astype(np.int64))
    assert math.isnan(m["tpr_at_fpr_0.001"])
    # ROC: t=0.9985 -> (1/200, 3/5), t=0.9975 -> (2/200 = 0.01, 4/5), t=0.997 -> (3/200, 4/5).
    assert m["tpr_at_fpr_0.01"] == pytest.approx(0.8)
    assert measurable_fpr(0.001, 1000) and not measurable_fpr(0.001, 999) and measurable_fpr(0.01, 100)


def test_tpr_at_low_fpr_reads_every_threshold_when_scores_tie():
    # 1,000 (member, non-member) pairs, each pair sharing one score, the pairs' scores all distinct: every
    # threshold s_k admits k members and k non-members, so TPR = FPR at each of the 1,001 ROC points, all
    # on the diagonal. At FPR <= 1% the best is 10 of 1,000 members; sklearn's default
    # (drop_intermediate=True) keeps only the diagonal's ends and the first point, which reads 0.001.
    pair_scores = np.arange(1000) / 1000
    membership = np.r_[np.ones(1000, np.int64), np.zeros(1000, np.int64)]
    scores = np.r_[pair_scores, pair_scores]
    m = attack_metrics(membership, scores=scores, predictions=(scores >= 0.5).astype(np.int64))
    assert m["tpr_at_fpr_0.01"] == pytest.approx(0.01)
    assert m["tpr_at_fpr_0.001"] == pytest.approx(0.001)
    assert m["attack_auc"] == pytest.approx(0.5) and m["max_advantage"] == pytest.approx(0.0)


def test_label_only_metrics_describe_the_single_operating_point():
    membership = np.r_[np.ones(10, np.int64), np.zeros(1000, np.int64)]
    predictions = np.r_[np.ones(8), np.zeros(2), np.ones(200), np.zeros(800)].astype(np.int64)  # TPR .8, FPR .2
    m = attack_metrics(membership, predictions=predictions, label_only=True)
    assert m == pytest.approx({"attack_acc": 0.8, "tpr": 0.8, "fpr": 0.2, "advantage": 0.6, "max_advantage": 0.6,
                               "attack_auc": 0.8, "tpr_at_fpr_0.01": 0.0, "tpr_at_fpr_0.001": 0.0,
                               "n_members": 10, "n_nonmembers": 1000})
    perfect_fpr = np.r_[np.ones(6), np.zeros(4), np.zeros(1000)].astype(np.int64)  # TPR .6, FPR 0
    m = attack_metrics(membership, predictions=perfect_fpr, label_only=True)
    assert m["tpr_at_fpr_0.001"] == pytest.approx(0.6) and m["attack_auc"] == pytest.approx(0.8)
    inverted = attack_metrics(membership, predictions=1 - predictions, label_only=True)
    assert inverted["advantage"] == pytest.approx(-0.6) and inverted["max_advantage"] == 0.0


def test_calling_everyone_a_member_scores_exactly_one_half_on_a_real_uneven_split():
    split = TABLE2_SPLITS[-1]
    assert split == (70, 20, 10)
    target = make_splits(1797, seed=0, num_shadows=1, split=split).role("target")  # digits' size
    membership = np.r_[np.ones(len(target.train), np.int64), np.zeros(len(target.test), np.int64)]
    everyone = np.ones(len(membership), np.int64)
    m = attack_metrics(membership, scores=everyone.astype(float), predictions=everyone)
    assert (m["tpr"], m["fpr"], m["advantage"], m["max_advantage"]) == (1.0, 1.0, 0.0, 0.0)
    assert m["attack_acc"] == 0.5 and m["attack_auc"] == 0.5
    assert np.mean(everyone == membership) > 0.75  # what plain accuracy would have said (members are 78%)


def test_metric_arguments_are_checked():
    with pytest.raises(ValueError, match="label-only"):
        attack_metrics(MEMBERSHIP, scores=SCORES, predictions=SCORES > 0.1, label_only=True)
    with pytest.raises(ValueError, match="scores are required"):
        attack_metrics(MEMBERSHIP, predictions=SCORES > 0.1)
    with pytest.raises(ValueError, match="both"):
        attack_metrics(np.ones(5), scores=np.arange(5.0), predictions=np.ones(5))
    with pytest.raises(ValueError, match="0 .non-member. or 1"):
        attack_metrics(MEMBERSHIP, scores=SCORES, predictions=SCORES)


def test_evaluate_attack_uses_scores_and_the_attacks_own_predictions():
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(3 * torch.randn(400, 4, generator=g), dim=1)
    labels = torch.randint(0, 4, (400,), generator=g)
    sig = Signals(probs=probs, labels=labels, ref_probs=torch.full((400, 4), 0.25))
    membership = (probs.gather(1, labels.view(-1, 1)).squeeze(1) + 0.3 * torch.rand(400, generator=g) > 0.5).long()
    conf = make_attack("conf").fit(sig.subset(range(200)), membership[:200])
    target, m_target = sig.subset(range(200, 400)), membership[200:].numpy()
    predictions = conf.predict(target)
    expected = attack_metrics(m_target, scores=conf.predict_proba(target), predictions=predictions)
    assert evaluate_attack(conf, target, m_target) == pytest.approx(expected, nan_ok=True)  # 0.1%: NaN on 200
    member = m_target == 1
    assert expected["tpr"] == predictions[member].mean() and expected["fpr"] == predictions[~member].mean()
    blindmi = make_attack("blindmi").fit()
    m = evaluate_attack(blindmi, target, m_target)
    assert m == pytest.approx(attack_metrics(m_target, predictions=blindmi.predict(target), label_only=True),
                             nan_ok=True)
