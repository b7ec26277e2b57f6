"""Neural-network attacks: NN (Shokri), Top3-NN (Salem), NNCls (Nasr).

All three train the paper's MLP in -> 512 -> 256 -> 128 -> 2 (ReLU, dropout 0.2) with Adam; they
differ only in the features: the softmax vector, its 3 largest values sorted descending, or the
softmax vector followed by the one-hot label.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from miaray.attacks.classifier import ClassifierAttack
from miaray.attacks.signals import Signals


def attack_mlp(in_features: int, *, dropout: float = 0.2) -> nn.Sequential:
    """The likelihood-ratio attack MLP: in -> 512 -> 256 -> 128 -> 2 with ReLU and dropout (no Dropout layers
    at all when dropout == 0, e.g. ADV's inference model)."""
    layers: list[nn.Module] = []
    for width_in, width_out in ((in_features, 512), (512, 256), (256, 128)):
        layers += [nn.Linear(width_in, width_out), nn.ReLU()] + ([nn.Dropout(dropout)] if dropout else [])
    return nn.Sequential(*layers, nn.Linear(128, 2))


class MLPAttack(ClassifierAttack):
    """An MLP on features(signals), trained with Adam (defaults: 30 epochs, lr 1e-3, batch 128)."""

    def __init__(self, *, epochs: int = 30, lr: float = 1e-3, batch_size: int = 128, seed: int = 0) -> None:
        super().__init__(epochs=epochs, batch_size=batch_size, seed=seed)
        self.lr = lr

    def build(self, inputs: Tensor) -> nn.Module:
        return attack_mlp(inputs.shape[1])

    def optimizer(self, model: nn.Module) -> tuple[torch.optim.Optimizer, None]:
        return torch.optim.Adam(model.parameters(), lr=self.lr), None


class NNAttack(MLPAttack):
    """NN (Shokri et al.): MLP on the full softmax vector."""

    name = "nn"

    def features(self, signals: Signals) -> Tensor:
        return signals.probs.float()


class Top3NNAttack(MLPAttack):
    """Top3-NN (Salem et al.): MLP on the 3 largest confidences, sorted descending."""

    name = "top3_nn"

    def features(self, signals: Signals) -> Tensor:
        if signals.num_classes < 3:
            raise ValueError(f"top3_nn needs at least 3 classes, got {signals.num_classes}")
        return torch.topk(signals.probs.float(), 3, dim=1, sorted=True).values


class NNClsAttack(MLPAttack):
    """NNCls (Nasr et al.): MLP on the softmax vector followed by the one-hot ground-truth label."""

    name = "nncls"

    def features(self, signals: Signals) -> Tensor:
        onehot = F.one_hot(signals.labels, signals.num_classes).float()
        return torch.cat([signals.probs.float(), onehot], dim=1)
