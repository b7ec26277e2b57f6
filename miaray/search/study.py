"""The Optuna study of a search, `<experiment>/study.db`: created, or resumed only under the identity it
was created with (what its values mean), the trials a killed driver left RUNNING recovered, and the
trials that count against the budget."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping

import optuna
from optuna.trial import FrozenTrial, TrialState

from miaray.config import ConfigError
from miaray.search.space import DEFAULT_PRIVACY_METRIC, _label, _sampler
from miaray.search.spec import Search, starting_points


def stored_identity(study: optuna.Study) -> dict[str, Any] | None:
    """The identity a study was created with; studies from before it was stored: their one cell, its
    seed, the advantage; None for a new study."""
    if "search" in study.user_attrs:
        return study.user_attrs["search"]
    if "cell" in study.user_attrs:
        cell = json.loads(study.user_attrs["cell"])
        return {"cells": [cell], "seeds": [cell.get("seed", 0)], "privacy_metric": DEFAULT_PRIVACY_METRIC}
    return None


def _changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    changed = {k: (old.get(k), new.get(k)) for k in ("seeds", "privacy_metric") if old.get(k) != new.get(k)}
    old_cells, new_cells = old.get("cells", []), new.get("cells", [])
    if [c.get("defense") for c in old_cells] != [c.get("defense") for c in new_cells]:
        changed["defenses"] = ([c.get("defense") for c in old_cells], [c.get("defense") for c in new_cells])
    else:
        for before, after in zip(old_cells, new_cells):
            changed.update({k: (before.get(k), v) for k, v in after.items() if before.get(k) != v})
    return changed


def open_study(search: Search, *, log: Callable[[str], None] = print) -> optuna.Study:
    """Create the study, or load it and recover from trials a killed driver left running."""
    Path(search.settings.experiment).mkdir(parents=True, exist_ok=True)
    identity = search.identity()
    others = [n for n in optuna.get_all_study_names(storage=search.storage_url) if n != search.study_name]
    if others:  # one experiment, one search: its rows, front and plot would otherwise mix two searches
        old = stored_identity(optuna.load_study(study_name=others[0], storage=search.storage_url)) or {}
        raise ConfigError(f"{search.settings.experiment} holds another search (changed: {_changes(old, identity)}); "
                          "give this one its own --name, or repeat the original options to resume it")
    study = optuna.create_study(study_name=search.study_name, storage=search.storage_url,
                                directions=["maximize", "minimize"], load_if_exists=True,
                                sampler=_sampler(search.sampler_seed, len(starting_points(search)), group=search.multi))
    old = stored_identity(study)
    if old is not None and old != identity:  # the same cell, other seeds or another objective
        raise ConfigError(f"{search.settings.experiment} holds this search with other settings (changed: "
                          f"{_changes(old, identity)}); its values would mean something else: give this one its "
                          "own --name, or repeat the original options to resume it")
    study.set_user_attr("search", identity)
    study.set_user_attr("cell", json.dumps(search.cell.to_dict(), sort_keys=True))
    trials = study.get_trials(deepcopy=False)
    reasked = {t.user_attrs["reasked_from"] for t in trials if "reasked_from" in t.user_attrs}
    for trial in trials:
        if trial.state != TrialState.RUNNING:
            continue
        # Left running by a driver that died: nothing will ever tell it. Record it as interrupted (so
        # it leaves the budget), re-ask its work, then fail it: each step is safe to repeat if the
        # driver dies again in between, and none loses the work or queues it twice.
        study.set_user_attr("interrupted", sorted({*study.user_attrs.get("interrupted", []), trial.number}))
        # A trial popped from the queue may die before its parameters are written: take the queued ones.
        params = {**trial.system_attrs.get("fixed_params", {}), **trial.params}
        if params and trial.number not in reasked:  # no params: free search not yet sampled, nothing lost
            study.enqueue_trial(params, user_attrs={**trial.user_attrs, "reasked_from": trial.number})
        study.tell(trial.number, state=TrialState.FAIL)
        log(f"trial {trial.number} was left running by a killed search: marked FAIL"
            + (f", {_label(params)} asked again" if params else ""))
    return study


def counted_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The trials that used the budget: finished, less those a killed driver interrupted."""
    interrupted = set(study.user_attrs.get("interrupted", []))
    return [t for t in study.get_trials(deepcopy=False) if t.state.is_finished() and t.number not in interrupted]


def budget_used(study: optuna.Study) -> int:
    return len(counted_trials(study))
