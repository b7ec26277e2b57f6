"""Bad configuration is rejected before training, naming the field and the valid values."""

import json

import pytest

from miaray.config import ConfigError, TrainConfig, UnitConfig


@pytest.mark.parametrize("changes, words", [
    ({"dataset": "mnist"}, ["dataset='mnist'", "cifar10", "digits"]),
    ({"arch": "resnet50"}, ["arch='resnet50'", "resnet18", "densenet121"]),
    ({"method": "random"}, ["method='random'", "l1_unstructured", "slimming"]),
    ({"sparsity": 1.2}, ["sparsity=1.2"]),
    ({"attacks": ("conf", "lira")}, ["attacks='lira'", "samia"]),
    ({"attacks": ()}, ["attacks is empty", "conf"]),
    ({"attacks": ("conf", "conf")}, ["attacks=conf, conf names an attack twice"]),
    ({"original_attacks": ("lira",)}, ["original_attacks='lira'", "samia"]),
    ({"original_attacks": ()}, ["original_attacks is empty"]),
    ({"defense": "dropout"}, ["defense='dropout'", "ppb"]),
    ({"defense": "ppb", "defense_params": (("alpha", 1.0),)}, ["defense_params[ppb]", "lambda"]),
    ({"arch": "fc"}, ["arch='fc'", "tabular"]),
    ({"shadow_method": "l2_structured", "dataset": "synthetic_tabular", "arch": "fc"}, ["shadow_method"]),
    ({"split": (50, 50, 10)}, ["split=50/50/10", "three positive integer", "summing to 100", "45/45/10"]),
    ({"split": (0, 90, 10)}, ["split=0/90/10", "positive"]),
    ({"split": "45/45/10"}, ["split='45/45/10'", "three positive integer"]),
])
def test_bad_field_is_named(changes, words):
    config = UnitConfig(**{"dataset": "digits", "arch": "resnet18", **changes})
    with pytest.raises(ConfigError) as info:
        config.validate()
    for word in words:
        assert word in str(info.value)


def test_keys_share_originals_across_cells():
    a = UnitConfig(dataset="digits", arch="resnet18", method="l1_unstructured", sparsity=0.5)
    b = UnitConfig(dataset="digits", arch="resnet18", method="slimming", sparsity=0.9, defense="ppb")
    assert a.original_key("shadow2") == b.original_key("shadow2")
    assert a.pruned_key("target") != b.pruned_key("target")
    # A non-adaptive shadow is undefended, so a defended target reuses the basic shadows.
    c = UnitConfig(dataset="digits", arch="resnet18", method="slimming", sparsity=0.9)
    assert b.pruned_key("shadow0") == c.pruned_key("shadow0")
    adaptive = UnitConfig(dataset="digits", arch="resnet18", method="slimming", sparsity=0.9,
                          defense="ppb", adaptive=True)
    assert adaptive.pruned_key("shadow0") == adaptive.pruned_key("target") | {"role": "shadow0"}


def test_split_decides_the_data_so_every_key_and_the_unit_id():
    paper = UnitConfig(dataset="digits", arch="resnet18")
    other = UnitConfig(dataset="digits", arch="resnet18", split=(60, 30, 10))
    assert paper.split == (45, 45, 10)
    for role in ("target", "shadow0"):
        assert paper.original_key(role) != other.original_key(role)
        assert paper.pruned_key(role) != other.pruned_key(role)
    assert paper.unit_id() != other.unit_id()


def test_finetune_budget_retrains_no_original():
    short = UnitConfig(dataset="digits", arch="resnet18", train=TrainConfig(max_epochs=10, finetune_epochs=2))
    long = UnitConfig(dataset="digits", arch="resnet18", train=TrainConfig(max_epochs=10, finetune_epochs=4))
    for role in ("target", "shadow1"):
        assert short.original_key(role) == long.original_key(role)
        assert short.pruned_key(role) != long.pruned_key(role)
    # The key holds the fine-tuning epochs that run: the default (max_epochs // 2) names the same model.
    default = UnitConfig(dataset="digits", arch="resnet18", train=TrainConfig(max_epochs=4))
    assert default.pruned_key("target") == UnitConfig(
        dataset="digits", arch="resnet18", train=TrainConfig(max_epochs=4, finetune_epochs=2)).pruned_key("target")


def test_roundtrip_dict():
    config = UnitConfig(dataset="digits", arch="resnet18", defense="dp", defense_params=(("noise_multiplier", 2.0),))
    assert UnitConfig.from_dict(config.to_dict()) == config
    other = UnitConfig(dataset="digits", arch="resnet18", split=(70, 20, 10), original_attacks=("conf", "samia"))
    assert UnitConfig.from_dict(json.loads(json.dumps(other.to_dict()))) == other  # a JSON list comes back a tuple
    assert config.resolved_defense_params["noise_multiplier"] == 2.0
    assert config.resolved_defense_params["delta"] == 1e-5


def test_the_default_epoch_cap_and_the_same_explicit_cap_are_one_model():
    default = UnitConfig(dataset="cifar10", arch="resnet18")
    explicit = UnitConfig(dataset="cifar10", arch="resnet18", train=TrainConfig(max_epochs=100, finetune_epochs=50))
    assert default.original_key("target") == explicit.original_key("target")
    assert default.pruned_key("shadow0") == explicit.pruned_key("shadow0")
    assert default.original_key("target") != UnitConfig(dataset="cifar10", arch="resnet18",
                                                          train=TrainConfig(max_epochs=99)).original_key("target")
