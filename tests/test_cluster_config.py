"""cluster.yaml is checked offline the way `ray up` checks it, against Ray's own schema.

`ray up` runs `prepare_config` (merge with the provider's defaults.yaml, fold the shared
setup commands into head/worker ones, fill per-type worker bounds) and then
`validate_config` (Ray's ray-schema.json plus cross-field checks) before it ever talks to
the cloud. Both are pure for the AWS provider, so the same calls run here without network.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import re
import tomllib
from pathlib import Path

import jsonschema
import pytest
import ray
import torch
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

REPO_ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = REPO_ROOT / "cluster.yaml"
REMOTE_PROJECT_DIR = "~/affectune"


def _raw_config() -> dict:
    with open(CLUSTER_YAML) as handle:
        return yaml.safe_load(handle)


def _ray_up_check(config: dict) -> dict:
    """The offline half of `ray up`: returns the prepared config or raises."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


@pytest.fixture(scope="module")
def prepared() -> dict:
    return _ray_up_check(_raw_config())


def test_cluster_yaml_passes_ray_up_validation(prepared):
    assert prepared["provider"]["type"] == "aws"
    assert prepared["head_node_type"] in prepared["available_node_types"]
    # prepare_config merged AWS defaults in: fields we never wrote are now present.
    assert "cluster_synced_files" in prepared and "rsync_filter" in prepared


@pytest.mark.parametrize(
    ("mutation", "error"),
    [
        pytest.param(lambda c: c.update(max_worker=6), jsonschema.ValidationError, id="unknown-top-level-key"),
        pytest.param(lambda c: c.update(max_workers="six"), jsonschema.ValidationError, id="wrong-type"),
        pytest.param(
            lambda c: c["available_node_types"]["gpu_1x_a10g"].pop("resources"),
            jsonschema.ValidationError,
            id="node-type-without-resources",
        ),
        pytest.param(
            lambda c: c["available_node_types"]["gpu_1x_a10g"]["resources"].update(GPU=0.5),
            jsonschema.ValidationError,
            id="fractional-node-gpu",
        ),
        pytest.param(lambda c: c.update(head_node_type="no_such_type"), ValueError, id="head-type-missing"),
        pytest.param(
            lambda c: c["available_node_types"]["gpu_1x_a10g"].update(min_workers=7),
            ValueError,
            id="min-workers-above-global-max",
        ),
    ],
)
def test_broken_copies_are_rejected(mutation, error):
    broken = _raw_config()
    mutation(broken)
    with pytest.raises(error):
        _ray_up_check(broken)


def test_head_is_cpu_only_and_workers_autoscale_with_gpus(prepared):
    node_types = prepared["available_node_types"]
    head = node_types[prepared["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    assert head["max_workers"] == 0

    workers = {name: spec for name, spec in node_types.items() if name != prepared["head_node_type"]}
    assert workers, "cluster.yaml declares no worker node types"
    for name, spec in workers.items():
        assert spec["resources"].get("GPU", 0) >= 1, f"worker type {name} declares no GPU"
        assert spec["min_workers"] == 0, f"worker type {name} does not scale down to zero"
        assert spec["max_workers"] >= 1, f"worker type {name} can never start"
        # Workers write trial results to S3 themselves, so they need an instance profile.
        assert "IamInstanceProfile" in spec["node_config"], f"worker type {name} cannot reach S3"
    assert prepared["idle_timeout_minutes"] > 0


def test_file_mounts_ship_every_package_directory_of_the_project(prepared):
    mounts = dict(prepared["file_mounts"])
    mounts.pop("~/.ray/auth_token")  # the Ray auth token from the user's machine (test_security)
    for remote, local in mounts.items():
        assert remote.startswith(REMOTE_PROJECT_DIR + "/"), remote
        assert (REPO_ROOT / local).exists(), f"file mount source {local} does not exist"
        # Same relative layout remotely as locally, so `pip install -e` sees the real tree.
        assert Path(remote).relative_to(REMOTE_PROJECT_DIR) == Path(local), (remote, local)

    with open(REPO_ROOT / "pyproject.toml", "rb") as handle:
        pyproject = tomllib.load(handle)
    mounted_tops = {Path(local).parts[0] for local in mounts.values()}
    assert "pyproject.toml" in mounted_tops
    for package, source_dir in pyproject["tool"]["setuptools"]["package-dir"].items():
        assert Path(source_dir).parts[0] in mounted_tops, f"package {package} ({source_dir}) is not mounted"
    assert "studies" in mounted_tops, "the study scripts are not shipped to the cluster"


def test_setup_installs_the_project_and_a_gpu_torch_matching_local_versions(prepared):
    for role in ("head_setup_commands", "worker_setup_commands"):
        commands = "\n".join(prepared[role])  # prepare_config prepended setup_commands
        assert re.search(rf"pip install .*-e {re.escape(REMOTE_PROJECT_DIR)}\b", commands), role

        torch_line = next(line for line in prepared[role] if re.search(r"pip install .*\btorch==", line))
        # The driver's version, pinned; uv picks the CUDA index matching the node's driver.
        local_torch = torch.__version__.split("+")[0]
        assert f'"torch=={local_torch}"' in torch_line, (torch_line, local_torch)
        assert "--torch-backend=auto" in torch_line
        # The launcher's Ray version must match the cluster's.
        assert f"ray[default,tune,train]=={ray.__version__}" in commands, role

    worker_only = "\n".join(prepared["worker_setup_commands"])
    assert "torch.cuda.is_available()" in worker_only, "workers never check that torch sees a GPU"


def test_results_go_to_one_shared_s3_location(prepared):
    exports = [
        match.group(1)
        for line in prepared["setup_commands"]
        for match in re.finditer(r"export AFFECTUNE_STORAGE=(\S+?)'", line)
    ]
    assert len(exports) == 1, exports
    assert re.fullmatch(r"s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]/\S+", exports[0]), exports[0]
    # The setup verifies the store is writable before any study runs.
    assert any("create_dir" in line and "AFFECTUNE_STORAGE" in line for line in prepared["setup_commands"])


def test_start_commands_join_the_head_and_enable_the_autoscaler(prepared):
    head = "\n".join(prepared["head_start_ray_commands"])
    worker = "\n".join(prepared["worker_start_ray_commands"])
    assert "ray start --head --port=6379" in head
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head
    assert "ray start --address=$RAY_HEAD_IP:6379" in worker


# ----------------------------------------------------------------------------- launch permissions
POLICY_FILE = REPO_ROOT / "cluster-iam-policy.json"
PUT_POLICY = re.compile(r"aws iam put-role-policy --role-name (\S+) --policy-name \S+ \\?\s*"
                        r"--policy-document file://cluster-iam-policy\.json")


def _ray_default_profile_and_role() -> tuple[str, str]:
    """DEFAULT_RAY_INSTANCE_PROFILE / DEFAULT_RAY_IAM_ROLE from Ray's AWS launcher source (read as
    text: importing it needs boto3, which is not a project dependency)."""
    source = (Path(ray.__file__).parent / "autoscaler/_private/aws/config.py").read_text()
    prefix = re.search(r'^RAY = "([^"]+)"$', source, re.M).group(1)
    profile = re.search(r'^DEFAULT_RAY_INSTANCE_PROFILE = RAY \+ "([^"]+)"$', source, re.M).group(1)
    role = re.search(r'^DEFAULT_RAY_IAM_ROLE = RAY \+ "([^"]+)"$', source, re.M).group(1)
    return prefix + profile, prefix + role


def _statements(action: str) -> list[dict]:
    policy = json.loads(POLICY_FILE.read_text())
    return [s for s in policy["Statement"] if s["Effect"] == "Allow"
            and action in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])]


def test_workers_run_with_the_profile_ray_creates_for_the_head(prepared):
    profile, _role = _ray_default_profile_and_role()
    head = prepared["available_node_types"][prepared["head_node_type"]]["node_config"]
    # No profile on the head: `ray up` then creates/uses Ray's default one (config.py:276-351).
    assert "IamInstanceProfile" not in head
    for name, spec in prepared["available_node_types"].items():
        if name != prepared["head_node_type"]:
            assert spec["node_config"]["IamInstanceProfile"] == {"Name": profile}, name


def test_the_head_may_pass_the_worker_role_and_resolve_the_ami():
    _profile, role = _ray_default_profile_and_role()
    (pass_role,) = _statements("iam:PassRole")
    role_arn = f"arn:aws:iam::123456789012:role/{role}"
    assert fnmatch.fnmatchcase(role_arn, pass_role["Resource"])
    assert not fnmatch.fnmatchcase("arn:aws:iam::123456789012:role/admin", pass_role["Resource"])
    assert pass_role["Condition"] == {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}

    config = _raw_config()
    region = config["provider"]["region"]
    (ssm,) = _statements("ssm:GetParameters")
    for name, spec in config["available_node_types"].items():
        image = spec["node_config"]["ImageId"]
        if image.startswith("resolve:ssm:"):
            parameter_arn = f"arn:aws:ssm:{region}::parameter{image.removeprefix('resolve:ssm:')}"
            assert fnmatch.fnmatchcase(parameter_arn, ssm["Resource"]), (name, parameter_arn)


def test_the_one_grant_command_is_in_the_config_and_the_walkthrough():
    _profile, role = _ray_default_profile_and_role()
    for path in (CLUSTER_YAML, REPO_ROOT / "docs" / "cluster.md"):
        text = path.read_text().replace("#   ", "").replace("#       ", "")
        match = PUT_POLICY.search(text)
        assert match, f"{path.name} does not show the put-role-policy command"
        assert match.group(1) == role


def test_no_credentials_or_account_ids_in_the_launch_files():
    for path in (CLUSTER_YAML, POLICY_FILE):
        text = path.read_text()
        assert not re.search(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b", text), path.name  # access key ids
        assert not re.search(r"aws_(secret_)?access_key|aws_session_token", text, re.I), path.name
        assert not re.search(r"\b\d{12}\b", text), path.name  # account ids


def test_setup_records_the_code_version_from_shipped_git_metadata(prepared):
    assert prepared["file_mounts"][f"{REMOTE_PROJECT_DIR}/.git"] == "./.git"
    lines = prepared["setup_commands"]
    install = next(i for i, line in enumerate(lines) if re.search(rf"-e {re.escape(REMOTE_PROJECT_DIR)}\b", line))
    version = next(i for i, line in enumerate(lines) if "write_code_version()" in line)
    assert version > install  # it imports the installed package
    assert "rm -f ~/affectune/platform/affectune/CODE_VERSION" in lines[version]  # rsync never deletes
