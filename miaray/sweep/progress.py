"""What the driver prints while a sweep runs: one line per trial event, with an ETA."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from ray import tune

from miaray.sweep.plan import job_is_build, job_label, parse_job


def eta(done: int, total: int, elapsed: float) -> str:
    """Time left at the pace so far, for people ('-' before the first and after the last)."""
    if done == 0 or done >= total:
        return "-"
    return f"{elapsed / done * (total - done):.0f}s"


def trial_name(trial: Any) -> str:
    """A trial's job for people and Tune's trial names: the cell or model, without '/' or spaces."""
    return job_label(*parse_job(trial.config["job"])).replace("/", "-").replace(" ", "_")


def _is_build(trial: Any) -> bool:
    return job_is_build(trial.config["job"])


class Progress(tune.Callback):
    """One line per trial event: done / running / failed / pending models or cells, and an ETA."""

    def setup(self, stop: Any = None, num_samples: int | None = None, total_num_samples: int | None = None,
              **info: Any) -> None:
        self.start = time.perf_counter()
        self.state: dict[str, str] = {}   # trial id -> running / done / failed, as seen by this driver
        self.kind_start: dict[bool, float] = {}  # builds / cells -> when the first one started

    def _line(self, trials: list, trial: Any, state: str, event: str | None = None) -> None:
        # Trial.status lags behind the callbacks: count what this callback saw.
        self.state[trial.trial_id] = state
        building = _is_build(trial)
        trials = [t for t in trials if _is_build(t) == building]
        counts = Counter(self.state.get(t.trial_id, "pending") for t in trials)
        finished_here = sum(1 for t in trials if self.state.get(t.trial_id) in ("done", "failed"))
        now = time.perf_counter()
        elapsed = now - self.start
        left = counts["running"] + counts["pending"]
        left_time = eta(finished_here, finished_here + left, now - self.kind_start.setdefault(building, now))
        print(f"[{elapsed:7.1f}s] {'models' if building else 'cells'}: {counts['done']} done, "
              f"{counts['running']} running, {counts['failed']} failed, {counts['pending']} pending of "
              f"{len(trials)}; ETA {left_time}  ({event or state}: {trial_name(trial)})", flush=True)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._line(trials, trial, "running")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._line(trials, trial, "done")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._line(trials, trial, "failed")

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        # A retry (--retries): the trial raised, or its process or node was lost (a spot interruption).
        self._line(trials, trial, "pending", event="retrying")
