"""The spine of a unit, top to bottom: originals, pruned models, what the attacks read, the attacks on
the pruned then the unpruned target, the rows."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch

from miaray.config import UnitConfig
from miaray.store import Store
from miaray.train import TrainingDiverged
from miaray.unit.attacks import attack_rows
from miaray.unit.context import make_context, membership
from miaray.unit.keys import original_attack_key
from miaray.unit.models import original_model, pruned_model
from miaray.unit.pairs import UnitPairs
from miaray.unit.queries import model_signals
from miaray.unit.ratio import RatioPhi
from miaray.unit.rows import UnitResult, config_columns, failed_rows, gaps, signal_table
from miaray.vocabulary import PAIR_ATTACKS


def unit_result(config: UnitConfig, *, store: Store | None = None, data_root: str | None = None,
                device: str | torch.device | None = None, log: Callable[[str], None] | None = None) -> UnitResult:
    """Run one grid cell (`run_unit`) and return everything it produces."""
    start = time.perf_counter()
    ctx = make_context(config, store=store, data_root=data_root, device=device, log=log)
    base = config_columns(config)
    shadow_roles = config.shadow_roles()
    try:
        t0 = time.perf_counter()
        originals = {role: original_model(ctx, role) for role in config.roles()}
        t1 = time.perf_counter()
        pruned = {role: pruned_model(ctx, role, originals[role]) for role in config.roles()}
        t2 = time.perf_counter()
    except TrainingDiverged as error:
        ctx.log(f"unit failed: {error}")
        empty = pd.DataFrame()
        return UnitResult(failed_rows(config, str(error), time_total_s=time.perf_counter() - start),
                          empty, empty, empty, empty)

    # The paper's attacks read the target's and the shadows' signals; the likelihood-ratio attacks their phi
    # (and the reference models'), each stored per model.
    signal_roles = ["target", *shadow_roles]
    signals = {role: model_signals(ctx, pruned[role][0], config.model_key(role), role) for role in signal_roles}
    original_signals = {role: model_signals(ctx, originals[role][0], config.original_key(role), role)
                        for role in signal_roles}
    phi = RatioPhi.of(ctx, {role: model for role, (model, _) in pruned.items()}, attacks=config.attacks,
                          model_key=config.model_key)
    original_phi = RatioPhi.of(ctx, {role: model for role, (model, _) in originals.items()},
                                   attacks=config.resolved_original_attacks, model_key=config.original_key)
    pairs = (UnitPairs.of(ctx, {role: model for role, (model, _) in originals.items()},
                          {role: model for role, (model, _) in pruned.items()})
             if set(config.attacks) & set(PAIR_ATTACKS) else None)
    t3 = time.perf_counter()
    target_meta, original_meta = pruned["target"][1], originals["target"][1]
    common = {**base, "status": "ok", "error": "",
              "original_train_acc": original_meta["train_acc"], "original_test_acc": original_meta["test_acc"],
              "epsilon": target_meta.get("epsilon", math.nan), "delta": target_meta.get("delta", math.nan),
              "achieved_sparsity": target_meta["achieved_sparsity"],
              "finetune_epochs": target_meta["epochs_run"], "original_epochs": original_meta["epochs_run"],
              "time_originals_s": t1 - t0, "time_prune_finetune_s": t2 - t1, "time_signals_s": t3 - t2}
    rows, rocs, budgets, tables, scores = [], [], [], [], []
    samples = ctx.splits.target_pool().numpy()  # the dataset index of each target sample, scored in this order
    truth = membership(ctx, "target").astype(bool)
    # The pruned target attacked by every requested attack, then the unpruned target by
    # `original_attacks` (by default the same list; ("conf",) is the paper's "Conf (Org.)" baseline),
    # fitted on the unpruned shadows (and reference models). The latter depend on the originals only:
    # stored once per (dataset, arch, seed, ...), shared by every cell.
    for target_model, sigs, phis, meta, attacks, cache_key in (
            ("pruned", signals, phi, target_meta, config.attacks, None),
            ("original", original_signals, original_phi, original_meta, config.resolved_original_attacks,
             lambda attack: original_attack_key(config, attack))):
        metric_rows, roc, budget, per_sample = attack_rows(ctx, target=sigs["target"],
                                                           shadows={r: sigs[r] for r in shadow_roles}, attacks=attacks,
                                                           cache_key=cache_key, phi=phis, pairs=pairs)
        rows += [{**common, "target_model": target_model, "target_train_acc": meta["train_acc"],
                  "target_test_acc": meta["test_acc"], **gaps(ctx, sigs["target"], meta), **row}
                 for row in metric_rows]
        rocs += [{"target_model": target_model, **point} for point in roc]
        budgets += [{"target_model": target_model, **line} for line in budget]
        tables.append(signal_table(ctx, sigs["target"], target_model))
        scores += [pd.DataFrame({"target_model": "both" if attack in PAIR_ATTACKS else target_model, "attack": attack,
                                 "sample": samples, "member": truth, "score": values})
                   for attack, values in per_sample.items()]
    for row in rows:
        row["time_total_s"] = time.perf_counter() - start
    return UnitResult(rows, pd.concat(tables, ignore_index=True), pd.DataFrame(rocs), pd.DataFrame(budgets),
                      pd.concat(scores, ignore_index=True) if scores else pd.DataFrame())


def run_unit(config: UnitConfig, *, store: Store | None = None, data_root: str | None = None,
             device: str | torch.device | None = None, log: Callable[[str], None] | None = None,
             artifacts_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Run one grid cell and return its rows: one per attack on the pruned target
    (`target_model == "pruned"`), then one per attack of `config.resolved_original_attacks` on the
    unpruned target (`"original"`; with ("conf",) the paper's 'Conf (Org.)' baseline). A reference
    attack's row is its full budget (`models_used` models) and states its parameters.

    A unit whose training diverges (NaN loss, typical under large DP noise) returns rows with
    status 'failed' and the reason, instead of numbers. With `artifacts_dir`, the target's per-sample
    signals go to `signals/<unit_id>.parquet`, the attacks' ROC curves to `roc/<unit_id>.parquet` and
    the likelihood-ratio attacks' results at every budget (k = 1, 2, 4, ... models) to `budget/<unit_id>.parquet`.
    """
    result = unit_result(config, store=store, data_root=data_root, device=device, log=log)
    if artifacts_dir is not None:
        result.write_artifacts(artifacts_dir, config.unit_id())
    return result.rows
