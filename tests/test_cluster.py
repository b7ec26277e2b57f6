"""Faults on a real two-node Ray cluster on one machine: a head and a worker node, each a `ray start
--block` with its own temp dir, stopped by their own process ids. The sweep drivers are scripts that
join this cluster by its address (not the session's `ray_cluster`, which this module never starts).

Where the kernel lets us (root, `unshare -m`), the worker node runs in a private mount namespace with
an empty tmpfs over one folder: a real node-local folder the head sees and the worker does not.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from miaray import results
from miaray.store import Store

ROOT = Path(__file__).resolve().parents[1]
# A tiny grid: 4 cells, 2 originals (target + 1 shadow), narrow nets, one epoch, the cheapest attack.
TINY = ["--datasets", "digits", "--archs", "resnet18", "--methods", "l1_unstructured,l1_structured",
        "--sparsities", "0.5,0.9", "--width", "0.125", "--attacks", "conf", "--max-epochs", "1", "--shadows", "1"]
CELLS = 4
# The environment of this cluster's nodes and drivers: one authentication mode for all (a head started where
# ~/.ray/auth_token exists turns token authentication on, which a plain `ray start --address` worker does
# not follow), and no RAY_ADDRESS (conftest.py's, for the session instance): drivers name this cluster's.
ENV = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "RAY_AUTH_MODE": "disabled"}
RAY = str(Path(sys.executable).with_name("ray"))


@dataclass
class TwoNodes:
    address: str
    head: subprocess.Popen
    worker: subprocess.Popen
    private: Path | None  # a folder the worker node does not see (None where unshare is not permitted)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _start_node(args: list[str], *, private: Path | None = None) -> tuple[subprocess.Popen, Path]:
    # A short temp dir of its own (Unix socket paths are limited to 107 bytes), and a session of its own:
    # the node's processes are that session's and nothing else.
    temp = Path(tempfile.mkdtemp(prefix="mr"))
    command = [RAY, "start", "--block", f"--temp-dir={temp}", "--num-cpus=1", "--num-gpus=0",
               "--object-store-memory=100000000", "--disable-usage-stats", *args]
    if private is not None:
        command = ["unshare", "-m", "--propagation", "private", "sh", "-c", 'mount -t tmpfs none "$0" && exec "$@"',
                   str(private), *command]
    with open(temp / "start.log", "w") as log:
        node = subprocess.Popen(command, env=ENV, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while "block forever" not in (temp / "start.log").read_text():  # printed once the node is registered
        if node.poll() is not None or time.monotonic() > deadline:
            _stop_node(node)
            pytest.fail(f"ray start did not start a node:\n{(temp / 'start.log').read_text()[-3000:]}")
        time.sleep(0.2)
    return node, temp


def _node_processes(node: subprocess.Popen) -> dict[int, str]:
    """pid -> command line of every process of a node: its `ray start` leads their session."""
    processes = {}
    for proc in Path("/proc").iterdir():
        try:
            # Fields after the command name, which sits in parentheses: state, ppid, pgrp, session, ...
            if proc.name.isdigit() and int((proc / "stat").read_text().rsplit(")", 1)[1].split()[3]) == node.pid:
                processes[int(proc.name)] = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError):  # the process ended meanwhile
            pass
    return processes


def _kill_node(node: subprocess.Popen) -> None:
    """SIGKILL a node's processes at once, as a lost machine."""
    for pid in _node_processes(node):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    node.wait(timeout=60)


def _stop_node(node: subprocess.Popen) -> None:
    if node.poll() is None:
        node.send_signal(signal.SIGTERM)  # `ray start --block` stops the processes it started
        try:
            node.wait(timeout=60)
        except subprocess.TimeoutExpired:
            _kill_node(node)


def _can_hide_a_folder() -> bool:
    return shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "-m", "--propagation", "private", "true"], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    private = tmp_path_factory.mktemp("node-local")
    head, head_temp = _start_node(["--head", f"--port={_free_port()}", "--include-dashboard=false"])
    worker, temps = None, [head_temp]
    try:
        address = (head_temp / "ray_current_cluster").read_text().strip()
        hidden = private if _can_hide_a_folder() else None
        worker, worker_temp = _start_node([f"--address={address}"], private=hidden)
        temps.append(worker_temp)
        yield TwoNodes(address=address, head=head, worker=worker, private=hidden)
    finally:
        for node in (worker, head):
            if node is not None:
                _stop_node(node)
        for temp in temps:
            shutil.rmtree(temp, ignore_errors=True)


def _sweep(two_nodes: TwoNodes, *args: str) -> list[str]:
    return [sys.executable, str(ROOT / "sweeps" / "full_grid.py"), *TINY, "--cpus-per-trial", "1",
            "--address", two_nodes.address, *args]


def test_a_folder_some_node_does_not_see_and_missing_gpus_are_refused_before_any_trial(two_nodes):
    if two_nodes.private is None:
        pytest.skip("unshare -m is not permitted here: no node-local folder can be made on one machine")
    storage, cache = two_nodes.private / "results", two_nodes.private / "cache"
    out = subprocess.run(_sweep(two_nodes, "--storage", str(storage), "--cache", str(cache), "--name", "refused",
                                "--gpus-per-trial", "0.3"),
                         env=ENV, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stdout[-3000:] + out.stderr[-3000:]
    assert f"Ray: joined the cluster at {two_nodes.address}: 2 nodes, 2 CPUs, 0 GPUs" in out.stdout
    error = out.stderr
    assert "--gpus-per-trial 0.3: each trial asks 0.3 GPU, but the cluster has 0 GPUs on 2 node(s)" in error
    assert f"--storage {storage}/refused is not shared by the 2 nodes of this Ray cluster" in error
    assert f"--cache {cache} is not shared by the 2 nodes" in error
    assert "EFS" in error and "s3://" in error
    # Before any trial: no Tune experiment, no rows, no model.
    assert not (storage / "refused" / "tune").exists() and not results.unit_files(storage / "refused")
    assert Store(cache).events() == []


def test_a_worker_node_lost_mid_sweep_loses_and_repeats_nothing(two_nodes, tmp_path):
    storage, cache = tmp_path / "results", tmp_path / "cache"
    experiment = storage / "lost-node"
    log = tmp_path / "driver.log"
    command = _sweep(two_nodes, "--storage", str(storage), "--cache", str(cache), "--name", "lost-node",
                     "--retries", "2")
    with open(log, "w") as output:
        driver = subprocess.Popen(command, env=ENV, stdout=output, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 400
    # The worker node dies mid-sweep (a cell has its rows) while it runs a trial (Ray titles that process).
    while not (results.unit_files(experiment)
               and any("ImplicitFunc.train" in c for c in _node_processes(two_nodes.worker).values())):
        assert driver.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.05)
    _kill_node(two_nodes.worker)
    at_loss = len(results.unit_files(experiment))
    try:
        driver.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        driver.kill()
    out = log.read_text()
    assert driver.returncode == 0, out[-4000:]
    assert "2 nodes" in out and at_loss < CELLS
    assert "(retrying: " in out  # the lost trial ran again, on the head
    df = results.load(experiment)
    assert df["unit_id"].nunique() == CELLS and (df["status"] == "ok").all()  # every cell present...
    assert not df.duplicated(["unit_id", "attack", "target_model"]).any()     # ...once
    builds = Counter(e["hash"] for e in Store(cache).events() if e["kind"] != "original_attack")
    # 2 originals and 2 pruned models per cell, each with its signals: each built once, none twice (the
    # original's attack results, stored once per originals, are counted apart).
    assert len(builds) == 2 * (2 + 2 * CELLS) and max(builds.values()) == 1, builds
    print(f"\nworker node lost with {at_loss} of {CELLS} cells done; the driver's log:\n{out[-4000:]}")
