"""``load_dataset``: one entry point from a dataset name to a Dataset."""

from __future__ import annotations

import inspect
from functools import partial
from pathlib import Path
from typing import Any, Callable

from miaray.data.dataset import Dataset
from miaray.data.embedded import load_digits, load_synthetic_tabular
from miaray.data.mnist5k import load_mnist5k
from miaray.data.real import RealDataset
from miaray.data.sources import resolve_root
from miaray.vocabulary import DATASETS


def real_datasets() -> dict[str, RealDataset]:
    """The paper's seven datasets by name. Their loaders are imported on the first call: the image
    loaders take their file lists from torchvision, which a run on the embedded data never needs
    (1.3-1.8 s per process: `python -X importtime -c "import miaray.unit, torchvision"`)."""
    from miaray.data.images import IMAGE_DATASETS
    from miaray.data.tabular import TABULAR_DATASETS

    return {**IMAGE_DATASETS, **TABULAR_DATASETS}


EMBEDDED_DATASETS: dict[str, Callable[..., Dataset]] = {
    "digits": load_digits,
    "mnist5k": load_mnist5k,
    "synthetic_tabular": load_synthetic_tabular,
}


def load_dataset(name: str, *, root: str | Path | None = None, **options: Any) -> Dataset:
    """Load dataset ``name`` (one of ``miaray.vocabulary.DATASETS``).

    Real datasets are read from ``root`` (else $MIARAY_DATA, else ~/.cache/miaray/data), downloaded
    there when missing unless ``download=False`` or $MIARAY_OFFLINE=1, and cached parsed under
    ``<root>/.miaray_cache/``. Options: real datasets take ``download``; ``synthetic_tabular`` takes
    ``n_samples``, ``n_features``, ``n_classes``, ``flip_prob``, ``seed``; ``digits`` and ``mnist5k``
    take none.
    """
    if name in EMBEDDED_DATASETS:
        loader: Callable[..., Dataset] = EMBEDDED_DATASETS[name]
    elif name in (real := real_datasets()):
        loader = partial(real[name].load, root=resolve_root(root))
    else:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    accepted = [option for option in inspect.signature(loader).parameters if option != "root"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"load_dataset({name!r}): unknown option(s) {', '.join(unknown)}; "
                         f"valid options: {', '.join(accepted) or 'none'}")
    return loader(**options)
