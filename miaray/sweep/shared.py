"""Folders every node must see: the experiment (`--storage`) and the artifact store (`--cache`).

On a cluster of several nodes, a node-local folder splits the run: each node sees only the rows and
models its own trials wrote, so models are trained again, and the driver (and a resume) misses the
cells other nodes finished. So the driver writes a marker with a random token into each local folder
(`share`), and before any trial one small task pinned to each alive node reads it back; every trial
and task checks it again before it writes (`check_markers`), which covers the nodes an autoscaler
adds later. URIs (s3://...) are shared by construction and not checked.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import socket
from pathlib import Path
from typing import Callable, Mapping, Sequence

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from miaray.config import ConfigError
from miaray.sweep.settings import RunSettings

MARKER = ".miaray-shared"
CHECK_TIMEOUT_S = 120.0  # a node's check task waits for a worker process to start, nothing else


def marker_token(folder: str) -> str:
    """The token in `folder`'s marker, written first by whichever driver comes first and then kept,
    so that sweeps sharing a store (full_grid.py and unknown_pruning.py at once) agree on it."""
    path = Path(folder) / MARKER
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{MARKER}.{secrets.token_hex(8)}.tmp")
    tmp.write_text(secrets.token_hex(16))
    try:
        os.link(tmp, path)  # atomic create-if-absent: a reader never sees an empty marker
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_text()


def _marker_reader() -> Callable[[Sequence[str]], list[str | None]]:
    # Built at run time, the reader travels to the check's workers by value (cloudpickle pickles a
    # module-level function by reference): they run it without importing miaray and torch.
    def read(folders: Sequence[str]) -> list[str | None]:
        """The marker token in each folder, None where there is none."""
        tokens = []
        for folder in folders:
            try:
                tokens.append(Path(folder, MARKER).read_text())
            except OSError:
                tokens.append(None)
        return tokens
    return read


def _not_shared(option: str, folder: str, nodes: Sequence[str], cluster_nodes: int) -> str:
    where = "a folder every node mounts (e.g. EFS)" + (", or an s3:// URI" if option == "--storage" else "")
    return (f"{option} {folder} is not shared by the {cluster_nodes} nodes of this Ray cluster: "
            f"{', '.join(nodes)} do not see the marker {folder}/{MARKER} the driver wrote there (their trials "
            f"would write rows and models that the other nodes and a resume never see); pass {option} "
            f"with {where}")


def share(settings: RunSettings, *, folders: Mapping[str, str]) -> tuple[RunSettings, list[str]]:
    """Mark the local `folders` (option -> folder) and check that every alive node sees the marks.
    Returns the settings carrying the markers (for the trials' own checks) and the problems found,
    one per folder some node does not see."""
    shared = tuple((option, folder, marker_token(folder)) for option, folder in folders.items() if "://" not in folder)
    settings = dataclasses.replace(settings, shared=shared)
    nodes = [node for node in ray.nodes() if node["Alive"]]
    if len(nodes) < 2 or not shared:  # the driver's own node wrote the markers
        return settings, []
    read = ray.remote(num_cpus=0, max_retries=0)(_marker_reader())
    pending = {read.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False))
               .remote([folder for _, folder, _ in shared]): node for node in nodes}
    ready, late = ray.wait(list(pending), num_returns=len(pending), timeout=CHECK_TIMEOUT_S)
    blind: dict[str, list[str]] = {option: [] for option, _, _ in shared}
    for ref in ready + late:
        node = pending[ref]
        name = f"node {node['NodeID'][:12]} ({node['NodeManagerAddress']})"
        try:
            tokens = ray.get(ref) if ref in ready else None
        except Exception:  # the node died while checking: it runs no trial either
            continue
        for (option, _, token), seen in zip(shared, tokens or [None] * len(shared)):
            if seen != token:
                blind[option].append(name + ("" if tokens else f" (no answer in {CHECK_TIMEOUT_S:g} s)"))
    for ref in late:
        ray.cancel(ref, force=True)
    return settings, [_not_shared(option, folder, blind[option], len(nodes))
                      for option, folder, _ in shared if blind[option]]


def check_markers(shared: Sequence[tuple[str, str, str]]) -> None:
    """In a trial or task: fail, naming the option, when this node does not see a marked folder."""
    for (option, folder, token), seen in zip(shared, _marker_reader()([folder for _, folder, _ in shared])):
        if seen != token:
            node = f"{socket.gethostname()} (node {ray.get_runtime_context().get_node_id()[:12]})"
            raise ConfigError(_not_shared(option, folder, [node], len([n for n in ray.nodes() if n["Alive"]])))
