"""Every preset measures something: the original target of each preset on embedded data, trained for
real at the preset's own settings (its first seed), reaches a stated test accuracy. A preset whose
original learns nothing (a 100-class set at 4 %) gives attacks and defense fronts that trade nothing.

One row of PRESET_FLOORS per (preset, width); a preset on embedded data without its rows fails
`test_every_embedded_preset_has_a_floor`. Floors sit a margin below the measured values noted beside
them (seed 0 target, `python -m pytest -q tests/test_presets.py`). Originals that two presets share
(the same cache key) are trained once.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from miaray.config import UnitConfig
from miaray.data.registry import EMBEDDED_DATASETS
from miaray.search import SEARCH_PRESETS
from miaray.store import Store
from miaray.sweep import PRESETS, UNKNOWN_PRESETS, GridSpec
from miaray.unit import make_context, original_model

PRESET_TABLES: dict[str, dict[str, GridSpec]] = {
    "full_grid.py": PRESETS, "unknown_pruning.py": UNKNOWN_PRESETS, "defense_search.py": SEARCH_PRESETS}


@dataclass(frozen=True)
class Floor:
    """The original target of `script --preset preset` at `width` reaches at least `test_acc`; with
    `min_gap` / `max_gap`, its train minus test accuracy lies in that range (the regime it stands for)."""

    script: str
    preset: str
    width: float
    test_acc: float
    min_gap: float | None = None
    max_gap: float | None = None

    @property
    def id(self) -> str:
        return f"{self.script.removesuffix('.py')}-{self.preset}-w{self.width:g}"

    def cell(self) -> UnitConfig:
        """The preset's first cell at this width: its target original is the one the preset trains."""
        return next(c for c in PRESET_TABLES[self.script][self.preset].cells() if c.width == self.width)


PRESET_FLOORS = (
    # digits, ResNet18 at width 0.125: measured train 1.000, test 0.807 (seed 0).
    Floor("full_grid.py", "quick", 0.125, test_acc=0.75),
    Floor("unknown_pruning.py", "quick", 0.125, test_acc=0.75),
    # The claims preset's two regimes (at most 30 epochs): width 0.125 overfits (measured train 1.000, test
    # 0.807, gap 0.193, at 100 epochs), width 0.5 generalises (measured train 0.995, test 0.909, gap 0.086).
    Floor("full_grid.py", "claims", 0.125, test_acc=0.75, min_gap=0.12),
    Floor("full_grid.py", "claims", 0.5, test_acc=0.86, max_gap=0.12),
    # The defenses preset (and its C6 study) stand on the claims preset's width-0.5 original (the same cache key,
    # trained once here): the regime where pruning at 0.9 raises leakage, before any defense.
    Floor("full_grid.py", "defenses", 0.5, test_acc=0.86, max_gap=0.12),
    Floor("unknown_pruning.py", "defenses", 0.5, test_acc=0.86, max_gap=0.12),
    # The beyond preset: the claims preset's width-0.5 original again (its cells also pruned without fine-tuning).
    Floor("full_grid.py", "beyond", 0.5, test_acc=0.86, max_gap=0.12),
    # mnist5k, ResNet18 at width 0.125, 8 epochs (the lira preset): measured at 12 epochs train 1.000, test 0.876.
    Floor("full_grid.py", "lira", 0.125, test_acc=0.8),
    # The quick defense search runs the defenses preset's cell: the same original.
    Floor("defense_search.py", "quick", 0.5, test_acc=0.86, max_gap=0.12),
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return Store(tmp_path_factory.mktemp("store"))


def test_every_embedded_preset_has_a_floor() -> None:
    pinned = {(f.script, f.preset, f.width) for f in PRESET_FLOORS}
    for script, presets in PRESET_TABLES.items():
        for name, spec in presets.items():
            if set(spec.datasets) <= set(EMBEDDED_DATASETS):
                for width in spec.widths:
                    assert (script, name, width) in pinned, f"{script} --preset {name} at width {width:g}"


@pytest.mark.parametrize("floor", PRESET_FLOORS, ids=lambda f: f.id)
def test_preset_original_reaches_its_floor(floor: Floor, store: Store) -> None:
    cell = floor.cell()
    _, meta = original_model(make_context(cell, store=store), "target")
    gap = meta["train_acc"] - meta["test_acc"]
    assert meta["test_acc"] >= floor.test_acc, (floor.id, meta)
    if floor.min_gap is not None:
        assert gap >= floor.min_gap, (floor.id, meta)
    if floor.max_gap is not None:
        assert gap <= floor.max_gap, (floor.id, meta)
