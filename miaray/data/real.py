"""A real (downloaded) dataset: where its files come from, how they parse, how inputs are normalised."""

from __future__ import annotations

import pickle
import tarfile
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from scipy.io.matlab import MatReadError

from miaray.data.cache import Parsed, load_or_parse
from miaray.data.dataset import Dataset, image_dataset, tabular_dataset
from miaray.data.sources import DatasetFileError, Source, locate, verify_checksums

# What reading a damaged or foreign file raises in the libraries the parsers use: the OS or a
# decoder (OSError; PIL's UnidentifiedImageError is one), gzip/zip/tar/zlib, pickle, scipy's .mat
# reader (MatReadError, or ValueError for an unknown version), a short read (EOFError).
DAMAGED_FILE_ERRORS = (OSError, EOFError, ValueError, tarfile.TarError, zipfile.BadZipFile, zlib.error,
                       pickle.UnpicklingError, MatReadError)


@dataclass(frozen=True)
class RealDataset:
    """How to load one of the paper's datasets. ``parse(root, layout)`` reads the files of the layout
    that was found; ``mean``/``std`` (per channel) normalise images, and are None for tabular data,
    whose binary features are used as they are."""

    source: Source
    num_classes: int
    parse: Callable[[Path, tuple[str, ...]], Parsed]
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def load(self, *, root: Path, download: bool | None = None) -> Dataset:
        """Find (or download) the files under ``root``, parse them once, and build the Dataset."""
        name = self.source.name
        layout = locate(self.source, root, download=download)

        def parse() -> Parsed:
            verify_checksums(self.source, root, layout)
            return self.parse(root, layout)

        parsed = load_or_parse(root=root, name=name, paths=layout, parse=parse, binary=self.mean is None)
        if self.mean is None or self.std is None:
            return tabular_dataset(name=name, features=parsed.features, labels=parsed.labels,
                                   num_classes=self.num_classes)
        return image_dataset(name=name, images=parsed.features, labels=parsed.labels,
                             num_classes=self.num_classes, mean=self.mean, std=self.std)


@contextmanager
def reading(dataset: str, where: str | Path, *, expected: str) -> Iterator[None]:
    """Turn what a damaged or foreign file raises while it is read into one DatasetFileError naming
    the dataset, the file (``where``; ``archive:member`` inside an archive) and what was ``expected``.
    The parsers' own DatasetFileErrors (which name their file already) pass through."""
    try:
        yield
    except DatasetFileError:
        raise
    except DAMAGED_FILE_ERRORS as error:
        detail = " ".join(str(error).split())  # one line (tarfile lists each method it tried on its own)
        raise DatasetFileError(f"{dataset}: cannot read {where} ({type(error).__name__}: {detail}); "
                               f"expected {expected}") from None


def checked_labels(values: np.ndarray, *, where: str, low: int, high: int) -> np.ndarray:
    """Integer labels in ``low..high`` (given as integers, integral floats or digit strings) as int64
    shifted to start at 0; anything else names the file, the first bad row and the range expected."""
    labels = np.asarray(values)
    if labels.dtype.kind == "f":
        valid = labels == np.floor(labels)
    elif labels.dtype.kind not in "iu":
        labels = np.char.strip(labels.astype(str))
        valid = np.char.isdigit(labels)
    else:
        valid = np.ones(labels.shape, dtype=bool)
    if valid.all():
        labels = labels.astype(np.int64)
        valid = (labels >= low) & (labels <= high)
    if not valid.all():
        row = int(np.argmin(valid))
        raise DatasetFileError(f"{where}: the label in row {row + 1} is {labels[row].item()!r}; "
                         f"labels must be integers {low}..{high}")
    return labels - low
