"""What the likelihood-ratio attacks (LiRA, RMIA) read from a model: the logit-scaled confidence phi.

For logits z of a sample with label y, softmax p and p_y its true-class probability,

    phi = log(p_y / (1 - p_y)) = z_y - logsumexp_{c != y} z_c        (Carlini et al. 2022, stable form)

computed from the logits: in float32 the softmax of a well-fitted member rounds to p_y = 1 and
log(p / (1 - p)) to infinity, so phi must not be derived from stored probabilities. RMIA's
Pr(x | theta) = p_y is sigmoid(phi) exactly, so phi is the one per-sample signal both attacks need.

Query augmentations: LiRA queries each image in several versions and averages the evidence. Here a
query is (mirror, dy, dx): an optional horizontal flip, then a translation by (dy, dx) pixels with
reflect padding, as in LiRA's code. Query 0 is always the image itself. Augmentations help when the
model saw such versions in training; the paper trains without augmentation, and digits are not
mirror-symmetric, so the default is no augmentation.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from miaray.models.modes import in_mode

Query = tuple[bool, int, int]  # (mirror, dy, dx)


def scaled_confidence(logits: Tensor, labels: Tensor) -> Tensor:
    """phi = z_y - logsumexp_{c != y} z_c for logits (n, C) or (n, A, C) and labels (n,): shape (n,) or
    (n, A), in the logits' dtype."""
    if logits.ndim not in (2, 3) or labels.shape != logits.shape[:1]:
        raise ValueError(f"scaled_confidence: logits must be (n, C) or (n, A, C) and labels (n,), "
                         f"got {tuple(logits.shape)} and {tuple(labels.shape)}")
    index = labels.to(logits.device, torch.int64).view(-1, *([1] * (logits.ndim - 1)))
    index = index.expand(*logits.shape[:-1], 1)
    true = logits.gather(-1, index).squeeze(-1)
    others = logits.scatter(-1, index, float("-inf"))  # drop the true class from the logsumexp
    return true - torch.logsumexp(others, dim=-1)


def query_set(*, mirror: bool = False, shift: int = 0) -> list[Query]:
    """The queries of one image, the identity first: every (dy, dx) in {-shift, 0, shift}^2 (one
    translation when shift = 0, nine otherwise), each also mirrored when ``mirror``."""
    if shift < 0:
        raise ValueError(f"shift={shift!r} must be >= 0 pixels")
    offsets = sorted({-shift, 0, shift}, key=abs)  # 0 first, so query 0 is the identity
    return [(flip, dy, dx) for flip in ((False, True) if mirror else (False,))
            for dy, dx in itertools.product(offsets, offsets)]


def apply_query(x: Tensor, query: Query) -> Tensor:
    """Images (n, C, H, W) mirrored (flip along W) if asked, then moved by (dy, dx) pixels: output pixel
    (i, j) is input pixel (i - dy, j - dx), reflected at the border."""
    mirror, dy, dx = query
    if mirror:
        x = x.flip(-1)
    if dy == dx == 0:
        return x
    pad = max(abs(dy), abs(dx))
    height, width = x.shape[-2:]
    if pad >= min(height, width):
        raise ValueError(f"shift {pad} must be smaller than the image ({height} x {width})")
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    return padded[..., pad - dy:pad - dy + height, pad - dx:pad - dx + width]


def model_phi(model: nn.Module, x: Tensor, y: Tensor, *, mirror: bool = False, shift: int = 0,
              batch_size: int = 1024) -> Tensor:
    """phi of ``model`` on every sample and query: (n, A) float32 with A = len(query_set(...)); column 0
    is the plain image. Tabular inputs (n, D) take no augmentation (A = 1).

    Eval mode (restored afterwards), no gradients, fp32 with autocast off: phi is a difference of
    logits, and bf16 would round it. ``batch_size`` counts inputs per forward, queries included.
    The result lives on the model's device; x may live elsewhere and moves chunk by chunk.
    """
    queries = query_set(mirror=mirror, shift=shift)
    if x.ndim != 4 and len(queries) > 1:
        raise ValueError("query augmentations (mirror, shift) need images (n, C, H, W)")
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    per_chunk = max(1, batch_size // len(queries))
    chunks = []
    with in_mode(model), torch.no_grad(), torch.autocast(device_type=device.type, enabled=False):
        for start in range(0, len(x), per_chunk):
            xb = x[start:start + per_chunk].to(device=device, dtype=torch.float32)
            batch = torch.cat([apply_query(xb, query) for query in queries])  # query-major
            logits = model(batch).float().view(len(queries), len(xb), -1).transpose(0, 1)
            chunks.append(scaled_confidence(logits, y[start:start + per_chunk].to(device)))
    return torch.cat(chunks)
