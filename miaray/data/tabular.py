"""The paper's tabular datasets in their published formats: Purchase100, Texas100, Location30.

All three are header-less comma-separated files of binary features with 1-indexed labels. The format
is checked (label range, feature count, 0/1 features), because a loader reading the wrong column
would otherwise train on silently wrong labels (docs/science.md, Dataset sources and formats).
"""

from __future__ import annotations

import tarfile
import zlib
from collections import defaultdict
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

import numpy as np
import pandas as pd

from miaray.data.cache import Parsed
from miaray.data.real import RealDataset, checked_labels, reading
from miaray.data.sources import DatasetFileError, Remote, Source

MIRROR = "https://github.com/privacytrustlab/datasets/raw/master/"  # privacytrustlab's public mirror
ORIGINAL = "https://www.comp.nus.edu.sg/~reza/files/"                # Shokri et al.'s own copies


@dataclass(frozen=True)
class TableFormat:
    """One tabular dataset's files: ``files`` are the file names as published (inside the archive or
    extracted); with one file the label is its first column, with two the second file holds labels."""

    name: str
    archive: str
    files: tuple[str, ...]
    n_features: int
    num_classes: int

    def describe(self) -> str:
        features = f"{self.n_features} binary (0/1) features"
        if len(self.files) == 1:
            return f"a header-less CSV: the label 1..{self.num_classes} first, then {features}"
        return f"{self.files[0]}: {features} per row; {self.files[1]}: one label 1..{self.num_classes} per row"

    def parse(self, root: Path, layout: tuple[str, ...]) -> Parsed:
        """Read the files of ``layout``: the extracted files, or the members of the .tgz archive."""
        with ExitStack() as stack:
            if layout == (self.archive,):
                archive = root / self.archive
                # Reading the members decompresses the archive, so a damaged one fails anywhere below.
                stack.enter_context(reading(self.name, archive, expected=f"the gzip'd tar {self.archive} "
                                            f"holding {', '.join(self.files)}, each {self.describe()}"))
                tar = stack.enter_context(tarfile.open(archive))
                handles = [(f"{archive}:{member}", _member(tar, member, archive)) for member in self.files]
            else:
                handles = [(str(root / rel), stack.enter_context(open(root / rel, "rb"))) for rel in layout]
            if len(handles) == 1:
                (where, handle), = handles
                table = self._read(handle, where=where, label_column=True)
                labels, features = table[0].to_numpy(), table.iloc[:, 1:]
                labels_where = f"{where} (column 1)"
            else:
                (where, handle), (labels_where, label_handle) = handles
                features = self._read(handle, where=where, label_column=False)
                labels = self._read(label_handle, where=labels_where, label_column=True)[0].to_numpy()
                if len(labels) != len(features):
                    raise DatasetFileError(f"{self.name}: {where} has {len(features)} rows but {labels_where} has "
                                     f"{len(labels)} labels; expected {self.describe()}")
        features = self._checked_features(features, where=where)
        return Parsed(features=features,
                      labels=checked_labels(labels, where=labels_where, low=1, high=self.num_classes))

    def _read(self, handle: IO[bytes], *, where: str, label_column: bool) -> pd.DataFrame:
        # Labels as text (so a quoted "1" or a stray "1.5" is seen as written); features as uint8.
        dtypes = defaultdict(lambda: np.uint8, {0: str} if label_column else {})
        try:
            return pd.read_csv(handle, header=None, dtype=dtypes)
        except (ValueError, OverflowError, pd.errors.ParserError, EOFError, tarfile.TarError, zlib.error) as error:
            detail = " ".join(str(error).split())  # pandas ends some messages with a newline
            raise DatasetFileError(f"{self.name}: cannot read {where} ({detail}); expected {self.describe()}") from None

    def _checked_features(self, table: pd.DataFrame, *, where: str) -> np.ndarray:
        if table.shape[1] != self.n_features:
            raise DatasetFileError(f"{self.name}: {where} has {table.shape[1]} feature columns; "
                             f"expected {self.describe()}")
        features = table.to_numpy(dtype=np.uint8)
        if (features > 1).any():
            row, column = np.argwhere(features > 1)[0]
            raise DatasetFileError(f"{self.name}: {where} row {row + 1} holds the feature value "
                             f"{features[row, column]}; expected {self.describe()}")
        return features


def _member(tar: tarfile.TarFile, basename: str, archive: Path) -> IO[bytes]:
    """The archive member called ``basename`` (archives nest it differently, e.g. texas/100/feats)."""
    for member in tar.getmembers():
        if member.isfile() and PurePosixPath(member.name).name == basename:
            handle = tar.extractfile(member)
            if handle is not None:
                return handle
    raise DatasetFileError(f"{archive} holds no file named {basename!r}; is it the published archive?")


def _real(table: TableFormat, *, extracted: tuple[tuple[str, ...], ...], urls: tuple[str, ...],
          origin: str) -> RealDataset:
    source = Source(name=table.name, layouts=(*extracted, (table.archive,)),
                    remotes=(Remote(table.archive, urls),), origin=origin)
    return RealDataset(source=source, num_classes=table.num_classes, parse=table.parse)


PURCHASE = TableFormat(name="purchase", archive="dataset_purchase.tgz", files=("dataset_purchase",),
                       n_features=600, num_classes=100)
TEXAS = TableFormat(name="texas", archive="dataset_texas.tgz", files=("feats", "labels"),
                    n_features=6169, num_classes=100)
LOCATION = TableFormat(name="location", archive="dataset_location.tgz", files=("bangkok",),
                       n_features=446, num_classes=30)

TABULAR_DATASETS: dict[str, RealDataset] = {
    "purchase": _real(PURCHASE, extracted=(PURCHASE.files,),
                      urls=(MIRROR + PURCHASE.archive, ORIGINAL + PURCHASE.archive),
                      origin=f"Shokri et al. (S&P 2017), {ORIGINAL}{PURCHASE.archive}"),
    "texas": _real(TEXAS, extracted=(TEXAS.files, tuple(f"texas/100/{f}" for f in TEXAS.files)),
                   urls=(MIRROR + TEXAS.archive, ORIGINAL + TEXAS.archive),
                   origin=f"Shokri et al. (S&P 2017), {ORIGINAL}{TEXAS.archive}"),
    "location": _real(LOCATION, extracted=(LOCATION.files,), urls=(MIRROR + LOCATION.archive,),
                      origin=f"Shokri et al. (S&P 2017), mirrored at {MIRROR}{LOCATION.archive}"),
}
