"""--slimming-l1 reaches TrainConfig.slimming_l1 from the unit and the sweeps, and a slimming run with it
set trains originals whose batch-norm scales are smaller (Liu et al.'s sparsity phase)."""

import torch

from miaray.config import TrainConfig, UnitConfig
from miaray.store import Store
from miaray.sweep.cli import build_parser, spec_from_args
from miaray.sweep.grid import PRESETS
from miaray.unit import make_context, original_model
from miaray.unit.cli import build_parser as build_unit_parser, config_from_args


def _mean_abs_gamma(model: torch.nn.Module) -> float:
    gammas = [m.weight.detach().abs() for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    return float(torch.cat(gammas).mean())


def test_the_option_reaches_the_training_of_unit_and_sweep_cells():
    unit = config_from_args(build_unit_parser().parse_args(
        ["--dataset", "digits", "--arch", "resnet18", "--method", "slimming", "--slimming-l1", "1e-4"]))
    assert unit.train.slimming_l1 == 1e-4
    parser = build_parser(prog="full_grid.py", description="", presets=PRESETS)
    spec = spec_from_args(parser.parse_args(["--preset", "quick", "--slimming-l1", "1e-4"]), PRESETS)
    assert {cell.train.slimming_l1 for cell in spec.cells()} == {1e-4}
    assert spec_from_args(parser.parse_args(["--preset", "quick"]), PRESETS).cells()[0].train.slimming_l1 == 0.0


def test_slimming_l1_shrinks_the_batch_norm_scales(tmp_path):
    store = Store(tmp_path / "store")
    scales = {}
    for l1 in (0.0, 0.5):  # strong: Adam moves a weight by about lr (1e-3) a step whatever the gradient's size
        config = UnitConfig(dataset="digits", arch="resnet18", method="slimming", sparsity=0.5, width=0.125,
                            num_shadows=1, attacks=("conf",),
                            train=TrainConfig(max_epochs=12, patience=12, slimming_l1=l1))
        model, _ = original_model(make_context(config, store=store), "target")
        scales[l1] = _mean_abs_gamma(model)
    # 12 epochs of about 6 steps: the penalty pulls the scales down by several hundredths; without it they
    # stay near their initial 1.
    assert scales[0.5] < scales[0.0] - 0.03, scales
