"""Defenses during fine-tuning: PPB formula, DP-SGD through the real Opacus engine, ADV step counts."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from opacus.accountants import RDPAccountant
from torch import nn

from miaray.config import ConfigError
from miaray.defenses import ADVDefense, PPBDefense, make_defense, ppb_regularizer
from miaray.defenses.adv import adv_loss
from miaray.defenses.dp import DPDefense
from miaray.defenses.frozen_bn import FrozenBatchNorm, freeze_batchnorm, recalibrate_batchnorm, restore_batchnorm
from miaray.models import build_model
from miaray.prune import prune
from miaray.train import Defense, TensorSplit, TrainingDiverged, fit

pytestmark = pytest.mark.filterwarnings(
    "ignore:Full backward hook is firing:UserWarning",  # Opacus' hook on a layer whose input is data
    "ignore:Optimal order is the:UserWarning",  # RDP order grid edge at extreme noise levels
)


def _split(n_train: int, n_val: int, shape: tuple[int, ...], num_classes: int = 3) -> TensorSplit:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n_train + n_val, *shape, generator=g)
    y = torch.randint(0, num_classes, (n_train + n_val,), generator=g)
    return TensorSplit(x[:n_train], y[:n_train], x[n_train:], y[n_train:])


def _fit(model: nn.Module, data: TensorSplit, defense: Defense, **kw) -> dict[str, float]:
    args = dict(epochs=1, lr=1e-3, weight_decay=5e-4, batch_size=8, patience=10) | kw
    return fit(model, data, defense=defense, **args).defense_summary


# ---- PPB -----------------------------------------------------------------------------------

# Rows are probability vectors; their logs are logits whose softmax gives them back exactly.
PROBS = torch.tensor([[0.3, 0.5, 0.2],     # sorted 0.5 0.3 0.2
                      [0.25, 0.25, 0.5],   # sorted 0.5 0.25 0.25
                      [0.2, 0.4, 0.4],     # sorted 0.4 0.4 0.2
                      [0.1, 0.8, 0.1]],    # sorted 0.8 0.1 0.1
                     dtype=torch.float64)


def test_ppb_regularizer_hand_computed() -> None:
    logits = PROBS.log().requires_grad_()
    # perm [0, 2, 1, 3]: first half rows 0, 2; second half rows 1, 3; KL(second || first) per pair:
    # KL([.5,.25,.25] || [.5,.3,.2]) = .25 ln(.25/.3) + .25 ln(.25/.2) = .25 ln(25/24)
    # KL([.8,.1,.1] || [.4,.4,.2]) = .8 ln 2 + .1 ln(1/4) + .1 ln(1/2) = .5 ln 2
    reg = ppb_regularizer(logits, perm=torch.tensor([0, 2, 1, 3]))
    assert reg.item() == pytest.approx((0.25 * math.log(25 / 24) + 0.5 * math.log(2)) / 2, rel=1e-6)
    # The other direction pins which half is the KL's first argument:
    # KL([.5,.3,.2] || [.5,.25,.25]) = .3 ln 1.2 + .2 ln .8;  KL([.4,.4,.2] || [.8,.1,.1]) = .6 ln 2
    swapped = ppb_regularizer(logits, perm=torch.tensor([1, 3, 0, 2]))
    expected = (0.3 * math.log(1.2) + 0.2 * math.log(0.8) + 0.6 * math.log(2)) / 2
    assert swapped.item() == pytest.approx(expected, rel=1e-6)
    reg.backward()
    assert (logits.grad.abs().sum(dim=1) > 0).all()  # gradients reach both halves of every pair


def test_ppb_regularizer_zero_for_equal_sorted_posteriors() -> None:
    base = torch.tensor([2.0, -1.0, 0.5, 0.0])
    # Class permutations and a constant shift leave the sorted softmax unchanged.
    logits = torch.stack([base, base[[3, 2, 1, 0]] + 5.0, base[[1, 0, 3, 2]], base[[2, 3, 0, 1]] - 3.0,
                          base, base[[0, 2, 1, 3]]])
    reg = ppb_regularizer(logits, generator=torch.Generator().manual_seed(1))
    assert abs(reg.item()) < 1e-6


def test_ppb_regularizer_odd_and_tiny_batches() -> None:
    five = torch.cat([PROBS, PROBS[:1]]).log().requires_grad_()
    reg = ppb_regularizer(five, perm=torch.tensor([0, 2, 1, 3, 4]))
    assert torch.equal(reg, ppb_regularizer(PROBS.log(), perm=torch.tensor([0, 2, 1, 3])))
    reg.backward()
    assert five.grad[4].abs().sum() == 0 and (five.grad[:4].abs().sum(dim=1) > 0).all()  # row 4 sits out
    assert ppb_regularizer(PROBS.log()[:1]).item() == 0.0


def test_ppb_defense_loss_is_ce_plus_lambda_times_regularizer() -> None:
    defense = make_defense("ppb", {"lambda": 2.0}, num_classes=3, seed=7)
    assert isinstance(defense, PPBDefense)
    model = nn.Linear(5, 3)
    x, y = torch.randn(6, 5), torch.tensor([0, 1, 2, 0, 1, 2])
    loss = defense.loss(model, x, y)
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(7))  # the defense's first draw
    logits = model(x)
    expected = F.cross_entropy(logits, y) + 2.0 * ppb_regularizer(logits, perm=perm)
    assert loss.item() == pytest.approx(expected.item())


# ---- DP --------------------------------------------------------------------------------------

def _tiny_bn_net() -> nn.Sequential:
    """Conv -> BN2d -> ReLU -> Linear -> BN1d -> Linear, with non-trivial running statistics."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(),
                        nn.Linear(3 * 4 * 4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    with torch.no_grad():
        for bn in (net[1], net[5]):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
    return net


def test_frozen_batchnorm_is_eval_mode_batchnorm_under_the_same_names() -> None:
    net = _tiny_bn_net()
    x = torch.randn(5, 1, 6, 6)
    expected = net.eval()(x)
    params_before, keys_before = dict(net.named_parameters()), list(net.state_dict())
    originals = freeze_batchnorm(net)
    assert sorted(originals) == ["1", "5"] and isinstance(net[1], FrozenBatchNorm)
    assert dict(net.named_parameters()) == params_before  # same Parameter objects, same names
    assert list(net.state_dict()) == keys_before
    torch.testing.assert_close(net.train()(x), expected)  # eval-mode BN even in train mode
    restore_batchnorm(net, originals)
    assert isinstance(net[1], nn.BatchNorm2d) and dict(net.named_parameters()) == params_before


def test_batchnorm_recalibration_averages_the_batches_statistics() -> None:
    net = _tiny_bn_net()  # running statistics set at random: stale, as after pruning
    x = torch.randn(8, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    weights = {name: p.detach().clone() for name, p in net.named_parameters()}
    net.eval()
    recalibrate_batchnorm(net, x, batch_size=4)
    assert not net.training and all(torch.equal(p, weights[n]) for n, p in net.named_parameters())
    # The first BN sees conv(x): its statistics are the mean over the two batches of each batch's mean and
    # unbiased variance per channel (BatchNorm's own definition, averaged with momentum None).
    features = net[0](x)
    halves = features.split(4)
    mean = torch.stack([h.mean(dim=(0, 2, 3)) for h in halves]).mean(0)
    var = torch.stack([h.transpose(0, 1).flatten(1).var(dim=1) for h in halves]).mean(0)
    torch.testing.assert_close(net[1].running_mean, mean)
    torch.testing.assert_close(net[1].running_var, var)
    assert net[1].momentum == 0.1  # put back
    # DP fine-tuning re-estimates them on its calibration inputs (the validation split) before freezing.
    stale = _tiny_bn_net()
    defense = make_defense("dp", {"noise_multiplier": 0.0}, num_classes=3, nonmembers=(x, torch.zeros(8)), seed=0)
    defense.prepare(stale, torch.optim.SGD(stale.parameters(), lr=0.0), n_train=8, batch_size=4, epochs=1)
    torch.testing.assert_close(stale[1].running_mean, mean)
    defense.finish(stale)


def test_dp_clips_every_example_then_sums() -> None:
    """Noise 0: the step's gradient is the sum of per-example gradients, each clipped to C, over B."""
    net = _tiny_bn_net()
    reference = copy.deepcopy(net).eval()
    x, y = torch.randn(6, 1, 6, 6), torch.tensor([0, 1, 1, 0, 1, 0])
    clip = 0.05
    defense = DPDefense(noise_multiplier=0.0, max_grad_norm=clip)
    # lr 0: the step leaves the weights alone and p.grad holds the privatised gradient.
    trained, optimizer = defense.prepare(net, torch.optim.SGD(net.parameters(), lr=0.0), n_train=6,
                                         batch_size=6, epochs=1)
    optimizer.zero_grad()
    defense.loss(trained, x, y).backward()
    per_example = []
    for i in range(len(y)):
        reference.zero_grad()
        F.cross_entropy(reference(x[i:i + 1]), y[i:i + 1]).backward()
        per_example.append([p.grad.clone() for p in reference.parameters()])
    # Opacus' per-example gradients (the FrozenBatchNorm sampler included) match the loop.
    for j, p in enumerate(net.parameters()):
        torch.testing.assert_close(p.grad_sample, torch.stack([g[j] for g in per_example]))
    norms = torch.stack([torch.sqrt(sum((g ** 2).sum() for g in grads)) for grads in per_example])
    assert (norms > clip).all()  # clipping is active for every example
    factors = (clip / (norms + 1e-6)).clamp(max=1.0)  # Opacus' clipping factor
    optimizer.step()
    for j, p in enumerate(net.parameters()):
        expected = sum(f * g[j] for f, g in zip(factors, per_example)) / len(y)
        torch.testing.assert_close(p.grad, expected)
    clipped = norms * factors
    assert (clipped <= clip + 1e-6).all()
    assert defense.steps == 1


def test_dp_epsilon_is_the_rdp_accountants() -> None:
    data = _split(40, 8, (6,))
    torch.manual_seed(0)
    model = build_model("fc", num_classes=3, input_shape=(6,), width=0.05)
    defense = make_defense("dp", {"noise_multiplier": 1.3, "delta": 1e-4}, num_classes=3, seed=3)
    summary = _fit(model, data, defense, epochs=3, batch_size=10)
    assert summary["sample_rate"] == 0.25 and summary["delta"] == 1e-4
    assert 9 <= summary["dp_steps"] <= 12  # 4 Poisson batches per epoch, empty ones skipped
    fresh = RDPAccountant()
    fresh.history = [(1.3, 0.25, summary["dp_steps"])]
    assert summary["epsilon"] == fresh.get_epsilon(1e-4)
    assert 0 < summary["epsilon"] < math.inf


def test_dp_poisson_batches() -> None:
    defense = DPDefense(noise_multiplier=1.0, max_grad_norm=1.0)
    defense.sample_rate = 0.1
    batches = list(defense.batches(1000, 100, torch.Generator().manual_seed(0)))
    assert len(batches) == 10
    sizes = torch.tensor([len(b) for b in batches], dtype=torch.float)
    assert 70 < sizes.mean() < 130 and sizes.std() > 0  # Binomial(1000, 0.1): mean 100, sd 9.5


@pytest.mark.parametrize("arch, method", [("resnet18", "slimming"), ("vgg16", "l1_structured"),
                                          ("densenet121", "slimming"), ("fc", "l1_unstructured")])
def test_dp_finetunes_pruned_models_and_masks_hold(arch: str, method: str) -> None:
    shape = (6,) if arch == "fc" else (1, 8, 8)
    data = _split(4, 2, shape)
    torch.manual_seed(0)
    model = build_model(arch, num_classes=3, input_shape=shape, width=0.1)
    masks = prune(model, method=method, sparsity=0.5)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    defense = make_defense("dp", {"noise_multiplier": 0.5}, num_classes=3, seed=0)
    summary = _fit(model, data, defense, masks=masks, batch_size=4)
    assert summary["dp_steps"] == 1  # batch 4 of n 4: q = 1, one step
    for name, p in model.named_parameters():
        if name in masks:
            assert (p[masks[name] == 0] == 0).all(), name
    changed = [name for name, p in model.named_parameters() if not torch.equal(p, before[name])]
    assert len(changed) > 0
    defense.finish(model)
    assert not any(isinstance(m, FrozenBatchNorm) for m in model.modules())
    assert not any(hasattr(p, "grad_sample") for p in model.parameters())
    fresh = build_model(arch, num_classes=3, input_shape=shape, width=0.1)
    fresh.load_state_dict(model.state_dict())  # strict: the cache reloads it into a plain model


def test_dp_noise_that_overflows_stops_training() -> None:
    # Adam normalises each update, so even noise 1e30 cannot blow the weights up; only noise past
    # float32's range (inf -> NaN moments -> NaN weights) makes the loss non-finite.
    data = _split(16, 4, (6,))
    model = build_model("fc", num_classes=3, input_shape=(6,), width=0.05)
    defense = make_defense("dp", {"noise_multiplier": 1e39}, num_classes=3)
    with pytest.raises(TrainingDiverged):
        _fit(model, data, defense, epochs=2)


# ---- ADV -------------------------------------------------------------------------------------

def test_adv_loss_hand_computed() -> None:
    # C = 2: posterior softmax([ln 3, 0]) = [.75, .25], label 0 -> features [.75, .25, 1, 0].
    h = nn.Linear(4, 2)
    with torch.no_grad():
        h.weight.copy_(torch.tensor([[0.0, 0.0, 0.0, 0.0], [4.0, 0.0, 2.0, 0.0]]))
        h.bias.zero_()
    logits, y = torch.tensor([[math.log(3.0), 0.0]]), torch.tensor([0])
    # h's logits [0, 4 * .75 + 2] = [0, 5]: log h(member) = -ln(1 + e^-5); CE = -ln .75.
    expected = -math.log(0.75) + 2.0 * -math.log1p(math.exp(-5.0))
    assert adv_loss(logits, y, h, alpha=2.0, num_classes=2).item() == pytest.approx(expected, rel=1e-6)


def test_adv_steps_both_models_in_every_batch() -> None:
    data = _split(32, 8, (6,))
    model = build_model("fc", num_classes=3, input_shape=(6,), width=0.05)
    defense = make_defense("adv", {"alpha": 1.0, "k": 2.0}, num_classes=3,
                           nonmembers=(data.x_val, data.y_val), seed=0)
    assert isinstance(defense, ADVDefense)
    h_before = [p.detach().clone() for p in defense.h.parameters()]
    summary = _fit(model, data, defense, epochs=1)
    assert summary == {"adv_classifier_steps": 4, "adv_inference_steps": 8}  # 4 batches, k = 2
    # h's own optimiser agrees: Adam counted 8 steps.
    assert all(defense.h_optimizer.state[p]["step"].item() == 8 for p in defense.h.parameters())
    assert all(not torch.equal(p, b) for p, b in zip(defense.h.parameters(), h_before))


# ---- factory -------------------------------------------------------------------------------

def test_make_defense_names_and_params() -> None:
    assert type(make_defense("basic", {}, num_classes=3)) is Defense
    dp = make_defense("dp", {"noise_multiplier": 2.0}, num_classes=3)
    assert (dp.noise_multiplier, dp.max_grad_norm, dp.delta) == (2.0, 1.0, 1e-5)
    assert make_defense("ppb", {}, num_classes=3).lam == 4.0
    with pytest.raises(ConfigError, match="lambda"):
        make_defense("ppb", {"alpha": 1.0}, num_classes=3)
    with pytest.raises(ConfigError, match="choose one of"):
        make_defense("dropout", {}, num_classes=3)
    with pytest.raises(ValueError, match="non-member"):
        make_defense("adv", {}, num_classes=3)
