"""The ways onto other people's machines (deploy/): the Slurm batch script run through stand-ins for srun
and scontrol that start two real Ray nodes on this machine, KubeRay's RayJob checked against KubeRay's
own CRD schema and the sweep's own parser, and the pinned versions that every path installs."""

import gzip
import os
import re
import secrets
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jsonschema
import yaml

from miaray import results

ROOT = Path(__file__).resolve().parents[1]
SBATCH = ROOT / "deploy" / "slurm" / "miaray.sbatch"
RAYJOB = ROOT / "deploy" / "k8s" / "rayjob.yaml"
CRD = ROOT / "tests" / "data" / "kuberay" / "ray.io_rayjobs.v1.7.0.yaml.gz"
FAKE_SLURM = ROOT / "tests" / "fake_slurm"
# Two cells, one original per role, narrow nets, one epoch, the cheapest attack.
TINY = ["--datasets", "digits", "--archs", "resnet18", "--methods", "l1_unstructured", "--sparsities", "0.5,0.9",
        "--width", "0.125", "--attacks", "conf", "--max-epochs", "1", "--shadows", "1", "--cpus-per-trial", "1"]


def pins() -> dict[str, str]:
    """deploy/pins.txt as {distribution (extras kept): version}."""
    lines = (line.split("#")[0].strip() for line in (ROOT / "deploy" / "pins.txt").read_text().splitlines())
    return dict(line.split("==") for line in lines if line)


# ---- Slurm ---------------------------------------------------------------------------------------------
def _processes_mentioning(text: str) -> dict[int, str]:
    found = {}
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit():
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                if text in cmdline or text in os.readlink(proc / "cwd"):
                    found[int(proc.name)] = cmdline
        except OSError:  # ended meanwhile, or not ours to read
            pass
    return found


def _session_members(sid: int) -> dict[int, str]:
    members = {}
    for proc in Path("/proc").iterdir():
        try:
            # Fields after the command name, which sits in parentheses: state, ppid, pgrp, session, ...
            if proc.name.isdigit() and int((proc / "stat").read_text().rsplit(")", 1)[1].split()[3]) == sid:
                members[int(proc.name)] = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError):
            pass
    return members


def _slurm_env(root: Path, nodes: list[str], job_id: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "SLURM_"))}
    return {**env, "PATH": os.pathsep.join([str(FAKE_SLURM), str(Path(sys.executable).parent), env["PATH"]]),
            "FAKE_SLURM_ROOT": str(root), "SLURM_JOB_ID": job_id, "SLURM_JOB_NODELIST": ",".join(nodes),
            "SLURM_JOB_NUM_NODES": str(len(nodes)), "SLURM_CPUS_PER_TASK": "1", "SLURM_SUBMIT_DIR": str(ROOT),
            "MIARAY_SLURM_STATE": str(root / "state")}


def test_the_slurm_script_starts_ray_on_every_node_runs_the_sweep_into_shared_storage_and_stops_ray(tmp_path):
    root = Path(tempfile.mkdtemp(prefix="sl"))  # short: Ray's socket paths under each node's $TMPDIR
    job_id = str(secrets.randbelow(10**6))
    nodes = ["nodea", "nodeb"]
    storage = tmp_path / "shared" / "results"
    job = subprocess.Popen(["bash", str(SBATCH), "sweeps/full_grid.py", *TINY, "--storage", str(storage),
                            "--name", "slurm"], cwd=tmp_path, env=_slurm_env(root, nodes, job_id),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = job.communicate(timeout=600)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, 9)
    assert job.returncode == 0, output[-5000:]
    assert f"Ray on 2 node(s) ({' '.join(nodes)})" in output, output[-3000:]
    # Ray's documented pattern: the head and a worker, each its own blocking step on its own node.
    steps = (root / "srun.log").read_text().splitlines()
    assert any(s.startswith("nodea: bash -c") and "--head" in s for s in steps), steps
    assert any(s.startswith("nodeb: bash -c") and "--address=" in s for s in steps), steps
    rows = results.load(storage / "slurm")
    assert len(rows) and (rows["status"] == "ok").all(), rows.get("error")
    assert rows["unit_id"].nunique() == 2
    # Each node ran trials: its own Ray node id in the rows (two trials at a time, one CPU a node).
    assert rows["trial_node_id"].nunique() == 2, rows[["unit_id", "trial_node_id"]].drop_duplicates()
    # Nothing the job started lives on: no process of its session, none under the nodes' folders.
    deadline = time.monotonic() + 30
    while (left := {**_session_members(job.pid), **_processes_mentioning(str(root))}) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, left
    assert not (root / "state" / job_id / "token").exists()  # the job's Ray token goes with it


def test_the_slurm_script_refuses_what_it_cannot_run_before_starting_ray(tmp_path):
    root = Path(tempfile.mkdtemp(prefix="sl"))
    env = _slurm_env(root, ["nodea"], "7")
    for args, says in ((["--preset", "quick"], "usage: sbatch deploy/slurm/miaray.sbatch SWEEP_SCRIPT"),
                       (["sweeps/full_grid.py", "--address", "auto"], "--address is set by this script"),
                       (["sweeps/nope.py"], "no sweep script at")):
        out = subprocess.run(["bash", str(SBATCH), *args], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert out.returncode == 2 and says in out.stderr, (args, out.stderr)
    out = subprocess.run(["bash", str(SBATCH), "sweeps/full_grid.py"], cwd=tmp_path, capture_output=True, text=True,
                         env={k: v for k, v in env.items() if k != "SLURM_JOB_ID"})
    assert out.returncode == 2 and "submit with sbatch" in out.stderr
    assert not (root / "srun.log").exists()  # no step was started


# ---- Kubernetes ----------------------------------------------------------------------------------------
def _rayjob_schema() -> dict:
    crd = yaml.safe_load(gzip.decompress(CRD.read_bytes()))
    assert crd["spec"]["names"]["kind"] == "RayJob"
    return next(v for v in crd["spec"]["versions"] if v["name"] == "v1")["schema"]["openAPIV3Schema"]


def unknown_fields(doc, schema: dict, path: str = "") -> list[str]:
    """Fields of `doc` that the structural schema does not declare: the API server drops them without a
    word (kubectl's strict validation refuses them), so a misspelt option would silently not apply."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    if isinstance(doc, dict) and "properties" in schema:
        return [bad for key, value in doc.items()
                for bad in ([f"{path}.{key}"] if key not in schema["properties"]
                            else unknown_fields(value, schema["properties"][key], f"{path}.{key}"))]
    if isinstance(doc, dict) and isinstance(schema.get("additionalProperties"), dict):
        return [bad for key, value in doc.items()
                for bad in unknown_fields(value, schema["additionalProperties"], f"{path}.{key}")]
    if isinstance(doc, list) and "items" in schema:
        return [bad for i, item in enumerate(doc) for bad in unknown_fields(item, schema["items"], f"{path}[{i}]")]
    return []


def schema_problems(doc: dict) -> list[str]:
    schema = _rayjob_schema()
    invalid = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
               for e in jsonschema.Draft7Validator(schema).iter_errors(doc)]
    return invalid + [f"{field}: not in the RayJob schema" for field in unknown_fields(doc, schema)]


def test_the_rayjob_is_valid_against_kuberays_rayjob_crd_and_the_checks_catch_mistakes():
    job = yaml.safe_load(RAYJOB.read_text())
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    assert schema_problems(job) == []
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    workers = spec["rayClusterSpec"]["workerGroupSpecs"]
    assert any(c["resources"]["limits"].get("nvidia.com/gpu") for w in workers
               for c in w["template"]["spec"]["containers"])
    pods = [spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"], *(w["template"]["spec"] for w in workers)]
    for pod in pods:  # every pod mounts the shared volume where the entrypoint puts storage and cache
        claims = {v["name"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
        assert {m["mountPath"] for c in pod["containers"] for m in c["volumeMounts"] if m["name"] in claims} \
            == {"/mnt/miaray"}
    # The checks are not vacuous: a misspelt field, a wrong type and a bad quantity are each caught.
    misspelt = yaml.safe_load(RAYJOB.read_text())
    misspelt["spec"]["shutdownAfterJobFinish"] = misspelt["spec"].pop("shutdownAfterJobFinishes")
    assert schema_problems(misspelt) == [".spec.shutdownAfterJobFinish: not in the RayJob schema"]
    wrong_type = yaml.safe_load(RAYJOB.read_text())
    wrong_type["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] = "two"
    assert any("replicas" in p for p in schema_problems(wrong_type))
    bad_quantity = yaml.safe_load(RAYJOB.read_text())
    bad_quantity["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0][
        "resources"]["limits"]["memory"] = "48 GB"
    assert any("memory" in p for p in schema_problems(bad_quantity))


def test_the_rayjob_entrypoint_is_a_sweep_its_own_parser_accepts_on_the_shared_volume():
    entrypoint = shlex.split(yaml.safe_load(RAYJOB.read_text())["spec"]["entrypoint"])
    assert entrypoint[:2] == ["python", "/opt/miaray/sweeps/full_grid.py"]
    assert "COPY . /opt/miaray" in (ROOT / "deploy" / "Dockerfile").read_text()  # where the image puts the scripts
    args = entrypoint[2:]
    for option in ("--storage", "--cache"):
        assert args[args.index(option) + 1].startswith("/mnt/miaray/"), option
    out = subprocess.run([sys.executable, str(ROOT / "sweeps" / "full_grid.py"), *args, "--dry-run"],
                         capture_output=True, text=True, timeout=120,
                         env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert re.search(r"plan: \d+ cells", out.stdout), out.stdout[-2000:]
    assert not Path("/mnt/miaray").exists()  # a dry run writes nothing


# ---- one set of versions -------------------------------------------------------------------------------
def test_every_deployment_installs_the_pinned_versions():
    pinned = pins()
    assert set(pinned) == {"torch", "ray[default]"}
    cluster = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    installs = " ".join(cluster["setup_commands"])
    assert dict(re.findall(r'"([a-z_\[\]]+)==([^"]+)"', installs)) == pinned, installs
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert "pip install --no-cache-dir -r /opt/miaray/deploy/pins.txt" in dockerfile
    assert "==" not in dockerfile  # no version of its own
    assert yaml.safe_load(RAYJOB.read_text())["spec"]["rayClusterSpec"]["rayVersion"] == pinned["ray[default]"]
    assert "deploy/pins.txt" in SBATCH.read_text()


PROBE = """
import os, subprocess, sys
address = sys.argv[sys.argv.index("--address") + 1]
code = f"import ray; ray.init(address={address!r}); print('joined', len(ray.nodes()))"
stranger = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
for who, env in (("driver", os.environ), ("stranger", {**stranger, "RAY_AUTH_MODE": "disabled"})):
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    print(who, out.returncode, flush=True)
sys.exit(3)
"""


def test_the_slurm_job_ray_takes_only_its_token_and_the_script_says_when_versions_differ_from_the_pins(tmp_path):
    """On a copy of the repository whose pins differ, a 'sweep' that joins the job's Ray as the driver does
    and as a stranger on the network would (no token), then exits 3."""
    repo = tmp_path / "repo"
    (repo / "deploy").mkdir(parents=True)
    (repo / "deploy" / "pins.txt").write_text("torch==0.0.1\nray[default]==" + pins()["ray[default]"] + "\n")
    (repo / "sweeps").mkdir()
    (repo / "sweeps" / "probe.py").write_text(PROBE)
    root = Path(tempfile.mkdtemp(prefix="sl"))
    env = {**_slurm_env(root, ["nodea"], "8"), "MIARAY_REPO": str(repo)}
    out = subprocess.run(["bash", str(SBATCH), "sweeps/probe.py"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300, start_new_session=True)
    assert "warning: torch is" in out.stderr and "deploy/pins.txt pins 0.0.1" in out.stderr, out.stderr
    assert "warning: ray" not in out.stderr
    assert out.returncode == 3, out.stderr[-3000:]  # the driver's exit status is the job's
    assert "driver 0" in out.stdout and "stranger 1" in out.stdout, out.stdout
    assert not _processes_mentioning(str(root))
