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

The rows on disk are the truth: every run, fresh or `--resume`, runs only the cells without ok rows in
the experiment, after only the models the store lacks (`trials.run_sweep`), so a killed driver or a
lost node costs the work in flight and nothing else.

The package, by concern: `grid` (GridSpec, the unknown-pruning studies, presets), `plan` (the models
the cells need and the jobs), `settings` (what every trial receives: `RunSettings`), `cluster` (joining
Ray, what it offers, resources, worker setup), `shared` (folders every node must see), `disk` (free
space while it runs), `watchdog` (a private Ray stopped with its driver), `trials` (the Tune trainable
and experiment, the sweep), `progress` (the driver's printout), `cli` (options, mains, summaries).
The entry scripts (`sweeps/full_grid.py`, `sweeps/unknown_pruning.py`) only call `full_grid_main` /
`unknown_pruning_main`, because `ray submit` copies the script alone to the head node.
"""

from miaray.sweep.cli import (_format, build_parser, cell_summary, full_grid_main, parse_args, record_pairs,
                              settings_from_args, spec_from_args, unknown_pruning_main, unknown_pruning_summary)
from miaray.sweep.cluster import connect, prepare_worker, worker_context
from miaray.sweep.grid import (PAPER_DATASETS, PAPER_SPARSITIES, PRESETS, UNKNOWN_PRESETS, GridSpec, method_pairs,
                               sparsity_matrix, unique)
from miaray.sweep.plan import Plan, missing_builds, sweep_jobs
from miaray.sweep.settings import RunSettings
from miaray.sweep.trials import build_model, build_originals, run_job, run_sweep, run_trials, sweep_rows

__all__ = ["GridSpec", "PAPER_DATASETS", "PAPER_SPARSITIES", "PRESETS", "Plan", "RunSettings", "UNKNOWN_PRESETS",
           "_format", "build_model", "build_originals", "build_parser", "cell_summary", "connect", "full_grid_main",
           "method_pairs", "missing_builds", "parse_args", "prepare_worker", "record_pairs", "run_job",
           "run_sweep", "run_trials", "settings_from_args", "sparsity_matrix", "spec_from_args", "sweep_jobs",
           "sweep_rows", "unique", "unknown_pruning_main", "unknown_pruning_summary", "worker_context"]
