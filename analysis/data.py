"""Loading experiment directories for analysis, and the row selections every figure and table shares.

An experiment directory holds `rows/<unit_id>.parquet` (read by `miaray.results.load`), and, when the
unit wrote them, `signals/<unit_id>.parquet` (per-sample confidence and sensitivity),
`roc/<unit_id>.parquet` (ROC curves) and `budget/<unit_id>.parquet` (the reference attacks at every
number of models: kept apart from the rows, so no mean over rows ever counts a cell's attack twice).
These files are listed here and read only for the units a figure needs. Several directories can be combined (a grid, the unknown-pruning
study and a defense search); a unit present in more than one counts once. A file that cannot be
read is skipped with a warning naming it (also kept in `Experiment.notes` for the report), and the
rest is loaded; a directory that does not exist is an error.
"""

from __future__ import annotations

import argparse
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from miaray import results, unknown_pruning
from miaray.config import PAPER_SPLIT, ConfigError, format_split
from miaray.unknown_pruning import PAIRS_COLUMNS, PAIRS_FILE, known_pruning

SIGNALS_DIR = "signals"
ROC_DIR = "roc"
BUDGET_DIR = "budget"
PAPER_SPARSITY = 0.7   # the paper's Fig. 1/4 example (DenseNet121, CIFAR10, L1 unstructured, 70%)
# Numeric columns the analysis reads; a frame holding only failed rows lacks them, so they are added.
NUMERIC = ("sparsity", "shadow_sparsity", "seed", "width", "attack_acc", "tpr", "fpr", "advantage", "max_advantage",
           "attack_auc", "tpr_at_fpr_0.01", "tpr_at_fpr_0.001", "n_members", "n_nonmembers", "target_train_acc",
           "target_test_acc", "original_test_acc", "confidence_gap", "sensitivity_gap", "generalization_gap",
           "achieved_sparsity", "epsilon", "num_references", "n_references")
TEXT = ("unit_id", "dataset", "arch", "method", "shadow_method", "defense", "status", "error",
        "target_model", "attack")
ROW_KEY = ["unit_id", "target_model", "attack"]
# What makes a cell apart from its number of reference models (and the defense_* hyperparameter columns).
CELL_CONFIG = ("dataset", "arch", "width", "method", "sparsity", "seed", "shadow_method", "shadow_sparsity",
               "defense", "adaptive", "split_ratio", "target_model", "attack")
# A model: the panels and tables of the analysis are per (dataset, arch, width), never averaged over widths.
MODEL = ["dataset", "arch", "width"]
# Rows written before units took a split ratio all used the paper's: they get it, not a gap.
PAPER_SPLIT_RATIO = format_split(PAPER_SPLIT)


class Skipped(Exception):
    """A figure or table cannot be made from these results; the message says which input is missing."""


@dataclass
class Experiment:
    """The rows of one or more experiment directories plus where their per-unit files lie."""

    rows: pd.DataFrame
    sources: list[str]
    signal_files: dict[str, Path] = field(default_factory=dict)
    roc_files: dict[str, Path] = field(default_factory=dict)
    budget_files: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)   # files that could not be read, for the user
    # The unknown-pruning study's drawn (known, unknown) unit pairs (miaray.unknown_pruning.PAIRS_FILE).
    pairs: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=PAIRS_COLUMNS))

    def read_unit_files(self, kind: str, unit_ids: Sequence[str]) -> pd.DataFrame:
        """The `signals`, `roc` or `budget` rows of the given units (those that have a readable file; an
        unreadable one is skipped with a warning and a note)."""
        frames = []
        for unit_id in unit_ids:
            try:
                frames.append(self.read_unit_file(kind, unit_id))
            except Skipped:
                continue
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def read_unit_file(self, kind: str, unit_id: str) -> pd.DataFrame:
        """The `signals`, `roc` or `budget` rows of one unit; Skipped, saying why, when it has no file or
        its file cannot be read (then also a warning and a note)."""
        files = {SIGNALS_DIR: self.signal_files, ROC_DIR: self.roc_files, BUDGET_DIR: self.budget_files}[kind]
        if unit_id not in files:
            raise Skipped(f"unit {unit_id} has no {kind}/ file")
        try:
            return pd.read_parquet(files[unit_id])
        except results.UNREADABLE_ERRORS as error:  # damaged, or not Parquet
            problem = f"{files[unit_id]} is unreadable ({type(error).__name__}: {' '.join(str(error).split())})"
            self.note(problem)
            raise Skipped(problem) from None

    def note(self, problem: str) -> None:
        """Tell the user about a file that was skipped: a warning now, and a line in the report."""
        if problem not in self.notes:
            self.notes.append(problem)
            warnings.warn(problem, results.UnreadableResultFile, stacklevel=3)


def _unit_files(experiment: Path, kind: str) -> dict[str, Path]:
    directory = experiment / kind
    if not directory.is_dir():
        return {}
    return {p.stem: p for p in sorted(directory.glob("*.parquet")) if not p.name.startswith(".")}


def normalise(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows with every column the analysis reads (missing ones as NaN) and each row key once."""
    rows = rows.copy()
    for column in NUMERIC:
        rows[column] = pd.to_numeric(rows[column], errors="coerce") if column in rows else np.nan
    for column in TEXT:
        if column not in rows:
            rows[column] = pd.Series(pd.NA, index=rows.index, dtype="string")
    if "adaptive" not in rows:
        rows["adaptive"] = False
    rows["adaptive"] = rows["adaptive"].fillna(False).astype(bool)
    rows["split_ratio"] = rows["split_ratio"].fillna(PAPER_SPLIT_RATIO) if "split_ratio" in rows else PAPER_SPLIT_RATIO
    rows["num_references"] = rows["num_references"].fillna(0)  # rows from before reference models had none
    # A unit rerun (or found in two directories) replaces its rows: keep the last copy.
    return largest_reference_count(rows.drop_duplicates(subset=ROW_KEY, keep="last")).reset_index(drop=True)


def largest_reference_count(rows: pd.DataFrame) -> pd.DataFrame:
    """Each cell's rows at its largest number of reference models only. A sweep over --references runs
    a cell once per number; with fewer, its models are the first of the larger run's (reference j does
    not depend on the number), so its results are the larger run's rows for the paper's attacks and
    points of its budget curve for the others: kept, they would be counted twice in every mean."""
    config = [c for c in rows.columns if c in CELL_CONFIG or c.startswith("defense_")]
    if rows.empty or rows["num_references"].nunique() < 2:
        return rows
    largest = rows.groupby(config, dropna=False)["num_references"].transform("max")
    return rows[rows["num_references"] == largest]


def load_for_command(parser: argparse.ArgumentParser, paths: Sequence[str | os.PathLike], *,
                     checks: Sequence[Callable[[], None]] = ()) -> Experiment:
    """`load_experiments` for an analysis script: a RESULTS folder that does not exist, or a failed check
    of the script's own options (run after the load, so that a typo in RESULTS creates no output folder),
    is the parser's usage error (one line, exit 2)."""
    try:
        exp = load_experiments(paths)
        for check in checks:
            check()
    except (ConfigError, FileNotFoundError) as error:
        parser.error(str(error))
    return exp


def load_experiments(paths: Sequence[str | os.PathLike]) -> Experiment:
    """Every result row under `paths` (experiment directories), normalised; signal/ROC files listed.
    FileNotFoundError names a directory that does not exist; unreadable files are skipped, each
    with a warning and a note."""
    frames, signal_files, roc_files, budget_files, notes, pairs = [], {}, {}, {}, [], []
    for path in paths:
        experiment = Path(path).expanduser()
        if experiment.is_dir() and not (experiment / results.ROWS_DIR).is_dir():
            notes.append(f"{experiment}: no '{results.ROWS_DIR}/' folder (not an experiment directory, "
                         "or no unit has finished yet)")
        with warnings.catch_warnings(record=True) as skipped:
            warnings.simplefilter("always", results.UnreadableResultFile)
            frames.append(results.load(experiment))
        for warning in skipped:  # to the notes (shown in the report), and passed on to the user
            if issubclass(warning.category, results.UnreadableResultFile):
                notes.append(str(warning.message))
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
        signal_files.update(_unit_files(experiment, SIGNALS_DIR))
        roc_files.update(_unit_files(experiment, ROC_DIR))
        budget_files.update(_unit_files(experiment, BUDGET_DIR))
        try:
            pairs.append(results.read_parquet(experiment / PAIRS_FILE))
        except ValueError as error:  # names the file
            notes.append(f"{error}; the unknown-pruning pairs drawn there are left out")
            warnings.warn(notes[-1], results.UnreadableResultFile, stacklevel=2)
    frames = [f for f in frames if not f.empty]
    rows = normalise(pd.concat(frames, ignore_index=True) if frames else pd.DataFrame())
    pairs = [p for p in pairs if p is not None]
    return Experiment(rows=rows, sources=[str(p) for p in paths], signal_files=signal_files,
                      roc_files=roc_files, budget_files=budget_files, notes=notes,
                      pairs=pd.concat(pairs, ignore_index=True) if pairs else pd.DataFrame(columns=PAIRS_COLUMNS))


# ---- selections ----------------------------------------------------------------------------------
def ok(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows["status"] == "ok"]


def paper_split(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows of the paper's 45/45/10 split. Every figure and table but Table 2 reads only these: an
    uneven split moves the attacks' chance level, so its numbers must not be averaged in."""
    return rows[rows["split_ratio"] == PAPER_SPLIT_RATIO]


def main_grid(rows: pd.DataFrame, *, all_splits: bool = False) -> pd.DataFrame:
    """Successful known-pruning rows without a defense beyond Basic, of the paper's split (of every
    split with `all_splits`, for Table 2): the data of Fig. 6-11."""
    rows = known_pruning(ok(rows if all_splits else paper_split(rows)))
    return rows[rows["defense"] == "basic"]


def pruned(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows["target_model"] == "pruned"]


def original(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows["target_model"] == "original"]


def headline_attack(rows: pd.DataFrame) -> str:
    """The attack the figures report (`miaray.unknown_pruning.headline_attack`: SAMIA, else the most
    accurate); Skipped when no attack on a pruned target succeeded."""
    attack = unknown_pruning.headline_attack(rows)
    if attack is None:
        raise Skipped("no successful attack rows on pruned targets")
    return attack


def representative_units(rows: pd.DataFrame, units_with_files: Sequence[str], *,
                         per: Sequence[str] = tuple(MODEL)) -> pd.DataFrame:
    """Per group of `per` (default: per (dataset, arch, width)): the unit closest to the paper's Fig. 1
    example (L1 unstructured, sparsity PAPER_SPARSITY, Basic, known pruning, lowest seed) among those
    with a file; one row per group, sorted by `per`. With per=(dataset, arch, method) it is, per
    method, the unit nearest PAPER_SPARSITY, lowest seed first. Ties keep the order of `rows`."""
    per = list(per)
    cells = main_grid(pruned(rows))
    cells = cells[cells["unit_id"].isin(set(units_with_files))].drop_duplicates("unit_id").copy()
    if cells.empty:
        return cells
    cells["_rank"] = list(zip(cells["method"] != "l1_unstructured", (cells["sparsity"] - PAPER_SPARSITY).abs(),
                              cells["seed"]))
    return cells.sort_values("_rank", kind="stable").drop_duplicates(per).drop(columns="_rank") \
        .sort_values(per)


def label(value: object) -> str:
    """A name for file names and titles: l1_unstructured -> L1 unstructured, resnet18 -> ResNet18."""
    names = {"resnet18": "ResNet18", "vgg16": "VGG16", "densenet121": "DenseNet121", "fc": "FC",
             "l1_unstructured": "L1 unstructured", "l1_structured": "L1 structured",
             "l2_structured": "L2 structured", "slimming": "Slimming", "ppb": "PPB", "dp": "DP",
             "adv": "ADV", "basic": "Basic", "samia": "SAMIA", "conf": "Conf", "xent": "Xent",
             "mentr": "Mentr", "top1_conf": "Top1-Conf", "nn": "NN", "top3_nn": "Top3-NN",
             "nncls": "NNCls", "blindmi": "BlindMI", "cifar10": "CIFAR10", "cifar100": "CIFAR100",
             "svhn": "SVHN", "chmnist": "CHMNIST", "purchase": "Purchase", "texas": "Texas",
             "location": "Location", "digits": "Digits", "synthetic_tabular": "Synthetic tabular",
             "mnist5k": "MNIST-5k", "lira": "LiRA online", "lira_offline": "LiRA offline", "rmia": "RMIA online",
             "rmia_offline": "RMIA offline"}
    return names.get(str(value), str(value))
