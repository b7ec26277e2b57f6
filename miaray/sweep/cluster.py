"""The Ray cluster a sweep runs on: joining it, what it offers (its nodes now and the node types its
autoscaler may add), the per-trial resources checked against that before any trial, the run-wide
settings every trial receives, and the setup of each trial's or task's worker process."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import yaml

from miaray.config import ConfigError
from miaray.store import Store

# Written by `ray up` on the head node (the autoscaler's resolved config); Tune reads it too.
BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"


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


# ---- the cluster ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClusterInfo:
    """The cluster the driver joined: its alive nodes' resources, and its autoscaler's node types (name ->
    resources of one node and 'max', how many such nodes at most; None where no autoscaler config is found)."""

    address: str
    nodes: tuple[dict[str, float], ...]
    node_types: dict[str, dict[str, float]] | None = None

    def total(self, resource: str) -> float:
        return sum(node.get(resource, 0.0) for node in self.nodes)

    def largest(self, resource: str) -> float:
        """The most of `resource` one node has or, by its node types, may have: what a trial can get."""
        sizes = [node.get(resource, 0.0) for node in self.nodes]
        sizes += [kind.get(resource, 0.0) for kind in (self.node_types or {}).values() if kind.get("max", 1) > 0]
        return max(sizes, default=0.0)

    def describe(self) -> str:
        line = (f"{self.address}: {len(self.nodes)} node{'s' * (len(self.nodes) != 1)}, "
                f"{self.total('CPU'):g} CPUs, {self.total('GPU'):g} GPUs")
        if self.node_types is None:
            return line + "; no autoscaler config (node types unknown)"
        kinds = ", ".join(f"{name} ({kind.get('CPU', 0):g} CPU, {kind.get('GPU', 0):g} GPU, up to {kind['max']:g})"
                          for name, kind in sorted(self.node_types.items()))
        return f"{line}; autoscaler node types: {kinds}"


def autoscaler_node_types(path: str = BOOTSTRAP_CONFIG) -> dict[str, dict[str, float]] | None:
    """The node types of the cluster launcher's config at `path` (on a `ray up` head): name ->
    resources of one node plus 'max', the most nodes of that type; None where there is no such file."""
    file = Path(path).expanduser()
    if not file.is_file():
        return None
    config = yaml.safe_load(file.read_text()) or {}
    head = config.get("head_node_type")
    return {name: {**{k: float(v) for k, v in (kind.get("resources") or {}).items()},
                   "max": float(1 if name == head else kind.get("max_workers", config.get("max_workers", 0)))}
            for name, kind in (config.get("available_node_types") or {}).items()}


def cluster_info() -> ClusterInfo:
    """What the connected cluster offers now, and may offer by its autoscaler's node types."""
    nodes = tuple({k: float(v) for k, v in node["Resources"].items()} for node in ray.nodes() if node["Alive"])
    return ClusterInfo(address=ray.get_runtime_context().gcs_address, nodes=nodes,
                       node_types=autoscaler_node_types())


PROBE_TIMEOUT_S = 10.0  # a head that does not accept a TCP connection in this time is not there


def check_address(address: str, *, option: str = "--address") -> tuple[str, int] | None:
    """(host, port) of a host:port address, None for 'auto', 'local' and a ray:// client address;
    anything else raises ConfigError."""
    if address in ("auto", "local") or address.startswith("ray://"):
        return None
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{option} {address!r}: give 'auto', 'local' or the HOST:PORT of a Ray cluster's head "
                          "(e.g. 10.0.0.5:6379)")
    return host.strip("[]"), int(port)


def check_reachable(address: str, *, option: str = "--address") -> None:
    """Refuse a host:port where nothing accepts a connection: Ray itself would retry for many minutes,
    deaf to Ctrl-C. A malformed address is a ConfigError, one that does not answer a ConnectionError."""
    host_port = check_address(address, option=option)
    if host_port is None:
        return
    try:
        socket.create_connection(host_port, timeout=PROBE_TIMEOUT_S).close()
    except OSError as error:
        raise ConnectionError(f"{option} {address}: no Ray cluster answers there ({error.strerror or error}); "
                              "start its head (`ray start --head`), give the address `ray status` prints on "
                              "the head, or use --address auto (this machine) or local") from None


def connect(*, address: str = "auto") -> ClusterInfo:
    """Join Ray and print the cluster joined (the first progress line): 'auto' joins the Ray instance
    running on this machine if there is one (a cluster's head, or any local `ray start`), else starts
    a local instance; 'local' always starts a new local instance; host:port joins that cluster, which
    must answer (`check_reachable`; so must $RAY_ADDRESS, which 'auto' follows)."""
    if not ray.is_initialized() and address != "local":
        given = address if address != "auto" else os.environ.get("RAY_ADDRESS", "").strip()
        if given:
            check_reachable(given, option="--address" if address != "auto" else "$RAY_ADDRESS")
    if ray.is_initialized():
        joined = "using the Ray instance this process already joined"
    elif address == "auto":
        try:
            ray.init(address="auto")
            joined = "joined the Ray instance running on this machine (--address auto)"
        except ConnectionError:
            ray.init()
            joined = "no Ray instance runs on this machine: started a local one"
    else:
        ray.init(address=address)
        joined = "started a local instance (--address local)" if address == "local" else "joined the cluster"
    info = cluster_info()
    print(f"Ray: {joined} at {info.describe()}", flush=True)
    return info


# ---- per-trial resources -------------------------------------------------------------------------
def default_gpus(info: ClusterInfo) -> tuple[float, str]:
    """GPUs per trial when the user gives none, and why: 1 where a node or node type has a GPU."""
    if info.largest("GPU") >= 1:
        where = "a node of the cluster has" if info.total("GPU") else "the autoscaler's node types include"
        return 1.0, f"GPUs per trial: 1 ({where} GPUs; --gpus-per-trial sets it)"
    if info.node_types is not None:
        return 0.0, "GPUs per trial: 0 (no node or autoscaler node type has a GPU)"
    return 0.0, ("note: GPUs per trial: 0, because no node of this cluster has a GPU now and its node types "
                 f"are unknown (no autoscaler config at {BOOTSTRAP_CONFIG}); pass --gpus-per-trial if GPU "
                 "nodes join later")


def resource_problems(settings: RunSettings, info: ClusterInfo) -> list[str]:
    """Why no node can ever run a trial with these resources (Ray would wait for ever); empty if one can."""
    problems = []
    for option, resource, asked in (("--cpus-per-trial", "CPU", settings.cpus_per_trial),
                                    ("--gpus-per-trial", "GPU", settings.gpus_per_trial)):
        largest = info.largest(resource)
        if asked > largest:
            types = "" if info.node_types is None else " (autoscaler node types included)"
            problems.append(f"{option} {asked:g}: each trial asks {asked:g} {resource}, but the cluster has "
                            f"{info.total(resource):g} {resource}s on {len(info.nodes)} node(s) and no node "
                            f"has more than {largest:g}{types}; ask at most {largest:g}")
    return problems


# ---- in each trial and task ------------------------------------------------------------------------
def prepare_worker(settings: RunSettings) -> str:
    """Threads and GPU memory of this trial or task; returns the torch device it should use. A trial
    that asked for a GPU and finds no CUDA device fails: running it on the CPU would hide the fault."""
    import torch

    torch.set_num_threads(max(1, int(settings.cpus_per_trial)))
    if settings.gpus_per_trial <= 0:
        return "cpu"
    if not torch.cuda.is_available():
        raise RuntimeError(
            f"this trial asked for {settings.gpus_per_trial:g} GPU and Ray gave it GPU {ray.get_gpu_ids()} on "
            f"{socket.gethostname()} (node {ray.get_runtime_context().get_node_id()}), but torch "
            f"{torch.__version__} (CUDA build: {torch.version.cuda or 'none'}) finds no CUDA device "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}): install a CUDA build of torch "
            "and the NVIDIA driver on every GPU node, or pass --gpus-per-trial 0 to run on CPUs")
    # Fractional GPUs only schedule; this keeps four 0.25-GPU trials from starving each other.
    torch.cuda.set_per_process_memory_fraction(min(1.0, settings.gpus_per_trial))
    return "cuda"


def worker_context(settings: RunSettings, *, label: str) -> dict[str, Any]:
    """What `make_context` and `run_unit` take from the run's settings in a trial or task: the store,
    the data root, this worker's device (`prepare_worker`) and a log whose lines start with `label`.
    First it checks that this node sees the run's shared folders (`miaray.sweep.shared`)."""
    from miaray.sweep.shared import check_markers

    check_markers(settings.shared)
    return {"store": Store(settings.store), "data_root": settings.data_root, "device": prepare_worker(settings),
            "log": lambda message: print(f"[{label}] {message}", flush=True)}
