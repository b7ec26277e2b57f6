"""The Ray cluster a sweep runs on: joining it, what it offers (its nodes now and the node types its
autoscaler may add), the per-trial resources checked against that before any trial, the run-wide
settings every trial receives, and the setup of each trial's or task's worker process."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import stat
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import ray
import yaml

from miaray.config import ConfigError
from miaray.store import Store
from miaray.sweep.disk import check_free_space
from miaray.sweep.settings import RunSettings
from miaray.sweep.shared import check_markers

# Written by `ray up` on the head node (the autoscaler's resolved config); Tune reads it too.
BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"


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


# ---- whose Ray: a cluster started as one, or a private instance of this driver -------------------
OWNER_ENV = "MIARAY_RAY_OWNER"        # set in every process of a private instance (`watchdog`)
WATCHDOG = Path(__file__).with_name("watchdog.py")
_watchdogs: list[tuple[subprocess.Popen, int]] = []  # (process, write end of its pipe): held till the driver ends


def _raylets() -> list[dict[str, str]] | None:
    """The `--flag=value` arguments of every raylet running on this machine (any user's); None where there
    is no /proc to read them from."""
    found: list[dict[str, str]] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            args = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if args and os.path.basename(args[0]) == "raylet":
            found.append(dict(arg.split("=", 1) for arg in args[1:] if arg.startswith("--") and "=" in arg))
    return found


def started_clusters() -> tuple[list[str], list[str]]:
    """(clusters, others): the GCS address of the Ray cluster started as one with a node on this machine
    (none or one), and those of the other Ray instances running here.

    `ray start` (a head, a worker node, every node of `ray up`) writes the cluster's GCS address to
    `ray_current_cluster` in Ray's temporary folder, `<RAY_TMPDIR, TMPDIR or /tmp>/ray` unless given
    `--temp-dir`; Ray 2.60 writes it nowhere else (but its test `Cluster`), and never for an instance
    `ray.init()` starts for its driver. That file is Ray's own first choice for `ray.init(address="auto")`
    (services.get_ray_address_from_environment), which then falls back to *any* raylet in the process
    list, a driver-owned one included, which dies with its driver. Here the file counts only if a raylet
    of this machine serves that GCS (else it is stale, left by a node killed without `ray stop`), and
    there is no fallback. Without /proc (macOS) the file counts if its GCS accepts a connection."""
    default = ray._private.services.find_bootstrap_address(None)
    raylets = _raylets()
    if raylets is None:
        return ([default] if default and _answers(default) else []), []
    here = {flags["--gcs-address"] for flags in raylets if flags.get("--gcs-address")}
    clusters = [default] if default in here else []
    return clusters, sorted(here - set(clusters))


def _answers(address: str) -> bool:
    try:
        host_port = check_address(address)
        if host_port is not None:
            socket.create_connection(host_port, timeout=2.0).close()
        return host_port is not None
    except (OSError, ConfigError):
        return False


def private_temp_dir() -> Path:
    """Ray's temporary folder for a private instance: `<RAY_TMPDIR, TMPDIR or /tmp>/miaray-<uid>/ray`, in a
    folder of this user's with mode 0700. Ray makes its own folders 0777 and its logs 0644 (the runtime
    env agent's log holds the environments it sets up), so only a private parent keeps them private."""
    base = Path(ray._common.utils.get_default_system_temp_dir())
    parent = base / f"miaray-{os.getuid()}"
    try:
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = parent.lstat()
    except OSError as error:
        raise OSError(f"cannot make Ray's temporary folder {parent} ({error.strerror or error}); "
                      "set RAY_TMPDIR to a writable folder") from None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():  # made by someone else: not private
        raise OSError(f"Ray's temporary folder {parent} is not a folder of this user's (uid "
                      f"{os.getuid()}): remove it, or set RAY_TMPDIR to a folder of yours")
    if stat.S_IMODE(info.st_mode) != 0o700:
        parent.chmod(0o700)
    return parent / "ray"


def _start_watchdog() -> str:
    """Start the process that stops this driver's private Ray instance once the driver has ended
    (`miaray.sweep.watchdog`); returns the value of OWNER_ENV that marks the instance's processes."""
    token = f"{os.getpid()}-{secrets.token_hex(8)}"
    read, write = os.pipe()  # both ends non-inheritable: Ray's processes never hold the write end
    try:
        env = {k: v for k, v in os.environ.items() if k != OWNER_ENV}
        process = subprocess.Popen([sys.executable, "-I", str(WATCHDOG), OWNER_ENV, token], stdin=read,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                                   start_new_session=True)
    except BaseException:
        os.close(write)
        raise
    finally:
        os.close(read)
    _watchdogs.append((process, write))
    return token


def start_private(**init_args: Any) -> Path:
    """Start a Ray instance that belongs to this driver: its temporary folder private to this user
    (`private_temp_dir`), its free space checked first, and a watchdog that stops all its processes
    once the driver ends, whatever ends it. Returns that temporary folder."""
    temp = private_temp_dir()
    check_free_space({"Ray's temporary folder": str(temp)})
    token = _start_watchdog()
    previous = os.environ.get(OWNER_ENV)
    os.environ[OWNER_ENV] = token  # inherited by the GCS and raylet, and by the raylet's agents and workers
    try:
        ray.init(address="local", _temp_dir=str(temp), **init_args)
    except Exception as error:
        check_free_space({"Ray's temporary folder": str(temp)}, cause=error)  # a full disk says so
        raise
    finally:
        if previous is None:
            os.environ.pop(OWNER_ENV, None)
        else:
            os.environ[OWNER_ENV] = previous
    return temp


AWS_CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN")


def keep_credentials_out_of_trials() -> None:
    """Ray Tune copies the driver's AWS credential variables into each trial's runtime environment
    (`ray.tune.execution.class_cache.ENV_VARS_TO_PROPAGATE`), which Ray's runtime env agent writes to its
    log in plain text. Trials are left to the AWS credential chain of their node instead: the instance
    profile on a cluster, and on this machine the environment a private instance inherited from the
    driver, which no log shows."""
    from ray.tune.execution import class_cache

    class_cache.ENV_VARS_TO_PROPAGATE.difference_update(AWS_CREDENTIALS)


def _keeping_sigterm(init: Callable[[], Any]) -> Any:
    """Run `init` (a `ray.init`) and put back the Python SIGTERM handler it replaces: Ray's `sys.exit(15)`
    ends a sweep by SIGABRT and a native stack dump; the entry point's handler stops it like Ctrl-C."""
    on_main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if on_main else None
    try:
        return init()
    finally:
        if callable(previous):
            signal.signal(signal.SIGTERM, previous)


def connect(*, address: str = "auto") -> ClusterInfo:
    """Join Ray or start it, and print what it did (the first progress line).

    'auto' joins a Ray cluster that was started as one: the one $RAY_ADDRESS names (which must answer,
    `check_reachable`), else one started on this machine by `ray start` (a cluster's head or worker node,
    `started_clusters`); otherwise it starts a private instance (`start_private`). It never joins an
    instance another driver started for itself (`ray.init()`, `--address local`): that one dies with its
    driver. 'local' always starts a private instance; host:port joins that cluster, which must answer."""
    keep_credentials_out_of_trials()
    named = os.environ.get("RAY_ADDRESS", "").strip()  # Ray's own variable; 'auto' there names nothing
    if address == "auto" and named == "local":
        address = "local"
    if not ray.is_initialized() and address != "local":
        given = address if address != "auto" else named
        if given:
            check_reachable(given, option="--address" if address != "auto" else "$RAY_ADDRESS")
    if ray.is_initialized():
        joined = "using the Ray instance this process already joined"
    elif address == "auto" and named not in ("", "auto"):
        _keeping_sigterm(lambda: ray.init(address=named))
        joined = "joined the cluster $RAY_ADDRESS names (--address auto)"
    elif address == "auto":
        clusters, others = started_clusters()
        if clusters:
            _keeping_sigterm(lambda: ray.init(address=clusters[0]))
            joined = "joined the cluster started on this machine by `ray start` (--address auto)"
        else:
            temp = _keeping_sigterm(start_private)
            left = (f"; {len(others)} other Ray instance{'s' * (len(others) != 1)} on this machine left alone: "
                    f"{', '.join(others)}") if others else ""
            joined = (f"no cluster started by `ray start` on this machine and no $RAY_ADDRESS: started a private "
                      f"instance (--address auto; temporary folder {temp}{left})")
    elif address == "local":
        temp = _keeping_sigterm(start_private)
        joined = f"started a private instance (--address local; temporary folder {temp})"
    else:
        _keeping_sigterm(lambda: ray.init(address=address))
        joined = "joined the cluster"
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
    check_markers(settings.shared)
    return {"store": Store(settings.store), "data_root": settings.data_root, "device": prepare_worker(settings),
            "log": lambda message: print(f"[{label}] {message}", flush=True)}
