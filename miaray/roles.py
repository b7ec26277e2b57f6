"""The models of a unit by role, and the seeds that keep them apart.

A role names one model of a unit: 'target', 'shadow<i>' (the attacker's models, trained on the other
half of the data) or 'reference<j>' (reference models: trained on random halves of the target's pool,
read by the online likelihood-ratio attacks). Target and shadows are built by the same code with another
role; the role decides only the model's data split and its seed.
"""

from __future__ import annotations

ROLE_KINDS = ("target", "shadow", "reference")

# Seeds go to sklearn's train_test_split (the shadow i split uses seed + i), whose random_state must lie
# in [0, 2**32 - 1]; the role seeds (`role_seed`) go to torch, which takes up to 2**64 - 1.
MAX_SEED = 2**32 - 1
# Role seeds: seed * ROLE_SEED_STRIDE + the role's offset (target 0, shadow i 1 + i, reference j
# REFERENCE_SEED_OFFSET + j) initialise a model and order its batches; its fine-tuning after pruning
# adds FINETUNE_SEED_OFFSET. The counts below keep all of them apart within a seed: originals in
# [0, 500), fine-tunings in [500, 1000).
ROLE_SEED_STRIDE, REFERENCE_SEED_OFFSET, FINETUNE_SEED_OFFSET = 1000, 200, 500
MAX_SHADOWS = REFERENCE_SEED_OFFSET - 1                         # 199
MAX_REFERENCES = FINETUNE_SEED_OFFSET - REFERENCE_SEED_OFFSET   # 300


def role_index(role: str) -> tuple[str, int]:
    """A role name as (kind, index): 'target' -> ('target', 0), 'shadow3' -> ('shadow', 3)."""
    for kind in ROLE_KINDS:
        index = role.removeprefix(kind)
        if role.startswith(kind) and (index.isdigit() if kind != "target" else not index):
            return kind, int(index or 0)
    raise ValueError(f"unknown role {role!r}: 'target', 'shadow<i>' or 'reference<j>'")


def role_kind(role: str) -> str:
    """What a role name is: 'target', 'shadow' ('shadow<i>') or 'reference' ('reference<j>')."""
    return role_index(role)[0]


def shadow_roles(num_shadows: int) -> list[str]:
    return [f"shadow{i}" for i in range(num_shadows)]


def reference_roles(num_references: int) -> list[str]:
    return [f"reference{j}" for j in range(num_references)]


def roles(num_shadows: int, num_references: int = 0) -> list[str]:
    """Every model of a unit: the target, the shadows, the reference models."""
    return ["target", *shadow_roles(num_shadows), *reference_roles(num_references)]


def role_seed(seed: int, role: str) -> int:
    """Seed of a model's initialisation and batch order: distinct per role, fixed per seed (its
    fine-tuning after pruning uses `finetune_seed`)."""
    kind, index = role_index(role)
    offset = {"target": 0, "shadow": 1 + index, "reference": REFERENCE_SEED_OFFSET + index}[kind]
    return seed * ROLE_SEED_STRIDE + offset


def finetune_seed(seed: int, role: str) -> int:
    """Seed of a pruned model's fine-tuning: apart from every original's of the same seed."""
    return role_seed(seed, role) + FINETUNE_SEED_OFFSET
