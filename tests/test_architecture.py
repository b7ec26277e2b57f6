"""docs/architecture.md's recipe for a new attack, run as written: its code block is executed, registers a
toy attack, and a real unit runs it on the pruned and the unpruned target."""

from __future__ import annotations

import re
import types
from pathlib import Path

import numpy as np
import pytest

from miaray.attacks import ATTACK_CLASSES, unregister_attack
from miaray.config import ConfigError, TrainConfig, UnitConfig
from miaray.store import Store
from miaray.unit import unit_result
from miaray.vocabulary import attack_names

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


@pytest.fixture
def margin_attack():
    """The doc's attack module, imported (its code executed) and registered; unregistered afterwards."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 1, "docs/architecture.md shows one attack"
    module = types.ModuleType("margin_attack")
    exec(compile(blocks[0], str(DOC), "exec"), module.__dict__)
    yield module.MarginAttack
    unregister_attack("margin")


def test_a_toy_attack_added_as_the_doc_says_runs_in_a_unit(margin_attack, tmp_path):
    assert ATTACK_CLASSES["margin"] is margin_attack and attack_names()[-1] == "margin"
    config = UnitConfig(dataset="synthetic_tabular", arch="fc", num_shadows=1, attacks=("conf", "margin"),
                        train=TrainConfig(max_epochs=2)).validate()
    result = unit_result(config, store=Store(tmp_path), device="cpu", log=lambda message: None)
    rows = {(row["target_model"], row["attack"]): row for row in result.rows}
    assert set(rows) == {(model, attack) for model in ("pruned", "original") for attack in ("conf", "margin")}
    for model in ("pruned", "original"):
        row = rows[model, "margin"]
        assert row["status"] == "ok" and row["attack_status"] == "ok", row
        assert 0 <= row["attack_auc"] <= 1 and row["n_members"] > 0 and row["n_nonmembers"] > 0
        scores = result.scores[(result.scores["attack"] == "margin") & (result.scores["target_model"] == model)]
        assert len(scores) == row["n_members"] + row["n_nonmembers"] and np.isfinite(scores["score"]).all()
    assert set(result.roc["attack"]) == {"conf", "margin"}


def test_registration_is_checked_and_undone(margin_attack):
    from miaray.attacks import register_attack

    with pytest.raises(ValueError, match="already registered"):
        register_attack(margin_attack)
    with pytest.raises(TypeError, match="not an Attack subclass"):
        register_attack(object)
    unregister_attack("margin")
    with pytest.raises(ConfigError, match="'margin' is not valid"):
        UnitConfig(dataset="synthetic_tabular", arch="fc", attacks=("margin",)).validate()
    with pytest.raises(ValueError, match="not a registered attack"):
        unregister_attack("conf")
    register_attack(margin_attack)  # for the fixture to undo
