"""Content-addressed artifact cache: trained originals, pruned + fine-tuned models (with masks), signals.

An entry lives at `<root>/<kind>/<hash>/` with `payload.pt` (tensors and plain values only, loaded with
`torch.load(weights_only=True)`) and `meta.json` (the key it was made from, and facts about it). The
hash is `stable_hash(key)`, so an entry is found again from exactly the configuration that
determines it. Writes go to a temporary folder renamed into place (atomic on POSIX); a per-entry file
lock makes a second process that asks for the same entry wait and then load it rather than build it
again. Every build is appended to `events.jsonl`, which is how tests and benchmarks count and time trainings.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch

from miaray.config import stable_hash


def default_root() -> Path:
    """`MIARAY_CACHE`, else `~/.cache/miaray/store`."""
    return Path(os.environ.get("MIARAY_CACHE", Path.home() / ".cache" / "miaray" / "store"))


class Store:
    """A folder of cached artifacts shared by every process (and, on a shared filesystem, node)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: Mapping[str, Any]) -> Path:
        return self.root / str(key.get("kind", "misc")) / stable_hash(key)

    def has(self, key: Mapping[str, Any]) -> bool:
        return (self.path(key) / "meta.json").exists()

    def load(self, key: Mapping[str, Any], *, map_location: str | torch.device = "cpu") -> tuple[dict, dict]:
        """(payload, meta) of an existing entry."""
        entry = self.path(key)
        payload = torch.load(entry / "payload.pt", map_location=map_location, weights_only=True)
        return payload, json.loads((entry / "meta.json").read_text())

    def get_or_build(self, key: Mapping[str, Any], build: Callable[[], tuple[dict, dict]], *,
                     map_location: str | torch.device = "cpu") -> tuple[dict, dict]:
        """The entry for `key`, built by `build() -> (payload, meta)` only if no process has built it."""
        if self.has(key):
            return self.load(key, map_location=map_location)
        with self._lock(key):
            if self.has(key):  # another process built it while we waited for the lock
                return self.load(key, map_location=map_location)
            start = time.perf_counter()
            payload, meta = build()
            meta = {**meta, "key": dict(key), "build_seconds": time.perf_counter() - start}
            self._write(key, payload, meta)
            self._log({"event": "built", "kind": key.get("kind"), "hash": stable_hash(key),
                       "pid": os.getpid(), "time": time.time()})
        return self.load(key, map_location=map_location)

    def events(self) -> list[dict]:
        """Every build recorded in this store, oldest first."""
        log = self.root / "events.jsonl"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]

    def count_built(self, kind: str | None = None) -> int:
        return sum(1 for e in self.events() if kind is None or e["kind"] == kind)

    # ---- internals -----------------------------------------------------------------------
    @contextmanager
    def _lock(self, key: Mapping[str, Any]) -> Iterator[None]:
        locks = self.root / "locks"
        locks.mkdir(exist_ok=True)
        with open(locks / f"{stable_hash(key)}.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _write(self, key: Mapping[str, Any], payload: dict, meta: dict) -> None:
        final = self.path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=".tmp-"))
        try:
            torch.save(payload, tmp / "payload.pt")
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True, default=str))
            os.rename(tmp, final)  # atomic: an entry is either absent or complete
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _log(self, event: dict) -> None:
        # One short write per line with O_APPEND: lines from concurrent processes never interleave.
        line = (json.dumps(event) + "\n").encode()
        fd = os.open(self.root / "events.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
