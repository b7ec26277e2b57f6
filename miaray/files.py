"""Writing a file so that no reader ever sees half of it."""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` for the block to write; when the block ends without error,
    rename it over `path` (atomic on POSIX: a reader sees the old file or the new one), else remove it.
    The temporary name is hidden (`.<name>.<random>.tmp`), so that listings of result files skip it, and
    unique, so that concurrent writers of one file never share it. The folder must exist."""
    final = Path(path)
    temp = final.with_name(f".{final.name}.{uuid.uuid4().hex}.tmp")
    try:
        yield temp
        os.replace(temp, final)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
