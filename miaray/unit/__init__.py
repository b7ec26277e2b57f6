"""One unit of work: train (or load) originals -> prune -> fine-tune -> query -> attack -> rows.

`run_unit(config)` composes the science for one grid cell. The target, the shadows and the reference
models (online LiRA / RMIA) go through the same functions with a different `role`; every model, mask,
signal set and phi is cached in the `Store` under a key of exactly the configuration that determines
it, so the cells of one (dataset, arch, seed) share their originals and a pruned shadow set serves every
target that uses it. The attacks on the unpruned target are stored the same way (`original_attack_key`):
computed by the first cell of a (dataset, arch, seed), loaded by the others.

The modules, in the order a unit runs through them:

- `context`: the configuration, the data on its device, the splits, the store (`make_context`);
- `keys`: the store keys a unit adds to its models' own (the attacks on the unpruned target);
- `models`: the original and the pruned (fine-tuned, or only pruned) model of a role;
- `queries`: what attacks read from a model, stored once: signals and phi;
- `scoring`: what a unit keeps of any attack's scores (metrics, ROC, per-sample scores, collapse);
- `ratio`: the likelihood-ratio attacks (LiRA, RMIA) of a unit, at every number of models;
- `pairs`: the two-model attacks' input, the (original, pruned) pairs;
- `attacks`: every attack on one target, fitted on the attacker's own models only;
- `rows`: the row schema, the failed rows, the per-unit tables (`UnitResult`);
- `run`: the spine (`unit_result`, `run_unit`);
- `cli`: `python -m miaray.unit --dataset digits --arch resnet18 --method l1_unstructured --sparsity 0.7`.
"""

from miaray.unit.attacks import attack_rows
from miaray.unit.cli import build_parser, check_out, main
from miaray.unit.context import UnitContext, make_context, membership, pick_device
from miaray.unit.keys import original_attack_key
from miaray.unit.models import original_model, pruned_model
from miaray.unit.queries import model_signals, stored_phi
from miaray.unit.rows import UnitResult, config_columns, failed_rows
from miaray.unit.run import run_unit, unit_result

__all__ = ["UnitContext", "UnitResult", "attack_rows", "build_parser", "check_out", "config_columns",
           "failed_rows", "main", "make_context", "membership", "model_signals", "original_attack_key",
           "original_model", "pick_device", "pruned_model", "run_unit", "stored_phi", "unit_result"]
