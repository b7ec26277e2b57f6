"""Result files of a sweep: one Parquet file of rows per unit, and loading them into pandas.

The one import for the pandas side: `from miaray.results import load, summary, paired_effect,
pareto_front, defense_front` (`summary` and `paired_effect` live in `miaray.stats`, `pareto_front` and
`defense_front` (defenses compared per cell, the front across them flagged) with its
`DEFENSE_FRONT_BY` and `DEFENSE_FRONT_OBJECTIVES` in `miaray.pareto`; they are re-exported here, not
copied).

A sweep writes `<experiment>/rows/<unit_id>.parquet` for every finished unit (one row per attack plus
the 'original' Conf baseline row, or rows with status 'failed' and the error). One file per unit means
a rerun of a unit replaces its rows instead of adding a second copy; but failed rows never replace ok
ones: a rerun that fails leaves its rows in `<experiment>/failures/<unit_id>.parquet` beside the ok
rows (`load_failures` reads them), so `load` still gives each unit's rows once. Files are written under a hidden
temporary name and renamed into place, so a reader never sees half a file; `load` works without Ray
and also while the sweep is still running. A file that cannot be read anyway (damaged on disk, or
not Parquet) is skipped with an UnreadableResultFile warning naming it, and the rest are loaded.
A folder that is not an experiment (a storage root, an experiment's rows/ folder, a rows/ of other
programs' Parquet files) raises NotAnExperiment, saying what it found and what to give instead: an
empty frame there would pass for "no unit has finished yet". An experiment without rows yet gives an
empty frame that has the main columns, so that the documented queries find nothing instead of failing.
Paths may be local or URIs that pyarrow understands (`s3://bucket/prefix`, `gs://...`).
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from miaray.files import atomic_write
from miaray.pareto import (DEFENSE_FRONT_BY, DEFENSE_FRONT_OBJECTIVES, DEFENSE_TPR_FRONT_OBJECTIVES, defense_front,
                           pareto_front)
from miaray.stats import paired_effect, summary

__all__ = ["DEFENSE_FRONT_BY", "DEFENSE_FRONT_OBJECTIVES", "DEFENSE_TPR_FRONT_OBJECTIVES", "NotAnExperiment",
           "check_experiment", "compact", "defense_front", "experiments_in", "load", "paired_effect", "pareto_front",
           "read_parquet", "rows_dir", "summary", "unit_files", "write_parquet", "write_unit_rows"]

ROWS_DIR = "rows"
FAILURES_DIR = "failures"  # failed reruns of units whose ok rows stay in rows/
SUFFIX = ".parquet"
SNAPSHOT = "rows.snapshot.parquet"  # beside rows/: all units' rows in one file, see compact()
# The per-unit tables an experiment keeps beside its rows, each `<experiment>/<table>/<unit_id>.parquet`
# (`miaray.unit.rows.UnitResult`): per-sample signals, ROC points, likelihood-ratio budgets, per-sample scores.
UNIT_TABLES = SIGNALS_DIR, ROC_DIR, BUDGET_DIR, SCORES_DIR = ("signals", "roc", "budget", "scores")
# The generalisation gaps every ok row states (`miaray.unit.rows.gaps`).
GAPS = ("confidence_gap", "sensitivity_gap", "generalization_gap")
MTIME = "_unit_file_mtime_ns"
# What pyarrow raises on a file that is not (or no longer) valid Parquet: ArrowInvalid (a ValueError),
# ArrowIOError / a vanished file (OSError), and the rest of its ArrowException family.
UNREADABLE_ERRORS = (pa.ArrowException, OSError, ValueError)


class UnreadableResultFile(UserWarning):
    """A result file was skipped because it cannot be read; the message names it and why."""


class NotAnExperiment(FileNotFoundError):
    """A folder given as an experiment is something else: a storage root (the message lists the
    experiments below it), an experiment's rows/ folder, or a folder of other files. An error, not an
    empty result: an empty frame would read as "no unit has finished yet" and fail later, far from
    the mistake. A FileNotFoundError, so every command treats it as it treats a folder that is missing."""


# The columns of the frame `load` gives for an experiment with no row yet: the configuration, status and
# metric columns the documented queries read (docs/results.md), so that they run and find nothing
# instead of raising KeyError. Rows themselves carry more (miaray.unit.config_columns and the metrics).
EMPTY_COLUMNS = {
    **dict.fromkeys(("unit_id", "dataset", "arch", "method", "shadow_method", "defense", "split_ratio", "status",
                     "error", "target_model", "attack"), "object"),
    **dict.fromkeys(("sparsity", "shadow_sparsity", "seed", "width", "num_references", "attack_acc", "tpr", "fpr",
                     "advantage", "max_advantage", "attack_auc", "tpr_at_fpr_0.01", "tpr_at_fpr_0.001", "n_members",
                     "n_nonmembers", "target_train_acc", "target_test_acc", "original_train_acc", "original_test_acc",
                     *GAPS, "epsilon", "delta"), "float64"),
    "adaptive": "bool"}
# Columns renamed since rows were first stored, old name -> current: `current_columns` gives stored rows and
# per-unit tables the current names. n_references counted shadows for the offline attacks too; `models_used`
# says what it always meant: the models a likelihood-ratio attack read beside the target.
RENAMED_COLUMNS = {"n_references": "models_used"}


def current_columns(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with its columns under their current names (RENAMED_COLUMNS): a frame of old and new files
    together has both columns, each half empty, and gets one."""
    for old, new in RENAMED_COLUMNS.items():
        if old in df.columns:
            values = df.pop(old)
            df[new] = df[new].fillna(values) if new in df.columns else values
    return df


# What every result row holds: a Parquet file under rows/ with neither is some other program's file.
REQUIRED_COLUMNS = ("unit_id", "status")
# What a sweep, a search or a unit's --artifacts leave in an experiment besides rows/ (a folder that holds
# only these, or nothing, is an experiment whose first unit has not finished yet). Hidden files (temporary
# files, the shared-folder marker) are not counted either way.
EXPERIMENT_ENTRIES = ("tune", "study.db", FAILURES_DIR, SNAPSHOT, *UNIT_TABLES, "unknown_pairs.parquet",
                      "trials.parquet", "pareto.parquet", "pareto.png")


def _skip(path: str, error: Exception, *, what: str = "skipped") -> None:
    detail = " ".join(str(error).split())
    warnings.warn(f"{path}: unreadable ({type(error).__name__}: {detail}); {what}", UnreadableResultFile,
                  stacklevel=4)


def _filesystem(path: str | os.PathLike) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem holding `path`, and the path as that filesystem spells it."""
    text = os.fspath(path)
    if "://" in text:
        return pafs.FileSystem.from_uri(text)
    return pafs.LocalFileSystem(), str(Path(text).expanduser().resolve())


def rows_dir(experiment: str | os.PathLike) -> str:
    """Where the unit files of an experiment live (a local path or a URI, as given)."""
    return f"{os.fspath(experiment).rstrip('/')}/{ROWS_DIR}"


def write_parquet(df: pd.DataFrame, path: str | os.PathLike) -> str:
    """Write a DataFrame to a local path or URI so that no reader ever sees half a file."""
    fs, final = _filesystem(path)
    fs.create_dir(final.rsplit("/", 1)[0], recursive=True)
    table = pa.Table.from_pandas(df, preserve_index=False)
    if isinstance(fs, pafs.LocalFileSystem):
        with atomic_write(final) as tmp:  # a hidden name, which `load` skips
            pq.write_table(table, str(tmp), filesystem=fs)
    else:
        pq.write_table(table, final, filesystem=fs)  # an object-store PUT is already all-or-nothing
    return final


def read_parquet(path: str | os.PathLike) -> pd.DataFrame | None:
    """A parquet file at a local path or URI as a DataFrame; None when there is no such file. A file
    that cannot be read raises ValueError naming it."""
    fs, final = _filesystem(path)
    if fs.get_file_info(final).type != pafs.FileType.File:
        return None
    try:
        return pq.read_table(final, filesystem=fs).to_pandas()
    except UNREADABLE_ERRORS as error:
        raise ValueError(f"{final}: unreadable Parquet file ({type(error).__name__}: "
                         f"{' '.join(str(error).split())})") from None


def write_unit_rows(*, experiment: str | os.PathLike, unit_id: str, rows: Iterable[Mapping[str, Any]]) -> str:
    """Write (or replace) the rows of one unit; returns the file's path. Rows that all failed do not
    replace ok rows of the unit: they go to `failures/<unit_id>.parquet` instead."""
    frame = pd.DataFrame(list(rows))
    path = f"{rows_dir(experiment)}/{unit_id}{SUFFIX}"
    if len(frame) and "status" in frame and (frame["status"] != "ok").all() and _has_ok_rows(path):
        path = f"{os.fspath(experiment).rstrip('/')}/{FAILURES_DIR}/{unit_id}{SUFFIX}"
    return write_parquet(frame, path)


def _has_ok_rows(path: str) -> bool:
    try:
        rows = read_parquet(path)
    except (OSError, ValueError, pa.ArrowException):  # a damaged file holds no result worth keeping
        return False
    return rows is not None and "status" in rows and bool((rows["status"] == "ok").any())


def load_failures(path: str | os.PathLike) -> pd.DataFrame:
    """The failed reruns of units that kept their ok rows (`write_unit_rows`), one file per unit."""
    fs, directory = _filesystem(f"{os.fspath(path).rstrip('/')}/{FAILURES_DIR}")
    if fs.get_file_info(directory).type != pafs.FileType.Directory:
        return pd.DataFrame()
    files = sorted(info.path for info in fs.get_file_info(pafs.FileSelector(directory))
                   if info.type == pafs.FileType.File and info.base_name.endswith(SUFFIX)
                   and not info.base_name.startswith("."))
    frames = [pq.read_table(file, filesystem=fs).to_pandas() for file in files]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _unit_infos(experiment: str | os.PathLike) -> dict[str, pafs.FileInfo]:
    fs, directory = _filesystem(rows_dir(experiment))
    if fs.get_file_info(directory).type != pafs.FileType.Directory:
        return {}
    return {info.base_name[: -len(SUFFIX)]: info for info in fs.get_file_info(pafs.FileSelector(directory))
            if info.type == pafs.FileType.File and info.base_name.endswith(SUFFIX)
            and not info.base_name.startswith(".")}


def unit_files(experiment: str | os.PathLike) -> dict[str, str]:
    """unit_id -> file path of every finished unit of an experiment (temporary files excluded)."""
    return {unit_id: info.path for unit_id, info in _unit_infos(experiment).items()}


def _snapshot_path(experiment: str | os.PathLike) -> str:
    return f"{os.fspath(experiment).rstrip('/')}/{SNAPSHOT}"


class _ForeignFile(Exception):
    """A Parquet file under rows/ that holds no result rows (it lacks REQUIRED_COLUMNS)."""


def _current_table(path: str | os.PathLike, *, foreign: list[str] | None = None) -> pa.Table | None:
    """Every unit's rows, each tagged with the modification time of the unit file they came from.

    Rows come from the snapshot where it holds the unit file's current version, else from the unit
    file itself: the unit files stay the truth, the snapshot only saves reading thousands of them.
    A Parquet file that holds no result rows (neither a unit_id nor a status column: some other program's) is
    skipped with a warning and its path added to `foreign`.
    """
    fs, _ = _filesystem(path)
    infos = _unit_infos(path)
    snapshot_file = _filesystem(_snapshot_path(path))[1]
    parts: list[pa.Table] = []
    fresh: set[str] = set()
    if infos and fs.get_file_info(snapshot_file).type == pafs.FileType.File:
        try:
            snapshot = pq.read_table(snapshot_file, filesystem=fs)
            stamps = dict(zip(snapshot.column("unit_id").to_pylist(), snapshot.column(MTIME).to_pylist()))
        except (*UNREADABLE_ERRORS, KeyError) as error:  # KeyError: a column missing
            _skip(snapshot_file, error, what="reading the unit files instead (the sweep rewrites it when it ends)")
        else:
            fresh = {unit_id for unit_id, info in infos.items() if stamps.get(unit_id) == info.mtime_ns}
            parts.append(snapshot.filter(pc.is_in(snapshot.column("unit_id"), pa.array(sorted(fresh), pa.string()))))
    stale = [info for unit_id, info in sorted(infos.items()) if unit_id not in fresh]

    def read(info: pafs.FileInfo) -> pa.Table | Exception:
        try:
            table = pq.read_table(info.path, filesystem=fs)
        except UNREADABLE_ERRORS as error:
            return error  # warned about below, in the caller's thread and in file order
        if not set(REQUIRED_COLUMNS) & set(table.column_names):
            return _ForeignFile(f"no {' or '.join(REQUIRED_COLUMNS)} column")
        return table.append_column(MTIME, pa.array([info.mtime_ns] * table.num_rows, pa.int64()))

    # Parquet decoding releases the GIL: read the small files in threads and convert to pandas once.
    with ThreadPoolExecutor(max_workers=min(32, (os.cpu_count() or 1) * 4)) as pool:
        tables = list(pool.map(read, stale))
    for info, table in zip(stale, tables):
        if isinstance(table, _ForeignFile):
            warnings.warn(f"{info.path}: not a miaray result file ({table}); skipped", UnreadableResultFile,
                          stacklevel=3)
            if foreign is not None:
                foreign.append(info.path)
        elif isinstance(table, Exception):
            _skip(info.path, table, what="skipped, the other unit files are loaded")
        else:
            parts.append(table)
    parts = [part for part in parts if part.num_rows]
    # "permissive": a column that is all-null in one unit (the metrics of a failed unit) takes the
    # type it has elsewhere; columns missing from a file are filled with nulls.
    return pa.concat_tables(parts, promote_options="permissive") if parts else None


def compact(experiment: str | os.PathLike) -> None:
    """Write the snapshot that makes `load` fast (the sweep calls this when it ends).

    `python benchmarks/bench_results_load.py` (100,000 rows): reading the
    10,000 unit files took 20.7 s; `load` after `compact` 0.20 s best, 0.42 s median."""
    table = _current_table(experiment)
    if table is not None:
        write_parquet(table.to_pandas(), _snapshot_path(experiment))


def _entries(fs: pafs.FileSystem, directory: str) -> list[pafs.FileInfo]:
    """The entries of a folder, hidden ones (temporary files, markers) left out, sorted by name."""
    return sorted((info for info in fs.get_file_info(pafs.FileSelector(directory))
                   if not info.base_name.startswith(".")), key=lambda info: info.base_name)


def _is_experiment(fs: pafs.FileSystem, directory: str) -> bool:
    """Whether a folder holds an experiment: rows/, or something only a sweep, search or unit leaves."""
    return fs.get_file_info(f"{directory}/{ROWS_DIR}").type == pafs.FileType.Directory or any(
        fs.get_file_info(f"{directory}/{name}").type != pafs.FileType.NotFound for name in EXPERIMENT_ENTRIES)


def experiments_in(storage: str | os.PathLike) -> list[str]:
    """The names of the experiments directly below a storage folder (`--storage`), sorted; [] when the
    folder does not exist."""
    fs, directory = _filesystem(storage)
    if fs.get_file_info(directory).type != pafs.FileType.Directory:
        return []
    return [info.base_name for info in _entries(fs, directory)
            if info.type == pafs.FileType.Directory and _is_experiment(fs, info.path)]


def _names(infos: Sequence[pafs.FileInfo] | Sequence[str], *, most: int = 5) -> str:
    names = [i if isinstance(i, str) else i.base_name + ("/" if i.type == pafs.FileType.Directory else "")
             for i in infos]
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def check_experiment(path: str | os.PathLike) -> None:
    """Raise unless `path` is an experiment folder (`<storage>/<name>`): FileNotFoundError when it does
    not exist, NotAnExperiment when it is a storage root (naming the experiments below it), an
    experiment's rows/ folder (naming the experiment), or a folder of other files. An empty folder, or
    one with only what a sweep leaves before its first unit finishes (EXPERIMENT_ENTRIES), passes: its
    sweep may be running."""
    fs, directory = _filesystem(path)
    if fs.get_file_info(directory).type != pafs.FileType.Directory:
        raise FileNotFoundError(f"no experiment folder at {directory} (expected <storage>/<name>, "
                                f"holding {ROWS_DIR}/)")
    if _is_experiment(fs, directory):
        return
    parent, name = directory.rsplit("/", 1) if "/" in directory else ("", directory)
    if name == ROWS_DIR:
        raise NotAnExperiment(f"{directory} is an experiment's {ROWS_DIR}/ folder, not the experiment: give the "
                              f"folder that holds it, {parent or '.'} (expected <storage>/<name>, holding {ROWS_DIR}/)")
    entries = _entries(fs, directory)
    if not entries:
        return  # a sweep made the folder and has not finished a unit yet
    units = [i for i in entries if i.type == pafs.FileType.File and i.base_name.endswith(SUFFIX)]
    if units:
        raise NotAnExperiment(f"{directory} is not an experiment folder: it holds {len(units)} Parquet file(s) "
                              f"itself ({_names(units)}), where an experiment keeps them in {ROWS_DIR}/; if it is an "
                              f"experiment's {ROWS_DIR}/ folder, give the folder that holds it, {parent or '.'}")
    found = experiments_in(directory)
    if found:
        raise NotAnExperiment(f"{directory} is not an experiment folder (no {ROWS_DIR}/ in it) but a storage folder "
                              f"holding {len(found)} experiment(s): {_names(found, most=10)}; give one of them, e.g. "
                              f"{directory}/{found[0]}")
    raise NotAnExperiment(f"{directory} is not an experiment folder: no {ROWS_DIR}/ in it, nor in any folder in it; it "
                          f"holds {_names(entries)} (expected <storage>/<name>, holding {ROWS_DIR}/<unit_id>.parquet)")


def load(path: str | os.PathLike) -> pd.DataFrame:
    """All result rows of an experiment directory (`<storage>/<name>`) as one DataFrame.

    Reads the files present now, so it may be called while the sweep still runs. An experiment with
    no finished unit gives an empty DataFrame that has the main columns (EMPTY_COLUMNS: a query such
    as `df[df["status"] == "ok"]` finds nothing rather than raising). A folder that does not exist
    raises FileNotFoundError; a folder that is not an experiment (a storage root, an experiment's rows/,
    a rows/ of Parquet files that hold no result rows, a folder of other files) raises NotAnExperiment
    saying what it is and what to give instead (`check_experiment`). An unreadable unit file, or one
    that holds no result rows among files that do, is skipped, and a damaged snapshot replaced by the
    unit files, each with an UnreadableResultFile warning naming the file. Columns stored under an
    earlier name come under the current one (`current_columns`).
    """
    check_experiment(path)
    foreign: list[str] = []
    table = _current_table(path, foreign=foreign)
    if table is None and foreign:
        raise NotAnExperiment(f"{rows_dir(path)} holds no result rows: its Parquet files are not miaray's "
                              f"({_names([f.rsplit('/', 1)[-1] for f in foreign])}: no {' or '.join(REQUIRED_COLUMNS)} "
                              f"column); expected <storage>/<name>/{ROWS_DIR}/<unit_id>.parquet as a sweep writes them")
    if table is None:
        return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in EMPTY_COLUMNS.items()})
    return current_columns(table.drop_columns([MTIME]).to_pandas())
