"""Where dataset files live: the data directory, the accepted on-disk forms, checksums, downloading."""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path

DATA_ENV = "MIARAY_DATA"          # directory holding the dataset files
OFFLINE_ENV = "MIARAY_OFFLINE"    # "1": never try to download
DEFAULT_ROOT = Path("~/.cache/miaray/data")
DOWNLOAD_TIMEOUT_S = 15.0         # per network operation: an unreachable host fails fast


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not in the data directory (and could not be downloaded)."""


@dataclass(frozen=True)
class Remote:
    """One file a download fetches, from the first of ``urls`` that answers."""

    filename: str
    urls: tuple[str, ...]


@dataclass(frozen=True)
class Source:
    """Where a real dataset comes from and the forms it may take on disk.

    ``layouts`` are alternatives (the first complete one wins); each lists paths relative to the data
    directory that must all exist. ``remotes`` download one of the layouts. ``checksums`` are the
    published digests, by relative path, of the files that have them.
    """

    name: str
    layouts: tuple[tuple[str, ...], ...]
    remotes: tuple[Remote, ...]
    origin: str
    checksums: dict[str, tuple[str, str]] = field(default_factory=dict)  # path -> (hashlib name, hex digest)


def resolve_root(root: str | Path | None = None) -> Path:
    """The data directory: ``root``, else $MIARAY_DATA, else ~/.cache/miaray/data."""
    chosen = root if root is not None else os.environ.get(DATA_ENV) or DEFAULT_ROOT
    return Path(chosen).expanduser().resolve()


def downloads_allowed(download: bool | None) -> bool:
    """An explicit ``download`` wins; by default download unless $MIARAY_OFFLINE is set to 1/true/yes."""
    if download is not None:
        return download
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("1", "true", "yes")


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def warn_on_checksum_mismatch(source: Source, root: Path, paths: tuple[str, ...]) -> None:
    """Files the user placed are trusted, but a checksum that differs from the published one is reported."""
    for rel in paths:
        if rel in source.checksums and (root / rel).is_file():
            algorithm, expected = source.checksums[rel]
            actual = file_digest(root / rel, algorithm)
            if actual != expected:
                warnings.warn(f"{source.name}: {root / rel} has {algorithm} {actual}, but the published "
                              f"file has {expected}; it may be corrupt or a different version",
                              stacklevel=4)


def locate(source: Source, root: Path, *, download: bool | None) -> tuple[str, ...]:
    """The first complete layout of ``source`` under ``root``, downloading one if allowed and needed.

    Raises DatasetNotFoundError naming the expected files, the directory, and the origin.
    """
    found = _first_complete(source, root)
    if found is not None:
        return found
    if downloads_allowed(download):
        try:
            for remote in source.remotes:
                _download(remote, root, source.checksums.get(remote.filename))
        except (OSError, ValueError) as error:
            reason = f"Downloading failed ({error})."
        else:
            found = _first_complete(source, root)
            if found is not None:
                return found
            reason = "Downloading did not produce them."
    else:
        reason = f"Downloading is off (download=False or {OFFLINE_ENV}=1)."
    forms = " or ".join(" + ".join(layout) for layout in source.layouts)
    raise DatasetNotFoundError(
        f"dataset {source.name!r}: none of the accepted files were found in {root}. "
        f"Put one of these there: {forms} (or pass root=... / set ${DATA_ENV}). "
        f"Source: {source.origin}. {reason}")


def _first_complete(source: Source, root: Path) -> tuple[str, ...] | None:
    for layout in source.layouts:
        if all((root / rel).exists() for rel in layout):
            return layout
    return None


def _download(remote: Remote, root: Path, checksum: tuple[str, str] | None) -> None:
    """Fetch ``remote`` into ``root`` atomically; a checksum mismatch deletes the file and raises."""
    target = root / remote.filename
    if target.exists():
        return
    partial = target.with_name(target.name + ".part")
    errors = []
    for url in remote.urls:
        try:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
                root.mkdir(parents=True, exist_ok=True)  # only once something answered
                with open(partial, "wb") as out:
                    shutil.copyfileobj(response, out)
            break
        except OSError as error:
            errors.append(f"{url}: {error}")
    else:
        partial.unlink(missing_ok=True)
        raise OSError("; ".join(errors))
    if checksum is not None:
        algorithm, expected = checksum
        actual = file_digest(partial, algorithm)
        if actual != expected:
            partial.unlink()
            raise ValueError(f"{remote.filename} downloaded with {algorithm} {actual}, expected {expected}")
    os.replace(partial, target)
