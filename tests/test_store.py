"""The artifact cache: atomic entries, one build under concurrency, weights-only loading."""

import multiprocessing as mp
import time

import torch

from miaray.store import Store


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
