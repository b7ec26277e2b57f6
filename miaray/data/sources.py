"""Where dataset files live: the data directory, the accepted on-disk forms, checksums, downloading."""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from miaray.filelock import exclusive_lock
from miaray.files import atomic_write

DATA_ENV = "MIARAY_DATA"          # directory holding the dataset files
OFFLINE_ENV = "MIARAY_OFFLINE"    # "1": never try to download
ALLOW_MISMATCH_ENV = "MIARAY_ALLOW_CHECKSUM_MISMATCH"  # "1": use files whose checksum differs, with a warning
DEFAULT_ROOT = Path("~/.cache/miaray/data")
DOWNLOAD_TIMEOUT_S = 15.0         # per network operation: an unreachable host fails fast


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not in the data directory (and could not be downloaded)."""


class DatasetFileError(ValueError):
    """A dataset file is damaged, altered or not in the published format; the message names the file."""


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


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def downloads_allowed(download: bool | None) -> bool:
    """An explicit ``download`` wins; by default download unless $MIARAY_OFFLINE is set to 1/true/yes."""
    if download is not None:
        return download
    return not _env_flag(OFFLINE_ENV)


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_checksums(source: Source, root: Path, paths: tuple[str, ...]) -> None:
    """Check every file of ``paths`` that has a published checksum. A mismatch is a DatasetFileError
    (the file is damaged, altered or another version) unless $MIARAY_ALLOW_CHECKSUM_MISMATCH=1, which
    turns it into a warning."""
    for rel in paths:
        if rel in source.checksums and (root / rel).is_file():
            algorithm, expected = source.checksums[rel]
            actual = file_digest(root / rel, algorithm)
            if actual == expected:
                continue
            problem = (f"{source.name}: {root / rel} has {algorithm} {actual}, but the published file has "
                       f"{expected}; it may be damaged, altered or a different version")
            if not _env_flag(ALLOW_MISMATCH_ENV):
                raise DatasetFileError(f"{problem}. Delete it to download it again, or set "
                                       f"{ALLOW_MISMATCH_ENV}=1 to use it anyway")
            warnings.warn(f"{problem} (used because {ALLOW_MISMATCH_ENV}=1)", stacklevel=4)


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
        f"Put one of these there: {forms} (or point --data-root, root=... or ${DATA_ENV} at a folder "
        "holding them). "
        f"Source: {source.origin}. {reason}")


def _first_complete(source: Source, root: Path) -> tuple[str, ...] | None:
    for layout in source.layouts:
        if all((root / rel).exists() for rel in layout):
            return layout
    return None


def _download(remote: Remote, root: Path, checksum: tuple[str, str] | None) -> None:
    """Fetch ``remote`` into ``root``: into a temporary file of this process, checked against
    ``checksum``, then renamed into place. A lock per file makes concurrent processes fetch it once:
    the others wait, then find it there. A checksum mismatch deletes the file and raises ValueError."""
    target = root / remote.filename
    if target.exists():
        return
    root.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(root / f".{remote.filename}.lock", remove=True):
        if target.exists():  # fetched by another process while we waited
            return
        with atomic_write(target) as partial:
            with open(partial, "xb") as out:
                _fetch(remote, out)
            if checksum is not None:
                algorithm, expected = checksum
                actual = file_digest(partial, algorithm)
                if actual != expected:
                    raise ValueError(f"{remote.filename} downloaded with {algorithm} {actual}, expected {expected}")


def _fetch(remote: Remote, out) -> None:
    """Write the first of ``remote.urls`` that answers into ``out``; OSError listing every failure."""
    errors = []
    for url in remote.urls:
        try:
            out.seek(0)
            out.truncate()
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
                shutil.copyfileobj(response, out)
            return
        except OSError as error:
            errors.append(f"{url}: {error}")
    raise OSError("; ".join(errors))
