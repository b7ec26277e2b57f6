"""The training loop: same seed, same weights on the CPU; early stopping; divergence stops at once."""

import math

import pytest
import torch

from miaray.data import load_dataset
from miaray.data.splits import make_splits
from miaray.models import build_model
from miaray.train import Defense, TensorSplit, TrainingDiverged, fit


def _digits_split() -> TensorSplit:
    data = load_dataset("digits")
    s = make_splits(len(data.y), seed=0, num_shadows=1).target
    return TensorSplit(data.x[s.train], data.y[s.train], data.x[s.val], data.y[s.val])


def _train_once(data: TensorSplit, seed: int):
    torch.manual_seed(seed)
    model = build_model("resnet18", num_classes=10, input_shape=(1, 8, 8), width=0.125)
    result = fit(model, data, epochs=3, lr=1e-3, weight_decay=5e-4, batch_size=128, patience=5, seed=seed)
    return model, result


def test_same_seed_identical_weights_and_accuracy():
    data = _digits_split()
    (m1, r1), (m2, r2) = _train_once(data, 7), _train_once(data, 7)
    for (name, a), (_, b) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), name
    assert r1.history == r2.history
    (m3, _) = _train_once(data, 8)
    assert not torch.equal(next(iter(m1.parameters())), next(iter(m3.parameters())))


def test_early_stopping_keeps_best_epoch():
    data = _digits_split()
    torch.manual_seed(0)
    model = build_model("fc", num_classes=10, input_shape=(64,), width=1.0)
    flat = TensorSplit(data.x_train.flatten(1), data.y_train, data.x_val.flatten(1), data.y_val)
    result = fit(model, flat, epochs=200, lr=1e-2, weight_decay=0.0, batch_size=128, patience=2, seed=0)
    assert result.epochs_run < 200  # a 10-class fc net on 400 digits overfits long before 200 epochs
    assert result.epochs_run - result.best_epoch == 2
    best = min(h["val_loss"] for h in result.history)
    assert math.isclose(result.best_val_loss, best)


class _ExplodingLoss(Defense):
    name = "exploding"

    def loss(self, model, x, y):
        return super().loss(model, x, y) * float("nan")


def test_nan_loss_stops_at_once():
    data = _digits_split()
    model = build_model("resnet18", num_classes=10, input_shape=(1, 8, 8), width=0.125)
    with pytest.raises(TrainingDiverged, match="epoch 1, step 1"):
        fit(model, data, epochs=5, lr=1e-3, weight_decay=5e-4, batch_size=128, patience=5,
            defense=_ExplodingLoss())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_captured_step_follows_the_eager_loop():
    """Same start, same updates: the CUDA-graph step (full batches) plus the eager short batch ends
    where the eager loop ends, masks stay zero, and the undone warm-up leaves no trace."""
    from miaray.prune import prune

    data = _digits_split()
    cuda = TensorSplit(*(t.cuda() for t in (data.x_train, data.y_train, data.x_val, data.y_val)))
    assert len(cuda.y_train) % 128 != 0  # full batches replay the graph, the last one runs eagerly
    runs = []
    for cuda_graph in (False, True):
        torch.manual_seed(3)
        model = build_model("resnet18", num_classes=10, input_shape=(1, 8, 8), width=0.125).cuda()
        masks = prune(model, method="l1_unstructured", sparsity=0.5)
        result = fit(model, cuda, epochs=3, lr=1e-3, weight_decay=5e-4, batch_size=128, patience=5, seed=3,
                     masks=masks, cuda_graph=cuda_graph)
        runs.append((model.state_dict(), result, masks))
    (eager, r_eager, _), (graphed, r_graphed, masks) = runs
    for name in eager:
        torch.testing.assert_close(graphed[name].float(), eager[name].float(), atol=2e-3, rtol=2e-2, msg=name)
    for name, mask in masks.items():
        assert (graphed[name][mask == 0] == 0).all(), name
    for a, b in zip(r_eager.history, r_graphed.history):
        assert math.isclose(a["train_loss"], b["train_loss"], rel_tol=1e-2)
