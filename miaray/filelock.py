"""An exclusive lock between processes, held on a lock file with `fcntl.flock`.

The kernel releases an flock lock when its holder dies (killed, crashed, out of memory), so a dead
process never leaves a lock that blocks the others: the next waiter gets it at once. On NFS (e.g. AWS
EFS) Linux maps flock onto NFS byte-range locks, which the server releases when the dead client's
lease expires (about 90 s on NFSv4) rather than at once.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def exclusive_lock(path: str | os.PathLike, *, remove: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on the file `path` (created if missing; its folder must exist).

    `remove`: delete the lock file before releasing it, so no empty file stays behind. A waiter
    that then gets the lock on the deleted file sees that the path no longer names it and locks the
    path again, so two processes never both hold the lock.
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                current = os.stat(path)
            except FileNotFoundError:
                current = None
            if current is not None and current.st_ino == os.fstat(fd).st_ino:
                break  # locked the file that `path` names now
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # the holder removed the file while we waited: lock the new one
    try:
        yield
    finally:
        if remove:
            Path(path).unlink(missing_ok=True)
        os.close(fd)  # closing releases the lock
