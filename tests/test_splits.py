"""The seeded target / shadow splits: sizes as the paper's, disjoint where they must be, reproducible."""

from __future__ import annotations

import json
import math

import pytest
import torch

from miaray.data import Split, Splits, make_splits

# docs/science.md, Splits and sizes: dataset size -> (train, val, test) of every model.
REFERENCE_SIZES = {
    "cifar10": (60_000, (13_500, 3_000, 13_500)),
    "svhn": (99_289, (22_340, 4_964, 22_340)),
    "chmnist": (5_000, (1_125, 250, 1_125)),
    "purchase": (197_324, (44_398, 9_866, 44_398)),
    "texas": (67_330, (15_148, 3_367, 15_150)),
    "location": (5_010, (1_126, 251, 1_128)),
}


def _sizes(split: Split) -> tuple[int, int, int]:
    return len(split.train), len(split.val), len(split.test)


def _set(*tensors: torch.Tensor) -> set[int]:
    return set(torch.cat(tensors).tolist())


@pytest.mark.parametrize("name", REFERENCE_SIZES)
def test_sizes_equal_the_reference(name):
    n, expected = REFERENCE_SIZES[name]
    splits = make_splits(n, seed=0, num_shadows=2)
    assert _sizes(splits.target) == expected
    for shadow in splits.shadows:
        # The shadow half has ceil(n/2) samples: for odd n (SVHN) its test part is one larger.
        assert _sizes(shadow)[:2] == expected[:2]
        assert sum(_sizes(shadow)) == math.ceil(n / 2)


def test_size_rule_by_hand_for_texas():
    # half = 67,330 // 2 = 33,665; test = ceil(0.45 * 33,665) = ceil(15,149.25) = 15,150;
    # rest = 18,515; val = ceil(0.1818 * 18,515) = ceil(3,366.03) = 3,367; train = 18,515 - 3,367.
    assert _sizes(make_splits(67_330, seed=3, num_shadows=1).target) == (15_148, 3_367, 15_150)


@pytest.mark.parametrize("n, seed", [(5_010, 0), (1_001, 7), (8, 1)])
def test_members_and_non_members_are_disjoint_and_halves_separate(n, seed):
    splits = make_splits(n, seed=seed, num_shadows=5)
    target_half = _set(splits.target.train, splits.target.val, splits.target.test)
    shadow_half = set(range(n)) - target_half
    assert len(target_half) == n // 2 and len(shadow_half) == math.ceil(n / 2)
    for role in splits.roles():
        split = splits.role(role)
        parts = [set(part.tolist()) for part in (split.train, split.val, split.test)]
        assert all(part.dtype == torch.int64 for part in (split.train, split.val, split.test))
        assert sum(map(len, parts)) == len(set.union(*parts))  # no index twice, no overlap between parts
        assert parts[0].isdisjoint(parts[2]) and parts[0].isdisjoint(parts[1]) and parts[1].isdisjoint(parts[2])
        # The target uses exactly the target half; every shadow re-splits all of the shadow half.
        assert set.union(*parts) == (target_half if role == "target" else shadow_half)


def test_shadows_resplit_the_shadow_half_each_with_its_own_seed():
    splits = make_splits(2_000, seed=10, num_shadows=3)
    trains = [set(shadow.train.tolist()) for shadow in splits.shadows]
    assert trains[0] != trains[1] and trains[1] != trains[2] and trains[0] != trains[2]
    assert trains[0] & trains[1]  # overlapping shadow training sets, as in the authors' code
    # Shadow i depends on (seed, i) only: asking for fewer shadows leaves the others unchanged.
    fewer = make_splits(2_000, seed=10, num_shadows=2)
    for kept, shadow in zip(fewer.shadows, splits.shadows):
        assert torch.equal(kept.train, shadow.train) and torch.equal(kept.test, shadow.test)


def test_same_seed_same_split_other_seed_other_split():
    first, again, other = (make_splits(1_000, seed=s) for s in (4, 4, 5))
    for role in first.roles():
        a, b, c = first.role(role), again.role(role), other.role(role)
        assert all(torch.equal(getattr(a, p), getattr(b, p)) for p in ("train", "val", "test"))
        assert not torch.equal(a.train, c.train)


def test_roles_and_bad_role_names():
    splits = make_splits(100, seed=0, num_shadows=2)
    assert splits.roles() == ["target", "shadow0", "shadow1"]
    assert splits.role("target") is splits.target and splits.role("shadow1") is splits.shadows[1]
    for bad in ("shadow2", "victim", "shadow", "shadow-1"):
        with pytest.raises(ValueError, match="valid roles: target, shadow0, shadow1"):
            splits.role(bad)


def test_to_dict_is_plain_json_and_round_trips():
    splits = make_splits(300, seed=2, num_shadows=2)
    data = json.loads(json.dumps(splits.to_dict()))
    restored = Splits.from_dict(data)
    assert (restored.n, restored.seed) == (300, 2) and restored.roles() == splits.roles()
    for role in splits.roles():
        for part in ("train", "val", "test"):
            assert torch.equal(getattr(restored.role(role), part), getattr(splits.role(role), part))
            assert getattr(restored.role(role), part).dtype == torch.int64


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="n=7"):
        make_splits(7, seed=0)
    with pytest.raises(ValueError, match="num_shadows=0"):
        make_splits(100, seed=0, num_shadows=0)


@pytest.mark.parametrize("split", [(50, 40, 10), (60, 30, 10), (70, 20, 10)])
@pytest.mark.parametrize("n, seed", [(60_000, 0), (1_797, 5)])
def test_other_splits_keep_members_and_non_members_apart_in_the_requested_proportions(split, n, seed):
    splits = make_splits(n, seed=seed, num_shadows=3, split=split)
    target_half = _set(splits.target.train, splits.target.val, splits.target.test)
    for role in splits.roles():
        s = splits.role(role)
        parts = [set(part.tolist()) for part in (s.train, s.val, s.test)]
        assert sum(map(len, parts)) == len(set.union(*parts))  # no index in two parts
        assert set.union(*parts) == (target_half if role == "target" else set(range(n)) - target_half)
        # sklearn's rounding: test takes its share of the half or one sample more (ceil), validation is
        # within one sample of its share (ceil of a remainder already short), train the rest; `test_size = val / (train + val)` of what the test split leaves.
        half = len(set.union(*parts))
        train, test, val = (pct * half / 100 for pct in split)
        assert test <= len(s.test) < test + 1 and abs(len(s.val) - val) < 1
        assert abs(len(s.train) - train) < 2


def test_the_paper_split_is_the_default_and_other_splits_differ():
    default = make_splits(5_010, seed=2, num_shadows=1)
    paper = make_splits(5_010, seed=2, num_shadows=1, split=(45, 45, 10))
    other = make_splits(5_010, seed=2, num_shadows=1, split=(60, 30, 10))
    assert all(torch.equal(getattr(default.target, p), getattr(paper.target, p)) for p in ("train", "val", "test"))
    assert _sizes(other.target) == (1_502, 251, 752)  # h = 2,505: test ceil(751.5), val ceil(1,753 / 7)
    assert _set(*_parts(other.target)) == _set(*_parts(default.target))  # the same target half


def _parts(split: Split) -> tuple[torch.Tensor, ...]:
    return split.train, split.val, split.test


@pytest.mark.parametrize("split", [(50, 50, 10), (0, 90, 10), (45.0, 45.0, 10.0), (90, 10)])
def test_bad_split_is_named(split):
    with pytest.raises(ValueError, match="split=.*three positive integer percentages"):
        make_splits(1_000, seed=0, split=split)


def test_too_small_for_a_split_names_n_and_the_split():
    make_splits(8, seed=0)  # 4 per half: 1 train, 1 val, 2 test
    with pytest.raises(ValueError, match="n=40 is too small for the 1/98/1 split"):
        make_splits(40, seed=0, split=(1, 98, 1))


# ---- reference models (online LiRA / RMIA) ----------------------------------------------------------
def _in_counts(splits: Splits, n: int) -> torch.Tensor:
    """For every dataset index: how many reference models train on it."""
    counts = torch.zeros(n, dtype=torch.int64)
    for reference in splits.references:
        counts[reference.train] += 1
    return counts


@pytest.mark.parametrize("n, seed", [(5_000, 0), (1_001, 3)])
def test_each_pool_sample_is_in_for_half_of_the_references(n, seed):
    splits = make_splits(n, seed=seed, num_shadows=2, num_references=8)
    pool = torch.cat([splits.target.train, splits.target.test])
    counts = _in_counts(splits, n)
    # Complementary pairs: every pool sample is IN for exactly k of the first 2k reference models.
    for k in (1, 2, 4):
        prefix = Splits(n=n, seed=seed, target=splits.target, shadows=splits.shadows,
                        references=splits.references[:2 * k])
        assert torch.equal(_in_counts(prefix, n)[pool], torch.full((len(pool),), k))
    outside = torch.ones(n, dtype=torch.bool)
    outside[pool] = False
    assert counts[outside].sum() == 0  # no reference model trains outside the target's pool
    # Each reference trains on half of the pool, and its halves differ from pair to pair.
    trains = [set(r.train.tolist()) for r in splits.references]
    assert all(len(t) in (len(pool) // 2, (len(pool) + 1) // 2) for t in trains)
    assert trains[0] != trains[2] and trains[0] & trains[2]


def test_an_odd_number_of_references_gives_each_sample_half_rounded_either_way():
    splits = make_splits(2_000, seed=1, num_shadows=1, num_references=3)
    pool = torch.cat([splits.target.train, splits.target.test])
    counts = _in_counts(splits, 2_000)[pool]
    assert set(counts.tolist()) == {1, 2}
    # the lone third model takes a random half of the pool
    assert (counts == 2).sum() == len(pool) // 2


def test_reference_splits_stay_in_the_pool_and_validate_outside_it():
    splits = make_splits(3_000, seed=4, num_shadows=2, num_references=4)
    pool = _set(splits.target.train, splits.target.test)
    assert splits.target_pool().tolist() == splits.target.train.tolist() + splits.target.test.tolist()
    assert set(splits.shadow_half().tolist()) == set(range(3_000)) - _set(*_parts(splits.target))
    assert torch.equal(splits.shadow_half(), splits.shadow_half().sort().values)
    for i in range(4):
        reference = splits.role(f"reference{i}")
        train, test, val = (set(part.tolist()) for part in (reference.train, reference.test, reference.val))
        assert train | test == pool and not train & test  # members and non-members split the pool
        assert torch.equal(reference.val, splits.target.val) and not val & pool


def test_references_leave_target_and_shadows_unchanged_and_do_not_depend_on_their_number():
    plain = make_splits(2_500, seed=7, num_shadows=3)
    with_refs = make_splits(2_500, seed=7, num_shadows=3, num_references=6)
    fewer = make_splits(2_500, seed=7, num_shadows=3, num_references=3)
    assert with_refs.roles() == plain.roles() + [f"reference{i}" for i in range(6)]
    for role in plain.roles():
        assert all(torch.equal(getattr(plain.role(role), part), getattr(with_refs.role(role), part))
                   for part in ("train", "val", "test"))
    for i in range(3):  # reference i is the same model whether 3 or 6 were asked for
        assert torch.equal(fewer.role(f"reference{i}").train, with_refs.role(f"reference{i}").train)
    again, other = (make_splits(2_500, seed=s, num_shadows=3, num_references=6) for s in (7, 8))
    assert torch.equal(again.role("reference5").train, with_refs.role("reference5").train)
    assert not torch.equal(other.role("reference0").train, with_refs.role("reference0").train)


def test_reference_roles_round_trip_and_bad_names():
    splits = make_splits(300, seed=2, num_shadows=1, num_references=2)
    restored = Splits.from_dict(json.loads(json.dumps(splits.to_dict())))
    assert restored.roles() == ["target", "shadow0", "reference0", "reference1"]
    assert torch.equal(restored.role("reference1").test, splits.role("reference1").test)
    for bad in ("reference2", "reference", "reference-1"):
        with pytest.raises(ValueError, match="valid roles: target, shadow0, reference0, reference1"):
            splits.role(bad)
    with pytest.raises(ValueError, match="num_references=-1"):
        make_splits(300, seed=0, num_references=-1)
