"""Seeded member / non-member splits of one dataset for the target model and the shadow models.

The split is the reference code's, made with the same sklearn calls and seeds, so the same seed gives
the same indices as the reference code (on the same dataset order):

- ``train_test_split(range(n), test_size=0.5, random_state=seed)``: the first part (floor(n/2)
  indices) is the target half, the second (ceil(n/2)) the shadow half;
- each half of size h: ``test_size=0.45`` takes ceil(0.45 h) test indices (non-members), then
  ``test_size=0.1818`` takes ceil(0.1818 r) validation indices from the remaining r; the rest are the
  training indices (members). E.g. Texas, h = 33,665: test 15,150, r = 18,515, val 3,367, train 15,148.
- the target half is split with ``seed``; shadow i re-splits the whole shadow half with ``seed + i``,
  so shadow training sets overlap (REFERENCE section 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch
from sklearn.model_selection import train_test_split

TEST_FRACTION = 0.45   # of a half: non-members
VAL_FRACTION = 0.1818  # of what the test split leaves: about 10% of the half, as in the reference code


@dataclass(frozen=True, eq=False)  # eq=False: tensors compare element-wise
class Split:
    """One model's data: ``train`` (members), ``val`` (early stopping), ``test`` (non-members), as int64
    indices into the full dataset."""

    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor

    def to_dict(self) -> dict[str, list[int]]:
        return {part: getattr(self, part).tolist() for part in ("train", "val", "test")}

    @classmethod
    def from_dict(cls, data: Mapping[str, list[int]]) -> "Split":
        return cls(**{part: torch.tensor(data[part], dtype=torch.int64) for part in ("train", "val", "test")})


@dataclass(frozen=True, eq=False)
class Splits:
    """The target model's split and one split per shadow model, for a dataset of ``n`` samples."""

    n: int
    seed: int
    target: Split
    shadows: list[Split]

    def roles(self) -> list[str]:
        return ["target"] + [f"shadow{i}" for i in range(len(self.shadows))]

    def role(self, name: str) -> Split:
        """The split of role ``name``: 'target' or 'shadow<i>'."""
        if name == "target":
            return self.target
        index = name.removeprefix("shadow")
        if name.startswith("shadow") and index.isdigit() and int(index) < len(self.shadows):
            return self.shadows[int(index)]
        raise ValueError(f"unknown role {name!r}; valid roles: {', '.join(self.roles())}")

    def to_dict(self) -> dict[str, Any]:
        """Plain ints and lists (JSON-able), saved with the models trained on these splits."""
        return {"n": self.n, "seed": self.seed, "target": self.target.to_dict(),
                "shadows": [shadow.to_dict() for shadow in self.shadows]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Splits":
        return cls(n=int(data["n"]), seed=int(data["seed"]), target=Split.from_dict(data["target"]),
                   shadows=[Split.from_dict(shadow) for shadow in data["shadows"]])


def make_splits(n: int, *, seed: int, num_shadows: int = 5) -> Splits:
    """Split ``n`` samples into target and shadow halves, then each model's train / val / test."""
    if n < 8:
        raise ValueError(f"make_splits: n={n!r} is too small; every part needs a sample (n >= 8)")
    if num_shadows < 1:
        raise ValueError(f"make_splits: num_shadows={num_shadows!r} must be at least 1")
    target_half, shadow_half = train_test_split(np.arange(n), test_size=0.5, random_state=seed)
    return Splits(n=n, seed=seed, target=_split_half(target_half, seed=seed),
                  shadows=[_split_half(shadow_half, seed=seed + i) for i in range(num_shadows)])


def _split_half(half: np.ndarray, *, seed: int) -> Split:
    rest, test = train_test_split(half, test_size=TEST_FRACTION, random_state=seed)
    train, val = train_test_split(rest, test_size=VAL_FRACTION, random_state=seed)
    return Split(*(torch.from_numpy(part.astype(np.int64)) for part in (train, val, test)))
