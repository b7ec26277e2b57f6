"""The unit's questions beyond the paper at a tiny size: two-model attacks in a real unit (their data kept
apart from the target's membership), and pruning without fine-tuning (the masked original, nothing
trained; the fine-tuned arm as it was)."""

import copy
import dataclasses
import re
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from miaray.config import ConfigError, TrainConfig, UnitConfig, stable_hash
from miaray.unit.pairs import UnitPairs
from miaray.prune import prune
from miaray.store import Store
from miaray.sweep.cli import build_parser, spec_from_args
from miaray.sweep.grid import PRESETS
from miaray.unit import make_context, original_model, pruned_model, run_unit

TINY = TrainConfig(max_epochs=3, patience=2)
CONFIG = UnitConfig(dataset="digits", arch="resnet18", method="l1_structured", sparsity=0.7, width=0.125,
                    num_shadows=2, attacks=("conf", "pair_diff", "pair_lr"), train=TINY)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return Store(tmp_path_factory.mktemp("store"))


def test_two_model_attacks_run_in_a_unit_on_both_models_and_fit_on_the_shadows_only(store):
    df = pd.DataFrame(run_unit(CONFIG, store=store))
    assert (df["status"] == "ok").all()
    both = df[df["target_model"] == "both"]
    assert sorted(both["attack"]) == ["pair_diff", "pair_lr"]
    assert set(df.loc[df["target_model"] == "original", "attack"]) == {"conf"}  # never the original alone
    assert both["attack_auc"].between(0, 1).all() and (both["n_members"] == 403).all()
    # What the fit reads are the shadows' own samples, disjoint from every sample the target is scored on,
    # and their membership is the shadows' train split; the target's pair is in the order of its truth.
    ctx = make_context(CONFIG, store=store)
    originals = {role: original_model(ctx, role)[0] for role in CONFIG.roles()}
    pruned = {role: pruned_model(ctx, role)[0] for role in CONFIG.roles()}
    pairs = UnitPairs.of(ctx, originals, pruned)
    pool = set(ctx.splits.target_pool().tolist())
    shadow_samples = [torch.cat([ctx.split(r).train, ctx.split(r).test]).tolist() for r in CONFIG.shadow_roles()]
    assert not pool & {i for samples in shadow_samples for i in samples}
    assert len(pairs.shadows) == sum(map(len, shadow_samples)) == len(pairs.shadow_membership)
    assert pairs.shadow_membership.sum() == sum(len(ctx.split(r).train) for r in CONFIG.shadow_roles())
    assert len(pairs.target) == len(pool)
    # The stored phi are read, not recomputed: the same numbers as the unit's attack.
    scores = pairs.fitted("pair_diff").predict_proba(pairs.target)
    truth = np.r_[np.ones(403), np.zeros(405)]
    assert roc_auc_score(truth, scores) == pytest.approx(both.set_index("attack").at["pair_diff", "attack_auc"])


def test_without_fine_tuning_a_pruned_model_is_its_original_with_the_masks_applied(store):
    config = dataclasses.replace(CONFIG, finetune=False, attacks=("conf",))
    ctx = make_context(config, store=store)
    original, _ = original_model(ctx, "target")
    model, meta = pruned_model(ctx, "target", (original, {}))
    expected = copy.deepcopy(original)
    prune(expected, method=config.method, sparsity=config.sparsity)  # the same masks, zeroed in place
    for (name, got), (_, want) in zip(model.state_dict().items(), expected.state_dict().items()):
        assert torch.equal(got, want), name  # weights and batch-norm statistics alike: nothing trained
    assert meta["epochs_run"] == 0 and meta["achieved_sparsity"] == pytest.approx(0.7, abs=0.02)
    # The shadows are built the same way, and the fine-tuned arm keeps the models and ids it had.
    assert config.pruned_key("shadow0")["finetune"] is False
    assert "finetune" not in CONFIG.pruned_key("target") and "finetune" not in CONFIG.pruned_key("shadow1")
    assert CONFIG.unit_id() == dataclasses.replace(config, finetune=True, attacks=CONFIG.attacks).unit_id()
    assert config.unit_id() != dataclasses.replace(config, finetune=True).unit_id()
    tuned, _ = pruned_model(make_context(CONFIG, store=store), "target")
    assert any(not torch.equal(a, b) for a, b in zip(tuned.state_dict().values(), model.state_dict().values()))


def test_a_defense_without_fine_tuning_is_refused():
    with pytest.raises(ConfigError, match="without fine-tuning"):
        dataclasses.replace(CONFIG, finetune=False, defense="ppb").validate()
    with pytest.raises(ConfigError, match="query both the original and the pruned model"):
        dataclasses.replace(CONFIG, original_attacks=("pair_lr",)).validate()


def test_finetune_is_a_grid_axis_of_basic_cells():
    parser = build_parser(prog="full_grid.py", description="", presets=PRESETS)
    spec = spec_from_args(parser.parse_args(["--preset", "defenses", "--finetune", "yes,no", "--seeds", "0"]), PRESETS)
    cells = spec.cells()
    untuned = [c for c in cells if not c.finetune]
    assert len(untuned) == 1 and untuned[0].defense == "basic" and not untuned[0].adaptive
    assert len(cells) == 1 + len([c for c in cells if c.finetune])
    for argv, says in ((["--finetune", "no", "--defenses", "ppb"], "finetune=no runs Basic's cells"),
                       (["--finetune", "maybe"], "--finetune='maybe' is not valid; choose from: yes, no")):
        with pytest.raises(ConfigError, match=re.escape(says)):
            spec_from_args(parser.parse_args(["--preset", "quick", *argv]), PRESETS)


def test_a_unit_reads_each_models_phi_from_the_store_once(tmp_path):
    """The likelihood-ratio and the two-model attacks read the same stored phi: loaded once per unit."""
    reads = Counter()

    class CountingStore(Store):
        def get_or_build(self, key, build, **kwargs):
            reads[stable_hash(key)] += key["kind"] == "phi"
            return super().get_or_build(key, build, **kwargs)

    config = UnitConfig(dataset="synthetic_tabular", arch="fc", num_shadows=2, train=TrainConfig(max_epochs=2),
                        attacks=("conf", "lira_offline", "pair_diff")).validate()
    store = CountingStore(tmp_path)
    run_unit(config, store=store)  # builds
    phi_entries = {stable_hash(config.phi_key(key(role))) for key in (config.model_key, config.original_key)
                   for role in ("target", *config.shadow_roles())}
    assert {h for h, n in reads.items() if n} == phi_entries and set(reads[h] for h in phi_entries) == {1}
    reads.clear()
    run_unit(config, store=store)  # loads
    assert set(reads[h] for h in phi_entries) == {1}
