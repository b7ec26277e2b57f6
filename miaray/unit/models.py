"""The models of a unit, each role the same way: the original trained once, then pruned and
fine-tuned (or only pruned), each cached in the store under the key of exactly what determines it."""

from __future__ import annotations

import copy

import torch

from miaray.defenses import make_defense
from miaray.prune import prune, sparsity_report
from miaray.roles import finetune_seed, role_seed
from miaray.train import evaluate, fit
from miaray.unit.context import UnitContext


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
        torch.manual_seed(role_seed(cfg.seed, role))
        model = ctx.new_model()
        result = fit(model, ctx.tensors(role), epochs=epochs, lr=cfg.train.lr,
                     weight_decay=cfg.train.weight_decay, batch_size=cfg.train.batch_size,
                     patience=cfg.train.patience, monitor=cfg.train.monitor, seed=role_seed(cfg.seed, role),
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
        seed = finetune_seed(cfg.seed, role)
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
        # ADV's non-members: the model's own validation split (held out from training).
        defense = make_defense(key["defense"], key["defense_params"], num_classes=ctx.data.num_classes,
                               nonmembers=(data.x_val, data.y_val), seed=role_seed(cfg.seed, role))
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
