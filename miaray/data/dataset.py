"""The in-memory dataset every model trains on: one float tensor of inputs, one tensor of labels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch


@dataclass(frozen=True, eq=False)  # eq=False: comparing tensors element-wise has no single truth value
class Dataset:
    """Normalised inputs ``x`` (float32; N x C x H x W images or N x D tabular) and labels ``y``
    (int64, 0 .. num_classes - 1)."""

    x: torch.Tensor
    y: torch.Tensor
    num_classes: int
    name: str

    def __post_init__(self) -> None:
        if self.x.dtype != torch.float32 or self.y.dtype != torch.int64:
            raise TypeError(f"Dataset {self.name!r}: x must be float32 and y int64, "
                            f"got {self.x.dtype} and {self.y.dtype}")
        if self.x.ndim not in (2, 4) or self.y.ndim != 1 or len(self.x) != len(self.y):
            raise ValueError(f"Dataset {self.name!r}: x must be N x D or N x C x H x W and y of length N, "
                             f"got shapes {tuple(self.x.shape)} and {tuple(self.y.shape)}")
        if len(self.y) and (int(self.y.min()) < 0 or int(self.y.max()) >= self.num_classes):
            raise ValueError(f"Dataset {self.name!r}: labels must lie in 0..{self.num_classes - 1}, "
                             f"found {int(self.y.min())}..{int(self.y.max())}")

    def __len__(self) -> int:
        return len(self.y)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input: (C, H, W) for images, (D,) for tabular data."""
        return tuple(self.x.shape[1:])

    @property
    def is_image(self) -> bool:
        return self.x.ndim == 4


def image_dataset(*, name: str, images: np.ndarray, labels: np.ndarray, num_classes: int,
                  mean: Sequence[float], std: Sequence[float]) -> Dataset:
    """Build a Dataset from uint8 N x C x H x W images: scale to [0, 1], then normalise per channel."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32).div_(255.0)
    shape = (1, len(mean), 1, 1)
    x.sub_(torch.tensor(mean, dtype=torch.float32).view(shape))
    x.div_(torch.tensor(std, dtype=torch.float32).view(shape))
    return Dataset(x=x, y=torch.from_numpy(labels.astype(np.int64)), num_classes=num_classes, name=name)


def tabular_dataset(*, name: str, features: np.ndarray, labels: np.ndarray, num_classes: int) -> Dataset:
    """Build a Dataset from N x D binary features, kept as 0.0 / 1.0 (the authors' code does not rescale)."""
    return Dataset(x=torch.from_numpy(features.astype(np.float32)),
                   y=torch.from_numpy(labels.astype(np.int64)), num_classes=num_classes, name=name)
