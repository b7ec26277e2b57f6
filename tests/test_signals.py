"""Signals: softmax, prediction sensitivity (eq. 2), the BlindMI reference transform, the gaps."""

import functools

import numpy as np
import pytest
import torch
from torch import nn

from miaray.attacks.blindmi import reference_transform
from miaray.attacks.signals import (Signals, compute_signals, confidence_gap, generalization_gap,
                                    membership_set, perturbation_directions, sensitivity_gap,
                                    sensitivity_loop_reference)


def tiny_convnet(seed: int = 0) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                             nn.Flatten(), nn.Linear(4 * 6 * 6, 5))


@pytest.fixture(scope="module")
def image_batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(70, 3, 6, 6, generator=g), torch.randint(0, 5, (70,), generator=g)


def test_probs_are_eval_mode_softmax_and_mode_is_restored(image_batch):
    x, y = image_batch
    model = tiny_convnet()
    model.train()
    sig = compute_signals(model, x, y, sensitivity=False)
    assert model.training  # restored
    model.eval()
    torch.testing.assert_close(sig.probs, torch.softmax(model(x), dim=1))
    sig_eval = compute_signals(model, x, y, sensitivity=False)
    assert not model.training
    torch.testing.assert_close(sig_eval.probs, sig.probs)
    assert sig.sensitivity is None and sig.ref_probs is None
    assert sig.labels.dtype == torch.int64 and torch.equal(sig.labels, y)


def test_batched_sensitivity_equals_per_direction_loop(image_batch):
    x, y = image_batch
    model = tiny_convnet()
    sig = compute_signals(model, x, y, n_directions=4, eps=1e-3, seed=3, batch_size=200)
    slow = sensitivity_loop_reference(model, x, n_directions=4, eps=1e-3, seed=3, samples_per_forward=1)
    assert sig.sensitivity.shape == (70, 5)
    assert sig.sensitivity.mean() > 1e-2  # a real signal, not zeros
    torch.testing.assert_close(sig.sensitivity, slow, rtol=1e-3, atol=2e-3)


def test_sensitivity_matches_finite_difference_of_a_linear_softmax_model():
    # For f = softmax(Wx), eps -> 0: |f(x + eps d) - f(x)| / eps -> |J d|, J the softmax Jacobian times W.
    g = torch.Generator().manual_seed(0)
    model = nn.Linear(3, 4)
    with torch.no_grad():
        model.weight.copy_(torch.randn(4, 3, generator=g))
    x = torch.randn(5, 3, generator=g)
    sig = compute_signals(model, x, torch.zeros(5, dtype=torch.int64), n_directions=1, eps=1e-3, seed=0)
    d = perturbation_directions(shape=(3,), start=0, stop=5, n_directions=1, seed=0, device=torch.device("cpu"))[0]
    p = torch.softmax(model(x), dim=1).double()
    w = model.weight.detach().double()
    jvp = p * (d.double() @ w.T) - p * (p * (d.double() @ w.T)).sum(1, keepdim=True)
    torch.testing.assert_close(sig.sensitivity.double(), jvp.abs(), rtol=2e-2, atol=2e-3)


def test_sensitivity_is_deterministic_and_independent_of_batch_size(image_batch):
    x, y = image_batch
    model = tiny_convnet()
    a = compute_signals(model, x, y, seed=7, batch_size=1024)
    b = compute_signals(model, x, y, seed=7, batch_size=33)  # 3 samples per forward, odd chunks
    c = compute_signals(model, x, y, seed=8)
    torch.testing.assert_close(a.sensitivity, b.sensitivity, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(a.probs, b.probs)
    assert not torch.allclose(a.sensitivity, c.sensitivity, atol=1e-3)


def test_reference_probs_are_the_model_on_transformed_inputs(image_batch):
    x, y = image_batch
    model = tiny_convnet().eval()
    transform = functools.partial(reference_transform, is_image=True)
    sig = compute_signals(model, x, y, sensitivity=False, reference_transform=transform)
    torch.testing.assert_close(sig.ref_probs, torch.softmax(model(transform(x)), dim=1))


def test_sobel_reference_transform_by_hand():
    # Channel 0: a vertical step (columns 2, 3 bright); channel 1: the same step, horizontal.
    img = torch.zeros(1, 2, 4, 4)
    img[0, 0, :, 2:] = 1.0
    img[0, 1, 2:, :] = 1.0
    out = reference_transform(img, is_image=True)
    # Interior: G_x = 1 + 2 + 1 = 4 across the step, 0.5 * |4| = 2; reflected borders see no edge.
    row = torch.tensor([0.0, 2.0, 2.0, 0.0])
    torch.testing.assert_close(out[0, 0], row.expand(4, 4))
    torch.testing.assert_close(out[0, 1], row.view(4, 1).expand(4, 4))


def test_tabular_reference_transform_by_hand():
    x = torch.tensor([[1.0, 0.0, 0.0, 1.0, 1.0]])
    # reflected: [0, 1, 0, 0, 1, 1, 1]; |x[j+1] - x[j-1]| = [0, 1, 1, 1, 0]
    torch.testing.assert_close(reference_transform(x, is_image=False), torch.tensor([[0.0, 1.0, 1.0, 1.0, 0.0]]))


def test_gaps_on_four_samples_by_hand():
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    sens = torch.tensor([[1.0, 9.0], [9.0, 3.0], [5.0, 9.0], [9.0, 2.0]])
    labels = torch.tensor([0, 1, 0, 0])
    members = Signals(probs=probs[:2], labels=labels[:2], sensitivity=sens[:2])
    nonmembers = Signals(probs=probs[2:], labels=labels[2:], sensitivity=sens[2:])
    # confidence: (0.9 + 0.8) / 2 - (0.6 + 0.3) / 2 = 0.4; sensitivity: (1 + 3) / 2 - (5 + 9) / 2 = -5
    assert confidence_gap(members, nonmembers) == pytest.approx(0.4)
    assert sensitivity_gap(members, nonmembers) == pytest.approx(-5.0)
    assert generalization_gap(0.95, 0.7) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="sensitivity"):
        sensitivity_gap(Signals(probs=probs, labels=labels), nonmembers)


def test_signals_subset_concat_and_validation():
    probs = torch.softmax(torch.randn(6, 3), dim=1)
    sig = Signals(probs=probs, labels=torch.arange(6) % 3, sensitivity=torch.rand(6, 3))
    sub = sig.subset([4, 1])
    torch.testing.assert_close(sub.probs, probs[[4, 1]])
    torch.testing.assert_close(sub.sensitivity, sig.sensitivity[[4, 1]])
    assert len(sig.subset(np.array([True, False] * 3))) == 3
    both, membership = membership_set(sig.subset([0, 1]), sig.subset([2, 3, 5]))
    assert membership.tolist() == [1, 1, 0, 0, 0]
    torch.testing.assert_close(both.probs, probs[[0, 1, 2, 3, 5]])
    assert both.ref_probs is None and sig.to("cpu").num_classes == 3
    with pytest.raises(ValueError, match="missing"):
        Signals.concat([sig, Signals(probs=probs, labels=sig.labels)])
    with pytest.raises(ValueError, match="labels"):
        Signals(probs=probs, labels=torch.zeros(5, dtype=torch.int64))
