"""The nine attacks: formulas by hand, the threshold search, behaviour on synthetic signals, no
target data in fit, SAMIA's architecture, BlindMI's vectorised moves against the direct procedure."""


import numpy as np
import pytest
import torch

from miaray.attacks import ATTACK_NAMES, SAMIAModel, Signals, make_attack, membership_set
from miaray.attacks.blindmi import blindmi_features, mmd
from miaray.attacks.classifier import ClassifierAttack
from miaray.attacks.threshold import (best_threshold, best_threshold_exhaustive, cross_entropy_loss, modified_entropy,
                                      true_class_confidence)
from miaray.config import ConfigError
from miaray.vocabulary import ATTACKS

FAST = {"nn": {"epochs": 3}, "top3_nn": {"epochs": 3}, "nncls": {"epochs": 3}, "samia": {"epochs": 2}}


def synthetic(n: int, *, member: bool, separable: bool, seed: int, classes: int = 10) -> Signals:
    """Members: confident and insensitive; non-members: not (if separable); else one distribution.
    ref_probs: flat outputs, like a model's on edge maps."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    margin = (6.0 if member else 1.0) if separable else 3.0
    logits = torch.randn(n, classes, generator=g) + margin * torch.nn.functional.one_hot(labels, classes)
    spread = (0.5 if member else 2.0) if separable else 1.0
    return Signals(probs=logits.softmax(1), labels=labels, sensitivity=spread * torch.rand(n, classes, generator=g),
                   ref_probs=torch.randn(n, classes, generator=g).softmax(1))


def labelled(n: int, *, separable: bool, seed: int) -> tuple[Signals, np.ndarray]:
    return membership_set(synthetic(n, member=True, separable=separable, seed=seed),
                          synthetic(n, member=False, separable=separable, seed=seed + 1))


# ---- formulas by hand ----------------------------------------------------------------------------
PROBS = np.array([[0.7, 0.2, 0.1], [0.7, 0.2, 0.1], [0.0, 0.5, 0.5]])
LABELS = np.array([0, 1, 0])


def test_conf_and_xent_by_hand():
    np.testing.assert_allclose(true_class_confidence(PROBS, LABELS), [0.7, 0.2, 0.0])
    # -ln 0.7 = 0.356675; -ln 0.2 = 1.609438; p = 0 is clamped to 1e-30: 30 ln 10 = 69.077553
    np.testing.assert_allclose(cross_entropy_loss(PROBS, LABELS), [0.356675, 1.609438, 69.077553], atol=1e-6)


def test_mentr_by_hand():
    # y = 0: 0.3 ln(1/0.7) + 0.2 ln(1/0.8) + 0.1 ln(1/0.9) = 0.107002 + 0.044629 + 0.010536
    # y = 1: 0.8 ln(1/0.2) + 0.7 ln(1/0.3) + 0.1 ln(1/0.9) = 1.287550 + 0.842781 + 0.010536
    # p_y = 0: 1 * ln(1e30) + 2 * 0.5 ln(1/0.5) = 69.077553 + 0.693147
    np.testing.assert_allclose(modified_entropy(PROBS, LABELS), [0.162167, 2.140867, 69.770700], atol=1e-6)


def test_threshold_by_hand_with_tie_break():
    # t = 0.6: TPR 1, TNR 2/3; t = 0.7 and t = 0.8: TPR 2/3, TNR 1. All give 5/6: smallest wins.
    members, nonmembers = [0.9, 0.8, 0.6], [0.7, 0.3, 0.2]
    for search in (best_threshold, best_threshold_exhaustive):
        t, acc = search(members, nonmembers)
        assert t == 0.6 and acc == pytest.approx(5 / 6)


def test_sort_and_scan_equals_exhaustive_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n_in, n_out = rng.integers(1, 60, size=2)
        levels = rng.integers(2, 12)  # few distinct values: many ties within and across the sets
        a = rng.integers(0, levels, n_in) / levels
        b = rng.integers(0, levels, n_out) / levels - rng.integers(0, 2) / levels
        assert best_threshold(a, b) == best_threshold_exhaustive(a, b, max_block=37)
    continuous = rng.normal(size=2000)
    assert best_threshold(continuous[:900], continuous[900:]) == best_threshold_exhaustive(continuous[:900],
                                                                                           continuous[900:])


def test_per_class_thresholds_global_fallback_and_top1_global():
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.8, 0.2], [0.4, 0.6]])
    labels = torch.tensor([0, 0, 0, 1, 1])
    membership = np.array([1, 1, 0, 1, 1])  # class 1 has no non-members: falls back to the global
    conf = make_attack("conf").fit(Signals(probs=probs, labels=labels), membership)
    # class 0: members {0.9, 0.6}, non-member 0.3 -> 0.6; global: members {.9,.6,.2,.6} vs .3 -> 0.6
    assert conf.thresholds_[0] == pytest.approx(0.6)
    assert conf.thresholds_[1] == conf.global_threshold_
    top1 = make_attack("top1_conf").fit(Signals(probs=probs, labels=labels), membership)
    assert np.all(top1.thresholds_ == top1.global_threshold_)
    scores = top1.predict_proba(Signals(probs=probs, labels=labels))
    np.testing.assert_allclose(scores, probs.max(1).values.double().numpy() - top1.global_threshold_)


# ---- all attacks on synthetic signals ----------------------------------------------------------
@pytest.fixture(scope="module")
def separable():
    return labelled(1000, separable=True, seed=0), labelled(1000, separable=True, seed=10)


@pytest.fixture(scope="module")
def same_distribution():
    return labelled(2000, separable=False, seed=20), labelled(2000, separable=False, seed=30)


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_attack_finds_separable_members(name, separable):
    (shadow, m_shadow), (target, m_target) = separable
    attack = make_attack(name, seed=1, **FAST.get(name, {})).fit(shadow, m_shadow)
    assert attack.score(target, m_target) > 0.8
    assert set(np.unique(attack.predict(target))) <= {0, 1}


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_attack_is_chance_when_members_look_like_nonmembers(name, same_distribution):
    (shadow, m_shadow), (target, m_target) = same_distribution
    attack = make_attack(name, seed=1, **FAST.get(name, {})).fit(shadow, m_shadow)
    assert abs(attack.score(target, m_target) - 0.5) < 0.05


def fitted_state(attack) -> dict:
    state = {}
    for key, value in vars(attack).items():
        if key.endswith("_"):
            if isinstance(value, torch.nn.Module):
                value = {k: v.clone() for k, v in value.state_dict().items()}
            state[key] = value.copy() if isinstance(value, np.ndarray) else value
    return state


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and a
    for key in a:
        if isinstance(a[key], dict):
            assert a[key].keys() == b[key].keys()
            for k in a[key]:
                assert torch.equal(a[key][k], b[key][k]), (key, k)
        else:
            np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_fit_uses_shadow_data_only(name):
    shadow, m_shadow = labelled(150, separable=True, seed=40)
    params = {"epochs": 1} if name in FAST else {}
    attack = make_attack(name, seed=3, **params).fit(shadow, m_shadow)
    before = fitted_state(attack)
    for seed in (50, 60):  # two different target sets
        target, _ = labelled(100, separable=True, seed=seed)
        attack.predict_proba(target)
        attack.predict(target)
    assert_same_state(before, fitted_state(attack))
    fresh = make_attack(name, seed=3, **params).fit(shadow, m_shadow)  # no target data ever seen
    assert_same_state(before, fitted_state(fresh))


def test_registry_matches_config_and_rejects_unknown_names():
    assert ATTACK_NAMES == ATTACKS
    assert [make_attack(n).label_only for n in ATTACK_NAMES] == [n == "blindmi" for n in ATTACK_NAMES]
    assert make_attack("nn", seed=5, epochs=2).seed == 5
    with pytest.raises(ConfigError, match="samia"):
        make_attack("lira")
    with pytest.raises(RuntimeError, match="not fitted"):
        make_attack("conf").predict(labelled(5, separable=True, seed=0)[0])


# ---- SAMIA -------------------------------------------------------------------------------------
def test_samia_layer_shapes_and_parameter_count():
    classes = 10
    model = SAMIAModel(classes)
    # embed 3*64 + 64 = 256. Per encoder block: in_proj 64*192 + 192 = 12480, out_proj 64*64 + 64
    # = 4160, feed-forward 64*128 + 128 + 128*64 + 64 = 16576, two LayerNorms 2 * 128 = 256:
    # 33472; three blocks 100416. Head: 640*64 + 64 = 41024 and 64*2 + 2 = 130.
    assert sum(p.numel() for p in model.parameters()) == 256 + 3 * 33472 + 41024 + 130 == 141826
    assert model.embed.weight.shape == (64, 3)
    assert len(model.encoder.layers) == 3
    block = model.encoder.layers[0]
    assert block.self_attn.num_heads == 4 and block.self_attn.in_proj_weight.shape == (192, 64)
    assert block.linear1.weight.shape == (128, 64) and block.linear2.weight.shape == (64, 128)
    assert block.norm_first is False and block.dropout.p == 0.2
    assert model.hidden.weight.shape == (64, 640) and model.out.weight.shape == (2, 64)
    assert model(torch.rand(7, classes, 3)).shape == (7, 2)


def test_samia_needs_sensitivity_and_follows_the_paper_schedule():
    shadow, membership = labelled(20, separable=True, seed=0)
    no_sens = Signals(probs=shadow.probs, labels=shadow.labels)
    with pytest.raises(ValueError, match="sensitivity"):
        make_attack("samia", epochs=1).fit(no_sens, membership)
    attack = make_attack("samia")
    assert isinstance(attack, ClassifierAttack) and attack.epochs == 100
    opt, scheduler = attack.optimizer(SAMIAModel(10))
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    assert lrs[49] == pytest.approx(0.01) and lrs[50] == pytest.approx(0.001)
    assert lrs[74] == pytest.approx(0.001) and lrs[75] == pytest.approx(0.0001)
    assert opt.defaults["momentum"] == 0.9 and opt.defaults["weight_decay"] == 5e-4


# ---- BlindMI -----------------------------------------------------------------------------------
def blindmi_direct(features: torch.Tensor, reference: torch.Tensor) -> np.ndarray:
    """The authors' loop for one batch, one MMD evaluation per candidate."""
    member = np.ones(len(features), dtype=bool)
    while True:
        current = mmd(reference, features[torch.as_tensor(member)])
        move = np.zeros_like(member)
        for i in np.flatnonzero(member):
            rest = member.copy()
            rest[i] = False
            if rest.any() and mmd(torch.cat([reference, features[i:i + 1]]), features[torch.as_tensor(rest)]) > current:
                move[i] = True
        if not move.any():
            return member
        member &= ~move


def test_blindmi_vectorised_moves_equal_the_direct_procedure():
    for seed in range(6):
        sig, _ = labelled(10, separable=seed % 2 == 0, seed=100 + seed)  # 20 rows: one batch
        attack = make_attack("blindmi", seed=seed, n_reference=20).fit()
        decision = attack.predict_proba(sig)  # reference = all 20 transformed rows
        expected = blindmi_direct(blindmi_features(sig.probs, sig.labels),
                                  blindmi_features(sig.ref_probs, sig.labels))
        np.testing.assert_array_equal(decision, expected.astype(np.float64))


def test_blindmi_needs_reference_outputs():
    sig, _ = labelled(30, separable=True, seed=0)
    with pytest.raises(ValueError, match="ref_probs"):
        make_attack("blindmi").fit().predict(Signals(probs=sig.probs, labels=sig.labels))


def without_dropout(cls: type[ClassifierAttack]) -> type[ClassifierAttack]:
    """The attack `cls` with every dropout of its network off, so that two fits can match exactly."""
    class Deterministic(cls):
        def build(self, inputs):
            model = super().build(inputs)
            for module in model.modules():
                if isinstance(module, torch.nn.Dropout):
                    module.p = 0.0
                if isinstance(module, torch.nn.MultiheadAttention):
                    module.dropout = 0.0
            return model
    return Deterministic


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
@pytest.mark.parametrize("name", ["nn", "top3_nn", "nncls", "samia"])
def test_graphed_attack_training_follows_the_eager_loop(name, separable):
    (shadow, m_shadow), (target, m_target) = separable
    shadow, target = shadow.to("cuda"), target.to("cuda")
    assert len(shadow) % 128 != 0  # full batches replay the graphs, the last one runs eagerly
    before = {name: value.clone() for name, value in vars(shadow).items() if value is not None}
    fitted = {}
    for graph in (False, True):
        attack = without_dropout(type(make_attack(name)))(seed=1, **FAST[name])
        attack.cuda_graph = graph
        fitted[graph] = attack.fit(shadow, m_shadow)
        assert "forward" not in vars(attack.model_)  # the module's own forward is back
    eager, graphed = (dict(fitted[g].model_.named_parameters()) for g in (False, True))
    for key, value in eager.items():
        assert torch.allclose(graphed[key], value, rtol=1e-4, atol=1e-5), key
    with_dropout = make_attack(name, seed=1, **FAST[name]).fit(shadow, m_shadow)  # graphed, dropout on
    assert with_dropout.score(target, m_target) > 0.8
    for key, value in before.items():  # the graphs' input buffer must not alias the caller's signals
        assert torch.equal(getattr(shadow, key), value), key
