"""A model's train/eval mode for the length of a block."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from torch import nn


@contextmanager
def in_mode(model: nn.Module, *, training: bool = False) -> Iterator[nn.Module]:
    """Put `model` in eval mode (train mode with `training`) for the block; on leaving it, even by an
    exception, put it back in the mode it had, so that a caller's model is never left switched."""
    was_training = model.training
    model.train(training)
    try:
        yield model
    finally:
        model.train(was_training)
