"""Bad configuration is rejected before training, naming the field and the valid values."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from miaray.config import ConfigError, TrainConfig, UnitConfig
from miaray.unit import main as unit_main


@pytest.mark.parametrize("changes, words", [
    ({"dataset": "mnist"}, ["dataset='mnist'", "cifar10", "digits"]),
    ({"arch": "resnet50"}, ["arch='resnet50'", "resnet18", "densenet121"]),
    ({"method": "random"}, ["method='random'", "l1_unstructured", "slimming"]),
    ({"sparsity": 1.2}, ["sparsity=1.2"]),
    ({"attacks": ("conf", "lira_online")}, ["attacks='lira_online'", "samia", "rmia_offline"]),
    ({"attacks": ()}, ["attacks is empty", "conf"]),
    ({"attacks": ("conf", "conf")}, ["attacks=conf, conf names an attack twice"]),
    ({"original_attacks": ("lira_online",)}, ["original_attacks='lira_online'", "samia"]),
    ({"original_attacks": ()}, ["original_attacks is empty"]),
    ({"defense": "dropout"}, ["defense='dropout'", "ppb"]),
    ({"defense": "ppb", "defense_params": (("alpha", 1.0),)}, ["defense_params[ppb]", "lambda"]),
    ({"arch": "fc"}, ["arch='fc'", "tabular"]),
    ({"shadow_method": "l2_structured", "dataset": "synthetic_tabular", "arch": "fc"}, ["shadow_method"]),
    ({"split": (50, 50, 10)}, ["split=50/50/10", "three positive integer", "summing to 100", "45/45/10"]),
    ({"split": (0, 90, 10)}, ["split=0/90/10", "positive"]),
    ({"split": "45/45/10"}, ["split='45/45/10'", "three positive integer"]),
    # LiRA / RMIA: reference models, shadows and query augmentations they need
    ({"attacks": ("conf", "lira")}, ["'lira'", "even num_references >= 2, got 0"]),
    ({"attacks": ("lira",), "num_references": 3}, ["even num_references >= 2, got 3"]),
    ({"attacks": ("rmia",)}, ["'rmia'", "num_references >= 1, got 0"]),
    ({"original_attacks": ("rmia",)}, ["'rmia'", "num_references >= 1"]),
    ({"attacks": ("conf",), "num_references": 4}, ["num_references=4", "no online attack (lira, rmia)"]),
    ({"attacks": ("rmia_offline",), "num_shadows": 1}, ["'rmia_offline'", "num_shadows >= 2, got 1"]),
    ({"attacks": ("rmia",), "num_references": 301}, ["num_references=301", "[0, 300]"]),
    ({"num_shadows": 200}, ["num_shadows=200", "[1, 199]"]),
    ({"attacks": ("rmia",), "num_references": 1, "query_shift": 1}, ["LiRA's query augmentations"]),
    ({"attacks": ("lira_offline",), "query_shift": 5}, ["query_shift=5", "[0, 4]"]),
    ({"attacks": ("lira_offline",), "query_mirror": 1}, ["query_mirror=1", "True or False"]),
    ({"attacks": ("lira_offline",), "query_mirror": True, "dataset": "synthetic_tabular", "arch": "fc"},
     ["tabular"]),
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


# ---- every value a unit takes, checked before any training -----------------------------------------------
NAN, INF = float("nan"), float("inf")


def _defense(defense: str, name: str, value: float) -> dict:
    return {"defense": defense, "defense_params": ((name, value),)}


BAD_VALUES = [  # (UnitConfig fields, the words the message must hold)
    (_defense("ppb", "lambda", -1.0), "defense_params[ppb].lambda=-1.0 is not valid: give a finite number >= 0"),
    (_defense("ppb", "lambda", NAN), "defense_params[ppb].lambda=nan"),
    (_defense("ppb", "lambda", INF), "defense_params[ppb].lambda=inf"),
    (_defense("dp", "noise_multiplier", -0.5), "noise_multiplier=-0.5 is not valid: give a finite number >= 0"),
    (_defense("dp", "noise_multiplier", NAN), "noise_multiplier=nan"),
    (_defense("dp", "max_grad_norm", 0.0), "max_grad_norm=0.0 is not valid: give a finite number > 0"),
    (_defense("dp", "delta", 0.0), "delta=0.0 is not valid: give a finite number in (0, 1)"),
    (_defense("dp", "delta", 1.0), "delta=1.0 is not valid: give a finite number in (0, 1)"),
    (_defense("dp", "delta", NAN), "delta=nan"),
    (_defense("adv", "k", 0.0), "defense_params[adv].k=0 is not valid: give an integer >= 1"),
    (_defense("adv", "k", 1.5), "defense_params[adv].k=1.5 is not valid: give an integer >= 1"),
    (_defense("adv", "alpha", -2.0), "defense_params[adv].alpha=-2.0"),
    (_defense("adv", "alpha", NAN), "defense_params[adv].alpha=nan"),
    ({"width": NAN}, "width=nan is not valid: give a finite number > 0"),
    ({"width": INF}, "width=inf"),
    ({"width": 0.0}, "width=0.0"),
    ({"sparsity": NAN}, "sparsity=nan is not valid: give a finite number in (0, 1)"),
    ({"shadow_sparsity": NAN}, "shadow_sparsity=nan is not valid: give a finite number in [0, 1)"),
    ({"seed": -1}, "seed=-1 is not valid: give an integer in [0, 4294967290] (shadow i splits with seed + i"),
    ({"seed": 2**32 - 5}, "seed=4294967291 is not valid: give an integer in [0, 4294967290]"),  # 6 shadows
    ({"seed": 1.5}, "seed=1.5 is not valid: give an integer"),
    ({"num_shadows": 0}, "num_shadows=0 is not valid: give an integer in [1, 199]"),
    ({"attacks": ()}, "attacks is empty"),
    ({"attack_epochs": 0}, "attack_epochs=0 is not valid: give an integer >= 1"),
    ({"train": TrainConfig(max_epochs=0)}, "train.max_epochs=0 is not valid: give an integer >= 1"),
    ({"train": TrainConfig(finetune_epochs=2.5)}, "train.finetune_epochs=2.5"),
    ({"train": TrainConfig(lr=NAN)}, "train.lr=nan is not valid: give a finite number > 0"),
    ({"train": TrainConfig(lr=INF)}, "train.lr=inf"),
    ({"train": TrainConfig(batch_size=NAN)}, "train.batch_size=nan is not valid: give an integer >= 1"),
    ({"train": TrainConfig(batch_size=0)}, "train.batch_size=0"),
    ({"train": TrainConfig(patience=INF)}, "train.patience=inf is not valid: give an integer >= 1"),
    ({"train": TrainConfig(weight_decay=NAN)}, "train.weight_decay=nan is not valid: give a finite number >= 0"),
]


@pytest.mark.parametrize("changes, message", BAD_VALUES, ids=[m.split(" is")[0] for _, m in BAD_VALUES])
def test_each_invalid_value_is_rejected_naming_the_field_and_the_range(changes, message):
    config = UnitConfig(**{"dataset": "digits", "arch": "resnet18", **({"num_shadows": 6} if "seed" in changes else {}),
                           **changes})
    with pytest.raises(ConfigError) as info:
        config.validate()
    assert message in str(info.value)


@pytest.mark.parametrize("changes", [
    _defense("dp", "noise_multiplier", 0.0),  # clipping only: epsilon is infinite
    _defense("adv", "k", 2.0),                # the command line gives floats
    _defense("ppb", "lambda", 0.0),
    {"seed": 2**32 - 5, "num_shadows": 5},    # the largest seed with 5 shadows
    {"shadow_sparsity": 0.0},
], ids=["dp_noise_0", "adv_k_2.0", "ppb_lambda_0", "largest_seed", "unpruned_shadows"])
def test_boundary_values_that_run_are_accepted(changes):
    UnitConfig(**{"dataset": "digits", "arch": "resnet18", **changes}).validate()


CLI_BAD = [
    (["--defense", "dp", "--defense-param", "noise_multiplier=nan"], "noise_multiplier=nan"),
    (["--defense", "dp", "--defense-param", "delta=1.5"], "delta=1.5"),
    (["--defense", "dp", "--defense-param", "max_grad_norm=0"], "max_grad_norm=0.0"),
    (["--defense", "adv", "--defense-param", "k=0"], "k=0"),
    (["--defense", "ppb", "--defense-param", "lambda=-4"], "lambda=-4.0"),
    (["--width", "nan"], "width=nan"),
    (["--width", "inf"], "width=inf"),
    (["--seed", "4294967296"], "seed=4294967296"),
    (["--seed", "-3"], "seed=-3"),
    (["--shadows", "0"], "--shadows=0"),  # the option typed, never the field (num_shadows)
    (["--max-epochs", "0"], "--max-epochs=0"),
    (["--patience", "0"], "--patience=0"),
    (["--attack-epochs", "0"], "--attack-epochs=0"),
    (["--attacks", ","], "--attacks ',' is empty"),
]


@pytest.mark.parametrize("args, message", CLI_BAD, ids=[m for _, m in CLI_BAD])
def test_the_unit_command_rejects_each_invalid_value_before_training(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as info:
        unit_main(["--dataset", "digits", "--arch", "resnet18", "--cache", str(tmp_path / "store"), *args])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and ("is not valid" in err or "is empty" in err)
    assert not (tmp_path / "store").exists()  # rejected before the store was even opened


def test_python_m_miaray_unit_exits_2_at_once_with_the_message(tmp_path):
    command = [sys.executable, "-m", "miaray.unit", "--dataset", "digits", "--arch", "resnet18",
               "--cache", str(tmp_path), "--defense", "dp", "--defense-param", "delta=0"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "--defense-param delta=0.0 is not valid: give a finite number in (0, 1)" in done.stderr
    assert not (tmp_path / "events.jsonl").exists()
