"""Bad configuration is rejected before training, naming the field and the valid values."""

import pytest

from miaray.config import ConfigError, UnitConfig


@pytest.mark.parametrize("changes, words", [
    ({"dataset": "mnist"}, ["dataset='mnist'", "cifar10", "digits"]),
    ({"arch": "resnet50"}, ["arch='resnet50'", "resnet18", "densenet121"]),
    ({"method": "random"}, ["method='random'", "l1_unstructured", "slimming"]),
    ({"sparsity": 1.2}, ["sparsity=1.2"]),
    ({"attacks": ("conf", "lira")}, ["attacks='lira'", "samia"]),
    ({"defense": "dropout"}, ["defense='dropout'", "ppb"]),
    ({"defense": "ppb", "defense_params": (("alpha", 1.0),)}, ["defense_params[ppb]", "lambda"]),
    ({"arch": "fc"}, ["arch='fc'", "tabular"]),
    ({"shadow_method": "l2_structured", "dataset": "synthetic_tabular", "arch": "fc"}, ["shadow_method"]),
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


def test_roundtrip_dict():
    config = UnitConfig(dataset="digits", arch="resnet18", defense="dp", defense_params=(("noise_multiplier", 2.0),))
    assert UnitConfig.from_dict(config.to_dict()) == config
    assert config.resolved_defense_params["noise_multiplier"] == 2.0
    assert config.resolved_defense_params["delta"] == 1e-5
