"""The artifact cache: atomic entries, one build under concurrency, weights-only loading, damaged entries
rebuilt, a dead builder's lock released."""

import json
import multiprocessing as mp
import os
import re
import signal
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from miaray.config import TrainConfig, UnitConfig
from miaray.store import Store
from miaray.unit import run_unit


def _slow_build_entry(root: str, out: "mp.Queue") -> None:
    store = Store(root)

    def build():
        time.sleep(1.0)  # long enough that both processes ask while the first is still building
        return {"w": torch.arange(4.0)}, {"note": "built"}

    payload, meta = store.get_or_build({"kind": "original", "name": "shared"}, build)
    out.put(payload["w"].tolist())


def test_two_processes_build_one_entry(tmp_path):
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_slow_build_entry, args=(str(tmp_path), out)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert [out.get(timeout=5), out.get(timeout=5)] == [[0.0, 1.0, 2.0, 3.0]] * 2
    store = Store(tmp_path)
    assert store.count_built() == 1
    entries = [p for p in (tmp_path / "original").iterdir()]
    assert len(entries) == 1 and not entries[0].name.startswith(".tmp")
    assert sorted(f.name for f in entries[0].iterdir()) == ["meta.json", "payload.pt"]


def test_second_request_loads_without_building(tmp_path):
    store = Store(tmp_path)
    calls = []

    def build():
        calls.append(1)
        return {"w": torch.ones(2)}, {}

    key = {"kind": "pruned", "a": 1, "b": [1, 2]}
    store.get_or_build(key, build)
    payload, meta = store.get_or_build({"b": [1, 2], "a": 1, "kind": "pruned"}, build)  # key order irrelevant
    assert calls == [1]
    assert meta["key"] == key
    assert torch.equal(payload["w"], torch.ones(2))
    assert store.count_built("pruned") == 1 and store.count_built("original") == 0


def test_failed_build_leaves_no_entry(tmp_path):
    store = Store(tmp_path)

    def build():
        raise RuntimeError("boom")

    key = {"kind": "original", "x": 1}
    try:
        store.get_or_build(key, build)
    except RuntimeError:
        pass
    assert not store.has(key)
    assert store.count_built() == 0


# ---- damaged entries heal ------------------------------------------------------------------------
KEY = {"kind": "original", "name": "damaged"}


def _truncate(entry):
    payload = entry / "payload.pt"
    payload.write_bytes(payload.read_bytes()[: payload.stat().st_size // 2])


def _flip_a_byte(entry):
    data = bytearray((entry / "payload.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size; torch.load would read it without complaint
    (entry / "payload.pt").write_bytes(bytes(data))


DAMAGE = {
    "truncated payload": (_truncate, "payload.pt has .* bytes, meta.json records"),
    "empty payload": (lambda e: (e / "payload.pt").write_bytes(b""), "payload.pt has 0 bytes"),
    "deleted payload": (lambda e: (e / "payload.pt").unlink(), "payload.pt is missing"),
    "altered payload": (_flip_a_byte, "does not match the SHA-256"),
    "garbage meta": (lambda e: (e / "meta.json").write_bytes(b"\x00\xffnot json"), "meta.json is unreadable"),
    "missing meta": (lambda e: (e / "meta.json").unlink(), "meta.json is missing"),
    "meta not an object": (lambda e: (e / "meta.json").write_text("[1, 2]"), "meta.json holds list"),
}


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_a_damaged_entry_is_set_aside_and_rebuilt(tmp_path, damage):
    store = Store(tmp_path)
    calls = []

    def build():
        calls.append(1)
        return {"w": torch.arange(1000.0)}, {"note": len(calls)}

    store.get_or_build(KEY, build)
    entry = store.path(KEY)
    spoil, reason = DAMAGE[damage]
    spoil(entry)
    assert not store.has(KEY) or damage == "altered payload"  # has() checks the size, not the checksum
    with pytest.warns(UserWarning, match=f"store entry {entry} is damaged \\(.*{reason}.*building it again"):
        payload, meta = store.get_or_build(KEY, build)
    assert len(calls) == 2 and meta["note"] == 2 and torch.equal(payload["w"], torch.arange(1000.0))
    damaged, = [e for e in store.events() if e["event"] == "damaged"]
    assert re.search(reason, damaged["reason"]) and damaged["hash"] == entry.name
    assert store.count_built() == 2 and re.search(reason, store.events()[-1]["rebuilt"])
    assert [p.name for p in (tmp_path / "damaged").iterdir()] == [Path(damaged["moved_to"]).name]
    store.get_or_build(KEY, build)  # healed: loads without building
    assert len(calls) == 2


def test_an_entry_written_before_checksums_is_verified_by_loading_and_gets_one(tmp_path):
    store = Store(tmp_path)
    good, bad = {"kind": "pruned", "n": 1}, {"kind": "pruned", "n": 2}
    for key in (good, bad):  # the layout the old code wrote: no checksum in meta.json
        entry = store.path(key)
        entry.mkdir(parents=True)
        torch.save({"w": torch.ones(500)}, entry / "payload.pt")
        (entry / "meta.json").write_text(json.dumps({"key": key, "build_seconds": 1.0}))
    _truncate(store.path(bad))

    def build():
        return {"w": torch.zeros(3)}, {}

    payload, meta = store.get_or_build(good, build)
    assert torch.equal(payload["w"], torch.ones(500)) and store.count_built() == 0
    assert json.loads((store.path(good) / "meta.json").read_text())["payload_sha256"] == meta["payload_sha256"]
    with pytest.warns(UserWarning, match="payload.pt does not load"):
        payload, _ = store.get_or_build(bad, build)
    assert torch.equal(payload["w"], torch.zeros(3)) and store.count_built() == 1


def _hold_the_lock_for_ever(root: str, started: str) -> None:
    def build():
        Path(started).touch()
        time.sleep(600)
        return {}, {}

    Store(root).get_or_build(KEY, build)


def test_a_killed_builder_does_not_block_the_entry(tmp_path):
    store = Store(tmp_path / "store")
    started = tmp_path / "started"
    holder = mp.get_context("spawn").Process(target=_hold_the_lock_for_ever, args=(str(store.root), str(started)))
    holder.start()
    deadline = time.monotonic() + 60
    while not started.exists():
        assert holder.is_alive() and time.monotonic() < deadline
        time.sleep(0.05)
    # A waiter queued behind the live holder, and a folder a writer killed mid-write would leave.
    leftover = store.path(KEY).parent / f".tmp-{store.path(KEY).name}-killed"
    leftover.mkdir(parents=True)
    result = {}
    waiter = threading.Thread(target=lambda: result.update(
        entry=store.get_or_build(KEY, lambda: ({"w": torch.ones(1)}, {}))), daemon=True)
    waiter.start()
    waiter.join(1.0)
    assert waiter.is_alive()  # the lock is held
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(10)
    waiter.join(30)
    assert not waiter.is_alive() and torch.equal(result["entry"][0]["w"], torch.ones(1))
    assert store.count_built() == 1 and not leftover.exists()


def test_a_unit_heals_a_truncated_an_emptied_and_a_deleted_entry(tmp_path):
    config = UnitConfig(dataset="digits", arch="resnet18", width=0.125, num_shadows=1, attacks=("conf",),
                        train=TrainConfig(max_epochs=1))
    store = Store(tmp_path)
    first = pd.DataFrame(run_unit(config, store=store))
    damaged = {  # entry -> what is done to it, one of each kind a killed or interrupted copy leaves
        store.path(config.original_key("target")): _truncate,
        store.path(config.pruned_key("shadow0")): lambda e: (e / "payload.pt").write_bytes(b""),
        store.path({**config.pruned_key("target"), "kind": "signals"}): lambda e: (e / "payload.pt").unlink(),
        store.path({**config.original_key("shadow0"), "kind": "signals"}): lambda e: (e / "meta.json").unlink(),
    }
    for entry, spoil in damaged.items():
        spoil(entry)
    with pytest.warns(UserWarning, match="is damaged") as caught:
        again = pd.DataFrame(run_unit(config, store=store))
    assert (again["status"] == "ok").all()
    assert sorted(str(w.message).split()[2] for w in caught if "is damaged" in str(w.message)) == sorted(map(str, damaged))
    assert sorted(e["hash"] for e in store.events() if e["event"] == "damaged") == sorted(e.name for e in damaged)
    # Rebuilt from the same seeds on the CPU: the same models, so the same numbers.
    pd.testing.assert_series_equal(again["attack_auc"], first["attack_auc"])
