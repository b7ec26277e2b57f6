"""A disk that fills up during a sweep: the free space of the folders a sweep writes (its storage, its
store, Ray's temporary folder), checked before Ray starts and every few seconds while trials run, so
that a full disk stops the sweep with one line saying which folder, instead of Ray's GCS timing out."""

from __future__ import annotations

import _thread
import errno
import os
import threading
from pathlib import Path
from typing import Any, Callable

import ray

from miaray.config import ConfigError
MIN_FREE_ENV = "MIARAY_MIN_FREE_MB"
MIN_FREE_MB = 512.0   # below this on the storage, store or Ray's temporary folder, a sweep stops and says so
DISK_CHECK_S = 5.0    # how often a running sweep looks


class DiskFullError(OSError):
    """A folder a sweep writes to has (almost) no free space left; its text is the whole message."""

    def __init__(self, text: str):
        super().__init__(errno.ENOSPC, text)

    def __str__(self) -> str:
        return self.strerror


def min_free_bytes() -> float:
    text = os.environ.get(MIN_FREE_ENV, "").strip()
    try:
        return float(text) * 2**20 if text else MIN_FREE_MB * 2**20
    except ValueError:
        raise ConfigError(f"${MIN_FREE_ENV}={text!r}: give a number of MiB, e.g. {MIN_FREE_MB:g}") from None


def free_space_problems(folders: dict[str, str], *, min_free: float | None = None,
                        statvfs: Callable[[str], os.statvfs_result] = os.statvfs) -> list[str]:
    """Each local folder of `folders` (what it is -> path) whose disk has less than `min_free` bytes free
    for this user, as '<what> <path>: <n> MiB free'; a URI, or a folder whose disk cannot be read, is
    skipped. A folder not made yet is measured at its nearest existing parent."""
    min_free = min_free_bytes() if min_free is None else min_free
    problems = []
    for what, folder in folders.items():
        if not folder or "://" in folder:
            continue
        path = Path(folder).expanduser()
        while not path.exists() and path != path.parent:
            path = path.parent
        try:
            st = statvfs(str(path))
        except OSError:
            continue
        free = st.f_bavail * st.f_frsize
        if free < min_free:
            problems.append(f"{what} {folder}: {free / 2**20:.0f} MiB free")
    return problems


def check_free_space(folders: dict[str, str], *, cause: BaseException | None = None, **kwargs: Any) -> None:
    """Raise DiskFullError naming each folder of `folders` whose disk is (nearly) full (`cause`: the error
    a full disk may have caused, chained)."""
    problems = free_space_problems(folders, **kwargs)
    if problems:
        needed = kwargs.get("min_free") or min_free_bytes()
        raise DiskFullError(
            f"disk full: {'; '.join(problems)} (a sweep needs {needed / 2**20:.0f} MiB, ${MIN_FREE_ENV} sets it); "
            "free space there and rerun the same command: cells with ok rows are kept") from cause


def ray_temp_folder() -> str | None:
    """Ray's temporary folder on this machine, once connected to a local node; None otherwise."""
    node = getattr(ray._private.worker, "_global_node", None)
    try:
        return node.get_temp_dir_path() if node is not None else None
    except Exception:  # a client connection, or a node object without it
        return None


class DiskWatch:
    """`with DiskWatch(folders):` checks the free space of `folders` (what -> path) on entry and every
    `every_s` seconds while the block runs; when a disk is (nearly) full it interrupts the main thread as
    Ctrl-C would, and the block ends with DiskFullError saying which. An error the block raises while a
    disk is full (Ray's GCS timing out, say) becomes that DiskFullError too."""

    def __init__(self, folders: dict[str, str], *, every_s: float = DISK_CHECK_S, **kwargs: Any):
        self.folders, self.every_s, self.kwargs = folders, every_s, kwargs
        self.problem: DiskFullError | None = None
        self._interrupt = threading.current_thread() is threading.main_thread()  # else: reported at the end
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="miaray-disk-watch", daemon=True)

    def _watch(self) -> None:
        while not self._done.wait(self.every_s):
            try:
                check_free_space(self.folders, **self.kwargs)
            except DiskFullError as error:
                self.problem = error
                if self._interrupt:
                    _thread.interrupt_main()  # handled like Ctrl-C, then turned into the error in __exit__
                return

    def __enter__(self) -> "DiskWatch":
        check_free_space(self.folders, **self.kwargs)
        self._thread.start()
        return self

    def __exit__(self, kind: Any, error: BaseException | None, trace: Any) -> None:
        try:
            self._done.set()
            self._thread.join()
        except KeyboardInterrupt:  # the watch's interrupt, landing here when the block had just ended
            if self.problem is None:
                raise
        if isinstance(error, DiskFullError):
            return
        if self.problem is not None:
            raise self.problem from None
        if error is None:
            return
        if isinstance(error, Exception):
            check_free_space(self.folders, cause=error, **self.kwargs)
