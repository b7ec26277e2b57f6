"""The store keys of a spread of units stay what an earlier miaray computed: a store written before a
change of the code that makes keys is read without rebuilding anything.

tests/data/store_keys_b0f52d4.json holds, per configuration, the hashes (the store's entry names,
`Store.path`) of every model, phi and original-target attack key, and the unit id, as commit b0f52d4
(before the configuration was split into miaray.vocabulary, miaray.roles and miaray.options) computed them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from miaray.config import UnitConfig, stable_hash
from miaray.store import Store
from miaray.unit.keys import original_attack_key

RECORDED = json.loads((Path(__file__).parent / "data" / "store_keys_b0f52d4.json").read_text())


def hashes(config: UnitConfig) -> dict:
    roles = config.roles()
    return {"unit_id": config.unit_id(),
            "original": {r: stable_hash(config.original_key(r)) for r in roles},
            "pruned": {r: stable_hash(config.pruned_key(r)) for r in roles},
            "model": {r: stable_hash(config.model_key(r)) for r in roles},
            "phi": {r: stable_hash(config.phi_key(config.model_key(r))) for r in roles},
            "original_attack": {a: stable_hash(original_attack_key(config, a))
                                for a in config.resolved_original_attacks}}


@pytest.mark.parametrize("recorded", RECORDED, ids=lambda r: f"{r['config']['dataset']}-{r['unit_id'][:6]}")
def test_keys_are_the_ones_an_earlier_store_was_written_under(recorded):
    config = UnitConfig.from_dict(recorded["config"]).validate()
    assert config.to_dict() == UnitConfig.from_dict(config.to_dict()).to_dict()
    assert hashes(config) == {k: v for k, v in recorded.items() if k != "config"}


def test_the_recorded_spread_covers_every_kind_of_key(tmp_path):
    kinds = {UnitConfig.from_dict(r["config"]).model_key(role)["kind"] for r in RECORDED for role in r["model"]}
    assert kinds == {"original", "pruned"}  # an unpruned shadow's model is its original
    configs = [UnitConfig.from_dict(r["config"]) for r in RECORDED]
    assert {c.defense for c in configs} == {"basic", "ppb", "dp", "adv"} and not all(c.finetune for c in configs)
    assert any(c.num_references for c in configs) and any(c.query_mirror for c in configs)
    # The entry's folder name is the hash: the same key finds the same entry.
    key = configs[0].original_key("target")
    assert Store(tmp_path).path(key) == tmp_path / "original" / RECORDED[0]["original"]["target"]
