"""Attacks that train a binary member/non-member classifier on features of shadow signals.

Training runs on the device of the shadow signals, with index-sliced mini-batches of tensors already
on that device. Initialisation, dropout and shuffling are seeded without touching the global RNG.

On CUDA, the full batches run the network's forward and backward as two captured CUDA graphs
(`torch.cuda.make_graphed_callables`): the paper grid fits these small networks on 5 x 2 n_train
pooled shadow rows for 30-100 epochs per cell, where an eager step of a small network is expected to
be bound by kernel launches. Not yet measured on a GPU: `python benchmarks/bench_attacks.py` times
both paths (`graph`, `eager`) and checks them against each other. The optimiser step stays eager because SAMIA's learning-rate
schedule changes SGD's step size between epochs, which a captured step would freeze; the short last
batch of an epoch runs eagerly. Dropout draws fresh masks on every replay, so the graphed fit follows
the same recipe as the eager one but not its random stream.
"""

from __future__ import annotations

import gc
import warnings
from abc import abstractmethod

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from miaray.attacks.base import Attack, as_membership
from miaray.attacks.signals import Signals

_PREDICT_BATCH = 8192  # inference only: large batches, memory stays small for these models


class GraphedForward:
    """`model`'s forward and backward on full batches of rows of `inputs`, replayed as CUDA graphs.

    `graphed(idx)` returns the logits of inputs[idx]; gradients reach the parameters as in eager mode.
    The graphs read their batch from a private buffer that each call fills: the captured input must
    never alias `inputs` (a slice would), because a replay copies its batch into that tensor. What is
    graphed is a wrapper sharing the model's parameters, so the model itself stays eager: its own
    forward runs the other batch shapes and eval mode.
    """

    def __init__(self, model: nn.Module, inputs: Tensor, *, batch_size: int) -> None:
        self.inputs = inputs
        self.batch = inputs[:batch_size].clone()
        self.forward = nn.Sequential(model)
        with torch.cuda.device(inputs.device):  # the capture stream lives on the data's GPU
            torch.cuda.make_graphed_callables(self.forward, (self.batch,))

    def __call__(self, idx: Tensor) -> Tensor:
        torch.index_select(self.inputs, 0, idx, out=self.batch)
        return self.forward(self.batch)


class ClassifierAttack(Attack):
    """Base for NN, Top3-NN, NNCls and SAMIA; predict_proba is the softmax probability of "member".

    The fitted network is model_ (in eval mode after fit). Set `cuda_graph = False` on an instance to
    train eagerly on CUDA too.
    """

    cuda_graph: bool = True

    def __init__(self, *, epochs: int, batch_size: int, seed: int) -> None:
        if epochs < 1 or batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")
        self.epochs = epochs
        self.batch_size = batch_size
        self.seed = seed

    @abstractmethod
    def features(self, signals: Signals) -> Tensor:
        """The classifier's float32 input for each sample (on the signals' device)."""

    @abstractmethod
    def build(self, inputs: Tensor) -> nn.Module:
        """A freshly initialised network for `inputs` (features of the shadow signals; only the shape is
        read). Called under the seeded RNG, so its initialisation is reproducible."""

    @abstractmethod
    def optimizer(self, model: nn.Module) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]:
        """Optimiser and an optional per-epoch learning-rate scheduler."""

    def fit(self, shadow_signals: Signals, membership: np.ndarray) -> "ClassifierAttack":
        device = shadow_signals.device
        targets = torch.as_tensor(as_membership(membership, len(shadow_signals)), device=device)
        inputs = self.features(shadow_signals)
        shuffle = torch.Generator().manual_seed(self.seed)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(self.seed)
            model = self.build(inputs).to(device)
            opt, scheduler = self.optimizer(model)
            model.train()
            graphed = self._graphed(model, inputs)
            for _ in range(self.epochs):
                order = torch.randperm(len(inputs), generator=shuffle).to(device)
                for start in range(0, len(order), self.batch_size):
                    idx = order[start:start + self.batch_size]
                    full = graphed is not None and len(idx) == self.batch_size
                    loss = F.cross_entropy(graphed(idx) if full else model(inputs[idx]), targets[idx])
                    # set_to_none matters with graphs: .grad may be the graph's own gradient buffer,
                    # which the next replay overwrites; accumulating into it would double-count.
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                if scheduler is not None:
                    scheduler.step()
        if graphed is not None:
            # The graphs and their memory pool sit in a reference cycle (an autograd class made inside
            # make_graphed_callables): release them now rather than at some later collection.
            opt.zero_grad(set_to_none=True)
            del graphed
            gc.collect()
        self.model_ = model.eval()
        return self

    def _graphed(self, model: nn.Module, inputs: Tensor) -> GraphedForward | None:
        """The graphed forward for full batches on CUDA; None (eager) on the CPU, when there is no full
        batch, or when capture fails (with a warning: slower, same recipe)."""
        if not (self.cuda_graph and inputs.device.type == "cuda" and len(inputs) >= self.batch_size):
            return None
        try:
            return GraphedForward(model, inputs, batch_size=self.batch_size)
        except RuntimeError as error:
            warnings.warn(f"{self.name}: CUDA graph capture failed, training eagerly: {error}", RuntimeWarning)
            return None

    def predict_proba(self, target_signals: Signals) -> np.ndarray:
        self._check_fitted()
        device = next(self.model_.parameters()).device
        inputs = self.features(target_signals.to(device))
        with torch.no_grad():
            out = [F.softmax(self.model_(inputs[s:s + _PREDICT_BATCH]), dim=1)[:, 1]
                   for s in range(0, len(inputs), _PREDICT_BATCH)]
        return torch.cat(out).double().cpu().numpy()
