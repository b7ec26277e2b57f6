"""What the attacks read from a model, computed once per model and stored: its signals (softmax,
sensitivity, BlindMI's reference) on its role's members and non-members, and its phi (the logit-scaled
true-class confidence, `miaray.attacks.phi`) on the target's pool then the shadow half."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from miaray.attacks.blindmi import reference_transform
from miaray.attacks.phi import model_phi
from miaray.attacks.signals import Signals, compute_signals
from miaray.config import stable_hash
from miaray.data.splits import Splits
from miaray.unit.context import UnitContext


def signals_key(model_key: Mapping[str, Any]) -> dict[str, Any]:
    """The store key of a model's signals."""
    return {**model_key, "kind": "signals"}


def model_signals(ctx: UnitContext, model: torch.nn.Module, key: dict, role: str) -> Signals:
    """Signals of one model on its members (train split) then non-members (test split), cached."""
    s = ctx.split(role)

    def build() -> tuple[dict, dict]:
        idx = torch.cat([s.train, s.test]).to(ctx.device)
        # Large query batches on the GPU; inputs per forward pass, perturbed copies included.
        batch_size = 16384 if ctx.device.type == "cuda" else 1024
        signals = compute_signals(model, ctx.x[idx], ctx.y[idx], sensitivity=True, seed=ctx.config.seed,
                                  batch_size=batch_size,
                                  reference_transform=lambda v: reference_transform(v, is_image=ctx.data.is_image))
        return {name: getattr(signals, name).cpu() for name in ("probs", "labels", "sensitivity", "ref_probs")}, {}

    payload, _ = ctx.store.get_or_build(signals_key(key), build)
    return Signals(**payload)


def query_indices(splits: Splits) -> torch.Tensor:
    """The samples every model is queried on: the target's pool P, then the shadow half Z."""
    return torch.cat([splits.target_pool(), splits.shadow_half()])


def stored_phi(ctx: "UnitContext", model: torch.nn.Module, model_key: Mapping[str, Any]) -> np.ndarray:
    """phi (n_P + n_Z, A) of `model`, float32, from the store (computed and stored the first time, read once
    per unit)."""
    def build() -> tuple[dict, dict]:
        idx = query_indices(ctx.splits).to(ctx.device)
        phi = model_phi(model, ctx.x[idx], ctx.y[idx], mirror=ctx.config.query_mirror, shift=ctx.config.query_shift,
                        batch_size=16384 if ctx.device.type == "cuda" else 1024)
        return {"phi": phi.cpu()}, {}

    key = ctx.config.phi_key(model_key)
    entry = stable_hash(key)
    if entry not in ctx.phi:
        payload, _ = ctx.store.get_or_build(key, build)
        ctx.phi[entry] = payload["phi"].numpy()
    return ctx.phi[entry]
