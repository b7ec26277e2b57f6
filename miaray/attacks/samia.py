"""SAMIA (paper section 4.2): a self-attention attack whose tokens are the classes.

Token c holds (confidence p_c, sensitivity s_c, onehot_c). Architecture (paper Fig. 5): Linear(3 -> 64)
+ GELU, 3 post-norm Transformer encoder blocks (64 dims, 4 heads, feed-forward 128, dropout 0.2,
GELU), flatten, Linear(64 C -> 64) + ReLU, Linear(64 -> 2). Trained with SGD (momentum 0.9, weight
decay 5e-4), batch 128, 100 epochs, lr 0.01 divided by 10 at 50% and 75% of training (paper schedule).
The authors' code's input BatchNorm is not part of the paper's architecture and is left out.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from miaray.attacks.classifier import ClassifierAttack
from miaray.attacks.signals import Signals


class SAMIAModel(nn.Module):
    """The SAMIA attack network on tokens shaped (N, num_classes, 3); returns (N, 2) logits."""

    def __init__(self, num_classes: int, *, d_model: int = 64, n_heads: int = 4, n_layers: int = 3,
                 dim_feedforward: int = 128, dropout: float = 0.2) -> None:
        super().__init__()
        self.embed = nn.Linear(3, d_model)
        layer = nn.TransformerEncoderLayer(d_model=d_model, nhead=n_heads, dim_feedforward=dim_feedforward,
                                           dropout=dropout, activation="gelu", batch_first=True,
                                           norm_first=False)
        self.encoder = nn.TransformerEncoder(layer, num_layers=n_layers, enable_nested_tensor=False)
        self.hidden = nn.Linear(d_model * num_classes, d_model)
        self.out = nn.Linear(d_model, 2)

    def forward(self, tokens: Tensor) -> Tensor:
        h = self.encoder(F.gelu(self.embed(tokens)))
        return self.out(F.relu(self.hidden(h.flatten(1))))


def samia_tokens(signals: Signals) -> Tensor:
    """(N, C, 3) tokens: per class (confidence, sensitivity, one-hot of the ground truth)."""
    if signals.sensitivity is None:
        raise ValueError("SAMIA needs prediction sensitivity: compute the signals with "
                         "compute_signals(..., sensitivity=True)")
    onehot = F.one_hot(signals.labels, signals.num_classes).float()
    return torch.stack([signals.probs.float(), signals.sensitivity.float(), onehot], dim=2)


class SAMIAAttack(ClassifierAttack):
    """SAMIA: SAMIAModel trained on shadow tokens; milestones are fractions of the epochs."""

    name = "samia"

    def __init__(self, *, epochs: int = 100, lr: float = 0.01, milestones: Sequence[float] = (0.5, 0.75),
                 gamma: float = 0.1, momentum: float = 0.9, weight_decay: float = 5e-4,
                 batch_size: int = 128, seed: int = 0) -> None:
        super().__init__(epochs=epochs, batch_size=batch_size, seed=seed)
        self.lr = lr
        self.milestones = tuple(milestones)
        self.gamma = gamma
        self.momentum = momentum
        self.weight_decay = weight_decay

    def features(self, signals: Signals) -> Tensor:
        return samia_tokens(signals)

    def build(self, inputs: Tensor) -> nn.Module:
        return SAMIAModel(num_classes=inputs.shape[1])  # tokens are (N, C, 3)

    def optimizer(self, model: nn.Module) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
        opt = torch.optim.SGD(model.parameters(), lr=self.lr, momentum=self.momentum,
                              weight_decay=self.weight_decay)
        epochs_at = sorted(round(f * self.epochs) for f in self.milestones)
        return opt, torch.optim.lr_scheduler.MultiStepLR(opt, milestones=epochs_at, gamma=self.gamma)
