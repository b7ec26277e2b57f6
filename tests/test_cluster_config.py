"""cluster.yaml and its IAM policies, run through Ray's own cluster-launcher code (no AWS call): the
schema, `prepare_config` / `validate_config` (what `ray up` does first), the AWS launcher's IAM,
security-group and machine-image steps, the EC2 calls Ray's AWS node provider makes on the head (checked
against the head's policy), the dashboard's address, and the node types the sweep's GPU default reads
on the head."""

import copy
import json
import re
from fnmatch import fnmatchcase
from pathlib import Path
from types import SimpleNamespace

import jsonschema
import ray
import yaml
from ray.autoscaler._private import util as autoscaler_util
from ray.autoscaler._private.aws import config as aws_config
from ray.autoscaler._private.aws.node_provider import AWSNodeProvider
from ray.autoscaler.tags import TAG_RAY_CLUSTER_NAME

from miaray.sweep.cluster import ClusterInfo, autoscaler_node_types, default_gpus, resource_problems
from miaray.sweep.settings import RunSettings

ROOT = Path(__file__).resolve().parents[1]
RAW = yaml.safe_load((ROOT / "cluster.yaml").read_text())
HEAD_POLICY = json.loads((ROOT / "iam" / "head-policy.json").read_text())
WORKER_POLICY = json.loads((ROOT / "iam" / "worker-policy.json").read_text())
SECURITY_GROUP = "sg-XXXXXXXXXXXXXXXXX"


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


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _allows(policy: dict, action: str, resource: str, context: dict[str, str] | None = None) -> bool:
    """Whether an Allow statement of `policy` grants `action` on the resource ARN `resource` for a request
    whose condition keys are `context` (a key the request lacks fails its condition, as in IAM). Only the
    StringEquals conditions these policies use are understood; any other operator fails the test."""
    for statement in policy["Statement"]:
        if not any(fnmatchcase(action, a) for a in _as_list(statement["Action"])):
            continue
        if not any(fnmatchcase(resource, r) for r in _as_list(statement["Resource"])):
            continue
        conditions = statement.get("Condition", {})
        assert set(conditions) <= {"StringEquals"}, conditions
        if all((context or {}).get(key) == value for key, value in conditions.get("StringEquals", {}).items()):
            return True
    return False


class _EC2Calls:
    """Stands in for boto3's EC2 client and resource: records each call as (IAM action, arguments)."""

    ACTIONS = {"create_instances": "ec2:RunInstances", "terminate_instances": "ec2:TerminateInstances",
               "stop_instances": "ec2:StopInstances", "create_tags": "ec2:CreateTags"}

    def __init__(self):
        self.calls: list[tuple[str, dict]] = []

    def __getattr__(self, name: str):
        def call(**kwargs):
            self.calls.append((self.ACTIONS[name], kwargs))
            return []
        return call


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
    placeholders = set(re.findall(r"YOUR-[A-Z]+|MIARAY-COMMIT|ami-X+|fs-X+|sg-X+",
                                  text + json.dumps(HEAD_POLICY) + json.dumps(WORKER_POLICY)))
    assert placeholders == {"YOUR-ORG", "YOUR-ACCOUNT", "YOUR-BUCKET", "MIARAY-COMMIT", "ami-XXXXXXXXXXXXXXXXX",
                            "fs-XXXXXXXX", SECURITY_GROUP, "YOUR-CIDR"}
    assert all(p in header for p in placeholders)
    assert "ray submit --tmux cluster.yaml" in header and "ray submit --tmux cluster.yaml" in \
        (ROOT / "README.md").read_text()


def test_the_dashboard_listens_on_the_heads_loopback_only():
    prepared = _prepared()
    starts = [c for c in prepared["head_start_ray_commands"] if "ray start --head" in c]
    assert len(starts) == 1 and "--dashboard-host=127.0.0.1" in starts[0].split(), starts
    text = (ROOT / "cluster.yaml").read_text()
    assert "0.0.0.0" not in text  # nothing binds to, or opens a port to, every address
    assert "ray dashboard cluster.yaml" in text.split("cluster_name:")[0]  # how to reach it (an SSH tunnel)


def test_every_node_is_in_the_named_security_group_so_ray_opens_no_port():
    prepared = _prepared()
    assert "security_group" not in prepared["provider"]
    for name, node_type in prepared["available_node_types"].items():
        assert node_type["node_config"]["SecurityGroupIds"] == [SECURITY_GROUP], name
    # Ray's AWS launcher makes a group ("ray-autoscaler-<cluster_name>") for a node type that names none and
    # fills a new or empty group with its default rules, SSH from anywhere among them; with every node type
    # naming its group, it touches nothing.
    assert {"CidrIp": "0.0.0.0/0"} in aws_config._create_default_ssh_inbound_rules()[0]["IpRanges"]
    configured = copy.deepcopy(prepared)
    assert aws_config._configure_security_group(configured) == prepared
    # The header's recipe makes the group: node to node on every port, SSH (22) from YOUR-CIDR only.
    header = (ROOT / "cluster.yaml").read_text().split("cluster_name:")[0]
    rules = re.findall(r"authorize-security-group-ingress (.*?)(?:#|$)", header.replace("\\\n#", ""), re.M)
    rules = [" ".join(r.split()) for r in rules]
    assert rules == ["--region us-west-2 --group-id $SG --protocol all --source-group $SG",
                     "--region us-west-2 --group-id $SG --protocol tcp --port 22 --cidr YOUR-CIDR"], rules


def test_the_head_may_launch_tag_and_terminate_only_the_clusters_instances():
    """Ray's AWS node provider, as the autoscaler on the head runs it (boto3 replaced by a recorder), and
    every EC2 call it makes checked against iam/head-policy.json."""
    prepared = _prepared()
    region, cluster = prepared["provider"]["region"], prepared["cluster_name"]
    arn = f"arn:aws:ec2:{region}:YOUR-ACCOUNT"
    assert prepared["provider"]["cache_stopped_nodes"] is False  # idle workers are terminated, never stopped
    provider = AWSNodeProvider(prepared["provider"], cluster)
    ec2 = _EC2Calls()
    provider.ec2 = provider.ec2_fail_fast = SimpleNamespace(meta=SimpleNamespace(client=ec2),
                                                             create_instances=ec2.create_instances)
    # What `ray up` adds to a node type before the head gets the config: the subnets and the key pair.
    node_config = {**prepared["available_node_types"]["gpu_g5"]["node_config"], "SubnetIds": ["subnet-0a"],
                   "KeyName": f"ray-autoscaler_{region}"}
    provider._create_node(node_config, {"ray-node-kind": "worker", "ray-user-node-type": "gpu_g5"}, 1)
    provider._create_tags({("ray-node-status", "up-to-date"): ["i-0worker"]})
    provider.terminate_nodes(["i-0worker"])
    assert [action for action, _ in ec2.calls] == ["ec2:RunInstances", "ec2:CreateTags", "ec2:TerminateInstances"]

    # Launch: every resource the request touches, the new instance with the tags Ray puts on it.
    launch = ec2.calls[0][1]
    tags = {t["Key"]: t["Value"] for spec in launch["TagSpecifications"] if spec["ResourceType"] == "instance"
            for t in spec["Tags"]}
    assert tags[TAG_RAY_CLUSTER_NAME] == cluster
    request_tags = {f"aws:RequestTag/{k}": v for k, v in tags.items()}
    assert _allows(HEAD_POLICY, "ec2:RunInstances", f"{arn}:instance/i-0new", request_tags)
    assert _allows(HEAD_POLICY, "ec2:CreateTags", f"{arn}:instance/i-0new",
                   {**request_tags, "ec2:CreateAction": "RunInstances"})  # tags given at launch need CreateTags
    assert launch["InstanceMarketOptions"]["MarketType"] == "spot"
    used = [f"arn:aws:ec2:{region}::image/{launch['ImageId']}", f"{arn}:subnet/{launch['SubnetId']}",
            f"{arn}:key-pair/{launch['KeyName']}", f"{arn}:volume/vol-0new", f"{arn}:network-interface/eni-0new",
            f"{arn}:spot-instances-request/sir-0new",
            *[f"{arn}:security-group/{group}" for group in launch["SecurityGroupIds"]]]
    assert all(_allows(HEAD_POLICY, "ec2:RunInstances", resource) for resource in used), used
    # ...and nothing else: an instance without the cluster's tag, or in another security group.
    other = {f"aws:RequestTag/{TAG_RAY_CLUSTER_NAME}": "another-cluster"}
    assert not _allows(HEAD_POLICY, "ec2:RunInstances", f"{arn}:instance/i-0new", other)
    assert not _allows(HEAD_POLICY, "ec2:RunInstances", f"{arn}:instance/i-0new", {})
    assert not _allows(HEAD_POLICY, "ec2:RunInstances", f"{arn}:security-group/sg-0another")

    # Retagging and terminating: the cluster's instances only, never another instance of the account.
    assert ec2.calls[1][1]["Resources"] == ec2.calls[2][1]["InstanceIds"] == ["i-0worker"]
    ours = {f"aws:ResourceTag/{TAG_RAY_CLUSTER_NAME}": cluster}
    for action in ("ec2:CreateTags", "ec2:TerminateInstances"):
        assert _allows(HEAD_POLICY, action, f"{arn}:instance/i-0worker", ours)
        assert not _allows(HEAD_POLICY, action, f"{arn}:instance/i-0other", {})
        assert not _allows(HEAD_POLICY, action, f"{arn}:instance/i-0other",
                           {f"aws:ResourceTag/{TAG_RAY_CLUSTER_NAME}": "another-cluster"})
    assert not _allows(HEAD_POLICY, "ec2:StopInstances", f"{arn}:instance/i-0worker", ours)  # not needed
    # Listing instances cannot be scoped to a resource; every other right on "*" carries a condition.
    assert _allows(HEAD_POLICY, "ec2:DescribeInstances", "*")
    for statement in HEAD_POLICY["Statement"]:
        actions = _as_list(statement["Action"])
        if "*" in _as_list(statement["Resource"]):
            assert "Condition" in statement or all(a.startswith("ec2:Describe") for a in actions), statement


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
