"""The four pruning methods: hand-checked selections, achieved sparsity counted as docs/science.md (Pruning) defines it,
masks that hold through Adam steps, and structured removals that leave nothing behind."""

import copy

import pytest
import torch
from opacus import GradSampleModule
from opacus.validators import ModuleValidator
from torch import nn

from miaray.models import build_model
from miaray.prune import apply_masks, bn_l1_penalty, prune, sparsity_report
from miaray.vocabulary import METHODS, STRUCTURED_METHODS

IMAGE_ARCHS = ("resnet18", "vgg16", "densenet121")
SMALL = 0.125
SHAPE = (1, 8, 8)


def _as_if_trained(model: nn.Module, seed: int = 0) -> nn.Module:
    """Distinct BN scales, shifts and running statistics, as training would leave them."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.weight.copy_(torch.rand(n, generator=generator) * 2 - 1)
                module.bias.copy_(torch.randn(n, generator=generator))
                module.running_mean.copy_(torch.randn(n, generator=generator))
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
    return model


def _small(arch: str) -> nn.Module:
    torch.manual_seed(0)
    return _as_if_trained(build_model(arch, num_classes=10, input_shape=SHAPE, width=SMALL))


@pytest.fixture(scope="module")
def full_width():
    """Width-1 CIFAR models, built once; each test prunes a copy."""
    torch.manual_seed(0)
    return {arch: _as_if_trained(build_model(arch, num_classes=10, input_shape=(3, 32, 32)))
            for arch in IMAGE_ARCHS}


# ---- hand-computed cases -------------------------------------------------------------------------

def test_l1_unstructured_removes_smallest_magnitudes_per_layer():
    model = nn.Sequential(nn.Linear(3, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.1, -0.5, 0.3], [-0.05, 0.2, -0.9]]))
    masks = prune(model, method="l1_unstructured", sparsity=0.5)
    assert torch.equal(masks["0.weight"], torch.tensor([[0.0, 1, 1], [0, 0, 1]]))
    assert torch.equal(model[0].weight, torch.tensor([[0.0, -0.5, 0.3], [0, 0, -0.9]]))


def test_unstructured_sparsity_pools_all_conv_and_linear_weights():
    """Conv: round(0.3 * 4) = 1 of 4 removed; linear: round(0.3 * 10) = 3 of 10: 4 / 14 overall."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 1, 2, bias=False), nn.Flatten(), nn.Linear(1, 10, bias=False))
    masks = prune(model, method="l1_unstructured", sparsity=0.3)
    report = sparsity_report(model, masks, method="l1_unstructured")
    assert report["layers"] == {"0.weight": 0.25, "2.weight": 0.3}
    assert report["sparsity"] == pytest.approx(4 / 14)
    assert report["mask_violations"] == 0 and "bn_channel_fraction" not in report


@pytest.mark.parametrize("method, removed", [("l1_structured", 1), ("l2_structured", 0)])
def test_l1_and_l2_structured_rank_filters_by_their_norm(method, removed):
    """Filter 0: 27 ones (L1 27, L2 5.2); filter 1: a single 10 (L1 10, L2 10)."""
    model = build_model("vgg16", num_classes=10, input_shape=(3, 32, 32), width=2 / 64)
    with torch.no_grad():
        model.convs[0].weight.zero_()
        model.convs[0].weight[0] = 1.0
        model.convs[0].weight[1, 0, 0, 0] = 10.0
    masks = prune(model, method=method, sparsity=0.5)
    assert masks["convs.0.weight"][removed].sum() == 0 and masks["convs.0.weight"][1 - removed].all()
    expected = [float(removed != i) for i in (0, 1)]
    assert masks["bns.0.weight"].tolist() == masks["bns.0.bias"].tolist() == expected
    assert torch.count_nonzero(model.bns[0].weight[removed]) == 0


def test_bn_l1_penalty_sums_absolute_scales():
    model = build_model("vgg16", num_classes=10, input_shape=SHAPE, width=SMALL)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.fill_(-0.5)
    entries = sum(m.num_features for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    penalty = bn_l1_penalty(model)
    assert penalty.item() == pytest.approx(0.5 * entries)
    penalty.backward()
    assert torch.equal(model.bns[0].weight.grad, -torch.ones(model.bns[0].num_features))


# ---- achieved sparsity ---------------------------------------------------------------------------

@pytest.mark.parametrize("arch", IMAGE_ARCHS)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("sparsity", [0.5, 0.9])
def test_requested_sparsity_reached_at_width_one(full_width, arch, method, sparsity):
    model = copy.deepcopy(full_width[arch])
    masks = prune(model, method=method, sparsity=sparsity)
    report = sparsity_report(model, masks, method=method)
    assert abs(report["sparsity"] - sparsity) <= 0.01
    assert report["mask_violations"] == 0
    counted = (nn.Conv2d,) if method in STRUCTURED_METHODS else (nn.Conv2d, nn.Linear)
    counted_names = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, counted)}
    assert set(report["layers"]) == counted_names
    if method == "slimming":
        assert report["sparsity"] >= sparsity and 0.0 < report["bn_channel_fraction"] < 1.0


@pytest.mark.parametrize("arch", IMAGE_ARCHS)
@pytest.mark.parametrize("method", ["l1_structured", "l2_structured"])
@pytest.mark.parametrize("sparsity", [0.5, 0.9])
def test_structured_within_one_filter_per_layer_at_small_width(arch, method, sparsity):
    model = _small(arch)
    masks = prune(model, method=method, sparsity=sparsity)
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            removed = int((masks[f"{name}.weight"].flatten(1).sum(1) == 0).sum())
            assert abs(removed - sparsity * module.out_channels) <= 1, name
            assert removed < module.out_channels, name


def test_structured_ties_residual_stream_channels():
    """ResNet: the stem and every identity block's conv2 lose the same channels (summed by the adds)."""
    model = _small("resnet18")
    masks = prune(model, method="l1_structured", sparsity=0.5)
    gone = [masks[f"{name}.weight"].flatten(1).sum(1) == 0
            for name in ("conv1", "blocks.0.conv2", "blocks.1.conv2")]
    assert gone[0].sum() == 4 and torch.equal(gone[0], gone[1]) and torch.equal(gone[0], gone[2])
    internal = masks["blocks.0.conv1.weight"].flatten(1).sum(1) == 0
    assert internal.sum() == 4


@pytest.mark.parametrize("arch", IMAGE_ARCHS)
def test_slimming_uses_one_global_gamma_threshold(arch):
    model = _small(arch)
    gammas = {name: m.weight.detach().abs().clone() for name, m in model.named_modules()
              if isinstance(m, nn.BatchNorm2d)}
    total = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Conv2d))
    masks = prune(model, method="slimming", sparsity=0.5)
    report = sparsity_report(model, masks, method="slimming")
    removed = torch.cat([g[masks[f"{n}.weight"] == 0] for n, g in gammas.items()])
    # The strongest entry of each BN is never a candidate; every other kept entry lies above the cut.
    kept = torch.cat([g[masks[f"{n}.weight"] == 1].sort().values[:-1] for n, g in gammas.items()])
    assert removed.max() <= kept.min()
    assert report["sparsity"] >= 0.5
    entries = sum(g.numel() for g in gammas.values())
    assert report["bn_channel_fraction"] == pytest.approx(len(removed) / entries)
    # Minimal: the largest conv cost of one entry (a 64 -> 64 3x3 filter or column) is the most it overshoots.
    assert report["sparsity"] - 0.5 <= 64 * 9 / total


def test_slimming_kills_filter_after_post_norm_and_column_after_pre_norm():
    resnet = _small("resnet18")
    masks = prune(resnet, method="slimming", sparsity=0.5)
    bn2 = masks["blocks.2.bn2.weight"] == 0  # post-norm: conv2's filters die
    assert bn2.any() and torch.equal(masks["blocks.2.conv2.weight"].flatten(1).sum(1) == 0, bn2)
    dense = _small("densenet121")
    masks = prune(dense, method="slimming", sparsity=0.5)
    for bn, conv in [("blocks.1.3.bn1", "blocks.1.3.conv1"), ("blocks.1.3.bn2", "blocks.1.3.conv2")]:
        gone = masks[f"{bn}.weight"] == 0  # pre-norm: the next conv's input columns die
        columns_gone = masks[f"{conv}.weight"].transpose(0, 1).flatten(1).sum(1) == 0
        assert gone.any() and torch.equal(columns_gone, gone)
    assert torch.equal(masks["fc.weight"].sum(0) == 0, masks["bn.weight"] == 0)


# ---- masks hold and removed channels are gone ----------------------------------------------------

@pytest.mark.parametrize("arch", IMAGE_ARCHS)
@pytest.mark.parametrize("method", METHODS)
def test_masks_hold_through_adam_steps(arch, method):
    model = _small(arch)
    masks = prune(model, method=method, sparsity=0.7)
    before = copy.deepcopy(model.state_dict())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=5e-4)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        x, y = torch.randn(8, *SHAPE, generator=generator), torch.randint(0, 10, (8,), generator=generator)
        loss = nn.functional.cross_entropy(model(x), y) + 1e-4 * bn_l1_penalty(model)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        apply_masks(model, masks)
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        assert torch.count_nonzero(params[name][mask == 0]) == 0, name
        assert not torch.equal(params[name][mask == 1], before[name][mask == 1]), name  # kept ones train
    if method in STRUCTURED_METHODS:
        assert any(name.endswith(".bias") and (mask == 0).any() for name, mask in masks.items())


@pytest.mark.parametrize("arch", IMAGE_ARCHS)
@pytest.mark.parametrize("method", STRUCTURED_METHODS)
def test_removed_channels_are_gone(arch, method):
    """A removed channel enters every BN that reads it as zeros and leaves it as zeros (train and
    eval mode), and the removed entries' running statistics change no output."""
    model = _small(arch)
    masks = prune(model, method=method, sparsity=0.7)
    norms = {name: m for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for name, module in norms.items():
        module.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, (i[0], o)))
    x = torch.randn(6, *SHAPE)
    for mode in (model.train, model.eval):
        mode()
        with torch.no_grad():
            model(x)
        for name, (_, outputs) in seen.items():
            removed = masks[f"{name}.weight"] == 0
            assert torch.count_nonzero(outputs[:, removed]) == 0, name
        if method != "slimming":  # a removed channel enters every BN that reads it as zeros
            for group in model.channel_groups():
                gone = masks[f"{group.convs[0]}.weight"].flatten(1).sum(1) == 0
                for norm in group.norms:
                    entering = seen[norm.bn][0][:, norm.offset:norm.offset + group.size]
                    assert torch.count_nonzero(entering[:, gone]) == 0, norm.bn
    model.eval()
    with torch.no_grad():
        reference = model(x)
        for name, module in norms.items():
            removed = masks[f"{name}.weight"] == 0
            module.running_mean[removed] = 1e3
            module.running_var[removed] = 1e-3
        assert torch.equal(model(x), reference)


def test_resnet_stream_channel_is_zero_after_every_add():
    model = _small("resnet18")
    masks = prune(model, method="l2_structured", sparsity=0.5)
    outputs = []
    for block in model.blocks:
        block.register_forward_hook(lambda m, i, o: outputs.append(o))
    with torch.no_grad():
        model(torch.randn(4, *SHAPE))
    for i, out in enumerate(outputs):
        gone = masks[f"blocks.{i}.conv2.weight"].flatten(1).sum(1) == 0
        assert gone.any() and torch.count_nonzero(out[:, gone]) == 0, i


# ---- wrappers and errors -------------------------------------------------------------------------

def test_apply_masks_through_opacus_wrapper_and_groupnorm_fix():
    model = _small("vgg16")
    masks = prune(model, method="l1_structured", sparsity=0.5)
    wrapped = GradSampleModule(ModuleValidator.fix(model))  # BatchNorm -> GroupNorm, same names
    with torch.no_grad():
        for param in wrapped.parameters():
            param.fill_(1.0)
    apply_masks(wrapped, masks)
    report = sparsity_report(wrapped, masks, method="l1_structured")
    assert report["mask_violations"] == 0 and report["sparsity"] == pytest.approx(0.5)
    assert report["bn_channel_fraction"] == pytest.approx(0.5)


def test_fc_takes_only_l1_unstructured():
    model = build_model("fc", num_classes=10, input_shape=(20,))
    for method in STRUCTURED_METHODS:
        with pytest.raises(ValueError, match="only 'l1_unstructured'"):
            prune(model, method=method, sparsity=0.5)
    masks = prune(model, method="l1_unstructured", sparsity=0.5)
    report = sparsity_report(model, masks, method="l1_unstructured")
    assert report["sparsity"] == pytest.approx(0.5, abs=1e-3)


def test_bad_method_and_sparsity_are_named():
    model = _small("vgg16")
    with pytest.raises(ValueError, match="l1_unstructured, l1_structured, l2_structured, slimming"):
        prune(model, method="random", sparsity=0.5)
    with pytest.raises(ValueError, match=r"sparsity=1\.0"):
        prune(model, method="l1_structured", sparsity=1.0)
    with pytest.raises(KeyError, match="nope.weight"):
        apply_masks(model, {"nope.weight": torch.ones(1)})


def test_zero_sparsity_removes_nothing():
    for method in METHODS:
        model = _small("densenet121")
        state = copy.deepcopy(model.state_dict())
        masks = prune(model, method=method, sparsity=0.0)
        assert all(mask.all() for mask in masks.values())
        assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
