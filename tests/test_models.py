"""The four architectures: sizes as in docs/science.md, Training and models, any input shape, declared channel groups,
Xavier init, and compatibility with Opacus (no in-place ops; BatchNorm -> GroupNorm)."""

import math

import pytest
import torch
from opacus import GradSampleModule
from opacus.validators import ModuleValidator
from torch import nn

from miaray.models import build_model
from miaray.models.modes import in_mode

IMAGE_ARCHS = ("resnet18", "vgg16", "densenet121")
SMALL = 0.125  # width multiplier for fast tests


@pytest.mark.parametrize("arch, reference", [("resnet18", 11.2e6), ("vgg16", 14.7e6), ("densenet121", 7.0e6)])
def test_parameter_counts_match_reference(arch, reference):
    model = build_model(arch, num_classes=10, input_shape=(3, 32, 32))
    count = sum(p.numel() for p in model.parameters())
    assert abs(count - reference) / reference < 0.01, count


@pytest.mark.parametrize("arch", IMAGE_ARCHS)
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32), (3, 5, 7)])
def test_image_forward_shapes(arch, shape):
    model = build_model(arch, num_classes=7, input_shape=shape, width=SMALL)
    for mode in (model.train, model.eval):
        mode()
        assert model(torch.randn(2, *shape)).shape == (2, 7)


def test_fc_forward_shape_and_layers():
    model = build_model("fc", num_classes=100, input_shape=(600,))
    assert model(torch.randn(3, 600)).shape == (3, 100)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(600, 256), (256, 128), (128, 100)]
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.1, 0.1]


def test_width_scales_channels_and_never_drops_below_one():
    resnet = build_model("resnet18", num_classes=10, input_shape=(3, 32, 32), width=SMALL)
    assert resnet.fc.in_features == 64 and resnet.conv1.out_channels == 8
    dense = build_model("densenet121", num_classes=10, input_shape=(3, 32, 32), width=SMALL)
    assert dense.growth == 4 and dense.conv1.out_channels == 8
    for arch in IMAGE_ARCHS:
        tiny = build_model(arch, num_classes=3, input_shape=(1, 8, 8), width=1e-3)
        assert min(m.out_channels for m in tiny.modules() if isinstance(m, nn.Conv2d)) == 1
        assert tiny(torch.randn(2, 1, 8, 8)).shape == (2, 3)


def test_cifar_variant_keeps_full_resolution_after_stem():
    """No max-pool after the 3x3 stem: the first block sees the 32x32 map."""
    for arch, first_block in [("resnet18", "blocks.0"), ("densenet121", "blocks.0")]:
        model = build_model(arch, num_classes=10, input_shape=(3, 32, 32), width=SMALL)
        sizes = []
        model.get_submodule(first_block).register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1]))
        model(torch.randn(1, 3, 32, 32))
        assert sizes == [32]


def test_xavier_normal_init():
    model = build_model("vgg16", num_classes=10, input_shape=(3, 32, 32))
    weight = model.convs[10].weight  # 512 -> 512, 3x3: fan_in = fan_out = 4608
    expected = math.sqrt(2.0 / (4608 + 4608))
    assert abs(weight.std().item() - expected) / expected < 0.02
    assert torch.count_nonzero(model.fc.bias) == 0


def test_bad_arch_and_shape_name_the_choices():
    with pytest.raises(ValueError, match="resnet18, vgg16, densenet121, fc"):
        build_model("resnet50", num_classes=10, input_shape=(3, 32, 32))
    with pytest.raises(ValueError, match="input_shape.*arch='fc'"):
        build_model("vgg16", num_classes=10, input_shape=(600,))


@pytest.mark.parametrize("arch", IMAGE_ARCHS)
def test_channel_groups_cover_every_filter_and_bn_entry_once(arch):
    model = build_model(arch, num_classes=10, input_shape=(1, 8, 8), width=SMALL)
    modules = dict(model.named_modules())
    filters = {name: torch.zeros(m.out_channels) for name, m in modules.items() if isinstance(m, nn.Conv2d)}
    entries = {name: torch.zeros(m.num_features) for name, m in modules.items()
               if isinstance(m, nn.BatchNorm2d)}
    for group in model.channel_groups():
        for conv in group.convs:
            assert modules[conv].out_channels == group.size
            filters[conv] += 1
        for norm in group.norms:
            entries[norm.bn][norm.offset:norm.offset + group.size] += 1
            layer, bn = modules[norm.layer], modules[norm.bn]
            if norm.position == "post":  # the BN right after this conv, channel for channel
                assert norm.offset == 0 and layer.out_channels == bn.num_features
            else:  # the BN whose output is this layer's whole input
                inputs = layer.in_channels if isinstance(layer, nn.Conv2d) else layer.in_features
                assert inputs == bn.num_features
    assert all(torch.equal(count, torch.ones_like(count)) for count in filters.values())
    assert all(torch.equal(count, torch.ones_like(count)) for count in entries.values())


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")  # the input needs no gradient
@pytest.mark.parametrize("arch", IMAGE_ARCHS + ("fc",))
def test_opacus_per_sample_gradients_after_groupnorm_fix(arch):
    """No in-place op breaks Opacus' hooks once BatchNorm is swapped for GroupNorm."""
    shape = (20,) if arch == "fc" else (1, 8, 8)
    model = ModuleValidator.fix(build_model(arch, num_classes=4, input_shape=shape, width=SMALL))
    assert ModuleValidator.validate(model, strict=False) == []
    wrapped = GradSampleModule(model)
    loss = nn.functional.cross_entropy(wrapped(torch.randn(3, *shape)), torch.tensor([0, 1, 3]))
    loss.backward()
    for name, param in wrapped.named_parameters():
        assert param.grad_sample is not None and param.grad_sample.shape[0] == 3, name


def test_in_mode_switches_for_the_block_and_restores_the_mode_even_after_an_error():
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout())
    for before in (True, False):
        model.train(before)
        for training in (True, False):
            with pytest.raises(RuntimeError):
                with in_mode(model, training=training):
                    assert model.training == training and model[1].training == training
                    raise RuntimeError("a forward that fails")
            assert model.training == before and model[1].training == before
