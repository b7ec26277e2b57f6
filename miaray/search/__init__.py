"""Defense hyperparameter search: an Optuna multi-objective study whose trials are units on Ray, and a
confirmation of its front on held-out seeds and attacks.

For one cell (dataset, arch, pruning method, sparsity) and one or several defenses (ppb, dp, adv), each
trial fine-tunes the pruned target *and* its shadows with the trial's hyperparameters (the adaptive
attack, docs/science.md, Defense definitions), on every search seed (`--seeds`), and is scored on two
objectives, the means over those seeds: maximise the pruned target's test accuracy, minimise the privacy
objective, per seed the strongest of the requested attacks by `--privacy-metric` (default `advantage`,
TPR - FPR at the attack's own decision, fitted on shadows only: what an attacker reaches; or `auc`, or
`tpr_at_fpr_0.01`). Not the rows' `max_advantage`, the oracle bound no attacker can choose. Each
seed's values stay in `trials.parquet`. A collapsed attack (constant or non-finite scores on the
target, marked by `miaray.unit.attack_rows`) is no result: it is left out of the objective, with a
warning naming it.

Several defenses (`--defense ppb,dp,adv`) are one study: the defense is a categorical parameter and
each defense's hyperparameters are conditional on it (Optuna's define-by-run spaces, sampled by a
grouped multivariate TPE), the paper's grid of every defense enqueued first, in turn.

A front picked from search-seed values keeps their lucky draws (the winner's curse), and a setting
tuned until the searched attacks fail may still leak to one it never saw. So after the budget every
front point (at most `--confirm-top`, spread along the front) runs again on held-out seeds
(`--confirm-seeds`, disjoint from the search seeds), attacked by the searched attacks and held-out ones
(`--confirm-attacks`: by default the offline LiRA and RMIA and the paper's attacks not searched
against). `pareto.parquet` holds, per point, the search-time objectives and the confirmed ones with 95%
Student-t intervals over the held-out seeds (`miaray.stats.t_interval`), the TPR at 1% FPR of the
strongest confirming attack, and `flagged` where a confirmed interval excludes the search-time value.

Why Optuna ask/tell in the driver with Ray tasks, not `OptunaSearch` inside Tune: OptunaSearch leaves
a trial whose objective is NaN or missing RUNNING for ever (docs/science.md, Ray and Optuna), and a diverged DP
unit is exactly that case. Here the driver alone owns the study: it asks, submits one Ray task per
trial and seed, and tells every outcome itself, a failure as `TrialState.FAIL`. The study lives in
`<experiment>/study.db` (SQLite, written by this one process only, as SQLite requires), so the same
command resumes a killed search: finished trials are kept, numbering continues, and a trial the dead
driver left RUNNING is marked FAIL and its parameters run next (the new trial carries the user
attribute `reasked_from`); interrupted trials, listed in the study's user attribute `interrupted`, do
not count against the budget. A unit whose ok rows are already in the experiment (a seed that finished
before the kill, a confirmation run before) is not run again: the rows on disk are the truth.

Outputs beside the grid's: `<experiment>/rows/<unit_id>.parquet` per unit (read by
`miaray.results.load`, with the columns `search_trial`, `search_origin`, `search_phase` and
`search_study` added), `trials.parquet` (every counted trial, per-seed values included),
`pareto.parquet` (the front, search-time and confirmed) and `pareto.png`.

The package, by concern, each module importing only those before it: `space` (the search spaces and the
paper's grids, the privacy metrics, the units a setting runs as, the sampler), `outcome` (a unit's
objectives from its rows, collapsed attacks), `spec` (`Search`, its checks and description, the starting
points, a trial's setting), `study` (the study opened or resumed, the budget), `tasks` (the Ray tasks and
the rows they write), `trials` (`run_search`, the ask/run/tell loop), `confirm` (the front re-run on
held-out seeds, the intervals and flags), `outputs` (trials.parquet, pareto.parquet, pareto.png), `cli`
(the presets, options and `defense_search_main`). The entry script `sweeps/defense_search.py` only calls
`defense_search_main`, because `ray submit` copies the script alone to the head node.
"""

from miaray.search.cli import SEARCH_PRESETS, build_search_parser, defense_search_main
from miaray.search.confirm import confirm_point, spread
from miaray.search.outcome import CollapsedAttackWarning, unit_outcome
from miaray.search.outputs import pareto_table, trials_table
from miaray.search.space import ADVANTAGE, DATASET_SAMPLES, SEARCH_SPACES, default_confirm_attacks, target_nonmembers
from miaray.search.spec import STUDY_FILE, Search

__all__ = ["ADVANTAGE", "DATASET_SAMPLES", "SEARCH_PRESETS", "SEARCH_SPACES", "STUDY_FILE", "CollapsedAttackWarning",
           "Search", "build_search_parser", "confirm_point", "default_confirm_attacks", "defense_search_main",
           "pareto_table", "spread", "target_nonmembers", "trials_table", "unit_outcome"]
