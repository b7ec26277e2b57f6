"""What every step of a unit works in: the configuration, the dataset on its device (inputs resident as
one tensor), the splits of every role, the model store and the log; and who is a member of what."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from miaray.config import UnitConfig
from miaray.data import Dataset, load_dataset
from miaray.data.splits import Split, Splits, make_splits
from miaray.models import build_model
from miaray.store import Store
from miaray.train import TensorSplit


def pick_device(device: str | torch.device | None = None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class UnitContext:
    """What every step of one unit needs: the config, the data on its device, splits, the cache."""

    config: UnitConfig
    data: Dataset
    x: torch.Tensor          # all inputs, resident on `device`
    y: torch.Tensor
    splits: Splits
    store: Store
    device: torch.device
    log: Callable[[str], None]
    # The phi this unit has read from the store, by entry: the likelihood-ratio and the two-model attacks
    # read the same models' phi, loaded once (`miaray.unit.queries.stored_phi`).
    phi: dict[str, np.ndarray] = field(default_factory=dict)

    def split(self, role: str) -> Split:
        return self.splits.role(role)

    def tensors(self, role: str) -> TensorSplit:
        s = self.split(role)
        train, val = s.train.to(self.device), s.val.to(self.device)
        return TensorSplit(self.x[train], self.y[train], self.x[val], self.y[val])

    def new_model(self) -> torch.nn.Module:
        model = build_model(self.config.arch, num_classes=self.data.num_classes,
                            input_shape=self.data.input_shape, width=self.config.width)
        model = model.to(self.device)
        if self.device.type == "cuda" and self.data.is_image:
            model = model.to(memory_format=torch.channels_last)
        return model


def make_context(config: UnitConfig, *, store: Store | None = None, data_root: str | None = None,
                 device: str | torch.device | None = None,
                 log: Callable[[str], None] | None = None) -> UnitContext:
    config.validate()
    device = pick_device(device)
    data = load_dataset(config.dataset, root=data_root)
    x = data.x.to(device)
    if device.type == "cuda" and data.is_image:
        x = x.contiguous(memory_format=torch.channels_last)
    splits = make_splits(len(data.y), seed=config.seed, num_shadows=config.num_shadows, split=config.split,
                         num_references=config.num_references)
    return UnitContext(config=config, data=data, x=x, y=data.y.to(device), splits=splits,
                       store=store or Store(), device=device, log=log or (lambda message: None))


def membership(ctx: UnitContext, role: str) -> np.ndarray:
    s = ctx.split(role)
    return np.concatenate([np.ones(len(s.train), dtype=np.int64), np.zeros(len(s.test), dtype=np.int64)])
