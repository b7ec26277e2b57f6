"""The work of a sweep on Ray: model builds, the Tune trainable that runs one job, the Tune experiment
that runs the jobs (models first, then cells), and the sweep, which runs what the rows on disk and the
store lack and leaves each cell's rows in the experiment."""

from __future__ import annotations

import dataclasses
import math
import os
import socket
import time
from typing import Any, Sequence

import pandas as pd
import pyarrow.fs as pafs
import ray
import torch
from ray import tune

from miaray import results
from miaray.config import ConfigError, UnitConfig, stable_hash
from miaray.store import Store
from miaray.sweep.cluster import keep_credentials_out_of_trials, worker_context
from miaray.sweep.disk import DiskWatch, ray_temp_folder
from miaray.sweep.grid import unique
from miaray.sweep.plan import Plan, build_label, cell_label, job_label, missing_builds, parse_job, sweep_jobs
from miaray.sweep.progress import Progress, eta, trial_name
from miaray.sweep.settings import RunSettings
from miaray.unit.keys import role_model_key, role_queries

TUNE_DIR = "tune"  # <experiment>/tune/<run>: each run's Tune state, kept for its logs only


# ---- models: built once, before the cells that use them -------------------------------------------
def build_model(cell: UnitConfig, role: str, pruned: bool, settings: RunSettings) -> None:
    """Train (or prune and fine-tune) the model of `role` into the store, with its signals and phi
    (what `role_queries` says the cell's attacks read)."""
    # The science stack is imported in the worker only: planning and --dry-run need no torch models.
    from miaray.unit import stored_phi
    from miaray.unit import make_context, model_signals, original_model, pruned_model

    ctx = make_context(cell, **worker_context(settings, label=build_label(cell, role, pruned)))
    model, _ = (pruned_model if pruned else original_model)(ctx, role)
    # Every cell that uses the model queries it: its signals are built here, in parallel, once, rather
    # than by the first cells, which would otherwise queue behind each other on the store's locks.
    signals, phi = role_queries(cell, role, pruned=pruned)
    if signals:
        model_signals(ctx, model, role_model_key(cell, role, pruned=pruned), role)
    if phi:
        stored_phi(ctx, model, role_model_key(cell, role, pruned=pruned))


@ray.remote
def _build_original_task(config: dict, role: str, settings: RunSettings) -> None:
    build_model(UnitConfig.from_dict(config), role, False, settings)


def build_originals(cell: UnitConfig, *, settings: RunSettings, retries: int) -> None:
    """Build the originals of `cell` the store lacks, as parallel Ray tasks (the defense search's way;
    a sweep builds them as its first Tune trials). A failure is printed and the search goes on: the
    units that need the model fail with the same error and are recorded."""
    label, jobs = "originals", Plan.of([cell]).originals
    todo = missing_builds(jobs, pruned=False, store=Store(settings.store))
    print(f"{label}: {len(jobs) - len(todo)} of {len(jobs)} cached, {len(todo)} to build", flush=True)
    task = _build_original_task.options(num_cpus=settings.cpus_per_trial, num_gpus=settings.gpus_per_trial,
                                        max_retries=retries, retry_exceptions=retries > 0)
    pending = {task.remote(c.to_dict(), role, settings): h for h, (c, role) in todo.items()}
    errors: dict[str, str] = {}
    start = time.perf_counter()
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        key_hash = pending.pop(ready[0])
        try:
            ray.get(ready[0])
        except Exception as error:  # a task's exception; the search goes on without that model
            errors[key_hash] = str(error).strip().splitlines()[-1]
            cell, role = todo[key_hash]
            print(f"{label}: FAILED {cell.dataset}/{cell.arch} {role}: {errors[key_hash]}", flush=True)
        done = len(todo) - len(pending)
        print(f"{label}: {done - len(errors)}/{len(todo)} built, {len(errors)} failed, "
              f"ETA {eta(done, len(todo), time.perf_counter() - start)}", flush=True)


# ---- the sweep's trials: model builds, then cells ------------------------------------------------
def headline(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The metrics a trial reports to Tune: utility, the best attack and the Conf (Org.) baseline.

    A collapsed attack (`attack_status` 'collapsed': constant or non-finite scores on the target,
    `miaray.unit.attack_rows`) is no result: it is left out of both best attacks (and named in
    `collapsed_attacks`); where every attack on the pruned target collapsed, `best_attack` is '' and
    its accuracy NaN."""
    pruned = [r for r in rows if r.get("target_model") == "pruned" and r.get("status") == "ok"]
    original = [r for r in rows if r.get("target_model") == "original" and r.get("status") == "ok"]
    if not pruned:
        return {"status": "failed", "error": rows[0].get("error", "") if rows else "no rows"}

    def valid(row: dict[str, Any]) -> bool:  # rows from before the mark have none (or NaN): a result
        return row.get("attack_status") != "collapsed"

    candidates = [r for r in pruned if valid(r)]
    best = max(candidates, key=lambda r: r["attack_acc"]) if candidates else None
    conf_org = [r["attack_acc"] for r in original if r["attack"] == "conf" and valid(r)]
    collapsed = [f"{r['attack']}{'' if r['target_model'] == 'pruned' else ' (original)'}"
                 for r in pruned + original if not valid(r)]
    return {"status": "ok", "target_test_acc": pruned[0]["target_test_acc"],
            "best_attack": best["attack"] if best else "", "best_attack_acc": best["attack_acc"] if best else math.nan,
            # The original is attacked with the same list by default (like with like): its best attack
            # is the fair comparison, Conf (Org.) the paper's.
            "original_best_attack_acc": max((r["attack_acc"] for r in original if valid(r)), default=math.nan),
            "conf_org_acc": conf_org[0] if conf_org else math.nan, "collapsed_attacks": ",".join(collapsed)}


def run_job(trial_config: dict) -> None:
    """The Tune trainable: build one model, or run one cell (its rows written to the experiment,
    its metrics reported once)."""
    start = time.time()
    settings = RunSettings(**trial_config["settings"])
    config, build = parse_job(trial_config["job"])
    if build is not None:
        build_model(config, build["role"], build["pruned"], settings)
        tune.report({"status": "ok", "trial_start": start, "trial_end": time.time()})
        return
    from miaray.unit import failed_rows, run_unit

    timing = {"trial_id": tune.get_context().get_trial_id(), "trial_host": socket.gethostname(),
              "trial_node_id": ray.get_runtime_context().get_node_id(), "trial_pid": os.getpid(),
              "trial_start": start}
    context = worker_context(settings, label=cell_label(config))
    gpu = context["device"] == "cuda"
    if gpu:  # the cell's own peak, not that of an earlier trial in the same worker process
        torch.cuda.reset_peak_memory_stats()
    try:
        rows = run_unit(config, artifacts_dir=settings.experiment, **context)
    except Exception as error:
        timing["trial_end"] = time.time()
        message = f"{type(error).__name__}: {error}"
        results.write_unit_rows(experiment=settings.experiment, unit_id=config.unit_id(),
                                rows=failed_rows(config, message, **timing))
        raise  # Tune records the error (ResultGrid.errors) and retries per FailureConfig
    timing["trial_end"] = time.time()
    # How much of a GPU a cell takes: what --gpus-per-trial packing is sized by (NaN on the CPU).
    timing["trial_peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20 if gpu else math.nan
    results.write_unit_rows(experiment=settings.experiment, unit_id=config.unit_id(),
                            rows=[{**row, **timing} for row in rows])
    tune.report({**headline(rows), **timing})


TUNE_SIGINT_ENV = "TUNE_DISABLE_SIGINT_HANDLER"  # read by Tune when a run starts


def _trial_dirname(trial: Any) -> str:
    config, build = parse_job(trial.config["job"])
    return config.unit_id() if build is None else "build-" + stable_hash(role_model_key(config, **build))


def run_trials(*, jobs: Sequence[str], settings: RunSettings, retries: int) -> tune.ResultGrid:
    """One Tune experiment of `jobs` (JSON texts, `miaray.sweep.plan`), started in that order.

    Each call is a new experiment under `<experiment>/tune/<run>`; nothing resumes Tune's own state.
    That state is a snapshot taken every few seconds (a cell that finished after the last one would
    run again), it sits where the driver's storage is (node-local storage holds only what that node
    saw), `Tuner.restore` replays its snapshot's fixed list of trials, and reusing an experiment name
    overwrites it (docs/science.md, Ray and Optuna). The rows on disk and the store say what is done instead
    (`run_sweep`), so a resume is a fresh experiment of what they lack.
    """
    keep_credentials_out_of_trials()  # AWS secrets stay out of the trials' runtime env (and Ray's logs)
    trainable = tune.with_resources(run_job, settings.resources())
    space = {"job": tune.grid_search(list(jobs)), "settings": dataclasses.asdict(settings)}
    tuner = tune.Tuner(
        trainable, param_space=space,
        # Reused actors keep one process per slot for the whole sweep: torch and miaray are imported
        # once per slot instead of once per trial (`import miaray.unit` took 3.8-4.5 s on the 2-core
        # CI-like machine: `python benchmarks/bench_grid.py`).
        tune_config=tune.TuneConfig(trial_name_creator=trial_name, trial_dirname_creator=_trial_dirname,
                                    reuse_actors=True),
        run_config=tune.RunConfig(name=time.strftime("%Y%m%d-%H%M%S-") + str(os.getpid()),
                                  storage_path=f"{settings.experiment.rstrip('/')}/{TUNE_DIR}", verbose=0,
                                  callbacks=[Progress()], failure_config=tune.FailureConfig(max_failures=retries)))
    # Ctrl-C stops the driver at once (KeyboardInterrupt: the scripts exit 130), not by Tune's graceful
    # stop, which ends advising Tuner.restore: nothing resumes Tune's state, and every file a trial
    # writes is atomic, so the finished cells and models are kept either way.
    previous = os.environ.get(TUNE_SIGINT_ENV)
    os.environ[TUNE_SIGINT_ENV] = "1"
    try:
        return tuner.fit()
    finally:
        if previous is None:
            os.environ.pop(TUNE_SIGINT_ENV)
        else:
            os.environ[TUNE_SIGINT_ENV] = previous


def _record_lost_trials(grid: tune.ResultGrid, settings: RunSettings) -> None:
    """A cell whose process died (out of memory, node lost) wrote no rows: write its error for it."""
    from miaray.unit import failed_rows
    present = results.unit_files(settings.experiment)
    for result in grid:
        if result.error is None or result.config is None:  # no error, or never started (a stopped run)
            continue
        config, build = parse_job(result.config["job"])
        if build is not None:
            continue
        if config.unit_id() not in present:
            message = str(result.error).strip().splitlines()[-1]
            results.write_unit_rows(experiment=settings.experiment, unit_id=config.unit_id(),
                                    rows=failed_rows(config, message))


# ---- the sweep: what the rows on disk lack ---------------------------------------------------------
def resume_refusal(experiment: str) -> str:
    """Why --resume cannot continue `experiment` (no sweep ran there), with the experiments its storage
    folder does hold: the likely typo in --name or --storage is then one look away."""
    storage, name = experiment.rstrip("/").rsplit("/", 1)
    found = results.experiments_in(storage)
    there = (f"{storage} holds the experiments {', '.join(found[:10])}{' ...' if len(found) > 10 else ''}" if found
             else f"{storage} holds no experiment")
    return (f"--resume: no sweep ran in {experiment} yet (no {results.ROWS_DIR}/ or {TUNE_DIR}/ there; --name "
            f"{name!r}); {there}: check --storage and --name, or leave out --resume to start it")


def ok_units(df: pd.DataFrame) -> set[str]:
    """The units whose rows are all ok."""
    if df.empty:
        return set()
    ok = df.groupby("unit_id")["status"].agg(lambda status: bool((status == "ok").all()))
    return set(ok.index[ok])


def finished_units(experiment: str) -> set[str]:
    """The units of the experiment whose rows are all ok: done, whatever any scheduler remembers."""
    return ok_units(results.load(experiment)) if results.unit_files(experiment) else set()


def started(experiment: str) -> bool:
    """Whether a sweep ever ran in the experiment: it has rows, or Tune's state of a run (what --resume
    needs; checked before Ray starts by `miaray.sweep.cli.check_resume`, and here again)."""
    tune_dir = f"{experiment.rstrip('/')}/{TUNE_DIR}"
    fs, path = pafs.FileSystem.from_uri(tune_dir) if "://" in tune_dir else (pafs.LocalFileSystem(), tune_dir)
    return bool(results.unit_files(experiment)) or fs.get_file_info(path).type == pafs.FileType.Directory


def sweep_rows(*, settings: RunSettings, cells: Sequence[UnitConfig]) -> pd.DataFrame:
    """This sweep's rows (the experiment folder may hold other units from earlier runs)."""
    df = results.load(settings.experiment) if results.unit_files(settings.experiment) else pd.DataFrame()
    if df.empty:
        return df
    return df[df["unit_id"].isin({c.unit_id() for c in cells})].reset_index(drop=True)


def complete(df: pd.DataFrame, cells: Sequence[UnitConfig]) -> bool:
    """Every cell has rows, all of them ok: the scripts' exit status."""
    return len(df) > 0 and set(df["unit_id"]) == {c.unit_id() for c in cells} and (df["status"] == "ok").all()


def run_sweep(*, cells: Sequence[UnitConfig], settings: RunSettings, resume: bool,
              retries: int) -> pd.DataFrame:
    """Run the cells that have no ok rows in the experiment yet, after the models the store lacks, on
    the connected Ray cluster; returns the rows of all `cells`. A fresh run and a resume (`resume`:
    the experiment must exist) do the same: the rows on disk and the store say what is done."""
    cells = unique(cells)
    if resume and not started(settings.experiment):
        raise ConfigError(resume_refusal(settings.experiment))
    done = finished_units(settings.experiment)
    todo = [cell for cell in cells if cell.unit_id() not in done]
    jobs = sweep_jobs(Plan.of(todo), Store(settings.store))
    print(f"{settings.experiment}: {len(cells) - len(todo)} of {len(cells)} cells have ok rows and are kept; "
          f"{len(jobs) - len(todo)} models to build (the store holds the others), then {len(todo)} cells", flush=True)
    start = time.perf_counter()
    grid = []
    if jobs:
        # A disk that fills up stops the sweep with a line saying which (else: Ray's GCS timing out).
        with DiskWatch({"--storage": settings.experiment, "--cache": settings.store,
                        "Ray's temporary folder": ray_temp_folder() or ""}):
            grid = run_trials(jobs=jobs, settings=settings, retries=retries)
        _record_lost_trials(grid, settings)
    results.compact(settings.experiment)  # later loads read one snapshot instead of every unit file
    df = sweep_rows(settings=settings, cells=cells)
    ok = ok_units(df)
    failed = set(df.loc[df["status"] != "ok", "unit_id"]) if len(df) else set()
    print(f"\nsweep stopped after {time.perf_counter() - start:.0f}s: {len(ok)} of {len(cells)} cells have ok rows, "
          f"{len(failed)} failed, {len(cells) - len(ok) - len(failed)} have no rows; rows in "
          f"{results.rows_dir(settings.experiment)}")
    errors = sorted((job_label(*parse_job(r.config["job"])), str(r.error).strip().splitlines()[-1])
                    for r in grid if r.error is not None)
    for label, error in errors:
        print(f"  failed {label}: {error}")
    if len(ok) < len(cells):
        print("  to finish: rerun the same command with --resume (cells with ok rows are kept; the others run "
              "again and load the models the store holds)")
    return df
