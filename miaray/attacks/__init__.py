"""Membership inference attacks: signals, the nine attacks of the paper, the likelihood-ratio attacks
(LiRA, RMIA), and privacy metrics."""

from miaray.attacks.base import Attack
from miaray.attacks.blindmi import BlindMIAttack, reference_transform
from miaray.attacks.lira import LiRAOffline, LiRAOnline
from miaray.attacks.metrics import attack_metrics, evaluate_attack
from miaray.attacks.nn import NNAttack, NNClsAttack, Top3NNAttack
from miaray.attacks.phi import model_phi, query_set, scaled_confidence
from miaray.attacks.ratio_attack import RatioAttack, out_only
from miaray.attacks.registry import (ATTACK_CLASSES, ATTACK_NAMES, RATIO_ATTACK_CLASSES, make_attack, make_ratio_attack,
                                     register_attack, unregister_attack)
from miaray.attacks.rmia import RMIAOffline, RMIAOnline, calibrate_offline_a
from miaray.attacks.samia import SAMIAAttack, SAMIAModel
from miaray.attacks.signals import (Signals, compute_signals, confidence_gap, generalization_gap, membership_set,
                                    sensitivity_gap)
from miaray.attacks.threshold import ConfAttack, MentrAttack, Top1ConfAttack, XentAttack

__all__ = ["ATTACK_CLASSES", "ATTACK_NAMES", "Attack", "BlindMIAttack", "ConfAttack", "LiRAOffline",
           "LiRAOnline", "MentrAttack", "NNAttack", "NNClsAttack", "RATIO_ATTACK_CLASSES", "RMIAOffline",
           "RMIAOnline", "RatioAttack", "SAMIAAttack", "SAMIAModel", "Signals", "Top1ConfAttack",
           "Top3NNAttack", "XentAttack", "attack_metrics", "calibrate_offline_a", "compute_signals",
           "confidence_gap", "evaluate_attack", "generalization_gap", "make_attack", "make_ratio_attack",
           "membership_set", "model_phi", "out_only", "query_set", "reference_transform", "register_attack", "unregister_attack", "scaled_confidence",
           "sensitivity_gap"]
