"""The plan of a sweep: which models its cells need, each once, and the jobs that build and run them.

A job is one trial of the sweep: build one model (an original, or a pruned model several cells share)
or run one cell. Jobs travel as JSON text (`job_text`): opaque to Tune's loggers, which only take
flat scalars.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

import pandas as pd

from miaray.config import UnitConfig, stable_hash
from miaray.roles import role_kind
from miaray.store import Store
from miaray.sweep.grid import unique
from miaray.unit.keys import role_entries
from miaray.vocabulary import METHODS, PAPER_SPLIT, TRAINED_ATTACKS, defense_label, format_split


# Past any of these a dry run (and every run's plan) ends with a one-line cost warning. The paper's full
# grid (`--preset paper`: 1,620 models, at most 82,350 epochs at its caps of 100 / 50) stays below them:
# a plan above is larger than the paper's whole study, or runs epochs no early stopping was tuned for.
COST_WARNING_MODELS = 2_000         # models to train (originals and pruned ones)
COST_WARNING_EPOCHS = 100_000       # the most epochs they may run in all
COST_WARNING_EPOCH_CAP = 1_000      # --max-epochs: ten times the paper's 100
COST_WARNING_CPUS = 1_024           # CPUs asked at once (trials at once x --cpus-per-trial)


def cost_warning(*, models: int, epochs: int, epoch_cap: int, cpus_at_once: float = 0.0) -> str | None:
    """One line saying what makes a plan costly, past the COST_WARNING_* thresholds; None below them."""
    reasons = []
    if models > COST_WARNING_MODELS or epochs > COST_WARNING_EPOCHS:
        reasons.append(f"{models:,} models for up to {epochs:,} epochs (the paper's full grid: 1,620 models, "
                       "82,350 epochs)")
    if epoch_cap > COST_WARNING_EPOCH_CAP:
        reasons.append(f"up to {epoch_cap:,} epochs per model (the paper trains 100)")
    if cpus_at_once > COST_WARNING_CPUS:
        reasons.append(f"{cpus_at_once:,.0f} CPUs at once")
    if not reasons:
        return None
    return f"warning: this plan is costly: {'; '.join(reasons)}; check the options before running it"


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
        """Per dataset and arch (and width, when the cells have several): cells, then the models to
        build: originals, pruned targets by method, pruned shadows, pruned reference models, and all
        models."""
        kinds = [(c, "originals") for c, _ in self.originals.values()]
        kinds += [(c, c.method if role == "target" else f"pruned_{role_kind(role)}s") for c, role in self.pruned.values()]
        kinds += [(c, "cells") for c in self.cells]
        frame = pd.DataFrame([{"dataset": c.dataset, "arch": c.arch, "width": c.width, "kind": k} for c, k in kinds])
        rows = ["dataset", "arch"] + (["width"] if frame["width"].nunique() > 1 else [])
        table = pd.crosstab([frame[r] for r in rows], frame["kind"], margins=True, margins_name="total")
        table["models"] = table["total"] - table["cells"]
        order = ["cells", "originals", *METHODS, "pruned_shadows", "pruned_references", "models"]
        return table[[c for c in order if c in table.columns]].rename_axis(columns=None)

    def describe(self) -> str:
        targets = Counter(c.method for c, role in self.pruned.values() if role == "target")
        kinds = Counter(role_kind(role) for _, role in self.pruned.values())
        pairs = {(c.dataset, c.arch) for c in self.cells}
        widths = sorted({c.width for c in self.cells})
        return "\n".join([
            f"plan: {len(self.cells)} cells over {len(pairs)} (dataset, arch) pairs"
            + (f" x {len(widths)} widths ({', '.join(f'{w:g}' for w in widths)})" if len(widths) > 1 else "")
            + "; models to build "
            "(method columns count pruned targets):",
            self.table().to_string(), "",
            f"originals: {len(self.originals)}",
            f"pruned target models: {sum(targets.values())} ("
            + ", ".join(f"{m} {targets[m]}" for m in METHODS if targets[m]) + ")",
            f"pruned shadow models: {kinds['shadow']} ({len(self.shared_pruned())} pruned models shared by "
            f"several cells, built before the cells)"]
            + ([f"pruned reference models: {kinds['reference']} (online LiRA / RMIA; pruned and fine-tuned like "
                "their target)"] if kinds["reference"] else [])
            + ([self.describe_defenses()] if any(c.defense != "basic" for c in self.cells) else [])
            + [self.describe_trainings()])

    def trainings(self) -> dict[str, int]:
        """What the plan trains: `models` (originals trained, pruned models fine-tuned; `prune_only` the pruned
        models built without training), `epochs` (the most
        they may run in all, each at its cap: early stopping ends most sooner), `epoch_cap` (the largest
        cap) and `attacks` (attack models trained: per cell each trained attack on the pruned target, and
        once per original and shadows on the unpruned one, whose results the store keeps)."""
        caps = [cell.train.epochs(tabular=cell.tabular) for cell, _ in self.originals.values()]
        finetune = [cell.train.epochs(tabular=cell.tabular)[1] for cell, _ in self.pruned.values() if cell.finetune]
        on_original = {(stable_hash(c.original_key("target")), c.num_shadows, c.attack_epochs, attack)
                       for c in self.cells for attack in c.resolved_original_attacks if attack in TRAINED_ATTACKS}
        return {"models": len(self.originals) + len(finetune), "prune_only": len(self.pruned) - len(finetune),
                "epochs": sum(cap for cap, _ in caps) + sum(finetune),
                "epoch_cap": max((cap for cap, _ in caps), default=0),
                "attacks": sum(len(set(c.attacks) & set(TRAINED_ATTACKS)) for c in self.cells) + len(on_original)}

    def describe_trainings(self) -> str:
        """The trainings line of `describe`, and the cost warning past the thresholds (COST_WARNING_*)."""
        t = self.trainings()
        prune_only = f"; {t['prune_only']:,} pruned models not fine-tuned" if t["prune_only"] else ""
        line = (f"trainings: {t['models']:,} models ({len(self.originals):,} originals, "
                f"{t['models'] - len(self.originals):,} pruned and fine-tuned), at most {t['epochs']:,} epochs in all"
                f"{prune_only}; {t['attacks']:,} attack models trained ({', '.join(TRAINED_ATTACKS)})")
        warning = cost_warning(models=t["models"], epochs=t["epochs"], epoch_cap=t["epoch_cap"])
        return line + (f"\n{warning}" if warning else "")

    def describe_defenses(self) -> str:
        """Cells per defense setting and kind of shadows (defended cells share the originals, the pruning and
        the undefended shadows of their Basic cell through the store)."""
        counts = Counter((defense_label(c.defense, c.defense_params), c.adaptive) for c in self.cells)
        settings = "; ".join(f"{setting}{' adaptive' if adaptive else ''} {n}" for (setting, adaptive), n in counts.items())
        return f"cells per defense setting: {settings}"


# ---- labels --------------------------------------------------------------------------------------
def cell_label(config: UnitConfig) -> str:
    """A cell for people: dataset/arch/method@sparsity, width, and what differs from the defaults."""
    label = f"{config.dataset}/{config.arch}/{config.method}@{config.sparsity:g} width {config.width:g}"
    if config.shadow_method is not None or config.shadow_sparsity is not None:
        label += f" shadows {config.resolved_shadow_method}@{config.resolved_shadow_sparsity:g}"
    label += f" seed {config.seed}" if config.seed else ""
    label += f" references {config.num_references}" if config.num_references else ""
    if config.defense != "basic":
        label += f" {defense_label(config.defense, config.defense_params)}" + (" adaptive" if config.adaptive else "")
    return label + (f" split {format_split(config.split)}" if config.split != PAPER_SPLIT else "")


def build_label(cell: UnitConfig, role: str, pruned: bool) -> str:
    """A model build for people: dataset/arch, width, seed, role and (pruned) method@sparsity."""
    label = f"{cell.dataset}/{cell.arch} width {cell.width:g} seed {cell.seed} {role}"
    if pruned:
        key = cell.pruned_key(role)
        label += f" {key['method']}@{key['sparsity']:g}"
    return label


def missing_builds(jobs: dict[str, tuple[UnitConfig, str]], *, pruned: bool,
                   store: Store) -> dict[str, tuple[UnitConfig, str]]:
    """The jobs whose model, signals or phi (`miaray.unit.keys.role_entries`) the store lacks."""
    return {h: (cell, role) for h, (cell, role) in jobs.items()
            if not all(store.has(key) for key in role_entries(cell, role, pruned=pruned))}


# ---- jobs: what one trial does -------------------------------------------------------------------
def job_text(cell: UnitConfig, build: dict[str, Any] | None = None) -> str:
    """A trial's job as JSON text: a cell, or (with `build`: role, pruned) one model to build."""
    return json.dumps({"unit": cell.to_dict(), "build": build})


def parse_job(text: str) -> tuple[UnitConfig, dict[str, Any] | None]:
    """The job's unit, and what to build (None for a cell)."""
    job = json.loads(text)
    return UnitConfig.from_dict(job["unit"]), job["build"]


def job_label(config: UnitConfig, build: dict[str, Any] | None) -> str:
    return cell_label(config) if build is None else "build " + build_label(config, **build)


@functools.lru_cache(maxsize=None)
def job_is_build(text: str) -> bool:
    # Progress asks this of every trial on every event: decode each job's JSON once.
    return json.loads(text)["build"] is not None


def sweep_jobs(plan: Plan, store: Store) -> list[str]:
    """The trials of a sweep in the order they start: the models the store lacks, then the cells,
    sparsest first."""
    builds = [job_text(cell, {"role": role, "pruned": pruned})
              for jobs, pruned in ((plan.originals, False), (plan.shared_pruned(), True))
              for cell, role in missing_builds(jobs, pruned=pruned, store=store).values()]
    # Sparsest first: heavier pruning needs more fine-tuning epochs (a quick-preset cell at 0.9 took
    # 7-10 % longer than at 0.5 on average: `python benchmarks/bench_grid.py`), so the
    # shorter cells fill the last free slots (longest job first).
    return builds + [job_text(cell) for cell in sorted(plan.cells, key=lambda c: -c.sparsity)]
