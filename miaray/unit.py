"""One unit of work: train (or load) originals -> prune -> fine-tune -> signals -> attacks -> rows.

`run_unit(config)` composes the science for one grid cell. The target, the shadows and the reference
models (online LiRA / RMIA) go through the same functions with a different `role`; every model, mask
and signal set is cached in the `Store` under a key of exactly the configuration that determines it,
so the cells of one (dataset, arch, seed) share their originals and a pruned shadow set serves every
target that uses it. The attacks on the unpruned target are stored the same way
(`original_attack_key`): computed by the first cell of a (dataset, arch, seed), loaded by the others.
The reference-model attacks and their budget curves are composed in `miaray.reference_attacks`.

    python -m miaray.unit --dataset digits --arch resnet18 --method l1_unstructured --sparsity 0.7
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from sklearn.metrics import roc_curve

from miaray.attacks import make_attack
from miaray.attacks.blindmi import reference_transform
from miaray.attacks.metrics import METRICS, evaluate_scores
from miaray.attacks.signals import Signals, compute_signals, confidence_gap, generalization_gap, sensitivity_gap
from miaray.cli import HelpFormatter, add_debug_option, check_output_file, check_writable_folder, entry_point
from miaray.config import (ALL_ATTACKS, ARCHS, DATASETS, DEFENSE_PARAMS, DEFENSES, FINETUNE_SEED_OFFSET, METHODS, ONLINE_ATTACKS,
                           PAIR_ATTACKS, PAPER_SPLIT, REFERENCE_ATTACKS, TRAINED_ATTACKS, UNIT_OPTIONS, ConfigError, TrainConfig,
                           UnitConfig, with_options,
                           default_width, format_split, parse_attacks,
                           parse_name_values, parse_original_attacks, parse_split)
from miaray.data import Dataset, load_dataset
from miaray.data.splits import Split, Splits, make_splits
from miaray.defenses import make_defense
from miaray.models import build_model
from miaray.pair_attacks import UnitPairs
from miaray.prune import prune, sparsity_report
from miaray.reference_attacks import PARAMETERS, RMIA_GAMMA, ReferencePhi, run_reference_attack
from miaray.results import write_parquet, write_unit_rows
from miaray.store import Store
from miaray.train import TensorSplit, TrainingDiverged, evaluate, fit

GAPS = ("confidence_gap", "sensitivity_gap", "generalization_gap")


def pick_device(device: str | torch.device | None = None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class UnitContext:
    """What every step of one unit needs: the config, the data on its device, splits, the cache."""

    config: UnitConfig
    data: Dataset
    x: torch.Tensor          # all inputs, resident on `device`
    y: torch.Tensor
    splits: Splits
    store: Store
    device: torch.device
    log: Callable[[str], None]

    def split(self, role: str) -> Split:
        return self.splits.role(role)

    def tensors(self, role: str) -> TensorSplit:
        s = self.split(role)
        train, val = s.train.to(self.device), s.val.to(self.device)
        return TensorSplit(self.x[train], self.y[train], self.x[val], self.y[val])

    def new_model(self) -> torch.nn.Module:
        model = build_model(self.config.arch, num_classes=self.data.num_classes,
                            input_shape=self.data.input_shape, width=self.config.width)
        model = model.to(self.device)
        if self.device.type == "cuda" and self.data.is_image:
            model = model.to(memory_format=torch.channels_last)
        return model


def _accuracies(ctx: UnitContext, model: torch.nn.Module, role: str) -> dict[str, float]:
    s = ctx.split(role)
    out = {}
    for part in ("train", "test"):
        idx = getattr(s, part).to(ctx.device)
        out[f"{part}_acc"] = evaluate(model, ctx.x[idx], ctx.y[idx])[1]
    return out


def original_model(ctx: UnitContext, role: str) -> tuple[torch.nn.Module, dict]:
    """The unpruned model of `role`, trained once and cached."""
    cfg = ctx.config
    epochs, _ = cfg.train.epochs(tabular=cfg.tabular)

    def build() -> tuple[dict, dict]:
        ctx.log(f"{role}: training original ({cfg.arch}, up to {epochs} epochs)")
        torch.manual_seed(cfg.role_seed(role))
        model = ctx.new_model()
        result = fit(model, ctx.tensors(role), epochs=epochs, lr=cfg.train.lr,
                     weight_decay=cfg.train.weight_decay, batch_size=cfg.train.batch_size,
                     patience=cfg.train.patience, monitor=cfg.train.monitor, seed=cfg.role_seed(role),
                     bn_l1=cfg.train.slimming_l1)
        meta = {"epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
                "seconds": result.seconds, **_accuracies(ctx, model, role)}
        ctx.log(f"{role}: original stopped at epoch {result.epochs_run} (best {result.best_epoch}), "
                f"train {meta['train_acc']:.3f} test {meta['test_acc']:.3f}")
        return {"state_dict": model.state_dict()}, meta

    payload, meta = ctx.store.get_or_build(cfg.original_key(role), build, map_location=ctx.device)
    model = ctx.new_model()
    model.load_state_dict(payload["state_dict"])
    return model, meta


def pruned_model(ctx: UnitContext, role: str, original: tuple[torch.nn.Module, dict] | None = None
                 ) -> tuple[torch.nn.Module, dict]:
    """The pruned and fine-tuned model of `role` (the original itself at sparsity 0), cached.
    `original` is `original_model(ctx, role)` when the caller has it already (it is not modified)."""
    cfg = ctx.config
    key = cfg.model_key(role)
    if key["kind"] == "original":  # unknown-sparsity study: an unpruned shadow is the original
        model, meta = original or original_model(ctx, role)
        return model, {**meta, "achieved_sparsity": 0.0}
    _, finetune_epochs = cfg.train.epochs(tabular=cfg.tabular)

    def build() -> tuple[dict, dict]:
        model = copy.deepcopy(original[0]) if original else original_model(ctx, role)[0]
        seed = cfg.role_seed(role) + FINETUNE_SEED_OFFSET
        torch.manual_seed(seed)  # dropout (fc) draws the same whatever ran before
        ctx.log(f"{role}: pruning {key['method']} at {key['sparsity']}, " +
                (f"fine-tuning with {key['defense']} (up to {finetune_epochs} epochs)" if cfg.finetune
                 else "no fine-tuning"))
        masks = prune(model, method=key["method"], sparsity=key["sparsity"])
        report = sparsity_report(model, masks, method=key["method"])
        if not cfg.finetune:  # the original's weights with the masks applied, nothing trained
            meta = {"epochs_run": 0, "best_epoch": 0, "seconds": 0.0, "achieved_sparsity": report["sparsity"],
                    "bn_channel_fraction": report.get("bn_channel_fraction"), **_accuracies(ctx, model, role)}
            ctx.log(f"{role}: pruned to {report['sparsity']:.3f}, train {meta['train_acc']:.3f} "
                    f"test {meta['test_acc']:.3f} (not fine-tuned)")
            return {"state_dict": model.state_dict(), "masks": {name: m.bool() for name, m in masks.items()}}, meta
        data = ctx.tensors(role)
        # ADV's reference non-members: the model's own validation split (held out from training).
        defense = make_defense(key["defense"], key["defense_params"], num_classes=ctx.data.num_classes,
                               reference=(data.x_val, data.y_val), seed=cfg.role_seed(role))
        result = fit(model, data, epochs=finetune_epochs, lr=cfg.train.lr,
                     weight_decay=cfg.train.weight_decay, batch_size=cfg.train.batch_size,
                     patience=cfg.train.patience, monitor=cfg.train.monitor,
                     seed=seed, masks=masks, defense=defense)
        meta = {"epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
                "seconds": result.seconds, "achieved_sparsity": report["sparsity"],
                "bn_channel_fraction": report.get("bn_channel_fraction"),
                **result.defense_summary, **_accuracies(ctx, model, role)}
        ctx.log(f"{role}: pruned to {report['sparsity']:.3f}, train {meta['train_acc']:.3f} "
                f"test {meta['test_acc']:.3f}")
        return {"state_dict": model.state_dict(), "masks": {name: m.bool() for name, m in masks.items()}}, meta

    payload, meta = ctx.store.get_or_build(key, build, map_location=ctx.device)
    model = ctx.new_model()
    model.load_state_dict(payload["state_dict"])
    return model, meta


def model_signals(ctx: UnitContext, model: torch.nn.Module, key: dict, role: str) -> Signals:
    """Signals of one model on its members (train split) then non-members (test split), cached."""
    s = ctx.split(role)

    def build() -> tuple[dict, dict]:
        idx = torch.cat([s.train, s.test]).to(ctx.device)
        # Large query batches on the GPU; inputs per forward pass, perturbed copies included.
        batch_size = 16384 if ctx.device.type == "cuda" else 1024
        signals = compute_signals(model, ctx.x[idx], ctx.y[idx], sensitivity=True, seed=ctx.config.seed,
                                  batch_size=batch_size,
                                  reference_transform=lambda v: reference_transform(v, is_image=ctx.data.is_image))
        return {name: getattr(signals, name).cpu() for name in ("probs", "labels", "sensitivity", "ref_probs")}, {}

    payload, _ = ctx.store.get_or_build({**key, "kind": "signals"}, build)
    return Signals(**payload)


def membership(ctx: UnitContext, role: str) -> np.ndarray:
    s = ctx.split(role)
    return np.concatenate([np.ones(len(s.train), dtype=np.int64), np.zeros(len(s.test), dtype=np.int64)])


def original_attack_key(config: UnitConfig, attack: str) -> dict[str, Any]:
    """Cache key of one attack on the unpruned target: what its result depends on. The originals of
    the target and of every shadow (their keys: dataset, arch, width, seed, split, training), the
    attack, its training epochs (trained attacks only) and seed, and the metric names (a cached row
    holds exactly these). Not the pruning method, sparsity or defense: the 20 cells of a (dataset,
    arch, seed) share it. A reference attack (LiRA, RMIA) reads the originals of the models it
    reads instead of the shadows (the shadows offline, the reference models online: the number of
    them sets its budgets), its queries and the parameters its rows state. Results stored before they kept
    the per-sample scores (which per-sample exposure reads) lack `per_sample_scores` and are computed again."""
    key = {"kind": "original_attack", "target": config.original_key("target"),
           "shadows": [config.original_key(role) for role in config.shadow_roles()], "attack": attack,
           "attack_epochs": config.attack_epochs if attack in TRAINED_ATTACKS else None,
           "seed": config.seed, "metrics": list(METRICS), "per_sample_scores": True}
    if attack in REFERENCE_ATTACKS:
        online = attack in ONLINE_ATTACKS
        key.update(shadows=[] if online else key["shadows"],
                   references=[config.original_key(role) for role in config.reference_roles()] if online else [],
                   queries=config.phi_key({})["queries"], parameters=list(PARAMETERS), rmia_gamma=RMIA_GAMMA)
    return key


def attack_rows(ctx: UnitContext, *, target: Signals, shadows: dict[str, Signals], attacks: tuple[str, ...],
                cache_key: Callable[[str], dict[str, Any]] | None = None, phi: ReferencePhi | None = None,
                pairs: UnitPairs | None = None
                ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]], dict[str, np.ndarray]]:
    """Fit each attack on the shadows' (or reference models') signals only, score it on the target.

    The paper's attacks fit on the pooled shadow signals; the reference attacks (LiRA, RMIA) read
    `phi` (`miaray.reference_attacks`) at every budget; the two-model attacks fit on the shadows'
    (original, pruned) pairs and score the target's (`pairs`, `miaray.pair_attacks`), their rows and ROC
    points marked target_model 'both'. With `cache_key`, an attack's result (metrics,
    ROC points, budget) is kept in the store under `cache_key(attack)` and loaded, not recomputed, by
    every later unit that asks for the same key. Returns (one metrics row per attack, ROC points per
    attack, the reference attacks' budget lines, each attack's per-sample scores on the target in the
    order of `membership`: float32, absent for a result stored before they were kept); `time_attack_s`
    is what this call spent (loading, for a stored result).

    A collapsed attack is not a result: one whose scores on the target are all equal (its fit learned
    nothing it can rank by) or not finite (its fit diverged) keeps its row, marked `attack_status`
    'collapsed' with the reason in `attack_note` (else 'ok' and ''), and a warning names it; best-attack
    summaries (`miaray.sweep.trials.headline`, the defense search's objective) leave it out. Its metrics
    are those of its scores (0.5 / 0 / 0.5 for constant ones; NaN where they are not finite). A result
    stored before this mark, and a reference attack (whose scores stay inside it), are judged by their
    ROC: constant scores give the two points (0, 0) and (1, 1) only."""
    import warnings

    truth = membership(ctx, "target")
    on_device: dict[str, Any] = {}
    constant, diverged = "constant scores on the target", "non-finite scores on the target (its fit diverged)"

    def compute(name: str) -> tuple[dict[str, Any], dict]:
        if name in REFERENCE_ATTACKS:
            return run_reference_attack(name, phi, truth), {}
        if name in PAIR_ATTACKS:
            attack = pairs.fitted(name)
            scores = attack.predict_proba(pairs.target)
        else:
            if not on_device:  # pooled once, and only when an attack must actually run
                # Attack models train where the data lives (the GPU when there is one).
                on_device.update(pooled=Signals.concat(list(shadows.values())).to(ctx.device),
                                 membership=np.concatenate([membership(ctx, role) for role in shadows]),
                                 target=target.to(ctx.device))
            params = {"epochs": ctx.config.attack_epochs} if ctx.config.attack_epochs and name in TRAINED_ATTACKS else {}
            attack = make_attack(name, seed=ctx.config.seed, **params).fit(on_device["pooled"], on_device["membership"])
            scores = attack.predict_proba(on_device["target"])
        if not np.isfinite(scores).all():  # no ROC to draw, no metric to compute: only the set's sizes
            metrics = {**{m: math.nan for m in METRICS}, "n_members": int((truth == 1).sum()),
                       "n_nonmembers": int((truth == 0).sum())}
            empty = torch.zeros(0, dtype=torch.float64)
            return {"metrics": metrics, "fpr": empty, "tpr": empty, "collapsed": diverged,
                    "scores": torch.from_numpy(scores.astype(np.float32))}, {}
        fpr, tpr, _ = roc_curve(truth, scores)  # the scores also give the metrics below
        return {"metrics": evaluate_scores(attack, scores, truth), "fpr": torch.from_numpy(fpr),
                "tpr": torch.from_numpy(tpr), "collapsed": constant if np.ptp(scores) == 0 else "",
                "scores": torch.from_numpy(scores.astype(np.float32))}, {}

    rows, roc, budget, per_sample = [], [], [], {}
    for name in attacks:
        start = time.perf_counter()
        result, _ = (compute(name) if cache_key is None
                     else ctx.store.get_or_build(cache_key(name), lambda: compute(name)))
        metrics = result["metrics"]
        collapsed = result.get("collapsed")
        if collapsed is None:  # a reference attack, or a result stored before the mark: read its ROC
            collapsed = constant if len(result["fpr"]) == 2 else ""
        if collapsed:
            warnings.warn(f"attack {name} collapsed ({collapsed}"
                          f"{'' if cache_key is None else ', unpruned target'}): its row is marked "
                          "attack_status='collapsed' and left out of the best attack", UserWarning, stacklevel=2)
        both = {"target_model": "both"} if name in PAIR_ATTACKS else {}  # else the caller's target model
        rows.append({"attack": name, **metrics, **result.get("params", {}),
                     "attack_status": "collapsed" if collapsed else "ok", "attack_note": collapsed,
                     "time_attack_s": time.perf_counter() - start, **both})
        roc += [{"attack": name, "fpr": f, "tpr": t, **both}
                for f, t in zip(result["fpr"].tolist(), result["tpr"].tolist())]
        budget += [{"attack": name, **line} for line in result.get("budget", [])]
        if "scores" in result:
            per_sample[name] = result["scores"].numpy()
        ctx.log(f"attack {name:12s} acc {metrics['attack_acc']:.3f}  auc {metrics['attack_auc']:.3f}"
                + (f"  ({result['params']['n_references']} models)" if "params" in result else "")
                + ("" if cache_key is None else " (unpruned target)") + (f"  COLLAPSED: {collapsed}" if collapsed else ""))
    return rows, roc, budget, per_sample


def _gaps(ctx: UnitContext, signals: Signals, accuracies: dict) -> dict[str, float]:
    n_members = len(ctx.split("target").train)
    members = signals.subset(torch.arange(n_members))
    nonmembers = signals.subset(torch.arange(n_members, len(signals)))
    return {"confidence_gap": confidence_gap(members, nonmembers),
            "sensitivity_gap": sensitivity_gap(members, nonmembers),
            "generalization_gap": generalization_gap(accuracies["train_acc"], accuracies["test_acc"])}


def _signal_table(ctx: UnitContext, signals: Signals, target_model: str) -> pd.DataFrame:
    """Per-sample true-class confidence and sensitivity of the target (for the paper's Fig. 1 and 4), its
    predicted class, and the sample's dataset index."""
    truth = membership(ctx, "target").astype(bool)
    s = ctx.split("target")
    return pd.DataFrame({"target_model": target_model, "sample": torch.cat([s.train, s.test]).numpy(),
                         "member": truth, "label": signals.labels.numpy(),
                         "predicted": signals.probs.argmax(dim=1).numpy(),
                         "confidence": signals.true_class(signals.probs).numpy(),
                         "sensitivity": signals.true_class(signals.sensitivity).numpy()})


def config_columns(config: UnitConfig) -> dict[str, Any]:
    """The configuration part of every result row: the cell's axes, the other settings that change
    its results (`UnitConfig.result_settings`: epochs, shadows, attack epochs, ...; analysis keeps
    cells that differ in them apart) and the defense's hyperparameters."""
    cols = {"unit_id": config.unit_id(), "dataset": config.dataset, "arch": config.arch,
            "method": config.method, "sparsity": config.sparsity, "seed": config.seed,
            "width": config.width, "shadow_method": config.resolved_shadow_method,
            "shadow_sparsity": config.resolved_shadow_sparsity, "defense": config.defense,
            "adaptive": config.adaptive, "split_ratio": format_split(config.split),
            "num_references": config.num_references, **config.result_settings()}
    for name in sorted({p for params in DEFENSE_PARAMS.values() for p in params}):
        cols[f"defense_{name}"] = config.resolved_defense_params.get(name, math.nan)
    return cols


def failed_rows(config: UnitConfig, error: str, **extra: Any) -> list[dict[str, Any]]:
    """What a unit that failed leaves in the results: one 'failed' row per attack, with the error."""
    return [{**config_columns(config), "target_model": "pruned", "attack": attack, "status": "failed",
             "error": error, **extra} for attack in config.attacks]


def make_context(config: UnitConfig, *, store: Store | None = None, data_root: str | None = None,
                 device: str | torch.device | None = None,
                 log: Callable[[str], None] | None = None) -> UnitContext:
    config.validate()
    device = pick_device(device)
    data = load_dataset(config.dataset, root=data_root)
    x = data.x.to(device)
    if device.type == "cuda" and data.is_image:
        x = x.contiguous(memory_format=torch.channels_last)
    splits = make_splits(len(data.y), seed=config.seed, num_shadows=config.num_shadows, split=config.split,
                         num_references=config.num_references)
    return UnitContext(config=config, data=data, x=x, y=data.y.to(device), splits=splits,
                       store=store or Store(), device=device, log=log or (lambda message: None))


@dataclass
class UnitResult:
    """What one unit produces: its rows, and the per-unit tables a sweep keeps beside them: the
    target's per-sample signals, the attacks' ROC points, the reference attacks' budget lines and
    each attack's per-sample membership scores (`sample`: the dataset index; each with `target_model`;
    empty for a failed unit)."""

    rows: list[dict[str, Any]]
    signals: pd.DataFrame
    roc: pd.DataFrame
    budget: pd.DataFrame
    scores: pd.DataFrame

    # Written by `write_artifacts` as <dir>/<name>/<unit_id>.parquet (a table without lines is not written).
    TABLES = ("signals", "roc", "budget", "scores")

    def write_artifacts(self, directory: str | Path, unit_id: str) -> None:
        root = os.fspath(directory).rstrip("/")  # a local folder or a URI such as s3://bucket/prefix
        for name in self.TABLES:
            table = getattr(self, name)
            if len(table):
                write_parquet(table.assign(unit_id=unit_id), f"{root}/{name}/{unit_id}.parquet")


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

    # The paper's attacks read the target's and the shadows' signals; the reference attacks their phi
    # (and the reference models'), each stored per model.
    signal_roles = ["target", *shadow_roles]
    signals = {role: model_signals(ctx, pruned[role][0], config.model_key(role), role) for role in signal_roles}
    original_signals = {role: model_signals(ctx, originals[role][0], config.original_key(role), role)
                        for role in signal_roles}
    phi = ReferencePhi.of(ctx, {role: model for role, (model, _) in pruned.items()}, attacks=config.attacks,
                          model_key=config.model_key)
    original_phi = ReferencePhi.of(ctx, {role: model for role, (model, _) in originals.items()},
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
                  "target_test_acc": meta["test_acc"], **_gaps(ctx, sigs["target"], meta), **row}
                 for row in metric_rows]
        rocs += [{"target_model": target_model, **point} for point in roc]
        budgets += [{"target_model": target_model, **line} for line in budget]
        tables.append(_signal_table(ctx, sigs["target"], target_model))
        truth = membership(ctx, "target").astype(bool)
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
    attack's row is its full budget (`n_references` models) and states its parameters.

    A unit whose training diverges (NaN loss, typical under large DP noise) returns rows with
    status 'failed' and the reason, instead of numbers. With `artifacts_dir`, the target's per-sample
    signals go to `signals/<unit_id>.parquet`, the attacks' ROC curves to `roc/<unit_id>.parquet` and
    the reference attacks' results at every budget (k = 1, 2, 4, ... models) to `budget/<unit_id>.parquet`.
    """
    result = unit_result(config, store=store, data_root=data_root, device=device, log=log)
    if artifacts_dir is not None:
        result.write_artifacts(artifacts_dir, config.unit_id())
    return result.rows


# ---- command line -----------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m miaray.unit", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--dataset", required=True, help=f"one of {', '.join(DATASETS)}")
    p.add_argument("--arch", required=True, help=f"one of {', '.join(ARCHS)}")
    p.add_argument("--method", default="l1_unstructured", help=f"one of {', '.join(METHODS)}")
    p.add_argument("--sparsity", type=float, default=0.7, help="fraction of weights pruned, in (0, 1)")
    p.add_argument("--seed", type=int, default=0, help="integer seed in [0, 2^32 - shadows)")
    p.add_argument("--width", type=float, default=None,
                   help="channel multiplier > 0 (default: 0.125 on the embedded image sets digits and mnist5k, so "
                        "the unit runs in minutes on a CPU; 1.0 otherwise, synthetic_tabular included)")
    p.add_argument("--shadows", type=int, default=5, help="number of shadow models, >= 1")
    p.add_argument("--split", default=format_split(PAPER_SPLIT), metavar="TRAIN/TEST/VAL",
                   help="percent of each half for members / non-members / early stopping, summing to 100 (paper Table 2)")
    p.add_argument("--shadow-method", default=None, help=f"one of {', '.join(METHODS)} (default: the target's method)")
    p.add_argument("--shadow-sparsity", type=float, default=None, help="in [0, 1) (default: the target's; 0 = unpruned shadows)")
    p.add_argument("--attacks", default="conf",
                   help=f"'all' (the paper's nine) or a comma list of {', '.join(ALL_ATTACKS)} (default: conf, the "
                        "cheapest; SAMIA's 100-epoch schedule costs minutes on a CPU). lira_offline and rmia_offline "
                        "read the shadows; lira and rmia need --references")
    p.add_argument("--original-attacks", default="same", metavar="same|conf|LIST",
                   help="attacks on the unpruned target, fitted on the unpruned shadows: 'same' as "
                        "--attacks (compared attack by attack; computed once per dataset, arch and seed, "
                        "then loaded from the cache), 'conf' (the paper's Conf (Org.) baseline, cheapest), "
                        "'all', or a comma list (default: same)")
    p.add_argument("--defense", default="basic", help=f"one of {', '.join(DEFENSES)}")
    p.add_argument("--defense-param", action="append", default=[], metavar="NAME=VALUE",
                   help="defense hyperparameter, repeatable: e.g. lambda=4 (ppb, >= 0), noise_multiplier=1 (dp, >= 0), "
                        "max_grad_norm=1 (dp, > 0), alpha=4 (adv, >= 0); unnamed ones keep their defaults")
    p.add_argument("--attack-epochs", type=int, default=None,
                   help="epochs of the trained attacks (nn, top3_nn, nncls, samia), >= 1 (default: their "
                        "reference schedules, SAMIA 100, MLPs 30)")
    p.add_argument("--adaptive", action="store_true", help="fine-tune the shadows with the same defense (the adaptive attacker)")
    p.add_argument("--no-finetune", dest="finetune", action="store_false",
                   help="prune without fine-tuning: every pruned model (target, shadows, references) is its original "
                        "with the masks applied, nothing trained after pruning (defense basic only)")
    p.add_argument("--references", type=int, default=0,
                   help="reference models of the online attacks lira (an even number >= 2) and rmia (>= 1): each "
                        "trains on a random half of the target's members and non-members and is pruned and "
                        "fine-tuned like the target; 0 = none")
    p.add_argument("--query-mirror", action="store_true",
                   help="LiRA's query augmentation: also query the mirrored image (lira, lira_offline)")
    p.add_argument("--query-shift", type=int, default=0, metavar="PIXELS",
                   help="LiRA's query augmentation: also query the image moved by up to PIXELS, in [0, 4], each way (0: off)")
    p.add_argument("--max-epochs", type=int, default=None,
                   help="epoch cap of the originals' training, >= 1; fine-tuning after pruning gets half of it "
                        "(at least 1) (default: 100 images / 50 tabular)")
    p.add_argument("--patience", type=int, default=5, help="early-stopping patience in epochs, >= 1")
    p.add_argument("--cache", default=None, help="artifact cache folder (default: $MIARAY_CACHE or "
                                                  "~/.cache/miaray/store)")
    p.add_argument("--data-root", default=None, help="dataset folder (default: $MIARAY_DATA, else ~/.cache/miaray/data)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--out", default=None, help="also write the rows to this .csv or .parquet file (default: print only)")
    p.add_argument("--artifacts", default=None, metavar="DIR",
                   help="write what a sweep cell writes into DIR: rows/<unit_id>.parquet (read by "
                        "miaray.results.load and analysis/), signals/ and roc/ (per-sample signals, ROC curves); default: none")
    return add_debug_option(p)


OUT_SUFFIXES = (".csv", ".parquet")


def check_out(path: str) -> None:
    """Reject an --out that could not be written after the unit ran: its suffix, its folder."""
    target = Path(path).expanduser()
    if target.suffix not in OUT_SUFFIXES:
        raise ConfigError(f"--out {path!r}: the file must end in {' or '.join(OUT_SUFFIXES)}")
    check_output_file(path, option="--out", create_folder=False)


def check_device(device: str) -> None:
    """Refuse a --device torch cannot use, before any work (a tiny allocation there tells)."""
    try:
        torch.empty(1, device=torch.device(device))
    except (RuntimeError, AssertionError) as error:  # AssertionError: a torch built without that device
        raise ConfigError(f"--device {device!r}: torch {torch.__version__} cannot use it "
                          f"({' '.join(str(error).split())[:160]}); give cpu, or cuda on a machine with a "
                          "CUDA build of torch and a GPU (default: cuda when available)") from None


def config_from_args(args: argparse.Namespace) -> UnitConfig:
    width = args.width if args.width is not None else default_width(args.dataset)
    attacks = parse_attacks(args.attacks, option="--attacks")
    original_attacks = parse_original_attacks(args.original_attacks, option="--original-attacks")
    return UnitConfig(dataset=args.dataset, arch=args.arch, method=args.method, sparsity=args.sparsity,
                      seed=args.seed, width=width, num_shadows=args.shadows, num_references=args.references,
                      query_mirror=args.query_mirror, query_shift=args.query_shift, shadow_method=args.shadow_method,
                      shadow_sparsity=args.shadow_sparsity, attacks=attacks, original_attacks=original_attacks,
                      attack_epochs=args.attack_epochs, defense=args.defense,
                      defense_params=parse_name_values(args.defense_param, option="--defense-param"), adaptive=args.adaptive,
                      finetune=args.finetune, split=parse_split(args.split, option="--split"),
                      train=TrainConfig(max_epochs=args.max_epochs, patience=args.patience)).validate()


# The columns `format_rows` shows per attack, pruned next to original (the counts are in the header).
SHOWN_METRICS = tuple(m for m in METRICS if not m.startswith("n_"))


def format_rows(rows: list[dict[str, Any]], *, budget: pd.DataFrame | None = None) -> str:
    """For people: each target's accuracy and gaps, then per attack every metric on the pruned target
    next to the same attack on the unpruned one ('-' where it did not run there, 'nan' where the set
    cannot measure it); then, given the `budget` lines, the reference attacks per number of models."""
    df = pd.DataFrame(rows)
    if (df["status"] != "ok").any():
        return f"FAILED: {df['error'].iloc[0]}"
    first = df.iloc[0]
    lines = []
    for target_model, title in (("original", "original target"), ("pruned", "pruned target")):
        model = df[df["target_model"] == target_model].iloc[0]
        extra = ""
        if target_model == "pruned":
            extra = f"  achieved sparsity {model['achieved_sparsity']:.3f}" + (
                f", epsilon {model['epsilon']:.3g}" if math.isfinite(model["epsilon"]) else "")
        lines.append(f"{title + ':':17s}train acc {model['target_train_acc']:.4f}  test acc "
                     f"{model['target_test_acc']:.4f}  gaps: " + "  ".join(
                         f"{gap.removesuffix('_gap')} {model[gap]:.4f}" for gap in GAPS) + extra)
    lines.append(f"attacks fitted on the shadows, scored on {int(first['n_members'])} members and "
                 f"{int(first['n_nonmembers'])} non-members of the target; advantage = tpr - fpr at the attack's "
                 "own decision, max_advantage = best threshold chosen with the target's labels (an oracle bound)")
    lines.append("")
    order = [a for a in ALL_ATTACKS if a in set(df["attack"])]
    models = [m for m in ("pruned", "original", "both") if m in set(df["target_model"])]
    table = (df.set_index(["attack", "target_model"])[list(SHOWN_METRICS)].unstack("target_model")
             .reindex(index=order, columns=pd.MultiIndex.from_product([SHOWN_METRICS, models])))
    ran = df.assign(ran=True).pivot(index="attack", columns="target_model", values="ran").reindex(
        index=order, columns=models).fillna(False).astype(bool)
    # NaN that ran is a metric the set cannot measure (TPR at an FPR below 1 / n_nonmembers): "nan".
    text = table.map(lambda v: "nan" if pd.isna(v) else f"{v:.4f}")
    for metric in SHOWN_METRICS:
        for model in models:
            text.loc[~ran[model], (metric, model)] = "-"
    text.columns = pd.MultiIndex.from_tuples([(metric, "org." if model == "original" else model)
                                              for metric, model in text.columns])
    lines.append(text.to_string())
    if budget is not None and len(budget):
        lines += ["", "reference attacks by number of models (shadows offline, reference models online; "
                  "the last line of each attack is its row above):", format_budget(budget)]
    return "\n".join(lines)


BUDGET_METRICS = ("attack_auc", "tpr_at_fpr_0.01", "tpr_at_fpr_0.001")


def format_budget(budget: pd.DataFrame) -> str:
    """The budget lines for people: per reference attack and number of models, AUC and TPR at low FPR
    on the pruned target next to the unpruned one."""
    models = [m for m in ("pruned", "original") if m in set(budget["target_model"])]
    table = budget.set_index(["attack", "n_references", "target_model"])[list(BUDGET_METRICS)].unstack("target_model")
    order = [(a, k) for a in ALL_ATTACKS for k in sorted(set(budget.loc[budget["attack"] == a, "n_references"]))]
    table = table.reindex(index=order, columns=pd.MultiIndex.from_product([BUDGET_METRICS, models]))
    table.columns = pd.MultiIndex.from_tuples([(metric, "org." if model == "original" else model)
                                              for metric, model in table.columns])
    return table.to_string(float_format=lambda v: f"{v:.4f}", na_rep="nan")


@entry_point(prog="python -m miaray.unit", resume="the models built so far are cached")
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
        if args.out:
            check_out(args.out)
        if args.device:
            check_device(args.device)
        for option, folder in (("--cache", args.cache), ("--artifacts", args.artifacts)):
            if folder:
                check_writable_folder(folder, option=option)
    except ConfigError as error:  # exits 2 before any training, naming the option and the choices
        parser.error(str(with_options(error, UNIT_OPTIONS)))
    start = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - start:7.1f}s] {message}", file=sys.stderr, flush=True)

    store = Store(args.cache)
    result = unit_result(config, store=store, data_root=args.data_root, device=args.device, log=log)
    rows = result.rows
    print(format_rows(rows, budget=result.budget))
    print(f"\nfinished in {time.perf_counter() - start:.1f}s", file=sys.stderr)
    if args.artifacts:
        result.write_artifacts(args.artifacts, config.unit_id())
        print(f"rows: {write_unit_rows(experiment=args.artifacts, unit_id=config.unit_id(), rows=rows)}",
              file=sys.stderr)
    if args.out:
        df = pd.DataFrame(rows)
        out = Path(args.out).expanduser()
        df.to_parquet(out, index=False) if out.suffix == ".parquet" else df.to_csv(out, index=False)
    return 0 if all(row["status"] == "ok" for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
