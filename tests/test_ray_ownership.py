"""Whose Ray a sweep uses, and what is left when its driver ends (issue 22, items 3, 6 and 7).

- `--address auto` joins a cluster started as one (`ray start`, $RAY_ADDRESS) and never an instance another
  driver started for itself, which would die with that driver; otherwise it starts a private instance.
- A private instance's temporary folder is this user's alone (0700), and no AWS secret reaches a file.
- SIGTERM stops a sweep like Ctrl-C (one line, exit 143, rows kept); SIGKILL of the driver leaves no process of
  the Ray it started (the watchdog); a full disk says so.

Sweeps run as real subprocesses on tiny settings; each starts at most one Ray instance of its own, with its own
short RAY_TMPDIR (Unix socket paths are limited to 107 bytes), and never a `ray stop`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from miaray import results
from miaray.cli import TERMINATED_STATUS, Terminated, entry_point, exit_status, message
from miaray.sweep.cluster import OWNER_ENV, started_clusters
from miaray.sweep.disk import DiskFullError, DiskWatch, check_free_space, free_space_problems

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--datasets", "digits", "--archs", "resnet18", "--methods", "l1_unstructured", "--width", "0.125",
        "--attacks", "conf", "--max-epochs", "1", "--shadows", "1", "--gpus-per-trial", "0"]
SECRET = "miarayFAKEsecret0123456789abcdefXYZ"  # a fake AWS secret: must reach no file
RAY = str(Path(sys.executable).with_name("ray"))


@pytest.fixture
def ray_tmp():
    """A short RAY_TMPDIR of this test's own (Ray's socket paths must stay under 107 bytes)."""
    folder = Path(tempfile.mkdtemp(prefix="mr", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _env(ray_tmp: Path, **extra: str) -> dict[str, str]:
    """The sweep's environment: no RAY_ADDRESS (conftest.py sets it for the session's instance), this test's
    RAY_TMPDIR, one token-authentication mode for every Ray of the test."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", OWNER_ENV)}
    return {**env, "RAY_TMPDIR": str(ray_tmp), "RAY_AUTH_MODE": "disabled", **extra}


def _sweep(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "sweeps" / "full_grid.py"), *TINY, *args]


def _owned_by(token_prefix: str = "") -> dict[int, str]:
    """pid -> command line of this user's processes that carry OWNER_ENV (a private instance's)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            env = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            if any(v.startswith(f"{OWNER_ENV}={token_prefix}".encode()) for v in env):
                found[int(entry)] = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:400]
        except OSError:
            pass
    return found


def _wait_gone(token_prefix: str, timeout: float) -> dict[int, str]:
    deadline = time.monotonic() + timeout
    while (left := _owned_by(token_prefix)) and time.monotonic() < deadline:
        time.sleep(0.25)
    return left


def _files_holding(text: str, *folders: Path) -> list[str]:
    needle, hits = text.encode(), []
    for folder in folders:
        for path in Path(folder).rglob("*"):
            try:
                if path.is_file() and not path.is_symlink() and needle in path.read_bytes():
                    hits.append(str(path))
            except OSError:  # a socket, or a file Ray removed meanwhile
                pass
    return hits


def _ray_line(stdout: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith("Ray: "))


# ---- free space (a fake statvfs: no disk is filled) ---------------------------------------------------
def _statvfs(free_mib: dict[str, float]):
    """A statvfs whose free space (MiB) is looked up by the longest matching path prefix."""
    def fake(path: str):
        key = max((p for p in free_mib if path.startswith(p)), key=len)
        return os.statvfs_result((4096, 4096, 10**6, 0, int(free_mib[key] * 256), 0, 0, 0, 0, 255))
    return fake


def test_free_space_problems_name_each_nearly_full_local_folder(tmp_path):
    (tmp_path / "full").mkdir()  # a full disk mounted there; the experiment folder in it is not made yet
    fake = _statvfs({"/": 10_000, str(tmp_path / "full"): 3})
    folders = {"--storage": str(tmp_path / "full" / "not-made-yet"), "--cache": str(tmp_path / "ok"),
               "remote": "s3://bucket/x"}
    assert free_space_problems(folders, min_free=512 * 2**20, statvfs=fake) == [
        f"--storage {tmp_path / 'full' / 'not-made-yet'}: 3 MiB free"]
    with pytest.raises(DiskFullError) as raised:
        check_free_space(folders, min_free=512 * 2**20, statvfs=fake)
    assert str(raised.value).startswith(f"disk full: --storage {tmp_path / 'full' / 'not-made-yet'}: 3 MiB free "
                                        "(a sweep needs 512 MiB, $MIARAY_MIN_FREE_MB sets it)")
    assert raised.value.errno == 28  # ENOSPC, an OSError: the entry points print it as one line, exit 1


def test_a_disk_filling_up_during_a_sweep_stops_it_with_one_line(tmp_path, capsys):
    free = {"/": 10_000.0}

    @entry_point(prog="tool", resume="rerun it")
    def main(argv=None) -> int:
        with DiskWatch({"--storage": str(tmp_path)}, every_s=0.05, min_free=512 * 2**20, statvfs=_statvfs(free)):
            free["/"] = 100.0  # the disk fills up while the sweep runs
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # the sweep's work, interrupted by the watch
                time.sleep(0.01)
        return 0

    assert main([]) == 1
    assert capsys.readouterr().err == (f"tool: error: disk full: --storage {tmp_path}: 100 MiB free (a sweep needs "
                                       "512 MiB, $MIARAY_MIN_FREE_MB sets it); free space there and rerun the same "
                                       "command: cells with ok rows are kept\n")


def test_an_error_raised_while_a_disk_is_full_is_reported_as_the_full_disk(tmp_path):
    free = {"/": 10_000.0}
    with pytest.raises(DiskFullError) as raised:
        with DiskWatch({"Ray's temporary folder": str(tmp_path)}, every_s=60, min_free=2**20,
                       statvfs=_statvfs(free)):
            free["/"] = 0.0
            raise TimeoutError("Failed to connect to GCS within 60 seconds")  # what Ray raised on a full disk
    assert "disk full: Ray's temporary folder" in str(raised.value)
    assert isinstance(raised.value.__cause__, TimeoutError)


def test_a_sweep_on_a_full_disk_says_so_before_ray_starts(tmp_path, ray_tmp):
    # Every disk is "full" when a sweep needs more than any disk has.
    out = subprocess.run(_sweep("--sparsities", "0.9", "--storage", str(tmp_path)), capture_output=True, text=True,
                         timeout=120, env=_env(ray_tmp, MIARAY_MIN_FREE_MB="1e12"))
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith(f"full_grid.py: error: disk full: Ray's temporary folder {ray_tmp}/miaray-"), last
    assert "Traceback" not in out.stderr and "Ray: " not in out.stdout
    assert not list(ray_tmp.rglob("session_*"))  # no Ray was started


# ---- SIGTERM ---------------------------------------------------------------------------------------
def test_sigterm_is_terminated_status_143_and_one_line():
    assert exit_status(Terminated()) == TERMINATED_STATUS == 143
    assert message(Terminated(), resume="rerun it") == "terminated (SIGTERM); rerun it"


@pytest.mark.slow
def test_sigterm_to_a_sweep_stops_it_like_ctrl_c_keeps_its_rows_and_its_ray(tmp_path, ray_tmp):
    storage = tmp_path / "results"
    experiment = storage / "full_grid-quick"
    # Three cells, two at a time (half the CPUs Ray sees each): SIGTERM lands once a cell has its rows, while
    # the third has not finished.
    import ray._private.utils

    half = f"{ray._private.utils.get_num_cpus() / 2:g}"
    with open(tmp_path / "out", "w") as out, open(tmp_path / "err", "w") as err:  # no pipe to fill up
        driver = subprocess.Popen(_sweep("--sparsities", "0.5,0.7,0.9", "--cpus-per-trial", half, "--storage",
                                         str(storage)), env=_env(ray_tmp), stdout=out, stderr=err)
    try:
        deadline = time.monotonic() + 150
        while not results.unit_files(experiment) and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert driver.poll() is None and results.unit_files(experiment), "no cell finished, or all did"
        token = f"{driver.pid}-"
        assert any("ray::" in c for c in _owned_by(token).values())  # its Ray's agents and workers
        kept = results.load(experiment)
        driver.send_signal(signal.SIGTERM)
        driver.wait(timeout=60)
    finally:
        driver.kill()
    err = (tmp_path / "err").read_text()
    assert driver.returncode == 143, err[-3000:]
    assert "Traceback" not in err and "SIGABRT" not in err and "*** " not in err
    assert err.strip().splitlines()[-1] == ("full_grid.py: terminated (SIGTERM); cells with ok rows are kept; "
                                            "rerun the same command to run the others")
    after = results.load(experiment)
    assert set(kept["unit_id"]) <= set(after.loc[after["status"] == "ok", "unit_id"])  # the rows are kept
    assert _wait_gone(token, 20) == {}  # every process of the Ray it started


@pytest.mark.slow
def test_after_sigkill_of_its_driver_no_process_of_the_ray_it_started_lives_on(tmp_path, ray_tmp):
    # Work for minutes (8 originals of 20 epochs before any cell), so that the sweep cannot end before a busy
    # worker is seen; it is killed as soon as one is. A private instance (--address local), whatever else
    # runs on the machine; its output is kept for the message.
    log = tmp_path / "driver.log"
    with open(log, "w") as out:
        driver = subprocess.Popen(_sweep("--sparsities", "0.9", "--seeds", "0,1,2,3", "--max-epochs", "20",
                                         "--address", "local", "--storage", str(tmp_path / "results")),
                                  env=_env(ray_tmp), stdout=out, stderr=subprocess.STDOUT)
    token = f"{driver.pid}-"
    seen: list[list[str]] = []
    try:
        deadline = time.monotonic() + 120
        # Workers of the instance are up beside its raylet (a worker is told by its title, ray::..., or where Ray
        # leaves the command line as it was, by its script). The raylet's agents, which used to live on for
        # over a minute, are among the processes checked below whenever Ray has started them by then: it does
        # not always within a short sweep, so they are not waited for.
        while True:
            titles = list(_owned_by(token).values())
            if any(t.startswith("ray::") or "_worker.py" in t for t in titles) \
                    and any("/raylet/raylet" in t for t in titles):
                break
            seen.append(titles)
            most = [t[:200] for t in max(seen, key=len, default=[])]
            assert driver.poll() is None and time.monotonic() < deadline, \
                f"no worker beside the raylet: {most}; the driver's output:\n{log.read_text()[-2000:]}"
            time.sleep(0.1)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    left = _wait_gone(token, 20)
    assert left == {}, left


def test_the_watchdog_stops_only_the_processes_of_its_instance():
    """Without Ray: a 'driver' starts the watchdog and tagged children (one a grandchild), then is SIGKILLed."""
    code = (
        "import os, subprocess, sys, time\n"
        "from miaray.sweep import cluster\n"
        "token = cluster._start_watchdog()\n"
        "tagged = {**os.environ, cluster.OWNER_ENV: token}\n"
        "a = subprocess.Popen(['sleep', '300'], env=tagged)\n"
        "b = subprocess.Popen(['sh', '-c', 'sleep 300 & wait'], env=tagged)\n"
        "c = subprocess.Popen(['sleep', '300'], start_new_session=True)\n"
        "print(token, a.pid, b.pid, c.pid, flush=True)\n"
        "time.sleep(300)\n")
    driver = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    token, *pids = driver.stdout.readline().split()
    untagged = int(pids[-1])
    try:
        time.sleep(0.5)
        assert len(_owned_by(token)) == 3  # sleep, sh and its sleep
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        assert _wait_gone(token, 15) == {}
        os.kill(untagged, 0)  # not of the instance: left alone
    finally:
        os.kill(untagged, signal.SIGKILL)


# ---- whose Ray: a `ray start` cluster is joined, a driver's own instance never -------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def test_an_address_file_no_raylet_here_serves_is_not_a_cluster(ray_tmp, monkeypatch):
    # Left by a `ray start` node killed without `ray stop`: Ray's own "auto" would wait on it for a minute.
    (ray_tmp / "ray").mkdir()
    (ray_tmp / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{_free_port()}")
    monkeypatch.setenv("RAY_TMPDIR", str(ray_tmp))
    assert started_clusters()[0] == []


@pytest.mark.slow
def test_auto_joins_a_cluster_started_by_ray_start(tmp_path, ray_tmp, monkeypatch):
    # A head started by `ray start` in this test's RAY_TMPDIR (where it writes its address file), in a session
    # of its own; the sweep asks more CPUs than it has, so it stops after joining, before any trial.
    env = _env(ray_tmp)
    log_path = tmp_path / "start.log"
    with open(log_path, "w") as log:
        head = subprocess.Popen([RAY, "start", "--block", "--head", f"--port={_free_port()}", "--num-cpus=1",
                                 "--num-gpus=0", "--include-dashboard=false", "--object-store-memory=100000000",
                                 "--disable-usage-stats"],
                                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while "block forever" not in log_path.read_text():
            assert head.poll() is None and time.monotonic() < deadline, log_path.read_text()[-2000:]
            time.sleep(0.2)
        address = (ray_tmp / "ray" / "ray_current_cluster").read_text().strip()
        monkeypatch.setenv("RAY_TMPDIR", str(ray_tmp))
        assert started_clusters()[0] == [address]
        out = subprocess.run(_sweep("--sparsities", "0.9", "--cpus-per-trial", "64", "--storage", str(tmp_path)),
                             capture_output=True, text=True, timeout=120, env=env)
    finally:
        head.send_signal(signal.SIGTERM)  # `ray start --block` stops the processes it started
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    assert _ray_line(out.stdout).startswith(
        f"Ray: joined the cluster started on this machine by `ray start` (--address auto) at {address}: 1 node, 1 CPUs")
    assert "--cpus-per-trial 64: each trial asks 64 CPU" in out.stderr
    assert not (ray_tmp / f"miaray-{os.getuid()}").exists()  # no instance of its own


@pytest.mark.slow
def test_a_default_sweep_never_joins_a_ray_another_driver_owns_and_leaks_no_secret(ray_cluster, tmp_path, ray_tmp):
    """This pytest process is a driver that owns its Ray (conftest's `ray.init()`), like a sweep run with
    `--address local`. A default sweep beside it starts a private instance and leaves it alone; with AWS
    credentials in its environment, the secret reaches no file of the storage, the store or Ray's folder."""
    owned = ray_cluster.get_runtime_context().gcs_address
    assert owned in started_clusters()[1]  # running here, and not a cluster started as one
    storage, cache = tmp_path / "results", tmp_path / "cache"
    env = _env(ray_tmp, AWS_ACCESS_KEY_ID="AKIAMIARAYFAKE0000", AWS_SECRET_ACCESS_KEY=SECRET,
               AWS_SESSION_TOKEN=SECRET + "session")
    driver = subprocess.Popen(_sweep("--sparsities", "0.9", "--storage", str(storage), "--cache", str(cache)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    stdout, stderr = driver.communicate(timeout=240)
    out = subprocess.CompletedProcess(driver.args, driver.returncode, stdout, stderr)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert _wait_gone(f"{driver.pid}-", 20) == {}  # a normal end, too, leaves no process of its Ray
    line = _ray_line(out.stdout)
    private = ray_tmp / f"miaray-{os.getuid()}"
    assert line.startswith("Ray: no cluster started by `ray start` on this machine and no $RAY_ADDRESS: started a "
                           f"private instance (--address auto; temporary folder {private / 'ray'}"), line
    assert "left alone: " in line and owned in line.split(" at ")[0]  # named as another driver's, not joined
    assert f" at {owned}:" not in line
    # The owner's Ray is untouched and still serves its driver.
    assert ray_cluster.get(ray_cluster.put(7)) == 7 and len(ray_cluster.nodes()) == 1
    # Ray's folder is this user's alone; its logs were written there.
    assert (private.stat().st_mode & 0o777) == 0o700
    assert list(private.rglob("runtime_env_agent.log"))
    assert (storage / "full_grid-quick" / "rows").is_dir() and cache.is_dir()
    assert _files_holding(SECRET, storage, cache, ray_tmp) == []
    assert SECRET not in out.stdout + out.stderr
