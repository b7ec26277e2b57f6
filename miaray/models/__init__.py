"""The four architectures behind one `build_model()`.

Image models (ResNet18, VGG16-BN, DenseNet121; CIFAR style, 3x3 stem) take any (C, H, W) input
down to 1x1 maps and declare their prunable channels through `channel_groups()` (see
`miaray.models.structure`). All are plain `nn.Module`s without in-place ops on the autograd path,
so Opacus' GradSampleModule and `ModuleValidator.fix` (BatchNorm -> GroupNorm) work on them.
"""

from __future__ import annotations

from torch import nn

from miaray.models.densenet import DenseNet121
from miaray.models.fc import FC
from miaray.models.resnet import ResNet18
from miaray.models.structure import ChannelGroup, NormSlice
from miaray.models.vgg import VGG16
from miaray.vocabulary import ARCHS

__all__ = ["build_model", "ChannelGroup", "NormSlice", "ResNet18", "VGG16", "DenseNet121", "FC"]


def build_model(arch: str, *, num_classes: int, input_shape: tuple[int, ...],
                width: float = 1.0) -> nn.Module:
    """A freshly initialised (Xavier-normal) model for inputs of `input_shape` (without batch dim).

    `width` multiplies every channel / hidden-unit count (at least 1 each); < 1 gives tiny test models.
    """
    if arch not in ARCHS:
        raise ValueError(f"arch={arch!r} is not valid; choose one of: {', '.join(ARCHS)}")
    if num_classes < 1 or width <= 0:
        raise ValueError(f"num_classes={num_classes!r} must be >= 1 and width={width!r} must be positive")
    if arch == "fc":
        return FC(input_shape=tuple(input_shape), num_classes=num_classes, width=width)
    if len(input_shape) != 3:
        raise ValueError(f"input_shape={tuple(input_shape)!r}: arch={arch!r} needs an image shape "
                         f"(channels, height, width); tabular data takes arch='fc'")
    channels, height, width_px = input_shape
    if arch == "resnet18":  # stride-2 convs never shrink a map below 1x1, so no size is needed
        return ResNet18(in_channels=channels, num_classes=num_classes, width=width)
    image_model = VGG16 if arch == "vgg16" else DenseNet121
    return image_model(in_channels=channels, spatial=min(height, width_px), num_classes=num_classes,
                       width=width)
