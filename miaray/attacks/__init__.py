"""Membership inference attacks: signals, the nine attacks of the paper, and privacy metrics."""

from miaray.attacks.base import Attack
from miaray.attacks.blindmi import BlindMIAttack, reference_transform
from miaray.attacks.metrics import attack_metrics, evaluate_attack
from miaray.attacks.nn import NNAttack, NNClsAttack, Top3NNAttack
from miaray.attacks.registry import ATTACK_CLASSES, ATTACK_NAMES, make_attack
from miaray.attacks.samia import SAMIAAttack, SAMIAModel
from miaray.attacks.signals import (Signals, compute_signals, confidence_gap, generalization_gap,
                                    membership_set, sensitivity_gap)
from miaray.attacks.threshold import ConfAttack, MentrAttack, Top1ConfAttack, XentAttack

__all__ = ["ATTACK_CLASSES", "ATTACK_NAMES", "Attack", "BlindMIAttack", "ConfAttack", "MentrAttack",
           "NNAttack", "NNClsAttack", "SAMIAAttack", "SAMIAModel", "Signals", "Top1ConfAttack",
           "Top3NNAttack", "XentAttack", "attack_metrics", "compute_signals", "confidence_gap",
           "evaluate_attack", "generalization_gap", "make_attack", "membership_set",
           "reference_transform", "sensitivity_gap"]
