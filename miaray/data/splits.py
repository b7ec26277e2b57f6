"""Seeded member / non-member splits of one dataset for the target model and the shadow models.

The split is the authors' code's, made with the same sklearn calls and seeds, so the same seed gives
the same indices as the authors' code (on the same dataset order):

- ``train_test_split(range(n), test_size=0.5, random_state=seed)``: the first part (floor(n/2)
  indices) is the target half, the second (ceil(n/2)) the shadow half;
- each half of size h: ``test_size=0.45`` takes ceil(0.45 h) test indices (non-members), then
  ``test_size=0.1818`` takes ceil(0.1818 r) validation indices from the remaining r; the rest are the
  training indices (members). E.g. Texas, h = 33,665: test 15,150, r = 18,515, val 3,367, train 15,148.
- the target half is split with ``seed``; shadow i re-splits the whole shadow half with ``seed + i``,
  so shadow training sets overlap (docs/science.md, Splits and sizes).

Reference models (online LiRA / RMIA, beyond the paper) train on halves of the target's *pool*, its
members and non-members together (train + test). They come in complementary pairs: reference 2j trains
on a random half H_j of the pool (drawn from ``(seed, j)``) and reference 2j+1 on the rest. So every
pool sample is IN for exactly k of the first 2k references, for every k: online attacks always have
IN and OUT models of each sample, also when only the first references of a run are used (the
attack-strength-against-budget curves), and reference i does not depend on how many were asked for,
so the models are shared between runs with different numbers. (Independent random halves would give
each sample Binomial(N, 1/2) IN models: with N = 8, about 9 of 2,250 samples have none.) A reference
model's non-members (``test``) are the pool samples it did not train on; its early-stopping split is
the target's validation split, which lies outside the pool.

Other train/test/validation percentages of a half (the paper's Table 2) use the same two calls:
``test_size = test / 100``, then ``test_size = val / (train + val)`` of the remainder. sklearn rounds
the test and validation parts up (ceil) and gives the train part the rest: test and validation get
their share of the half or up to one sample more (validation, taken from a remainder already
rounded down, can fall up to one sample short), train the rest. The
paper's 45/45/10 keeps the reference constants above (0.1818, not 10/55), so its indices stay the
authors' code's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from miaray.config import check_split
from miaray.roles import role_index, roles as role_names
from miaray.vocabulary import PAPER_SPLIT, format_split

TEST_FRACTION = 0.45   # of a half: non-members
VAL_FRACTION = 0.1818  # of what the test split leaves: about 10% of the half, as in the authors' code
REFERENCE_STREAM = 1   # keeps the reference halves' random stream apart from any other use of the seed


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
    """The target model's split, one split per shadow model and one per reference model (none unless
    asked for), for a dataset of ``n`` samples."""

    n: int
    seed: int
    target: Split
    shadows: list[Split]
    references: list[Split] = field(default_factory=list)

    def roles(self) -> list[str]:
        return role_names(len(self.shadows), len(self.references))

    def role(self, name: str) -> Split:
        """The split of role ``name``: 'target', 'shadow<i>' or 'reference<i>' (`miaray.roles`)."""
        try:
            kind, index = role_index(name)
        except ValueError:
            kind, index = "", 0
        found = {"target": [self.target], "shadow": self.shadows, "reference": self.references}.get(kind, [])
        if index >= len(found):
            raise ValueError(f"unknown role {name!r}; valid roles: {', '.join(self.roles())}")
        return found[index]

    def target_pool(self) -> torch.Tensor:
        """The target's members then non-members (train, then test): the samples every attack scores and
        the pool the reference models train on."""
        return torch.cat([self.target.train, self.target.test])

    def shadow_half(self) -> torch.Tensor:
        """The shadow half, sorted: the attacker's own data, where RMIA's population samples z come from."""
        return torch.cat([self.shadows[0].train, self.shadows[0].val, self.shadows[0].test]).sort().values

    def to_dict(self) -> dict[str, Any]:
        """Plain ints and lists (JSON-able), saved with the models trained on these splits."""
        return {"n": self.n, "seed": self.seed, "target": self.target.to_dict(),
                "shadows": [shadow.to_dict() for shadow in self.shadows],
                "references": [reference.to_dict() for reference in self.references]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Splits":
        return cls(n=int(data["n"]), seed=int(data["seed"]), target=Split.from_dict(data["target"]),
                   shadows=[Split.from_dict(shadow) for shadow in data["shadows"]],
                   references=[Split.from_dict(reference) for reference in data.get("references", [])])


def _fractions(split: tuple[int, int, int]) -> tuple[float, float]:
    """The sklearn ``test_size`` of a half (test) and of its remainder (validation) for a
    train/test/validation percentage split; the authors' code's constants for the paper's."""
    if tuple(split) == PAPER_SPLIT:
        return TEST_FRACTION, VAL_FRACTION
    train, test, val = split
    return test / 100, val / (train + val)


def make_splits(n: int, *, seed: int, num_shadows: int = 5, split: tuple[int, int, int] = PAPER_SPLIT,
                num_references: int = 0) -> Splits:
    """Split ``n`` samples into target and shadow halves, then each model's train / val / test in the
    ``split`` percentages (train / test / validation) of its half; and ``num_references`` reference
    splits over the target's pool (module docstring). The references leave the other splits unchanged."""
    check_split(split)
    if num_shadows < 1:
        raise ValueError(f"make_splits: num_shadows={num_shadows!r} must be at least 1")
    if num_references < 0:
        raise ValueError(f"make_splits: num_references={num_references!r} must be at least 0")
    fractions = _fractions(split)
    # sklearn's sizes (ceil for test and validation, the rest for train) in the smaller half: a part
    # that is not empty there is not empty in the larger one, so this check covers every model.
    n_test = math.ceil(fractions[0] * (n // 2))
    n_val = math.ceil(fractions[1] * (n // 2 - n_test))
    if min(n_test, n_val, n // 2 - n_test - n_val) < 1:
        raise ValueError(f"make_splits: n={n!r} is too small for the {format_split(split)} split; "
                         "every part of each half needs a sample")
    target_half, shadow_half = train_test_split(np.arange(n), test_size=0.5, random_state=seed)
    target = _split_half(target_half, seed=seed, fractions=fractions)
    return Splits(n=n, seed=seed, target=target,
                  shadows=[_split_half(shadow_half, seed=seed + i, fractions=fractions)
                           for i in range(num_shadows)],
                  references=_reference_splits(target, seed=seed, count=num_references))


def _split_half(half: np.ndarray, *, seed: int, fractions: tuple[float, float]) -> Split:
    rest, test = train_test_split(half, test_size=fractions[0], random_state=seed)
    train, val = train_test_split(rest, test_size=fractions[1], random_state=seed)
    return Split(*(torch.from_numpy(part.astype(np.int64)) for part in (train, val, test)))


def _reference_splits(target: Split, *, seed: int, count: int) -> list[Split]:
    """``count`` reference splits in complementary pairs over the target's pool (train + test); pair j
    is drawn from ``(seed, j)`` alone, so reference i is the same whatever ``count`` is."""
    pool = torch.cat([target.train, target.test])  # Splits.target_pool
    references = []
    for pair in range((count + 1) // 2):
        order = torch.from_numpy(np.random.default_rng([seed, REFERENCE_STREAM, pair]).permutation(len(pool)))
        half, rest = pool[order[:len(pool) // 2]], pool[order[len(pool) // 2:]]
        references += [Split(train=half, val=target.val, test=rest),
                       Split(train=rest, val=target.val, test=half)]
    return references[:count]
