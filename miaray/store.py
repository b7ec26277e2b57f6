"""Content-addressed artifact cache: trained originals, pruned + fine-tuned models (with masks), signals.

An entry lives at `<root>/<kind>/<hash>/` with `payload.pt` (tensors and plain values only, loaded with
`torch.load(weights_only=True)`) and `meta.json` (the key it was made from, facts about it, and the
SHA-256 and size of `payload.pt`). The hash is `stable_hash(key)`, so an entry is found again from
exactly the configuration that determines it. Writes go to a temporary folder (payload first, then
the metadata with its checksum) renamed into place, atomic on POSIX; a per-entry file lock makes a
second process that asks for the same entry wait and then load it rather than build it again.

Every load verifies the entry against its checksum. A damaged or partial entry (payload truncated,
emptied, deleted or altered; `meta.json` missing or garbage) counts as missing: under the lock it
is moved aside to `<root>/damaged/` and built again, with a warning and a `damaged` event. Entries
written before checksums existed are verified by loading them, then get their checksum added.
Every build and every damaged entry is appended to `events.jsonl`, which is how tests and
benchmarks count and time trainings.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch

from miaray.config import stable_hash
from miaray.filelock import exclusive_lock
from miaray.files import atomic_write

PAYLOAD, META = "payload.pt", "meta.json"
CHECKSUM, SIZE = "payload_sha256", "payload_bytes"  # meta.json fields describing payload.pt
DAMAGED_DIR = "damaged"


def default_root() -> Path:
    """`MIARAY_CACHE`, else `~/.cache/miaray/store`."""
    return Path(os.environ.get("MIARAY_CACHE", Path.home() / ".cache" / "miaray" / "store"))


class DamagedEntryError(Exception):
    """A store entry exists but cannot be used; the message names the entry and what is wrong."""

    def __init__(self, entry: Path, reason: str) -> None:
        super().__init__(f"store entry {entry} is damaged: {reason}")
        self.entry, self.reason = entry, reason


class Store:
    """A folder of cached artifacts shared by every process (and, on a shared filesystem, node)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: Mapping[str, Any]) -> Path:
        return self.root / str(key.get("kind", "misc")) / stable_hash(key)

    def has(self, key: Mapping[str, Any]) -> bool:
        """Whether a complete entry exists; cheap (no checksum): its meta.json reads and its payload
        has the recorded size. `load` and `get_or_build` verify the checksum."""
        entry = self.path(key)
        try:
            meta = _read_meta(entry)
            size = (entry / PAYLOAD).stat().st_size
        except (DamagedEntryError, OSError):
            return False
        return meta.get(SIZE, size) == size

    def load(self, key: Mapping[str, Any], *, map_location: str | torch.device = "cpu") -> tuple[dict, dict]:
        """(payload, meta) of an existing entry, verified: FileNotFoundError when there is none,
        DamagedEntryError when it is damaged."""
        entry = self.path(key)
        if not entry.exists():
            raise FileNotFoundError(f"no store entry {entry} for {dict(key)}")
        return self._verified(entry, map_location=map_location)

    def get_or_build(self, key: Mapping[str, Any], build: Callable[[], tuple[dict, dict]], *,
                     map_location: str | torch.device = "cpu") -> tuple[dict, dict]:
        """The entry for `key`, built by `build() -> (payload, meta)` only if no process has built it
        (or the one built is damaged: then it is moved aside and built again)."""
        entry = self.path(key)
        if entry.exists():
            try:
                return self._verified(entry, map_location=map_location, legacy_ok=False)
            except DamagedEntryError:
                pass  # decided again under the lock: another process may be replacing it right now
        with self._lock(key):
            damage = None
            if entry.exists():
                try:
                    return self._verified(entry, map_location=map_location, adopt=True)
                except DamagedEntryError as error:
                    damage = error.reason
                    self._set_aside(key, damage)
            start = time.perf_counter()
            payload, meta = build()
            meta = {**meta, "key": dict(key), "build_seconds": time.perf_counter() - start}
            self._write(key, payload, meta)
            self._log({"event": "built", "kind": key.get("kind"), "hash": stable_hash(key),
                       "pid": os.getpid(), "time": time.time(), **({"rebuilt": damage} if damage else {})})
        return self._verified(entry, map_location=map_location)

    def events(self) -> list[dict]:
        """Every event recorded in this store, oldest first: `built` (with `rebuilt`: the reason,
        when it replaced a damaged entry) and `damaged` (an entry moved aside)."""
        log = self.root / "events.jsonl"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]

    def count_built(self, kind: str | None = None) -> int:
        return sum(1 for e in self.events() if e.get("event", "built") == "built"
                   and (kind is None or e["kind"] == kind))

    # ---- internals -----------------------------------------------------------------------
    def _verified(self, entry: Path, *, map_location: str | torch.device, legacy_ok: bool = True,
                  adopt: bool = False) -> tuple[dict, dict]:
        """Load `entry` after checking payload.pt against the checksum in meta.json.

        An entry without a checksum (written before they existed) is verified by loading it; with
        `adopt` (only under the entry's lock) its checksum is then added to meta.json. Without
        `legacy_ok` such an entry raises DamagedEntryError so the caller retries under the lock.
        """
        meta = _read_meta(entry)
        try:
            data = (entry / PAYLOAD).read_bytes()
        except FileNotFoundError:
            raise DamagedEntryError(entry, f"{PAYLOAD} is missing") from None
        if CHECKSUM in meta:
            if len(data) != meta.get(SIZE):
                raise DamagedEntryError(entry, f"{PAYLOAD} has {len(data)} bytes, {META} records {meta.get(SIZE)}")
            if hashlib.sha256(data).hexdigest() != meta[CHECKSUM]:
                raise DamagedEntryError(entry, f"{PAYLOAD} does not match the SHA-256 in {META}")
            # Verified bytes: an error now is not damage (e.g. out of GPU memory), so it propagates.
            return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True), meta
        if not legacy_ok:
            raise DamagedEntryError(entry, f"{META} has no checksum (written by an older miaray)")
        try:  # on the CPU, so that only the file, not the device (e.g. out of memory), can fail here
            torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001  whatever a truncated or foreign file raises
            raise DamagedEntryError(entry, f"{PAYLOAD} does not load ({type(error).__name__}: {error})") from None
        if adopt:
            meta = {**meta, CHECKSUM: hashlib.sha256(data).hexdigest(), SIZE: len(data)}
            _replace_text(entry / META, _meta_text(meta))
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True), meta

    @contextmanager
    def _lock(self, key: Mapping[str, Any]) -> Iterator[None]:
        locks = self.root / "locks"
        locks.mkdir(exist_ok=True)
        with exclusive_lock(locks / f"{stable_hash(key)}.lock"):
            yield

    def _set_aside(self, key: Mapping[str, Any], reason: str) -> None:
        """Move a damaged entry (under its lock) to `<root>/damaged/`, warn, and record the event."""
        entry = self.path(key)
        aside = self.root / DAMAGED_DIR / f"{entry.parent.name}-{entry.name}-{time.time_ns()}"
        aside.parent.mkdir(exist_ok=True)
        os.rename(entry, aside)
        warnings.warn(f"store entry {entry} is damaged ({reason}); moved to {aside}, building it again",
                      stacklevel=3)
        self._log({"event": "damaged", "kind": key.get("kind"), "hash": stable_hash(key), "reason": reason,
                   "moved_to": str(aside), "pid": os.getpid(), "time": time.time()})

    def _write(self, key: Mapping[str, Any], payload: dict, meta: dict) -> None:
        final = self.path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        prefix = f".tmp-{final.name}-"
        for leftover in final.parent.glob(prefix + "*"):  # a writer of this entry killed mid-write
            shutil.rmtree(leftover, ignore_errors=True)   # (we hold the entry's lock: none is alive)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=prefix))
        try:
            buffer = io.BytesIO()
            torch.save(payload, buffer)
            data = buffer.getvalue()
            (tmp / PAYLOAD).write_bytes(data)
            meta = {**meta, CHECKSUM: hashlib.sha256(data).hexdigest(), SIZE: len(data)}
            (tmp / META).write_text(_meta_text(meta))
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


def _read_meta(entry: Path) -> dict:
    try:
        meta = json.loads((entry / META).read_text())
    except FileNotFoundError:
        raise DamagedEntryError(entry, f"{META} is missing") from None
    except (OSError, ValueError) as error:  # ValueError: not UTF-8 or not JSON
        raise DamagedEntryError(entry, f"{META} is unreadable ({error})") from None
    if not isinstance(meta, dict):
        raise DamagedEntryError(entry, f"{META} holds {type(meta).__name__}, not an object")
    return meta


def _meta_text(meta: dict) -> str:
    return json.dumps(meta, indent=1, sort_keys=True, default=str)


def _replace_text(path: Path, text: str) -> None:
    """Replace a file's text atomically (a temporary file beside it, renamed over it)."""
    with atomic_write(path) as temp:
        temp.write_text(text)

