"""Loading experiment directories for analysis, and the row selections every figure and table shares.

An experiment directory holds `rows/<unit_id>.parquet` (read by `miaray.results.load`), and, when the
unit wrote them, `signals/<unit_id>.parquet` (per-sample confidence and sensitivity),
`roc/<unit_id>.parquet` (ROC curves), `budget/<unit_id>.parquet` (the likelihood-ratio attacks at every
number of models: kept apart from the rows, so no mean over rows ever counts a cell's attack twice) and
`scores/<unit_id>.parquet` (each attack's per-sample membership scores, for per-sample exposure).
These files are listed here and read only for the units a figure needs. Several directories can be combined (a grid, the unknown-pruning
study and a defense search); a unit present in more than one counts once. A file that cannot be
read is skipped with a warning naming it (also kept in `Experiment.notes` for the report), and the
rest is loaded; a directory that does not exist, or one that is not an experiment (a storage root, a
rows/ folder: `miaray.results.check_experiment`), is an error.

A cell is more than its axes: every setting that changes a result (`SETTINGS`: --max-epochs, --shadows,
--attack-epochs, ...) is part of its identity. Units that differ in one are never averaged together:
tables are made per setting with the differing ones as columns (`kept_apart`), figures are drawn per
setting, and a note says so.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from miaray import results, unknown_pruning
from miaray.results import BUDGET_DIR, ROC_DIR, SCORES_DIR, SIGNALS_DIR
from miaray.config import RESULT_SETTINGS, ConfigError
from miaray.stats import successful
from miaray.unknown_pruning import PAIRS_COLUMNS, PAIRS_FILE, known_pruning
from miaray.vocabulary import PAPER_SPLIT, format_split

PAPER_SPARSITY = 0.7   # the paper's Fig. 1/4 example (DenseNet121, CIFAR10, L1 unstructured, 70%)
# Numeric columns the analysis reads; a frame holding only failed rows lacks them, so they are added.
NUMERIC = ("sparsity", "shadow_sparsity", "seed", "width", "attack_acc", "tpr", "fpr", "advantage", "max_advantage",
           "attack_auc", "tpr_at_fpr_0.01", "tpr_at_fpr_0.001", "n_members", "n_nonmembers", "target_train_acc",
           "target_test_acc", "original_test_acc", "confidence_gap", "sensitivity_gap", "generalization_gap",
           "achieved_sparsity", "epsilon", "num_references", "models_used")
TEXT = ("unit_id", "dataset", "arch", "method", "shadow_method", "defense", "status", "error",
        "target_model", "attack")
ROW_KEY = ["unit_id", "target_model", "attack"]
# The settings beside a cell's axes that change its results (`UnitConfig.result_settings`: epoch caps,
# patience, shadows, attack epochs, LiRA's queries, the optimiser). Rows written before they were
# recorded lack them: NaN, "not recorded". Units that differ in one are never averaged together: every
# table is made per setting (`kept_apart`) with the differing ones as columns, figures are drawn per
# setting, and a note says so (`settings_note`).
SETTINGS = RESULT_SETTINGS
NOT_RECORDED = "not recorded"
# attack_epochs of a unit that trained each attack on its own schedule (a UnitConfig's None): 0,
# so that it never reads as "not recorded".
OWN_SCHEDULES = 0
# What makes a cell apart from its number of reference models (and the defense_* hyperparameter columns).
CELL_CONFIG = ("dataset", "arch", "width", "method", "sparsity", "seed", "shadow_method", "shadow_sparsity",
               "defense", "adaptive", "split_ratio", "target_model", "attack", *SETTINGS)
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
    score_files: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)   # files that could not be read, for the user
    # The unknown-pruning study's drawn (known, unknown) unit pairs (miaray.unknown_pruning.PAIRS_FILE).
    pairs: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=PAIRS_COLUMNS))

    def read_unit_files(self, kind: str, unit_ids: Sequence[str]) -> pd.DataFrame:
        """The `signals`, `roc`, `budget` or `scores` rows of the given units (those that have a readable file; an
        unreadable one is skipped with a warning and a note)."""
        frames = []
        for unit_id in unit_ids:
            try:
                frames.append(self.read_unit_file(kind, unit_id))
            except Skipped:
                continue
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def read_unit_file(self, kind: str, unit_id: str) -> pd.DataFrame:
        """The `signals`, `roc`, `budget` or `scores` rows of one unit; Skipped, saying why, when it has no file or
        its file cannot be read (then also a warning and a note)."""
        files = {SIGNALS_DIR: self.signal_files, ROC_DIR: self.roc_files, BUDGET_DIR: self.budget_files,
                 SCORES_DIR: self.score_files}[kind]
        if unit_id not in files:
            raise Skipped(f"unit {unit_id} has no {kind}/ file")
        try:
            return results.current_columns(pd.read_parquet(files[unit_id]))
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
    rows = _normalise_settings(rows)
    # A unit rerun (or found in two directories) replaces its rows: keep the last copy.
    return largest_reference_count(rows.drop_duplicates(subset=ROW_KEY, keep="last")).reset_index(drop=True)


def _normalise_settings(rows: pd.DataFrame) -> pd.DataFrame:
    """Every SETTINGS column, NaN where the rows did not record it (written before it was), and
    attack_epochs OWN_SCHEDULES where a recorded unit trained its attacks on their own schedules."""
    for column in SETTINGS:
        if column not in rows:
            rows[column] = 1.0 if column == "finetune" else np.nan
        elif column == "monitor":
            rows[column] = rows[column].astype(object).where(rows[column].notna(), np.nan)
        elif column == "query_mirror":
            rows[column] = rows[column].map(lambda v: np.nan if pd.isna(v) else float(bool(v)))
        elif column == "finetune":  # every unit was fine-tuned before the option existed
            rows[column] = rows[column].map(lambda v: 1.0 if pd.isna(v) else float(bool(v)))
        else:
            rows[column] = pd.to_numeric(rows[column], errors="coerce")
    recorded = rows["max_epochs"].notna()
    rows.loc[recorded & rows["attack_epochs"].isna(), "attack_epochs"] = OWN_SCHEDULES
    return rows


# ---- settings: part of a cell's identity ------------------------------------------------------------
def varying_settings(rows: pd.DataFrame) -> list[str]:
    """The SETTINGS columns of `rows` that take more than one value ("not recorded" counts as one)."""
    return [c for c in SETTINGS if c in rows.columns and rows[c].nunique(dropna=False) > 1]


def settings_groups(rows: pd.DataFrame) -> list[tuple[dict[str, Any], pd.DataFrame]]:
    """`rows` split by the settings that vary among them: (the setting's values, its rows) per group,
    sorted by value ("not recorded" last); one group with no values when nothing varies."""
    varying = varying_settings(rows)
    if not varying:
        return [({}, rows)]
    return [(dict(zip(varying, key if isinstance(key, tuple) else (key,))), part)
            for key, part in rows.groupby(varying, dropna=False, sort=True)]


def setting_text(name: str, value: object) -> str:
    """One setting's value for people: '3', 'not recorded', and for attack_epochs 'own schedules'."""
    if pd.isna(value):
        return NOT_RECORDED
    if name == "attack_epochs" and value == OWN_SCHEDULES:
        return "own schedules"
    if name in ("query_mirror", "finetune"):
        return "yes" if value else "no"
    return f"{value:g}" if isinstance(value, (int, float, np.number)) else str(value)


def settings_label(setting: dict[str, Any]) -> str:
    """A group's settings for titles: 'max_epochs 3, num_shadows 2' ('' for none)."""
    return ", ".join(f"{name} {setting_text(name, value)}" for name, value in setting.items())


def settings_suffix(setting: dict[str, Any]) -> str:
    """A group's settings for file names: '_max_epochs-3_num_shadows-2' ('' for none)."""
    return "".join(f"_{name}-{setting_text(name, value).replace(' ', '-')}" for name, value in setting.items())


def settings_note(rows: pd.DataFrame) -> str | None:
    """The line that says an experiment holds cells that differ only in a setting, and that they are kept
    apart; None when no setting varies."""
    varying = varying_settings(rows)
    if not varying:
        return None
    values = "; ".join(f"{name}: " + ", ".join(dict.fromkeys(setting_text(name, v) for v in
                                                         rows[name].drop_duplicates().sort_values(na_position="last")))
                       for name in varying)
    return (f"cells differ in {values}; kept apart: every table has {'a column' if len(varying) == 1 else 'columns'} "
            f"{', '.join(varying)}, and figures are drawn per setting")


def unrecorded_difference_note(rows: pd.DataFrame) -> str | None:
    """The line that says some cell holds units of one seed whose numbers differ although every recorded
    setting agrees: rows written before the settings were recorded (two --max-epochs runs under one
    --name), averaged as one cell since nothing in them tells them apart. None when there is none."""
    done = rows[rows["status"] == "ok"] if "status" in rows else rows.iloc[:0]
    if done.empty or "target_test_acc" not in done:
        return None
    key = [c for c in done.columns if c in CELL_CONFIG or c.startswith("defense_")]
    per_key = done.groupby(key, dropna=False).agg(units=("unit_id", "nunique"),
                                                  results=("target_test_acc", lambda v: v.round(9).nunique()))
    mixed = per_key[(per_key["units"] > 1) & (per_key["results"] > 1)]
    if mixed.empty:
        return None
    cells = mixed.reset_index()[[c for c in key if c not in ("target_model", "attack", "seed")]].drop_duplicates()
    return (f"{len(cells)} cell(s) hold units of one seed whose results differ though every recorded setting agrees "
            f"(rows written before {', '.join(SETTINGS[:5])}, ... were recorded): they are averaged as one cell; "
            "rerun each setting under its own --name to keep them apart")


def kept_apart(make: Callable[..., pd.DataFrame]) -> Callable[..., pd.DataFrame]:
    """Make a table maker `make(rows_or_experiment, ...)` keep cells that differ in a setting apart: when
    a SETTINGS column varies among the rows, the table is made per setting (`settings_groups`) and the
    parts are stacked, each with the varying settings as its first columns. A setting's part that has
    nothing to show (Skipped) is left out; Skipped, naming each, when none has."""
    @functools.wraps(make)
    def run(data: Any, *args: Any, **kwargs: Any) -> pd.DataFrame:
        groups = settings_groups(data.rows if isinstance(data, Experiment) else data)
        if len(groups) < 2:
            return make(data, *args, **kwargs)
        tables, reasons = [], {}
        for setting, part in groups:
            subset = dataclasses.replace(data, rows=part) if isinstance(data, Experiment) else part
            try:
                table = make(subset, *args, **kwargs)
            except Skipped as reason:
                reasons[settings_label(setting)] = str(reason)
                continue
            table = table.drop(columns=[c for c in setting if c in table.columns])
            for position, (name, value) in enumerate(setting.items()):
                table.insert(position, name, value)
            tables.append(table)
        if not tables:  # the same reason for every setting is said once
            distinct = set(reasons.values())
            raise Skipped(distinct.pop() if len(distinct) == 1 else
                          "; ".join(f"{label}: {reason}" for label, reason in reasons.items()))
        return pd.concat(tables, ignore_index=True)
    return run


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
    """`load_experiments` for an analysis script: a RESULTS folder that does not exist or is not an
    experiment (NotAnExperiment: a storage root, a rows/ folder; the line names what to give instead), or
    a failed check of the script's own options (run after the load; they create nothing, the script makes
    its output folder only when it writes), is the parser's usage error (one line, exit 2)."""
    try:
        exp = load_experiments(paths)
        for check in checks:
            check()
    except (ConfigError, FileNotFoundError) as error:
        parser.error(str(error))
    return exp


def load_experiments(paths: Sequence[str | os.PathLike]) -> Experiment:
    """Every result row under `paths` (experiment directories), normalised; signal/ROC files listed.
    FileNotFoundError names a directory that does not exist, NotAnExperiment (one) a folder that is not
    an experiment (`miaray.results.check_experiment`); unreadable files are skipped, each with a warning
    and a note. The notes also say when units differ in a setting (kept apart: `kept_apart`) or in one
    the rows do not record (`unrecorded_difference_note`)."""
    frames, signal_files, roc_files, budget_files, score_files, notes, pairs = [], {}, {}, {}, {}, [], []
    for path in paths:
        experiment = Path(path).expanduser()
        # A folder that is not an experiment (a storage root, a rows/ folder) is NotAnExperiment from
        # results.load below; one that is, without rows/, is a sweep whose first unit has not finished.
        if experiment.is_dir() and not (experiment / results.ROWS_DIR).is_dir():
            notes.append(f"{experiment}: no '{results.ROWS_DIR}/' folder yet (no unit has finished there)")
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
        score_files.update(_unit_files(experiment, SCORES_DIR))
        try:
            pairs.append(results.read_parquet(experiment / PAIRS_FILE))
        except ValueError as error:  # names the file
            notes.append(f"{error}; the unknown-pruning pairs drawn there are left out")
            warnings.warn(notes[-1], results.UnreadableResultFile, stacklevel=2)
    frames = [f for f in frames if not f.empty]
    rows = normalise(pd.concat(frames, ignore_index=True) if frames else pd.DataFrame())
    notes += [note for note in (settings_note(rows), unrecorded_difference_note(rows)) if note]
    pairs = [p for p in pairs if p is not None]
    return Experiment(rows=rows, sources=[str(p) for p in paths], signal_files=signal_files,
                      roc_files=roc_files, budget_files=budget_files, score_files=score_files, notes=notes,
                      pairs=pd.concat(pairs, ignore_index=True) if pairs else pd.DataFrame(columns=PAIRS_COLUMNS))


# ---- selections ----------------------------------------------------------------------------------
def ok(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows that are results (`miaray.stats.successful`: no failed unit, no collapsed attack)."""
    return successful(rows)


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
