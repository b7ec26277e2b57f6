"""Privacy metrics: accuracy, AUC, TPR at low FPR and advantage, by hand; the label-only case."""

import numpy as np
import pytest
import torch

from miaray.attacks import Signals, attack_metrics, evaluate_attack, make_attack

# 200 non-members at 0.000, 0.001, ..., 0.199 and 5 members.
NONMEMBER_SCORES = np.arange(200) / 1000
MEMBER_SCORES = np.array([0.3, 0.25, 0.1985, 0.1975, 0.05])
MEMBERSHIP = np.r_[np.ones(5, np.int64), np.zeros(200, np.int64)]
SCORES = np.r_[MEMBER_SCORES, NONMEMBER_SCORES]


def test_metrics_on_a_tiny_roc_by_hand():
    predictions = (SCORES >= 0.1975).astype(np.int64)
    m = attack_metrics(MEMBERSHIP, scores=SCORES, predictions=predictions)
    # ROC points: t=0.25 -> (FPR 0, TPR 2/5); t=0.1985 -> (1/200, 3/5); t=0.1975 -> (2/200 = 0.01, 4/5);
    # next t=0.197 -> FPR 3/200 > 0.01. So TPR at FPR <= 1% is 4/5, at FPR <= 0.1% it is 2/5.
    assert m["tpr_at_fpr_0.01"] == pytest.approx(0.8)
    assert m["tpr_at_fpr_0.001"] == pytest.approx(0.4)
    # AUC = P(member > non-member) + P(tie) / 2: the member at 0.05 beats 50 and ties 1 non-member:
    # (200 + 200 + 199 + 198 + 50.5) / (5 * 200)
    assert m["attack_auc"] == pytest.approx(0.8475)
    # advantage: max TPR - FPR = 0.8 - 0.01 at t = 0.1975 (t = 0.05 gives 1 - 0.75)
    assert m["advantage"] == pytest.approx(0.79)
    # predictions: 4 of 5 members and 198 of 200 non-members right
    assert m["attack_acc"] == pytest.approx(202 / 205)


def test_label_only_metrics_describe_the_single_operating_point():
    membership = np.r_[np.ones(10, np.int64), np.zeros(10, np.int64)]
    predictions = np.r_[np.ones(8), np.zeros(2), np.ones(2), np.zeros(8)].astype(np.int64)  # TPR .8, FPR .2
    m = attack_metrics(membership, predictions=predictions, label_only=True)
    assert m == pytest.approx({"attack_acc": 0.8, "attack_auc": 0.8, "tpr_at_fpr_0.01": 0.0,
                               "tpr_at_fpr_0.001": 0.0, "advantage": 0.6})
    perfect_fpr = np.r_[np.ones(6), np.zeros(4), np.zeros(10)].astype(np.int64)  # TPR .6, FPR 0
    m = attack_metrics(membership, predictions=perfect_fpr, label_only=True)
    assert m["tpr_at_fpr_0.001"] == pytest.approx(0.6) and m["attack_auc"] == pytest.approx(0.8)


def test_metric_arguments_are_checked():
    with pytest.raises(ValueError, match="label-only"):
        attack_metrics(MEMBERSHIP, scores=SCORES, predictions=SCORES > 0.1, label_only=True)
    with pytest.raises(ValueError, match="scores are required"):
        attack_metrics(MEMBERSHIP, predictions=SCORES > 0.1)
    with pytest.raises(ValueError, match="both"):
        attack_metrics(np.ones(5), scores=np.arange(5.0), predictions=np.ones(5))


def test_evaluate_attack_uses_scores_and_the_attacks_own_predictions():
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(3 * torch.randn(400, 4, generator=g), dim=1)
    labels = torch.randint(0, 4, (400,), generator=g)
    sig = Signals(probs=probs, labels=labels, ref_probs=torch.full((400, 4), 0.25))
    membership = (probs.gather(1, labels.view(-1, 1)).squeeze(1) + 0.3 * torch.rand(400, generator=g) > 0.5).long()
    conf = make_attack("conf").fit(sig.subset(range(200)), membership[:200])
    target, m_target = sig.subset(range(200, 400)), membership[200:].numpy()
    expected = attack_metrics(m_target, scores=conf.predict_proba(target), predictions=conf.predict(target))
    assert evaluate_attack(conf, target, m_target) == expected
    assert expected["attack_acc"] == conf.score(target, m_target)
    blindmi = make_attack("blindmi").fit()
    m = evaluate_attack(blindmi, target, m_target)
    assert m == attack_metrics(m_target, predictions=blindmi.predict(target), label_only=True)
