"""The Ray cluster a sweep runs on: joining it, the run-wide settings every trial receives, and the
setup of each trial's or task's worker process (threads, GPU memory, device)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

from miaray.store import Store


@dataclass(frozen=True)
class RunSettings:
    """Run-wide settings every task and trial receives. Paths are absolute (trials chdir) or URIs."""

    experiment: str                   # <storage>/<name>: Tune state and the rows/ folder
    store: str                        # artifact cache folder (shared by all nodes on a cluster)
    data_root: str | None             # dataset folder; None: each worker's default
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0

    def resources(self) -> dict[str, float]:
        return {"cpu": self.cpus_per_trial, "gpu": self.gpus_per_trial}


def absolute(path: str) -> str:
    """A local path made absolute (trials chdir into their own folders); a URI as given."""
    return path if "://" in path else str(Path(path).expanduser().resolve())


def connect(*, address: str = "auto") -> None:
    """Join Ray: 'auto' joins the running cluster if there is one, else starts a local instance;
    'local' always starts a new local instance; host:port joins that cluster."""
    if ray.is_initialized():
        return
    if address != "auto":
        ray.init(address=address)
        return
    try:
        ray.init(address="auto")
    except ConnectionError:
        ray.init()


def prepare_worker(settings: RunSettings) -> str:
    """Threads and GPU memory of this trial or task; returns the torch device it should use."""
    import torch

    torch.set_num_threads(max(1, int(settings.cpus_per_trial)))
    if torch.cuda.is_available() and settings.gpus_per_trial > 0:
        # Fractional GPUs only schedule; this keeps four 0.25-GPU trials from starving each other.
        torch.cuda.set_per_process_memory_fraction(min(1.0, settings.gpus_per_trial))
        return "cuda"
    return "cpu"


def worker_context(settings: RunSettings, *, label: str) -> dict[str, Any]:
    """What `make_context` and `run_unit` take from the run's settings in a trial or task: the store,
    the data root, this worker's device (`prepare_worker`) and a log whose lines start with `label`."""
    return {"store": Store(settings.store), "data_root": settings.data_root, "device": prepare_worker(settings),
            "log": lambda message: print(f"[{label}] {message}", flush=True)}
