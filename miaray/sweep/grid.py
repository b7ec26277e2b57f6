"""Grids of units: the axes of a sweep (`GridSpec`), the unknown-pruning studies and the presets."""

from __future__ import annotations

import dataclasses
import itertools
import random
from dataclasses import dataclass
from typing import Any, Sequence

from miaray.config import ConfigError, TrainConfig, UnitConfig, stable_hash
from miaray.vocabulary import (ARCHS, ATTACKS, BASIC, IMAGE_ARCHS, IMAGE_DATASETS, METHODS, PAIR_ATTACKS, PAPER_SPLIT,
                               RATIO_ATTACKS, STRUCTURED_METHODS, TABLE2_SPLITS, DefenseSetting, defense_label,
                               format_split)

PAPER_SPARSITIES = (0.5, 0.6, 0.7, 0.8, 0.9)
PAPER_DATASETS = ("cifar10", "cifar100", "svhn", "chmnist", "purchase", "texas", "location")


@dataclass(frozen=True)
class GridSpec:
    """The axes of a sweep. `cells()` expands them into the valid unit configurations: tabular data
    takes the fc net and l1_unstructured only, images the three CNNs and every method. `widths` (the
    channel multipliers) is an axis like `seeds`: each width trains its own originals."""

    datasets: tuple[str, ...]
    archs: tuple[str, ...]
    methods: tuple[str, ...]
    sparsities: tuple[float, ...]
    seeds: tuple[int, ...] = (0,)
    splits: tuple[tuple[int, int, int], ...] = (PAPER_SPLIT,)  # train/test/validation % of each half
    widths: tuple[float, ...] = (1.0,)
    attacks: tuple[str, ...] = ATTACKS
    # Attacks on the unpruned target (UnitConfig.original_attacks): None, the same as `attacks`.
    original_attacks: tuple[str, ...] | None = None
    num_shadows: int = 5
    references: tuple[int, ...] = (0,)  # reference models per cell (online LiRA / RMIA); an axis
    # Defense settings (an axis): each fine-tunes the pruned target its own way; the originals, the pruning
    # and (non-adaptive) the shadows are the undefended cell's, shared through the store.
    defenses: tuple[DefenseSetting, ...] = (BASIC,)
    # Shadows fine-tuned without the defense (False) and/or with it (True, the adaptive attacker); an axis
    # for the defended settings. Basic is the same either way: its cells run once, non-adaptive.
    adaptive: tuple[bool, ...] = (False,)
    # Pruned models fine-tuned (True) and/or not (False: the masks applied, nothing trained); an axis. The
    # cells without fine-tuning are Basic's (a defense acts while fine-tuning), once per grid point.
    finetune: tuple[bool, ...] = (True,)
    max_epochs: int | None = None
    attack_epochs: int | None = None  # None: each trained attack's own schedule
    slimming_l1: float = 0.0  # network slimming's L1 on batch-norm scales while training originals (0: off)

    def unit(self, **fields: Any) -> UnitConfig:
        """A unit of this grid with the given cell fields (dataset, arch, method, sparsity, seed, ...).
        Without a `split`, `width`, `num_references` or `finetune` field, or without `defense` (then with its
        hyperparameters and `adaptive`), it takes the grid's value of that axis, which must then be the only
        one: a study that does not expand that axis must not drop some of its values unnoticed."""
        defense_cells = self.defense_cells()
        for name, axis, values, text, what in (
                ("split", "splits", self.splits, format_split, "split ratio"),
                ("width", "widths", self.widths, "{:g}".format, "width"),
                ("num_references", "references", self.references, str, "number of reference models"),
                ("finetune", "finetune", self.finetune, lambda v: "yes" if v else "no", "fine-tuning setting"),
                ("defense", "defenses", defense_cells, lambda c: defense_label(c[0], c[1]) + " adaptive" * c[2],
                 "defense setting")):
            if name not in fields:
                if len(values) != 1:
                    raise ConfigError(f"{axis}={','.join(map(text, values))}: this study runs one {what}; only "
                                      f"the known-pruning grid (full_grid.py) expands several")
                fields.update(zip(("defense", "defense_params", "adaptive"), values[0]) if name == "defense"
                              else {name: values[0]})
        return UnitConfig(attacks=self.attacks, original_attacks=self.original_attacks, num_shadows=self.num_shadows,
                          attack_epochs=self.attack_epochs, train=TrainConfig(max_epochs=self.max_epochs, slimming_l1=self.slimming_l1),
                          **fields)

    def defense_cells(self) -> list[tuple[str, tuple[tuple[str, float], ...], bool]]:
        """(defense, hyperparameters, adaptive) of every cell of a grid point: each setting with each
        kind of shadows, Basic once (its shadows are undefended either way)."""
        return [(defense, params, adaptive) for defense, params in self.defenses
                for adaptive in ((False,) if defense == "basic" else self.adaptive)]

    def finetune_cells(self) -> list[tuple[bool, tuple[str, tuple[tuple[str, float], ...], bool]]]:
        """(finetune, defense cell) of every cell of a grid point: every defense cell fine-tuned, and
        Basic's once more without fine-tuning."""
        return [(finetune, cell) for finetune in self.finetune for cell in self.defense_cells()
                if finetune or cell[0] == "basic"]

    def pairs(self) -> list[tuple[str, str]]:
        """The (dataset, arch) pairs of the grid that form a valid model."""
        return [(d, a) for d in self.datasets for a in self.archs if (a == "fc") == (d not in IMAGE_DATASETS)]

    def methods_for(self, dataset: str) -> tuple[str, ...]:
        if dataset not in IMAGE_DATASETS:
            return tuple(m for m in self.methods if m not in STRUCTURED_METHODS)
        return self.methods

    def cells(self) -> list[UnitConfig]:
        """The known-pruning grid: every pair x width x method x sparsity x seed x split x number of
        reference models x defense setting (x adaptive or not, for the defended ones)."""
        return [self.unit(dataset=d, arch=a, width=w, method=m, sparsity=s, seed=seed, split=split, num_references=n,
                          defense=defense, defense_params=params, adaptive=adaptive, finetune=finetune)
                for d, a in self.pairs() for w in self.widths for m in self.methods_for(d) for s in self.sparsities
                for seed in self.seeds for split in self.splits for n in self.references
                for finetune, (defense, params, adaptive) in self.finetune_cells()]

    def validate(self) -> "GridSpec":
        """Reject a bad axis value (naming field and choices) or an empty grid, before Ray starts."""
        if False in self.finetune and "basic" not in {defense for defense, _ in self.defenses}:
            raise ConfigError("finetune=no runs Basic's cells without fine-tuning (a defense acts while fine-tuning), "
                              f"but defenses={','.join(dict.fromkeys(d for d, _ in self.defenses))} leaves Basic "
                              "out: add basic")
        cells = self.cells()
        if not cells:
            raise ConfigError(f"the grid is empty: datasets {', '.join(self.datasets)} x archs "
                              f"{', '.join(self.archs)} x methods {', '.join(self.methods)} has no valid "
                              f"cell (tabular data takes arch 'fc' and 'l1_unstructured'; images take "
                              f"{', '.join(IMAGE_ARCHS)})")
        for cell in cells:
            cell.validate()
        return self


def check_axis(name: str, values: Sequence[str], choices: Sequence[str]) -> None:
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


PRESETS: dict[str, GridSpec] = {
    # docs/science.md, Splits and sizes: 255 pruned target models, reference hyperparameters, all nine attacks.
    "paper": GridSpec(datasets=PAPER_DATASETS, archs=ARCHS, methods=METHODS, sparsities=PAPER_SPARSITIES),
    # The README's main job: real (embedded) data, a narrow net, every method and attack, minutes on a
    # CPU. The trained attacks run a fifth of SAMIA's 100-epoch schedule (same milestones, scaled):
    # at the full schedule SAMIA alone costs several CPU-minutes per cell.
    "quick": GridSpec(datasets=("digits",), archs=("resnet18",), methods=METHODS, sparsities=(0.5, 0.9),
                      widths=(0.125,), attack_epochs=20),
    # Beyond the paper (issue 14): LiRA and RMIA, offline on the shadows and online with 8 reference models
    # pruned and fine-tuned like their target, against the threshold attacks and SAMIA, on mnist5k (1,125
    # non-members: TPR at 1% and 0.1% FPR measurable). Sized for at most 60 minutes on a 2-core CPU (11
    # originals per seed at about a minute each on one thread, at 8 epochs; 4 of fine-tuning): two shadows
    # (the offline attacks' OUT models, LiRA's global variance) and the threshold attacks and SAMIA beside.
    "lira": GridSpec(datasets=("mnist5k",), archs=("resnet18",), methods=("l1_unstructured",), sparsities=(0.5, 0.9),
                     seeds=(0, 1, 2), widths=(0.125,),
                     attacks=("conf", "xent", "mentr", "top1_conf", "samia", *RATIO_ATTACKS),
                     num_shadows=2, references=(8,), max_epochs=8, attack_epochs=20),
    # The paper's claims with intervals (analysis/claims.py), on embedded data in at most 60 minutes on a
    # 2-core CPU: two pruning methods at two sparsities, 5 seeds, all nine attacks (the trained ones at a
    # fifth of their schedules), on the pruned and the original target alike, at the two regimes of the
    # paper's datasets: width 0.125 overfits (train 1.0, test about 0.8), width 0.5 generalises (test about
    # 0.9). Two shadows and at most 30 epochs (15 of fine-tuning) keep it in time; both regimes are pinned
    # by tests/test_presets.py.
    "claims": GridSpec(datasets=("digits",), archs=("resnet18",), methods=("l1_unstructured", "l1_structured"),
                       sparsities=(0.5, 0.9), seeds=(0, 1, 2, 3, 4), widths=(0.125, 0.5), num_shadows=2,
                       max_epochs=30, attack_epochs=20),
    # The paper's defense half with intervals (C5-C8 in analysis/claims.py), on embedded data in at most 60
    # minutes on a 2-core CPU: the claims preset's cell where pruning raises leakage (width 0.5, L1
    # unstructured at 0.9, sharing that preset's originals and Basic models through the store), Basic and
    # the paper's grid values of each defense (PPB lambda 1, 4, 16; DP noise 0.01, 0.1: at 1 the pruned net
    # stays at chance, docs/science.md; ADV alpha 1, 4), each
    # with undefended and adaptive shadows, 3 seeds, the nine attacks plus the offline LiRA and RMIA (TPR at
    # low FPR, which a shadow-calibrated threshold cannot hide). The Basic original's floor is pinned by
    # tests/test_presets.py.
    "defenses": GridSpec(datasets=("digits",), archs=("resnet18",), methods=("l1_unstructured",), sparsities=(0.9,),
                         seeds=(0, 1, 2), widths=(0.5,), attacks=(*ATTACKS, "lira_offline", "rmia_offline"),
                         num_shadows=2, max_epochs=30, attack_epochs=20, adaptive=(False, True),
                         defenses=(BASIC, *[("ppb", (("lambda", v),)) for v in (1.0, 4.0, 16.0)],
                                   *[("dp", (("noise_multiplier", v),)) for v in (0.01, 0.1)],
                                   *[("adv", (("alpha", v),)) for v in (1.0, 4.0)])),
    # Beyond the paper (analysis/claims_beyond.py, analysis/exposure.py): the claims preset's width-0.5 cells
    # (its originals and fine-tuned models, shared through the store), each also pruned without fine-tuning
    # (C10), attacked by the two-model attacks beside the strongest single-model ones (C9), the offline LiRA
    # giving each sample's membership score on the original and the pruned target (per-sample exposure).
    # Sized for at most 60 minutes on a 2-core CPU: 4 of the paper's attacks (SAMIA and NN trained at a fifth
    # of their schedules) and the offline LiRA and RMIA, 5 seeds, 2 shadows, at most 30 epochs.
    "beyond": GridSpec(datasets=("digits",), archs=("resnet18",), methods=("l1_unstructured", "l1_structured"),
                       sparsities=(0.5, 0.9), seeds=(0, 1, 2, 3, 4), widths=(0.5,), num_shadows=2, max_epochs=30,
                       attack_epochs=20, finetune=(True, False),
                       attacks=("conf", "mentr", "nn", "samia", "lira_offline", "rmia_offline", *PAIR_ATTACKS)),
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
                      widths=(0.125,), attacks=("conf", "mentr", "nn", "samia"), attack_epochs=20),
    # C6 with intervals beside the grid's defenses preset, on its models (width 0.5, 2 shadows, 30 epochs:
    # the same store keys): the sparsity matrix of L1 unstructured at 0.5 and 0.9 with unpruned shadows, 3 seeds.
    "defenses": GridSpec(datasets=("digits",), archs=("resnet18",), methods=("l1_unstructured",), sparsities=(0.5, 0.9),
                         seeds=(0, 1, 2), widths=(0.5,), attacks=("conf", "mentr", "nn", "samia"), num_shadows=2,
                         max_epochs=30, attack_epochs=20),
}
