"""Datasets that need no download: sklearn's digits images and a seeded synthetic tabular set."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits as _sklearn_digits

from miaray.data.dataset import Dataset, tabular_dataset


def load_digits() -> Dataset:
    """sklearn's 1,797 real 8x8 grey digit images (10 classes) as 1 x 8 x 8 inputs, scaled to [0, 1]
    (pixels are 0..16 in the source) and normalised with the data's own mean and std."""
    bunch = _sklearn_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    x = (x - x.mean()) / x.std()
    return Dataset(x=x.contiguous(), y=torch.from_numpy(bunch.target.astype(np.int64)),
                   num_classes=10, name="digits")


def load_synthetic_tabular(*, n_samples: int = 4000, n_features: int = 600, n_classes: int = 100,
                           flip_prob: float = 0.35, seed: int = 0) -> Dataset:
    """Binary features drawn around per-class prototypes, deterministic in ``seed``.

    Shaped like Purchase100 (600 binary features, 100 classes) but 4,000 samples by default, so an FC
    net trains on a CPU in seconds. Each model trains on 900 samples (9 per class); with the default
    ``flip_prob`` the MLP (256, 128) (arch ``fc`` at width 1, `miaray.vocabulary.default_width`) reaches
    100% train and about 60% test accuracy (target originals of seeds 0 and 1: 0.607 and 0.586; pinned
    by tests/test_presets.py): it overfits, as the study needs. Narrower nets barely learn 100 classes
    from 9 samples each (seed 0: 0.43 at width 0.5, 0.27 at 0.25, 0.14 at 0.125). Each class has a
    uniform random binary prototype; a sample copies its class's prototype and flips each feature
    independently with probability ``flip_prob``.
    """
    for field, value, lowest in (("n_samples", n_samples, 1), ("n_features", n_features, 1),
                                 ("n_classes", n_classes, 2)):
        if int(value) != value or value < lowest:
            raise ValueError(f"synthetic_tabular: {field}={value!r} must be an integer >= {lowest}")
    if not 0.0 <= flip_prob <= 0.5:
        raise ValueError(f"synthetic_tabular: flip_prob={flip_prob!r} must lie in [0, 0.5]")
    rng = np.random.default_rng(seed)
    prototypes = rng.random((n_classes, n_features)) < 0.5
    # Balanced classes (every class appears), in shuffled order.
    labels = rng.permutation(np.arange(n_samples) % n_classes)
    flips = rng.random((n_samples, n_features)) < flip_prob
    return tabular_dataset(name="synthetic_tabular", features=prototypes[labels] ^ flips, labels=labels,
                           num_classes=n_classes)
