"""What every task and trial of a run receives: where results, models and data live, and the resources each
trial takes (`RunSettings`, made by `miaray.sweep.cli.settings_from_args`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunSettings:
    """Run-wide settings every task and trial receives. Paths are absolute (trials chdir) or URIs."""

    experiment: str                   # <storage>/<name>: the rows/ folder and Tune's state
    store: str                        # artifact cache folder (shared by all nodes on a cluster)
    data_root: str | None             # dataset folder; None: each worker's default
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    # (option, folder, token): a marker each worker checks before it writes there (`miaray.sweep.shared`).
    shared: tuple[tuple[str, str, str], ...] = ()

    def resources(self) -> dict[str, float]:
        return {"cpu": self.cpus_per_trial, "gpu": self.gpus_per_trial}


def absolute(path: str) -> str:
    """A local path made absolute (trials chdir into their own folders); a URI as given."""
    return path if "://" in path else str(Path(path).expanduser().resolve())
