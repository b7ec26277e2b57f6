"""The Ray tasks of a search and the rows they leave: the originals built as plain tasks (the sweep's
builds), one task per unit, its rows written to the experiment with the search's columns, or taken from
there when the unit already ran (the rows on disk are the truth)."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import ray

from miaray import results
from miaray.config import UnitConfig
from miaray.search.spec import Search
from miaray.store import Store
from miaray.sweep import Plan, RunSettings, build_model, missing_builds, worker_context


@ray.remote
def _run_trial_unit(config: dict, settings: RunSettings) -> list[dict[str, Any]]:
    from miaray.unit import run_unit  # the science stack loads in the worker only

    unit = UnitConfig.from_dict(config)
    # Like a sweep cell's: per-sample signals and ROC curves beside the rows, for analysis/figures.py.
    return run_unit(unit, artifacts_dir=settings.experiment,
                    **worker_context(settings, label=f"{unit.defense} {dict(unit.defense_params)} seed {unit.seed}"))


@ray.remote
def _build_original_task(config: dict, role: str, settings: RunSettings) -> None:
    build_model(UnitConfig.from_dict(config), role, False, settings)


# What a unit itself can cause: an exception, running out of memory, crashing its worker process.
TRIAL_FAILURES = (ray.exceptions.RayTaskError, ray.exceptions.OutOfMemoryError,
                  ray.exceptions.WorkerCrashedError)


def build_originals(cells: Sequence[UnitConfig], *, settings: RunSettings, retries: int,
                    log: Callable[[str], None] = print) -> None:
    """Build the originals (with their signals) of every seed the store lacks, as parallel Ray tasks. A
    failure is logged and the search goes on: the units that need the model fail with the same error."""
    todo = missing_builds(Plan.of(cells).originals, pruned=False, store=Store(settings.store))
    total = len(Plan.of(cells).originals)
    log(f"originals: {total - len(todo)} of {total} cached, {len(todo)} to build")
    task = _build_original_task.options(num_cpus=settings.cpus_per_trial, num_gpus=settings.gpus_per_trial,
                                        max_retries=retries, retry_exceptions=retries > 0)
    pending = {task.remote(c.to_dict(), role, settings): (c, role) for c, role in todo.values()}
    failed = 0
    while pending:
        (ref,), _ = ray.wait(list(pending), num_returns=1)
        cell, role = pending.pop(ref)
        try:
            ray.get(ref)
        except Exception as error:  # a task's exception; the search goes on without that model
            failed += 1
            log(f"originals: FAILED {cell.dataset}/{cell.arch} seed {cell.seed} {role}: "
                f"{str(error).strip().splitlines()[-1]}")
        log(f"originals: {len(todo) - len(pending) - failed}/{len(todo)} built, {failed} failed")


def _submit(unit: UnitConfig, search: Search) -> ray.ObjectRef:
    task = _run_trial_unit.options(num_cpus=search.settings.cpus_per_trial,
                                   num_gpus=search.settings.gpus_per_trial,
                                   max_retries=search.retries, retry_exceptions=search.retries > 0)
    return task.remote(unit.to_dict(), search.settings)


def _write(unit: UnitConfig, rows: Sequence[Mapping[str, Any]], *, extra: Mapping[str, Any],
           settings: RunSettings) -> list[dict[str, Any]]:
    rows = [{**row, **extra} for row in rows]
    results.write_unit_rows(experiment=settings.experiment, unit_id=unit.unit_id(), rows=rows)
    return rows


def _collect(ref: ray.ObjectRef, unit: UnitConfig, *, extra: Mapping[str, Any],
             settings: RunSettings) -> list[dict[str, Any]]:
    """The unit's rows (failed rows when its task raised or its worker died), written to the experiment."""
    try:
        rows = ray.get(ref)
    except TRIAL_FAILURES as error:  # the unit's own failure: recorded, the search goes on
        from miaray.unit import failed_rows

        rows = failed_rows(unit, str(error).strip().splitlines()[-1])
    except ray.exceptions.RayError as error:
        # A lost node or raylet is the cluster's failure, not the trial's: failing the trial would spend
        # the budget on instant failures. Stop, leaving the trials RUNNING as a killed driver would.
        raise RuntimeError(f"Ray lost the trial's task ({type(error).__name__}); rerun the same command "
                           "to resume: the interrupted trials run again") from error
    return _write(unit, rows, extra=extra, settings=settings)


def stored_rows(unit: UnitConfig, settings: RunSettings) -> list[dict[str, Any]] | None:
    """The unit's rows in the experiment when they are all ok (the unit ran: it need not run again)."""
    try:
        frame = results.read_parquet(f"{results.rows_dir(settings.experiment)}/{unit.unit_id()}{results.SUFFIX}")
    except ValueError:  # damaged: run it again
        return None
    if frame is None or frame.empty or "status" not in frame or (frame["status"] != "ok").any():
        return None
    return frame.to_dict("records")


def _start(unit: UnitConfig, search: Search, *, extra: Mapping[str, Any]) -> list[dict[str, Any]] | ray.ObjectRef:
    """The unit's stored ok rows (re-labelled with `extra`), else its submitted task."""
    rows = stored_rows(unit, search.settings)
    return _submit(unit, search) if rows is None else _write(unit, rows, extra=extra, settings=search.settings)


def _extra(search: Search, *, trial: int | None, origin: str, phase: str) -> dict[str, Any]:
    extra = {"search_study": search.study_name, "search_origin": origin, "search_phase": phase}
    return {**extra, "search_trial": trial} if trial is not None else extra
