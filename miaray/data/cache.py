"""Compact binary cache of parsed datasets, so only the first load parses the source files.

Each dataset is one ``<root>/.miaray_cache/<name>.npz`` holding uint8 inputs (binary tabular features
packed 8 per byte) and the labels, plus a signature of the source files (path, size, mtime): when a
source file changes, the signature no longer matches and the source is parsed again. A damaged cache
file (truncated, emptied, garbage: the zip's CRCs catch altered bytes) is reported with a warning,
parsed again and replaced.
"""

from __future__ import annotations

import json
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from miaray.files import atomic_write

CACHE_DIR = ".miaray_cache"
FORMAT_VERSION = 1  # bump when parsing changes, so stale caches are rebuilt


@dataclass(frozen=True)
class Parsed:
    """A dataset as parsed from its files: uint8 ``features`` (N x C x H x W images, or N x D binary
    tabular features) and int64 ``labels`` in 0 .. C-1."""

    features: np.ndarray
    labels: np.ndarray


def cache_path(root: Path, name: str) -> Path:
    return root / CACHE_DIR / f"{name}.npz"


def source_signature(root: Path, paths: tuple[str, ...]) -> str:
    """Identity of the source files: relative path, size and mtime of each file (directories walked)."""
    entries = []
    for rel in paths:
        top = root / rel
        files = sorted(p for p in top.rglob("*") if p.is_file()) if top.is_dir() else [top]
        for file in files:
            stat = file.stat()
            entries.append([file.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns])
    return json.dumps({"version": FORMAT_VERSION, "files": entries})


def load_or_parse(*, root: Path, name: str, paths: tuple[str, ...], parse: Callable[[], Parsed],
                  binary: bool) -> Parsed:
    """The cached arrays if they were built from exactly these source files, else ``parse()`` (and cache it).

    ``binary``: the features are 0/1 and are stored bit-packed.
    """
    target = cache_path(root, name)
    signature = source_signature(root, paths)
    try:
        cached = _read(target, signature)
    except DAMAGED_NPZ_ERRORS as error:
        warnings.warn(f"{name}: the parsed-data cache {target} is damaged ({type(error).__name__}: {error}); "
                      "parsing the source files again and replacing it", stacklevel=3)
        cached = None
    if cached is not None:
        return cached
    parsed = parse()
    try:
        _write(target, signature, parsed, binary=binary)
    except OSError as error:  # a read-only data directory still loads, just without the cache
        warnings.warn(f"{name}: could not write the parsed-data cache {target} ({error}); "
                      "the next load will parse the source files again", stacklevel=3)
    return parsed


# What np.load raises on a damaged .npz: not a zip / bad CRC (BadZipFile), empty or cut short
# (EOFError, OSError), a member that is not a plain array (ValueError), a member missing (KeyError).
DAMAGED_NPZ_ERRORS = (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error)


def _read(target: Path, signature: str) -> Parsed | None:
    """The cached arrays, None when there is no cache or it was built from other source files;
    raises one of DAMAGED_NPZ_ERRORS when the file is damaged."""
    if not target.is_file():
        return None
    with np.load(target, allow_pickle=False) as data:
        if str(data["signature"]) != signature:
            return None
        labels = data["labels"]
        if "packed" in data:
            n_cols = int(data["n_cols"])
            features = np.unpackbits(data["packed"], axis=1, count=n_cols)
        else:
            features = data["features"]
    return Parsed(features=features, labels=labels)


def _write(target: Path, signature: str, parsed: Parsed, *, binary: bool) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {"signature": np.array(signature), "labels": parsed.labels}
    if binary:
        arrays["packed"] = np.packbits(parsed.features.astype(bool), axis=1)
        arrays["n_cols"] = np.array(parsed.features.shape[1])
    else:
        arrays["features"] = parsed.features
    with atomic_write(target) as temp, open(temp, "wb") as out:  # a concurrent reader never sees half a cache
        np.savez(out, **arrays)
