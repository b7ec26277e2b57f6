"""ADV, adversarial regularisation (Nasr, Shokri, Houmansadr, CCS 2018, Algorithm 1).

An inference model h (the NNCls attack's shape: MLP on [softmax(f(x)), one-hot(y)],
2C -> 512 -> 256 -> 128 -> 2, ReLU, no dropout; Adam lr 1e-3, weight decay 5e-4 as in the authors'
code) learns to tell members from non-members. In EVERY training batch:

1. k inference steps: maximise the gain
   G = mean_member log h(member | f(x), y) + mean_nonmember log h(non-member | f(x'), y')
   (cross-entropy of h on the training batch, labelled member, against an equally large batch drawn
   from the non-member set, labelled non-member). Posteriors come from f in eval mode, without
   gradients, as an attacker would see them. With k > 1 the member batch is the same and the
   non-member batch is redrawn.
2. one classifier step on loss = CE(f(x), y) + alpha * mean_member log h(member | f(x), y): the
   classifier's side of Nasr's min-max min_f (L(f) + alpha * max_h G); like Nasr's Algorithm 1 it
   keeps G's member term, the one computed on the training batch. Equivalently CE - alpha *
   CE_h(member), the authors' code's form; minimising it lowers h's belief that members are members.

The non-member set (Nasr et al.'s reference set) is the model's own validation split (held out from training, so non-members; the
unit passes it). Step counts of both models are reported by `summary()`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from miaray.attacks.nn import attack_mlp
from miaray.train import Defense, predict_logits

MEMBER = 1  # class index of "member" in the inference model's output


def inference_model(num_classes: int) -> nn.Sequential:
    """The MLP h on [softmax, one-hot] (the attacks' MLP without dropout); logits over (non-member, member)."""
    return attack_mlp(2 * num_classes, dropout=0.0)


def attack_features(logits: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """h's input: the posterior and the one-hot label, in fp32."""
    return torch.cat([F.softmax(logits.float(), dim=1), F.one_hot(y, num_classes).float()], dim=1)


def adv_loss(logits: torch.Tensor, y: torch.Tensor, h: nn.Module, *, alpha: float,
             num_classes: int) -> torch.Tensor:
    """The classifier's loss CE(logits, y) + alpha * mean log h(member | softmax(logits), y)."""
    member_log_prob = F.log_softmax(h(attack_features(logits, y, num_classes)).float(), dim=1)[:, MEMBER]
    return F.cross_entropy(logits, y) + alpha * member_log_prob.mean()


class ADVDefense(Defense):
    """Alternating inference-model and classifier steps, both in every batch."""

    name = "adv"

    def __init__(self, *, alpha: float, k: int, num_classes: int,
                 nonmembers: tuple[torch.Tensor, torch.Tensor], seed: int = 0) -> None:
        if alpha < 0 or k < 1 or len(nonmembers[1]) == 0:
            raise ValueError(f"adv needs alpha >= 0, k >= 1 and a non-empty non-member set; got "
                             f"alpha={alpha}, k={k}, {len(nonmembers[1])} non-member examples")
        self.alpha, self.k, self.num_classes = alpha, k, num_classes
        self.x_ref, self.y_ref = nonmembers
        self.generator = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the global stream
            torch.manual_seed(seed)
            self.h = inference_model(num_classes).to(self.x_ref.device)
        self.h_optimizer = torch.optim.Adam(self.h.parameters(), lr=1e-3, weight_decay=5e-4)
        self.inference_steps = 0
        self.classifier_steps = 0

    def _nonmember_batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randperm(len(self.y_ref), generator=self.generator)[:size].to(self.y_ref.device)
        return self.x_ref[idx], self.y_ref[idx]

    @staticmethod
    def _posteriors(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """f's fp32 logits on x as an attacker sees them: eval mode, no gradients, mode restored; one
        forward over the whole batch (batch_size=len(x)), under fit's bf16 autocast on CUDA."""
        return predict_logits(model, x, batch_size=max(1, len(x)))

    def _inference_steps(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        # Member and non-member posteriors come from separate forwards run the same way (eval mode, same
        # autocast precision, fp32 out), so h cannot tell them apart by precision or by train-mode layers.
        member = attack_features(self._posteriors(model, x), y, self.num_classes)
        for _ in range(self.k):
            x_ref, y_ref = self._nonmember_batch(len(y))
            non_member = attack_features(self._posteriors(model, x_ref), y_ref, self.num_classes)
            labels = torch.cat([torch.full((len(member),), MEMBER),
                                torch.full((len(non_member),), 1 - MEMBER)]).to(x.device)
            with torch.autocast(device_type=x.device.type, enabled=False):  # h trains in fp32
                # Minimising h's cross-entropy maximises the gain G.
                loss = F.cross_entropy(self.h(torch.cat([member, non_member])), labels)
                # zero_grad also drops what the classifier step's backward left in h.
                self.h_optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.h_optimizer.step()
                self.inference_steps += 1

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self._inference_steps(model, x, y)
        self.classifier_steps += 1  # fit steps the classifier once on every loss it gets
        return adv_loss(model(x), y, self.h, alpha=self.alpha, num_classes=self.num_classes)

    def summary(self) -> dict[str, float]:
        return {"adv_inference_steps": self.inference_steps, "adv_classifier_steps": self.classifier_steps}
