"""Datasets (the paper's seven real ones plus two offline ones) and the seeded member splits."""

from miaray.data.dataset import Dataset
from miaray.data.registry import load_dataset
from miaray.data.sources import DatasetFileError, DatasetNotFoundError, resolve_root
from miaray.data.splits import Split, Splits, make_splits

__all__ = ["Dataset", "DatasetFileError", "DatasetNotFoundError", "Split", "Splits", "load_dataset", "make_splits",
           "resolve_root"]
