"""Membership inference attacks: signals, the nine attacks of the paper, the reference-model attacks
(LiRA, RMIA), and privacy metrics."""

from miaray.attacks.base import Attack
from miaray.attacks.blindmi import BlindMIAttack, reference_transform
from miaray.attacks.lira import LiRAOffline, LiRAOnline
from miaray.attacks.metrics import attack_metrics, evaluate_attack
from miaray.attacks.nn import NNAttack, NNClsAttack, Top3NNAttack
from miaray.attacks.reference_attack import ReferenceAttack, out_only
from miaray.attacks.reference_signals import model_phi, query_set, scaled_confidence
from miaray.attacks.registry import (ATTACK_CLASSES, ATTACK_NAMES, REFERENCE_ATTACK_CLASSES, make_attack,
                                     make_reference_attack)
from miaray.attacks.rmia import RMIAOffline, RMIAOnline, calibrate_offline_a
from miaray.attacks.samia import SAMIAAttack, SAMIAModel
from miaray.attacks.signals import (Signals, compute_signals, confidence_gap, generalization_gap,
                                    membership_set, sensitivity_gap)
from miaray.attacks.threshold import ConfAttack, MentrAttack, Top1ConfAttack, XentAttack

__all__ = ["ATTACK_CLASSES", "ATTACK_NAMES", "Attack", "BlindMIAttack", "ConfAttack", "LiRAOffline",
           "LiRAOnline", "MentrAttack", "NNAttack", "NNClsAttack", "REFERENCE_ATTACK_CLASSES", "RMIAOffline",
           "RMIAOnline", "ReferenceAttack", "SAMIAAttack", "SAMIAModel", "Signals", "Top1ConfAttack",
           "Top3NNAttack", "XentAttack", "attack_metrics", "calibrate_offline_a", "compute_signals",
           "confidence_gap", "evaluate_attack", "generalization_gap", "make_attack", "make_reference_attack",
           "membership_set", "model_phi", "out_only", "query_set", "reference_transform", "scaled_confidence",
           "sensitivity_gap"]
