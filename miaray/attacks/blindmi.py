"""BlindMI-Diff-W (Hui et al., NDSS 2021): membership by differential comparison, no shadow model.

Features of a sample: (ground-truth confidence, largest confidence, second largest). A reference
non-member set is the target model's outputs on transformed inputs (ref_probs; reference_transform).
The target samples are shuffled and cut into batches of 20. Within a batch all samples start as
members; in each pass every remaining member whose move to the reference set makes the MMD between
the reference set (plus it) and the batch's remaining members (minus it) larger than the current
MMD is moved out, judged against the state at the start of the pass; passes repeat until nothing
moves. Member = never moved. As in the authors' code the reference set is the same for every batch,
MMD is the biased estimate with a sum of Gaussian kernels exp(-||a - b||^2 / (2 s)), floored at 1e-4,
and a batch's last remaining member is never moved (the MMD to an empty set is undefined).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from miaray.attacks.base import Attack
from miaray.attacks.signals import Signals

# The authors' kernel widths (BlindMIUtil.mmd_loss): 1e-6 .. 1e6.
DEFAULT_SIGMAS: tuple[float, ...] = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 5.0, 10.0, 15.0, 20.0, 25.0,
                                     30.0, 35.0, 100.0, 1e3, 1e4, 1e5, 1e6)
MMD_FLOOR = 1e-4  # the authors' mmd_loss returns max(1e-4, MMD^2)

_SOBEL_X = ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0))


def reference_transform(x: Tensor, *, is_image: bool) -> Tensor:
    """Inputs the target model surely never trained on, for the reference non-member set.

    Images (N, C, H, W): per-channel Sobel edge magnitude 0.5 |G_x| + 0.5 |G_y| of the normalised
    image with reflected borders, as the BlindMI authors (cv2.Sobel + addWeighted; their uint8
    saturation does not apply to normalised floats).
    Tabular binary rows (N, F): the 1-D analogue, |x[j+1] - x[j-1]| along the feature axis (reflected
    ends). Why: like the Sobel map it is a deterministic edge filter that destroys the record while
    keeping the input in the model's domain: the output is still a binary vector of comparable
    sparsity, so the model's answer looks like one on an unseen record rather than on garbage
    (random or complemented rows would have a very different density).
    """
    if is_image:
        if x.ndim != 4:
            raise ValueError(f"image input must be (N, C, H, W), got shape {tuple(x.shape)}")
        channels = x.shape[1]
        kx = torch.tensor(_SOBEL_X, dtype=x.dtype, device=x.device)
        weight = torch.stack([kx, kx.T]).unsqueeze(1).repeat(channels, 1, 1, 1)  # (2C, 1, 3, 3)
        grads = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), weight, groups=channels)
        grads = grads.view(x.shape[0], channels, 2, *x.shape[2:]).abs()
        return 0.5 * grads[:, :, 0] + 0.5 * grads[:, :, 1]
    if x.ndim != 2:
        raise ValueError(f"tabular input must be (N, F), got shape {tuple(x.shape)}")
    padded = F.pad(x.unsqueeze(1), (1, 1), mode="reflect").squeeze(1)
    return (padded[:, 2:] - padded[:, :-2]).abs()


def blindmi_features(probs: Tensor, labels: Tensor) -> Tensor:
    """(N, 3) float64: ground-truth confidence, then the two largest confidences (descending)."""
    probs = probs.double()
    p_true = probs.gather(1, labels.view(-1, 1).to(probs.device))
    return torch.cat([p_true, torch.topk(probs, 2, dim=1).values], dim=1)


def multi_kernel(a: Tensor, b: Tensor, sigmas: Sequence[float]) -> Tensor:
    """sum_s exp(-||a_i - b_j||^2 / (2 s)) for a (..., n, d), b (..., m, d): shape (..., n, m)."""
    dist = (a.unsqueeze(-2) - b.unsqueeze(-3)).pow(2).sum(-1)
    widths = torch.as_tensor(sigmas, dtype=dist.dtype, device=dist.device)
    return torch.exp(-dist.unsqueeze(-1) / (2.0 * widths)).sum(-1)


def mmd(x: Tensor, y: Tensor, sigmas: Sequence[float] = DEFAULT_SIGMAS) -> float:
    """Floored biased MMD^2 between the rows of x and y (the authors' mmd_loss)."""
    value = (multi_kernel(x, x, sigmas).mean() + multi_kernel(y, y, sigmas).mean()
             - 2.0 * multi_kernel(x, y, sigmas).mean())
    return max(MMD_FLOOR, float(value))


def _floored(value: Tensor) -> Tensor:
    return value.clamp_min(MMD_FLOOR)


def differential_comparison(batches: Tensor, valid: Tensor, reference: Tensor,
                            sigmas: Sequence[float]) -> Tensor:
    """The BlindMI moves for all batches at once: batches (B, s, 3), valid (B, s) bool marks real
    rows, reference (r, 3). Returns the (B, s) bool "still a member" mask.

    All MMDs come from kernel sums updated in closed form: moving sample i from the batch's members
    M to the reference R changes sum K(R,R) by 2 k(R,i) + k(i,i), sum K(M,M) by -2 k(M,i) + k(i,i)
    and sum K(R,M) by -k(R,i) + k(M,i) - k(i,i).
    """
    k_batch = multi_kernel(batches, batches, sigmas)               # (B, s, s)
    k_ref = multi_kernel(batches, reference, sigmas).sum(-1)       # (B, s): k(R, i)
    k_self = torch.diagonal(k_batch, dim1=1, dim2=2)               # (B, s): k(i, i)
    s_rr = multi_kernel(reference, reference, sigmas).sum()
    r = float(len(reference))
    members = valid.clone()
    while True:
        mask = members.to(k_batch.dtype)
        m = mask.sum(1)
        k_mem = (k_batch @ mask.unsqueeze(-1)).squeeze(-1)        # (B, s): k(M, i)
        s_mm = (k_mem * mask).sum(1)
        s_rm = (k_ref * mask).sum(1)
        # m >= 1: every batch has a real row and its last member never moves.
        current = _floored(s_rr / r**2 + s_mm / m**2 - 2 * s_rm / (r * m))
        rest = (m - 1).unsqueeze(1).clamp_min(1)                   # |M| - 1, guarded; masked below
        moved = _floored((s_rr + 2 * k_ref + k_self) / (r + 1) ** 2
                         + (s_mm.unsqueeze(1) - 2 * k_mem + k_self) / rest**2
                         - 2 * (s_rm.unsqueeze(1) - k_ref + k_mem - k_self) / ((r + 1) * rest))
        move = members & (m > 1).unsqueeze(1) & (moved > current.unsqueeze(1))
        if not move.any():
            return members
        members = members & ~move


class BlindMIAttack(Attack):
    """BlindMI-Diff-W. Label-only: predict_proba returns the 0/1 decision itself (1 = member).

    fit stores nothing (no shadow model); all the work happens in predict_proba on the target set,
    so a sample's decision depends on the other target samples in its batch, as in the original.
    With label_only the metrics describe this single operating point (see attack_metrics).
    """

    name = "blindmi"
    label_only = True

    def __init__(self, *, batch_size: int = 20, n_reference: int = 20,
                 sigmas: Sequence[float] = DEFAULT_SIGMAS, seed: int = 0) -> None:
        self.batch_size = batch_size
        self.n_reference = n_reference
        self.sigmas = tuple(sigmas)
        self.seed = seed

    def fit(self, shadow_signals: Signals | None = None, membership: np.ndarray | None = None) -> "BlindMIAttack":
        """Nothing to learn: BlindMI needs no shadow model. Marks the attack fitted."""
        self.fitted_ = True
        return self

    def predict_proba(self, target_signals: Signals) -> np.ndarray:
        self._check_fitted()
        if target_signals.ref_probs is None:
            raise ValueError("BlindMI needs ref_probs: compute_signals(..., reference_transform="
                             "functools.partial(reference_transform, is_image=...))")
        n = len(target_signals)
        gen = torch.Generator().manual_seed(self.seed)
        ref_rows = torch.randperm(n, generator=gen)[:self.n_reference].to(target_signals.device)
        reference = blindmi_features(target_signals.ref_probs[ref_rows], target_signals.labels[ref_rows])
        order = torch.randperm(n, generator=gen).to(target_signals.device)
        n_batches = -(-n // self.batch_size)
        padded = torch.full((n_batches * self.batch_size,), -1, dtype=torch.int64, device=order.device)
        padded[:n] = order
        valid = (padded >= 0).view(n_batches, self.batch_size)
        features = blindmi_features(target_signals.probs, target_signals.labels)
        batches = features[padded.clamp_min(0)].view(n_batches, self.batch_size, 3)
        members = differential_comparison(batches, valid, reference, self.sigmas).view(-1)[:n]
        decision = torch.empty(n, dtype=torch.float64, device=order.device)
        decision[order] = members.double()
        return decision.cpu().numpy()
