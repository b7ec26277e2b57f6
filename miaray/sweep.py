"""The distributed sweep: grids and presets, and one Ray Tune experiment that runs them.

Every model is trained once even when trials run side by side, and a cell waits on the store's lock
at most for the builds still running when it starts, because the experiment's trials run in this
order (Tune starts pending trials first in, first out):

1. originals: one trial per (dataset, arch, seed, role) that the store does not hold yet, which
   trains the model and queries it (its signals);
2. shared pruned models: one trial per pruned model that two or more cells use (the shadow sets of
   the unknown-pruning study; the known-pruning grid shares none), also with their signals;
3. cells: one trial per unit (`miaray.unit.run_unit`), which loads what 1-2 built, writes its rows
   to `<storage>/<name>/rows/<unit_id>.parquet` and reports its metrics once.

Trials reuse their actors, so each slot imports the science stack once per sweep, and a cell starts
as soon as a slot is free after the last build started. The defense search (`miaray.search`) builds
its originals with `build_originals`, the same builds as plain Ray tasks.

The entry scripts (`sweeps/full_grid.py`, `sweeps/unknown_pruning.py`) only call `full_grid_main` /
`unknown_pruning_main`, because `ray submit` copies the script alone to the head node.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
import json
import math
import os
import random
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd
import ray
from ray import tune

from miaray import results
from miaray.config import (ARCHS, ATTACKS, DATASETS, DEFENSE_PARAMS, DEFENSES, IMAGE_ARCHS, IMAGE_DATASETS,
                           METHODS,
                           PAPER_SPLIT, STRUCTURED_METHODS, TABLE2_SPLITS, ConfigError, TrainConfig, UnitConfig,
                           format_split, parse_name_values, parse_split, stable_hash)
from miaray.store import Store, default_root
from miaray.unknown_pruning import (PAIRS_COLUMNS, PAIRS_FILE, RANDOM_PAIRS, accuracy_loss_table, headline_attack,
                                   known_pruning, sparsity_matrix_table)

PAPER_SPARSITIES = (0.5, 0.6, 0.7, 0.8, 0.9)
PAPER_DATASETS = ("cifar10", "cifar100", "svhn", "chmnist", "purchase", "texas", "location")


# ---- grids -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class GridSpec:
    """The axes of a sweep. `cells()` expands them into the valid unit configurations: tabular data
    takes the fc net and l1_unstructured only, images the three CNNs and every method."""

    datasets: tuple[str, ...]
    archs: tuple[str, ...]
    methods: tuple[str, ...]
    sparsities: tuple[float, ...]
    seeds: tuple[int, ...] = (0,)
    splits: tuple[tuple[int, int, int], ...] = (PAPER_SPLIT,)  # train/test/validation % of each half
    width: float = 1.0
    attacks: tuple[str, ...] = ATTACKS
    num_shadows: int = 5
    defense: str = "basic"
    defense_params: tuple[tuple[str, float], ...] = ()
    adaptive: bool = False
    max_epochs: int | None = None
    attack_epochs: int | None = None  # None: each trained attack's reference schedule

    def unit(self, **fields: Any) -> UnitConfig:
        """A unit of this grid with the given cell fields (dataset, arch, method, sparsity, seed, ...).
        Without a `split` field it takes the grid's split, which must then be the only one: a study that
        does not expand the split axis must not drop some of its values unnoticed."""
        if "split" not in fields:
            if len(self.splits) != 1:
                raise ConfigError(f"splits={','.join(map(format_split, self.splits))}: this study runs one "
                                  "split ratio; only the known-pruning grid (full_grid.py) expands several")
            fields["split"] = self.splits[0]
        return UnitConfig(width=self.width, attacks=self.attacks, num_shadows=self.num_shadows,
                          defense=self.defense, defense_params=self.defense_params, adaptive=self.adaptive,
                          attack_epochs=self.attack_epochs, train=TrainConfig(max_epochs=self.max_epochs),
                          **fields)

    def pairs(self) -> list[tuple[str, str]]:
        """The (dataset, arch) pairs of the grid that form a valid model."""
        return [(d, a) for d in self.datasets for a in self.archs if (a == "fc") == (d not in IMAGE_DATASETS)]

    def methods_for(self, dataset: str) -> tuple[str, ...]:
        if dataset not in IMAGE_DATASETS:
            return tuple(m for m in self.methods if m not in STRUCTURED_METHODS)
        return self.methods

    def cells(self) -> list[UnitConfig]:
        """The known-pruning grid: every pair x method x sparsity x seed x split."""
        return [self.unit(dataset=d, arch=a, method=m, sparsity=s, seed=seed, split=split)
                for d, a in self.pairs() for m in self.methods_for(d) for s in self.sparsities
                for seed in self.seeds for split in self.splits]

    def validate(self) -> "GridSpec":
        """Reject a bad axis value (naming field and choices) or an empty grid, before Ray starts."""
        cells = self.cells()
        if not cells:
            raise ConfigError(f"the grid is empty: datasets {', '.join(self.datasets)} x archs "
                              f"{', '.join(self.archs)} x methods {', '.join(self.methods)} has no valid "
                              f"cell (tabular data takes arch 'fc' and 'l1_unstructured'; images take "
                              f"{', '.join(IMAGE_ARCHS)})")
        for cell in cells:
            cell.validate()
        return self


def _check_axis(name: str, values: Sequence[str], choices: Sequence[str]) -> None:
    # A grid filters silently by validity (fc x cifar10 is skipped), so check names first.
    for value in values:
        if value not in choices:
            raise ConfigError(f"{name}={value!r} is not valid; choose from: {', '.join(choices)}")


def sparsity_matrix(spec: GridSpec) -> list[UnitConfig]:
    """Unknown sparsity (paper Fig. 12/13): target sparsity x shadow sparsity, unpruned shadows (0)
    included. The diagonal is the known-pruning cell itself (shadow_sparsity None), so it shares
    its unit id and models with the full grid."""
    return [spec.unit(dataset=d, arch=a, method=m, sparsity=s, seed=seed,
                      shadow_sparsity=None if shadow == s else shadow)
            for d, a in spec.pairs() for m in spec.methods_for(d) for seed in spec.seeds
            for s in spec.sparsities for shadow in (0.0, *spec.sparsities)]


def method_pairs(spec: GridSpec, *, pairs: int, seed: int) -> list[tuple[UnitConfig, UnitConfig]]:
    """Unknown method and sparsity (paper Table 1): per (dataset, arch, seed), `pairs` distinct random
    (target method/sparsity, shadow method/sparsity) draws whose shadow setting differs from the
    target's (all of them when fewer exist), seeded; each as (known, unknown) cells."""
    out = []
    for (d, a), model_seed in itertools.product(spec.pairs(), spec.seeds):
        settings = list(itertools.product(spec.methods_for(d), spec.sparsities))
        # A shadow pruned like its target is the known cell itself (zero loss by construction).
        draws = [(t, s) for t, s in itertools.product(settings, settings) if t != s]
        rng = random.Random(stable_hash({"study": "method_pairs", "dataset": d, "arch": a,
                                         "seed": model_seed, "draw_seed": seed}))
        for (tm, ts), (sm, ss) in rng.sample(draws, min(pairs, len(draws))):
            known = spec.unit(dataset=d, arch=a, method=tm, sparsity=ts, seed=model_seed)
            unknown = dataclasses.replace(known, shadow_method=None if sm == tm else sm,
                                          shadow_sparsity=None if ss == ts else ss)
            out.append((known, unknown))
    return out


def unique(configs: Sequence[UnitConfig]) -> list[UnitConfig]:
    """The configs without repeats (same unit id), in first-seen order."""
    seen: dict[str, UnitConfig] = {}
    for config in configs:
        seen.setdefault(config.unit_id(), config)
    return list(seen.values())


# ---- the plan ----------------------------------------------------------------------------------
@dataclass
class Plan:
    """Which models the cells need, each once: key hash -> (a config that needs it, its role)."""

    cells: list[UnitConfig]
    originals: dict[str, tuple[UnitConfig, str]]
    pruned: dict[str, tuple[UnitConfig, str]]
    users: Counter  # pruned key hash -> how many cells use that model

    @classmethod
    def of(cls, cells: Sequence[UnitConfig]) -> "Plan":
        cells = unique(cells)
        originals, pruned, users = {}, {}, Counter()
        for cell in cells:
            for role in cell.roles():
                originals.setdefault(stable_hash(cell.original_key(role)), (cell, role))
                key = cell.model_key(role)
                if key["kind"] == "pruned":  # an unpruned shadow is the original itself
                    pruned.setdefault(stable_hash(key), (cell, role))
                    users[stable_hash(key)] += 1
        return cls(list(cells), originals, pruned, users)

    def shared_pruned(self) -> dict[str, tuple[UnitConfig, str]]:
        return {h: v for h, v in self.pruned.items() if self.users[h] > 1}

    def table(self) -> pd.DataFrame:
        """Per dataset and arch: cells, then the models to build: originals, pruned targets by method,
        pruned shadows, and all models."""
        kinds = [(c, "originals") for c, _ in self.originals.values()]
        kinds += [(c, c.method if role == "target" else "pruned_shadows") for c, role in self.pruned.values()]
        kinds += [(c, "cells") for c in self.cells]
        frame = pd.DataFrame([{"dataset": c.dataset, "arch": c.arch, "kind": k} for c, k in kinds])
        table = pd.crosstab([frame["dataset"], frame["arch"]], frame["kind"], margins=True,
                            margins_name="total")
        table["models"] = table["total"] - table["cells"]
        order = ["cells", "originals", *METHODS, "pruned_shadows", "models"]
        return table[[c for c in order if c in table.columns]].rename_axis(columns=None)

    def describe(self) -> str:
        targets = Counter(c.method for c, role in self.pruned.values() if role == "target")
        shadows = sum(1 for _, role in self.pruned.values() if role != "target")
        pairs = {(c.dataset, c.arch) for c in self.cells}
        return "\n".join([
            f"plan: {len(self.cells)} cells over {len(pairs)} (dataset, arch) pairs; models to build "
            "(method columns count pruned targets):",
            self.table().to_string(), "",
            f"originals: {len(self.originals)}",
            f"pruned target models: {sum(targets.values())} ("
            + ", ".join(f"{m} {targets[m]}" for m in METHODS if targets[m]) + ")",
            f"pruned shadow models: {shadows} ({len(self.shared_pruned())} pruned models shared by "
            f"several cells, built before the cells)"])


# ---- where things go and what each trial gets ---------------------------------------------------
@dataclass(frozen=True)
class RunSettings:
    """Run-wide settings every task and trial receives. Paths are absolute (trials chdir) or URIs."""

    experiment: str                   # <storage>/<name>: Tune state and the rows/ folder
    store: str                        # artifact cache folder (shared by all nodes on a cluster)
    data_root: str | None             # dataset folder; None: each worker's default
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0

    def resources(self) -> dict[str, float]:
        return {"cpu": self.cpus_per_trial, "gpu": self.gpus_per_trial}


def _absolute(path: str) -> str:
    return path if "://" in path else str(Path(path).expanduser().resolve())


def connect(*, address: str = "auto") -> None:
    """Join Ray: 'auto' joins the running cluster if there is one, else starts a local instance;
    'local' always starts a new local instance; host:port joins that cluster."""
    if ray.is_initialized():
        return
    if address != "auto":
        ray.init(address=address)
        return
    try:
        ray.init(address="auto")
    except ConnectionError:
        ray.init()


def prepare_worker(settings: RunSettings) -> str:
    """Threads and GPU memory of this trial or task; returns the torch device it should use."""
    import torch

    torch.set_num_threads(max(1, int(settings.cpus_per_trial)))
    if torch.cuda.is_available() and settings.gpus_per_trial > 0:
        # Fractional GPUs only schedule; this keeps four 0.25-GPU trials from starving each other.
        torch.cuda.set_per_process_memory_fraction(min(1.0, settings.gpus_per_trial))
        return "cuda"
    return "cpu"


def worker_context(settings: RunSettings, *, label: str) -> dict[str, Any]:
    """What `make_context` and `run_unit` take from the run's settings in a trial or task: the store,
    the data root, this worker's device (`prepare_worker`) and a log whose lines start with `label`."""
    return {"store": Store(settings.store), "data_root": settings.data_root, "device": prepare_worker(settings),
            "log": lambda message: print(f"[{label}] {message}", flush=True)}


def _cell_label(config: UnitConfig) -> str:
    label = f"{config.dataset}/{config.arch}/{config.method}@{config.sparsity:g}"
    if config.shadow_method is not None or config.shadow_sparsity is not None:
        label += f" shadows {config.resolved_shadow_method}@{config.resolved_shadow_sparsity:g}"
    label += f" seed {config.seed}" if config.seed else ""
    return label + (f" split {format_split(config.split)}" if config.split != PAPER_SPLIT else "")


# ---- models: built once, before the cells that use them -------------------------------------------
def build_model(cell: UnitConfig, role: str, pruned: bool, settings: RunSettings) -> None:
    """Train (or prune and fine-tune) the model of `role` into the store, with its signals."""
    # The science stack is imported in the worker only: planning and --dry-run need no torch models.
    from miaray.unit import make_context, model_signals, original_model, pruned_model

    ctx = make_context(cell, **worker_context(settings, label=_build_label(cell, role, pruned)))
    model, _ = (pruned_model if pruned else original_model)(ctx, role)
    # Every cell that uses the model queries it: its signals are built here, in parallel, once, rather
    # than by the first cells, which would otherwise queue behind each other on the store's locks.
    model_signals(ctx, model, _model_key(cell, role, pruned), role)


def _model_key(cell: UnitConfig, role: str, pruned: bool) -> dict[str, Any]:
    return cell.model_key(role) if pruned else cell.original_key(role)


def _build_label(cell: UnitConfig, role: str, pruned: bool) -> str:
    label = f"{cell.dataset}/{cell.arch} seed {cell.seed} {role}"
    if pruned:
        key = cell.pruned_key(role)
        label += f" {key['method']}@{key['sparsity']:g}"
    return label


def missing_builds(jobs: dict[str, tuple[UnitConfig, str]], *, pruned: bool,
                   store: Store) -> dict[str, tuple[UnitConfig, str]]:
    """The jobs whose model or signals the store lacks."""
    return {h: (cell, role) for h, (cell, role) in jobs.items()
            if not all(store.has(key) for key in (_model_key(cell, role, pruned),
                                                  {**_model_key(cell, role, pruned), "kind": "signals"}))}


@ray.remote
def _build_original_task(config: dict, role: str, settings: RunSettings) -> None:
    build_model(UnitConfig.from_dict(config), role, False, settings)


def _eta(done: int, total: int, elapsed: float) -> str:
    if done == 0 or done >= total:
        return "-"
    return f"{elapsed / done * (total - done):.0f}s"


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
              f"ETA {_eta(done, len(todo), time.perf_counter() - start)}", flush=True)


# ---- the sweep's trials: model builds, then cells ------------------------------------------------
def _headline(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The metrics a trial reports to Tune: utility, the best attack and the Conf (Org.) baseline."""
    pruned = [r for r in rows if r.get("target_model") == "pruned" and r.get("status") == "ok"]
    original = [r for r in rows if r.get("target_model") == "original" and r.get("status") == "ok"]
    if not pruned:
        return {"status": "failed", "error": rows[0].get("error", "") if rows else "no rows"}
    best = max(pruned, key=lambda r: r["attack_acc"])
    return {"status": "ok", "target_test_acc": best["target_test_acc"], "best_attack": best["attack"],
            "best_attack_acc": best["attack_acc"],
            "conf_org_acc": original[0]["attack_acc"] if original else math.nan}


def run_job(trial_config: dict) -> None:
    """The Tune trainable: build one model, or run one cell (its rows written to the experiment,
    its metrics reported once)."""
    start = time.time()
    settings = RunSettings(**trial_config["settings"])
    config, build = _trial_job(trial_config)
    if build is not None:
        build_model(config, build["role"], build["pruned"], settings)
        tune.report({"status": "ok", "trial_start": start, "trial_end": time.time()})
        return
    from miaray.unit import failed_rows, run_unit

    timing = {"trial_id": tune.get_context().get_trial_id(), "trial_host": socket.gethostname(),
              "trial_pid": os.getpid(), "trial_start": start}
    try:
        rows = run_unit(config, artifacts_dir=settings.experiment,
                        **worker_context(settings, label=_cell_label(config)))
    except Exception as error:
        timing["trial_end"] = time.time()
        message = f"{type(error).__name__}: {error}"
        results.write_unit_rows(experiment=settings.experiment, unit_id=config.unit_id(),
                                rows=failed_rows(config, message, **timing))
        raise  # Tune records the error (ResultGrid.errors) and retries per FailureConfig
    timing["trial_end"] = time.time()
    results.write_unit_rows(experiment=settings.experiment, unit_id=config.unit_id(),
                            rows=[{**row, **timing} for row in rows])
    tune.report({**_headline(rows), **timing})


def _job(cell: UnitConfig, build: dict[str, Any] | None = None) -> str:
    # A trial's job travels as JSON text: opaque to Tune's loggers, which only take flat scalars.
    return json.dumps({"unit": cell.to_dict(), "build": build})


def _trial_job(trial_config: dict) -> tuple[UnitConfig, dict[str, Any] | None]:
    """The trial's unit, and what to build (None for a cell)."""
    job = json.loads(trial_config["job"])
    return UnitConfig.from_dict(job["unit"]), job["build"]


def _job_label(config: UnitConfig, build: dict[str, Any] | None) -> str:
    return _cell_label(config) if build is None else "build " + _build_label(config, **build)


def _trial_name(trial: Any) -> str:
    return _job_label(*_trial_job(trial.config)).replace("/", "-").replace(" ", "_")


def _trial_dirname(trial: Any) -> str:
    config, build = _trial_job(trial.config)
    return config.unit_id() if build is None else "build-" + stable_hash(_model_key(config, **build))


class Progress(tune.Callback):
    """One line per trial event: done / running / failed / pending models or cells, and an ETA."""

    def setup(self, stop: Any = None, num_samples: int | None = None, total_num_samples: int | None = None,
              **info: Any) -> None:
        self.start = time.perf_counter()  # reset on every fit(), also after a restore
        self.state: dict[str, str] = {}   # trial id -> running / done / failed, as seen by this driver
        self.kind_start: dict[bool, float] = {}  # builds / cells -> when the first one started

    def _line(self, trials: list, trial: Any, state: str) -> None:
        # Trial.status lags behind the callbacks; trials restored as finished are known by status only.
        self.state[trial.trial_id] = state
        building = _is_build(trial)
        trials = [t for t in trials if _is_build(t) == building]
        counts = Counter(self.state.get(t.trial_id) or {"TERMINATED": "done", "ERROR": "failed"}.get(
            t.status, "pending") for t in trials)
        finished_here = sum(1 for t in trials if self.state.get(t.trial_id) in ("done", "failed"))
        now = time.perf_counter()
        elapsed = now - self.start
        left = counts["running"] + counts["pending"]
        eta = _eta(finished_here, finished_here + left, now - self.kind_start.setdefault(building, now))
        print(f"[{elapsed:7.1f}s] {'models' if building else 'cells'}: {counts['done']} done, "
              f"{counts['running']} running, {counts['failed']} failed, {counts['pending']} pending of "
              f"{len(trials)}; ETA {eta}  ({state}: {_trial_name(trial)})", flush=True)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._line(trials, trial, "running")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._line(trials, trial, "done")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._line(trials, trial, "failed")


def _is_build(trial: Any) -> bool:
    return _job_is_build(trial.config["job"])


@functools.lru_cache(maxsize=None)
def _job_is_build(job: str) -> bool:
    # Progress asks this of every trial on every event: decode each job's JSON once.
    return json.loads(job)["build"] is not None


def sweep_jobs(plan: Plan, store: Store) -> list[str]:
    """The trials of a sweep in the order they start: the models the store lacks, then the cells,
    sparsest first."""
    builds = [_job(cell, {"role": role, "pruned": pruned})
              for jobs, pruned in ((plan.originals, False), (plan.shared_pruned(), True))
              for cell, role in missing_builds(jobs, pruned=pruned, store=store).values()]
    # Sparsest first: heavier pruning needs more fine-tuning epochs (a quick-preset cell at 0.9 took
    # 7-10 % longer than at 0.5 on average: benchmarks/README.md, bench_grid.py section), so the
    # shorter cells fill the last free slots (longest job first).
    return builds + [_job(cell) for cell in sorted(plan.cells, key=lambda c: -c.sparsity)]


def run_trials(*, plan: Plan, settings: RunSettings, resume: bool, retries: int) -> tune.ResultGrid:
    """The sweep's Tune experiment; `resume` continues the one Tune saved in storage."""
    trainable = tune.with_resources(run_job, settings.resources())
    storage, _, name = settings.experiment.rstrip("/").rpartition("/")
    if resume and tune.Tuner.can_restore(settings.experiment):
        print(f"resuming the Tune experiment at {settings.experiment}", flush=True)
        tuner = tune.Tuner.restore(settings.experiment, trainable, resume_errored=True)
    else:
        if resume:
            print(f"no Tune state at {settings.experiment} yet: starting the sweep afresh", flush=True)
        jobs = sweep_jobs(plan, Store(settings.store))
        print(f"{len(jobs) - len(plan.cells)} models to build (the others are in the store), then "
              f"{len(plan.cells)} cells", flush=True)
        space = {"job": tune.grid_search(jobs), "settings": dataclasses.asdict(settings)}
        tuner = tune.Tuner(
            trainable, param_space=space,
            # Reused actors keep one process per slot for the whole sweep: torch and miaray are
            # imported once per slot instead of once per trial (`import miaray.unit` took 3.8-4.5 s on
            # the 2-core CI-like machine: benchmarks/README.md, bench_grid.py section).
            tune_config=tune.TuneConfig(trial_name_creator=_trial_name, trial_dirname_creator=_trial_dirname,
                                        reuse_actors=True),
            run_config=tune.RunConfig(name=name, storage_path=storage, verbose=0, callbacks=[Progress()],
                                      failure_config=tune.FailureConfig(max_failures=retries)))
    return tuner.fit()


def _record_lost_trials(grid: tune.ResultGrid, settings: RunSettings) -> None:
    """A cell whose process died (out of memory, node lost) wrote no rows: write its error for it."""
    from miaray.unit import failed_rows
    present = results.unit_files(settings.experiment)
    for result in grid:
        config, build = _trial_job(result.config)
        if result.error is None or build is not None:
            continue
        if config.unit_id() not in present:
            message = str(result.error).strip().splitlines()[-1]
            results.write_unit_rows(experiment=settings.experiment, unit_id=config.unit_id(),
                                    rows=failed_rows(config, message))


# ---- summaries ---------------------------------------------------------------------------------
def cell_summary(df: pd.DataFrame) -> pd.DataFrame:
    """One line per cell: pruned target test accuracy, the best attack and its accuracy, Conf (Org.)."""
    lines = []
    for unit_id, rows in df.groupby("unit_id", sort=False):
        first = rows.iloc[0]
        line = {k: first[k] for k in ("dataset", "arch", "method", "sparsity", "split_ratio", "shadow_method",
                                      "shadow_sparsity", "defense", "seed")}
        head = _headline(rows.to_dict("records"))  # what the cell's trial reported to Tune
        if head["status"] != "ok":
            line.update(test_acc=math.nan, best_attack="FAILED", best_attack_acc=math.nan,
                        conf_org_acc=math.nan, error=str(head["error"]))
        else:
            line.update(test_acc=head["target_test_acc"], best_attack=head["best_attack"],
                        best_attack_acc=head["best_attack_acc"], conf_org_acc=head["conf_org_acc"])
        lines.append(line)
    table = pd.DataFrame(lines)
    if table.empty:
        return table
    # Keep the four keys of a cell, and the others only where they say something.
    constant = [c for c in ("split_ratio", "defense", "seed") if table[c].nunique() == 1]
    constant += ["shadow_method", "shadow_sparsity"] if len(known_pruning(table)) == len(table) else []
    if "error" in table:
        table["error"] = table["error"].fillna("")
    return table.sort_values(["dataset", "arch", "method", "sparsity", "split_ratio"],
                             ignore_index=True).drop(columns=constant)


def _format(table: pd.DataFrame) -> str:
    return table.to_string(index=False, float_format=lambda v: f"{v:.3f}") if not table.empty else "(no rows)"


def sweep_rows(*, settings: RunSettings, cells: Sequence[UnitConfig]) -> pd.DataFrame:
    """This sweep's rows (the experiment folder may hold other units from earlier runs)."""
    df = results.load(settings.experiment)
    if df.empty:
        return df
    return df[df["unit_id"].isin({c.unit_id() for c in cells})].reset_index(drop=True)


def _complete(df: pd.DataFrame, cells: Sequence[UnitConfig]) -> bool:
    """Every cell has rows, all of them ok: the scripts' exit status."""
    return len(df) > 0 and set(df["unit_id"]) == {c.unit_id() for c in cells} and (df["status"] == "ok").all()


def run_sweep(*, cells: Sequence[UnitConfig], settings: RunSettings, resume: bool,
              retries: int) -> pd.DataFrame:
    """The sweep's trials (models, then cells) on the connected Ray cluster; returns its rows."""
    plan = Plan.of(cells)
    start = time.perf_counter()
    grid = run_trials(plan=plan, settings=settings, resume=resume, retries=retries)
    _record_lost_trials(grid, settings)
    results.compact(settings.experiment)  # later loads read one snapshot instead of every unit file
    df = sweep_rows(settings=settings, cells=plan.cells)
    finished = set(df["unit_id"]) if len(df) else set()
    failed = set(df.loc[df["status"] != "ok", "unit_id"]) if len(df) else set()
    print(f"\nsweep stopped after {time.perf_counter() - start:.0f}s: {len(finished)} of {len(plan.cells)} "
          f"cells have rows ({len(failed)} failed); rows in {results.rows_dir(settings.experiment)}")
    if len(finished) < len(plan.cells):
        print("  unfinished cells: rerun the same command with --resume")
    for result in grid:
        if result.error is not None:
            label = _job_label(*_trial_job(result.config))
            print(f"  failed {label}: {str(result.error).strip().splitlines()[-1]}")
    return df


# ---- the unknown-pruning tables ------------------------------------------------------------------
def record_pairs(experiment: str, pairs: Sequence[tuple[str, str]]) -> pd.DataFrame:
    """Add the drawn (known, unknown) unit-id pairs to the experiment's PAIRS_FILE (earlier draws kept:
    a rerun with another --pair-seed adds to the study); returns all the pairs recorded there."""
    path = f"{experiment.rstrip('/')}/{PAIRS_FILE}"
    drawn = pd.DataFrame(list(pairs), columns=PAIRS_COLUMNS)
    recorded = pd.concat([results.read_parquet(path), drawn], ignore_index=True).drop_duplicates(ignore_index=True)
    results.write_parquet(recorded, path)
    return recorded


def unknown_pruning_summary(df: pd.DataFrame, *, matrix: bool, pairs: pd.DataFrame | None = None) -> str:
    """What `unknown_pruning_main` prints after the sweep, from its own rows: the sparsity matrix of the
    headline attack (when the matrix study ran) and Table 1 over the drawn `pairs` and per study,
    both as `miaray.unknown_pruning` (and so the analysis scripts) compute them."""
    attack = headline_attack(df) if not df.empty else None
    if attack is None:
        return "no attack on a pruned target succeeded: no unknown-pruning tables"
    lines = []
    if matrix:
        lines += [f"attack accuracy of {attack}, target sparsity (rows) x shadow sparsity (columns):",
                  _format(sparsity_matrix_table(df, attack=attack)), ""]
    table = accuracy_loss_table(df, pairs=pairs)
    lines += ["attack accuracy loss (acc_known - acc_unknown) / acc_known, one column per attack, mean per study: "
              f"'{RANDOM_PAIRS}' over the drawn pairs (the paper's Table 1), 'method' over every unit whose shadows "
              "used another method, 'sparsity' over same method, another sparsity:",
              _format(table) if not table.empty else
              "(no successful unit with differently pruned shadows has its known-pruning unit in this sweep)"]
    return "\n".join(lines)


# ---- command line ----------------------------------------------------------------------------
PRESETS: dict[str, GridSpec] = {
    # REFERENCE section 1: 255 pruned target models, reference hyperparameters, all nine attacks.
    "paper": GridSpec(datasets=PAPER_DATASETS, archs=ARCHS, methods=METHODS, sparsities=PAPER_SPARSITIES),
    # The README's main job: real (embedded) data, a narrow net, every method and attack, minutes on a
    # CPU. The trained attacks run a fifth of SAMIA's 100-epoch schedule (same milestones, scaled):
    # at the full schedule SAMIA alone costs several CPU-minutes per cell.
    "quick": GridSpec(datasets=("digits",), archs=("resnet18",), methods=METHODS, sparsities=(0.5, 0.9),
                      width=0.125, attack_epochs=20),
    # Paper Table 2 (appendix A.5): the paper's headline cell under its four train/test/validation splits.
    "table2": GridSpec(datasets=("cifar10",), archs=("resnet18",), methods=("l1_unstructured",),
                       sparsities=(0.7,), splits=TABLE2_SPLITS),
}
UNKNOWN_PRESETS: dict[str, GridSpec] = {
    # Paper Fig. 12/13 and A.6 (L1 unstructured on CIFAR10/100, Purchase, Texas) and Table 1's four
    # image datasets; the method study draws from `methods`, the matrix uses l1_unstructured only
    # (see `unknown_pruning_main`).
    "paper": GridSpec(datasets=("cifar10", "cifar100", "svhn", "chmnist", "purchase", "texas"), archs=ARCHS,
                      methods=METHODS, sparsities=PAPER_SPARSITIES),
    "quick": GridSpec(datasets=("digits",), archs=("resnet18",), methods=METHODS, sparsities=(0.5, 0.9),
                      width=0.125, attacks=("conf", "mentr", "nn", "samia"), attack_epochs=20),
}


def _csv(kind: Callable[[str], Any]) -> Callable[[str], tuple]:
    def parse(text: str) -> tuple:
        return tuple(kind(item.strip()) for item in text.split(",") if item.strip())
    return parse


def build_parser(*, prog: str, description: str, presets: dict[str, GridSpec]) -> argparse.ArgumentParser:
    """The options every sweep script shares."""
    p = argparse.ArgumentParser(prog=prog, description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("grid (a preset, narrowed or changed by the filters)")
    g.add_argument("--preset", choices=sorted(presets), default="quick")
    g.add_argument("--datasets", type=_csv(str), help=f"comma list of {', '.join(DATASETS)}")
    g.add_argument("--archs", type=_csv(str), help=f"comma list of {', '.join(ARCHS)}")
    g.add_argument("--methods", type=_csv(str), help=f"comma list of {', '.join(METHODS)}")
    g.add_argument("--sparsities", type=_csv(float), help="comma list in (0, 1), e.g. 0.5,0.9")
    g.add_argument("--seeds", type=_csv(int), help="comma list of seeds (default 0)")
    g.add_argument("--splits", type=_csv(str), metavar="TRAIN/TEST/VAL,...",
                   help="comma list of train/test/validation percentages of each half, e.g. 45/45/10,60/30/10 "
                        "(paper Table 2; default: the preset's)")
    g.add_argument("--width", type=float, help="channel multiplier (< 1: narrow models)")
    g.add_argument("--attacks", type=_csv(str), help=f"comma list of {', '.join(ATTACKS)} (default: the preset's)")
    g.add_argument("--shadows", type=int, help="shadow models per cell (default 5)")
    g.add_argument("--defense", choices=DEFENSES, help="defense applied while fine-tuning the target")
    g.add_argument("--defense-param", action="append", default=[], metavar="NAME=VALUE",
                   help="defense hyperparameter, e.g. lambda=4 (ppb), noise_multiplier=1 (dp), alpha=4 (adv)")
    g.add_argument("--adaptive", action="store_true", help="shadows fine-tuned with the target's defense")
    g.add_argument("--max-epochs", type=int, help="override of the epoch cap (default 100 images / 50 tabular)")
    g.add_argument("--attack-epochs", type=int,
                   help="epochs of the trained attacks (nn, top3_nn, nncls, samia; default: the preset's, "
                        "else their reference schedules, SAMIA 100)")
    r = p.add_argument_group("run")
    r.add_argument("--storage", default="~/miaray-results",
                   help="results and Tune state: a local folder or a URI such as s3://bucket/prefix")
    r.add_argument("--name", help="experiment name under --storage (default: derived from the preset)")
    r.add_argument("--cache", help="artifact store (default: <storage>/cache for a local --storage, else "
                                   "$MIARAY_CACHE or ~/.cache/miaray/store; on a cluster a shared mount)")
    r.add_argument("--data-root", help="dataset folder (default: $MIARAY_DATA, else each worker's default)")
    r.add_argument("--address", default="auto",
                   help="Ray to use: 'auto' (the running cluster, else a new local instance), 'local' "
                        "(always a new local instance) or the host:port of a cluster")
    r.add_argument("--cpus-per-trial", type=float, default=1.0)
    r.add_argument("--gpus-per-trial", type=float,
                   help="e.g. 0.25 packs four trials on a GPU (default: 1 if the cluster has GPUs, else 0)")
    r.add_argument("--retries", type=int, default=0, help="times a failed trial or model build is retried")
    r.add_argument("--resume", action="store_true", help="continue the experiment --storage/--name")
    r.add_argument("--dry-run", action="store_true", help="print the plan and exit; trains nothing")
    return p


def spec_from_args(args: argparse.Namespace, presets: dict[str, GridSpec]) -> GridSpec:
    """The preset with the command-line overrides, validated (raises ConfigError)."""
    spec = presets[args.preset]
    overrides = {field: getattr(args, field) for field in
                 ("datasets", "archs", "methods", "sparsities", "seeds", "width", "attacks", "defense",
                  "max_epochs", "attack_epochs") if getattr(args, field) is not None}
    if args.shadows is not None:
        overrides["num_shadows"] = args.shadows
    if args.splits is not None:
        overrides["splits"] = tuple(parse_split(text, option="--splits") for text in args.splits)
    if args.defense_param:
        overrides["defense_params"] = parse_name_values(args.defense_param, option="--defense-param")
    if args.adaptive:
        overrides["adaptive"] = True
    spec = dataclasses.replace(spec, **overrides)
    for name, values, choices in (("datasets", spec.datasets, DATASETS), ("archs", spec.archs, ARCHS),
                                  ("methods", spec.methods, METHODS), ("attacks", spec.attacks, ATTACKS)):
        _check_axis(name, values, choices)
    _check_axis("defense", (spec.defense,), DEFENSES)
    if spec.defense_params and not DEFENSE_PARAMS[spec.defense]:
        raise ConfigError(f"--defense-param given but defense={spec.defense!r} takes no parameters; "
                          f"choose --defense from: {', '.join(d for d in DEFENSES if DEFENSE_PARAMS[d])}")
    return spec.validate()


def settings_from_args(args: argparse.Namespace, *, name: str) -> RunSettings:
    """Where results, Tune state, cache and data live; resources per trial (after `connect`)."""
    storage = _absolute(args.storage)
    experiment = f"{storage.rstrip('/')}/{args.name or name}"
    if args.cache:
        cache = _absolute(args.cache)
    elif "://" in storage:
        cache = str(default_root())
        print(f"note: artifact store {cache} (pass --cache with a folder every node mounts, or each node "
              "trains the models its trials need)", file=sys.stderr)
    else:
        cache = f"{storage}/cache"
    data_root = args.data_root or os.environ.get("MIARAY_DATA")
    gpus = args.gpus_per_trial
    if gpus is None:
        gpus = 1.0 if ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    return RunSettings(experiment=experiment, store=cache, data_root=_absolute(data_root) if data_root else None,
                       cpus_per_trial=args.cpus_per_trial, gpus_per_trial=gpus)


def parse_args(argv: list[str] | None, parser: argparse.ArgumentParser,
           presets: dict[str, GridSpec]) -> tuple[argparse.Namespace, GridSpec]:
    args = parser.parse_args(argv)
    try:
        spec = spec_from_args(args, presets)
    except ConfigError as error:
        parser.error(str(error))  # exits with status 2 before Ray starts
    return args, spec


def full_grid_main(argv: list[str] | None = None) -> int:
    """`sweeps/full_grid.py`: the known-pruning grid (paper section 5.2)."""
    parser = build_parser(prog="full_grid.py", presets=PRESETS,
                          description="Train, prune, fine-tune and attack every cell of a grid on Ray Tune.")
    args, spec = parse_args(argv, parser, PRESETS)
    cells = spec.cells()
    plan = Plan.of(cells)
    print(plan.describe(), flush=True)
    if args.dry_run:
        return 0
    connect(address=args.address)
    settings = settings_from_args(args, name=f"full_grid-{args.preset}")
    df = run_sweep(cells=cells, settings=settings, resume=args.resume, retries=args.retries)
    print("\n" + _format(cell_summary(df)))
    return 0 if _complete(df, cells) else 1


def unknown_pruning_main(argv: list[str] | None = None) -> int:
    """`sweeps/unknown_pruning.py`: unknown sparsity (matrix) and unknown method and sparsity (pairs)."""
    parser = build_parser(prog="unknown_pruning.py", presets=UNKNOWN_PRESETS,
                          description="Attack pruned targets with shadows pruned differently (paper 5.2.5).")
    parser.add_argument("--study", choices=("sparsity", "method", "both"), default="both",
                        help="sparsity: target x shadow sparsity matrix (l1_unstructured unless --methods); "
                             "method: random (method, sparsity) pairs; both")
    parser.add_argument("--pairs", type=int, default=20, help="random pairs per dataset and arch")
    parser.add_argument("--pair-seed", type=int, default=0, help="seed of the random pair draws")
    args, spec = parse_args(argv, parser, UNKNOWN_PRESETS)
    matrix_spec = spec if args.methods else dataclasses.replace(spec, methods=("l1_unstructured",))
    try:
        matrix = sparsity_matrix(matrix_spec) if args.study in ("sparsity", "both") else []
        pairs = method_pairs(spec, pairs=args.pairs, seed=args.pair_seed) if args.study in ("method", "both") else []
    except ConfigError as error:  # e.g. several --splits: this study runs one
        parser.error(str(error))
    cells = unique(matrix + [c for pair in pairs for c in pair])
    print(Plan.of(cells).describe(), flush=True)
    if args.dry_run:
        return 0
    connect(address=args.address)
    settings = settings_from_args(args, name=f"unknown_pruning-{args.preset}")
    # Recorded before the sweep, so that a killed and resumed study keeps them.
    recorded = record_pairs(settings.experiment, [(k.unit_id(), u.unit_id()) for k, u in pairs]) if pairs else None
    df = run_sweep(cells=cells, settings=settings, resume=args.resume, retries=args.retries)
    print("\n" + unknown_pruning_summary(df, matrix=bool(matrix), pairs=recorded))
    return 0 if _complete(df, cells) else 1
