"""cluster.yaml and its IAM policies, run through Ray's own cluster-launcher code (no AWS call): the
schema, `prepare_config` / `validate_config` (what `ray up` does first), the AWS launcher's IAM and
machine-image steps, and the node types the sweep's GPU default reads on the head."""

import copy
import json
import re
from pathlib import Path

import jsonschema
import ray
import yaml
from ray.autoscaler._private import util as autoscaler_util
from ray.autoscaler._private.aws import config as aws_config

from miaray.sweep.cluster import ClusterInfo, RunSettings, autoscaler_node_types, default_gpus, resource_problems

ROOT = Path(__file__).resolve().parents[1]
RAW = yaml.safe_load((ROOT / "cluster.yaml").read_text())
HEAD_POLICY = json.loads((ROOT / "iam" / "head-policy.json").read_text())
WORKER_POLICY = json.loads((ROOT / "iam" / "worker-policy.json").read_text())


def _prepared() -> dict:
    """The config as `ray up` prepares it before it talks to AWS (defaults filled, commands merged)."""
    return autoscaler_util.prepare_config(copy.deepcopy(RAW))


def _allowed(policy: dict) -> dict[str, list]:
    """action -> the Resource of each statement allowing it."""
    allowed: dict[str, list] = {}
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        for action in actions:
            allowed.setdefault(action, []).append(statement["Resource"])
    return allowed


def test_cluster_yaml_passes_rays_schema_and_config_preparation():
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(RAW, schema)
    prepared = _prepared()
    autoscaler_util.validate_config(prepared)  # the schema again, the head type, min_workers within max_workers
    types = prepared["available_node_types"]
    assert prepared["head_node_type"] == "head" and types["head"]["max_workers"] == 0
    assert types["head"]["resources"] == {"CPU": 0}  # the head runs the driver, no trial
    assert all(types[t]["min_workers"] == 0 and types[t]["resources"]["GPU"] >= 1 for t in ("gpu_g5", "gpu_p4d"))


def test_every_node_installs_the_same_pinned_versions():
    prepared = _prepared()
    setup = RAW["setup_commands"]
    # Ray runs setup_commands, then the node kind's own, on every node: both kinds start with the same.
    assert prepared["head_setup_commands"][:len(setup)] == setup == prepared["worker_setup_commands"][:len(setup)]
    installs = [c for c in prepared["head_setup_commands"] + prepared["worker_setup_commands"] if "pip install" in c]
    miaray = [c for c in installs if "miaray" in c]
    assert len(set(miaray)) == 1, installs  # one install line, the same on the head and on every worker
    line = miaray[0]
    assert re.search(r'"torch==[\d.]+"', line) and re.search(r'"ray\[default\]==[\d.]+"', line), line
    assert re.search(r'"miaray @ git\+https://\S+\.git@MIARAY-COMMIT"', line), line  # a fixed commit, not a branch
    assert all("-U" not in c.split() and "--upgrade" not in c for c in installs)  # nothing floats to a newer version
    assert all(re.search(r"==[\d.]+", c) for c in installs)


def test_a_custom_head_profile_gets_no_role_from_ray_so_ours_launches_the_workers():
    prepared = _prepared()
    # Ray's AWS launcher creates its default role (with EC2 rights) only for a head without a profile.
    assert aws_config._configure_iam_role(copy.deepcopy(prepared)) == prepared
    head = prepared["available_node_types"]["head"]["node_config"]["IamInstanceProfile"]["Arn"]
    assert head.endswith(":instance-profile/miaray-head")
    allowed = _allowed(HEAD_POLICY)
    # The EC2 calls of Ray's AWS node provider when the autoscaler adds and removes workers.
    for action in ("ec2:RunInstances", "ec2:TerminateInstances", "ec2:CreateTags", "ec2:DescribeInstances"):
        assert action in allowed, action
    # Launching a worker hands it its instance profile: PassRole on exactly the workers' role.
    workers = {t["node_config"]["IamInstanceProfile"]["Arn"] for name, t in prepared["available_node_types"].items()
               if name != "head"}
    assert workers == {"arn:aws:iam::YOUR-ACCOUNT:instance-profile/miaray-worker"}
    assert allowed["iam:PassRole"] == ["arn:aws:iam::YOUR-ACCOUNT:role/miaray-worker"]
    # Workers only write results: the bucket, nothing else.
    worker_allowed = _allowed(WORKER_POLICY)
    assert all(action.startswith("s3:") for action in worker_allowed)
    for policy in (allowed, worker_allowed):
        assert policy["s3:PutObject"] == ["arn:aws:s3:::YOUR-BUCKET/*"]
        assert policy["s3:ListBucket"] == ["arn:aws:s3:::YOUR-BUCKET"]


def test_every_node_type_names_its_machine_image():
    prepared = _prepared()
    images = {t["node_config"]["ImageId"] for t in prepared["available_node_types"].values()}
    assert images == {"ami-XXXXXXXXXXXXXXXXX"}  # one image for every node, named in the header
    checked = copy.deepcopy(prepared)
    aws_config._check_ami(checked)
    assert checked == prepared  # Ray keeps a named image...
    unnamed = copy.deepcopy(prepared)
    del unnamed["available_node_types"]["gpu_g5"]["node_config"]["ImageId"]
    aws_config._check_ami(unnamed)  # ...and without one falls back to its old default deep-learning image
    assert unnamed["available_node_types"]["gpu_g5"]["node_config"]["ImageId"] == aws_config.DEFAULT_AMI["us-west-2"]


def test_every_placeholder_is_explained_in_the_header():
    text = (ROOT / "cluster.yaml").read_text()
    header = text.split("cluster_name:")[0]
    placeholders = set(re.findall(r"YOUR-[A-Z]+|MIARAY-COMMIT|ami-X+|fs-X+",
                                  text + json.dumps(HEAD_POLICY) + json.dumps(WORKER_POLICY)))
    assert placeholders == {"YOUR-ORG", "YOUR-ACCOUNT", "YOUR-BUCKET", "MIARAY-COMMIT", "ami-XXXXXXXXXXXXXXXXX",
                            "fs-XXXXXXXX"}
    assert all(p in header for p in placeholders)
    assert "ray submit --tmux cluster.yaml" in header and "ray submit --tmux cluster.yaml" in \
        (ROOT / "README.md").read_text()


def test_the_gpu_default_comes_from_the_node_types_on_the_head(tmp_path):
    # `ray up` leaves the prepared config on the head; right after it the head (0 CPUs) is the only node.
    bootstrap = tmp_path / "ray_bootstrap_config.yaml"
    bootstrap.write_text(yaml.safe_dump(_prepared()))
    types = autoscaler_node_types(str(bootstrap))
    assert types["gpu_g5"] == {"CPU": 4.0, "GPU": 1.0, "max": 8.0} and types["head"]["max"] == 1.0
    head_only = ClusterInfo(address="10.0.0.1:6379", nodes=({"CPU": 0.0},), node_types=types)
    assert default_gpus(head_only)[0] == 1.0  # no GPU node is up yet, but the autoscaler can add them
    paper = RunSettings(experiment="x", store="y", data_root=None, cpus_per_trial=1, gpus_per_trial=0.25)
    assert resource_problems(paper, head_only) == []
    # Where no config says what may join, the driver falls back to the nodes it sees, and says so.
    gpus, why = default_gpus(ClusterInfo(address="10.0.0.1:6379", nodes=({"CPU": 0.0},)))
    assert gpus == 0.0 and "node types are unknown" in why and "--gpus-per-trial" in why
    assert autoscaler_node_types(str(tmp_path / "absent.yaml")) is None
