"""terraform/: every module and env initialises from the local provider mirror and validates, fmt is
clean, variable validation bites, checkov finds nothing, and envs/moto applies against moto's
server, feeds the pipeline through the Kinesis stream it created, and destroys cleanly.

Terraform runs on a copy of terraform/ in a temporary folder (no .terraform, lock file or state
is left in the repository), with a CLI config that allows only the filesystem mirror.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from beam_rtbf.testing.s3_server import ACCESS_KEY, REGION, SECRET_KEY, S3Server

pytestmark = [pytest.mark.slow, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
TERRAFORM = REPO / "terraform"
MODULES = ["kms_key", "network", "streams", "redis", "storage", "iam", "emr", "eks"]
ENVS = ["example", "moto"]
MIRROR = Path(os.environ.get("TF_PLUGIN_MIRROR", "/opt/tf-plugins"))
CHECKOV = Path(os.environ.get("CHECKOV", REPO / ".tools" / "checkov" / "bin" / "checkov"))

# What the runner profiles read from `terraform output -json` (beam_rtbf/profiles/*.yaml).
EXAMPLE_OUTPUTS = {
    "aws_region",
    "sessions_stream_name",
    "requests_stream_name",
    "msk_bootstrap_brokers_tls",
    "redis_primary_endpoint",
    "redis_port",
    "redis_auth_secret_arn",
    "archive_bucket",
    "manifests_bucket",
    "analytics_bucket",
    "receipts_bucket",
    "artifacts_bucket",
    "emr_cluster_id",
    "eks_cluster_name",
    "flink_namespace",
    "flink_service_account",
    "flink_service_account_role_arn",
    "pipeline_role_arn",
}


def _mirror_aws_version() -> str:
    versions = sorted((MIRROR / "registry.terraform.io" / "hashicorp" / "aws").glob("*/linux_amd64"))
    assert versions, f"no hashicorp/aws provider in the mirror {MIRROR} (set TF_PLUGIN_MIRROR)"
    return versions[-1].parent.name


class Tf:
    """terraform on a private copy of terraform/, allowed to install providers from the mirror only."""

    def __init__(self, root: Path) -> None:
        assert shutil.which("terraform"), "terraform is not on the PATH"
        self.tree = root / "terraform"
        shutil.copytree(
            TERRAFORM,
            self.tree,
            ignore=shutil.ignore_patterns(".terraform", ".terraform.lock.hcl", "*.tfstate*", "terraform.tfvars"),
        )
        cli_config = root / "mirror-only.tfrc"
        cli_config.write_text(
            "provider_installation {\n"
            "  filesystem_mirror {\n"
            f'    path    = "{MIRROR}"\n'
            '    include = ["registry.terraform.io/hashicorp/*"]\n'
            "  }\n"
            "}\n"
        )
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
        self.env.update(
            TF_CLI_CONFIG_FILE=str(cli_config),
            TF_IN_AUTOMATION="1",
            TF_INPUT="0",
            CHECKPOINT_DISABLE="1",
        )

    def __call__(self, where: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["terraform", f"-chdir={self.tree / where}", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def init(self, where: str) -> subprocess.CompletedProcess:
        result = self(where, "init", "-backend=false", "-input=false", "-no-color", timeout=180)
        assert result.returncode == 0, result.stdout + result.stderr
        return result


@pytest.fixture(scope="module")
def tf(tmp_path_factory) -> Tf:
    return Tf(tmp_path_factory.mktemp("tf"))


@pytest.fixture(scope="module")
def moto_server():
    """moto's server (every AWS service on one loopback endpoint), with AWS managed IAM policies loaded."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
        server = S3Server()
        server.start()
    yield server
    server.stop()


def _diagnostics(result: subprocess.CompletedProcess) -> list[dict]:
    found = []
    for line in result.stdout.splitlines():
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if message.get("type") == "diagnostic":
            found.append(message["diagnostic"])
    return found


# ---- 1. init from the mirror, validate, fmt ----


def test_fmt_is_clean():
    result = subprocess.run(
        ["terraform", "fmt", "-check", "-recursive", "-diff", str(TERRAFORM)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"terraform fmt would change:\n{result.stdout}{result.stderr}"


@pytest.mark.parametrize("where", [f"modules/{m}" for m in MODULES] + [f"envs/{e}" for e in ENVS])
def test_initialises_from_the_mirror_only_and_validates(tf, where):
    version = _mirror_aws_version()
    init = tf.init(where)
    assert f"Installing hashicorp/aws v{version}" in init.stdout, init.stdout
    assert "Downloading" not in init.stdout and "Finding latest" not in init.stdout
    installed = tf.tree / where / ".terraform" / "providers" / "registry.terraform.io" / "hashicorp" / "aws"
    assert [p.name for p in installed.iterdir()] == [version]
    # Installed from the unpacked mirror: a link into it, nothing fetched.
    assert (installed / version / "linux_amd64").resolve() == (
        MIRROR / "registry.terraform.io" / "hashicorp" / "aws" / version / "linux_amd64"
    ).resolve()
    lock = (tf.tree / where / ".terraform.lock.hcl").read_text()
    assert f'version     = "{version}"' in lock and '"~> 5.100"' in lock

    validate = tf(where, "validate", "-json", "-no-color", timeout=120)
    report = json.loads(validate.stdout)
    assert validate.returncode == 0 and report["valid"] is True, json.dumps(report["diagnostics"], indent=1)
    assert report["error_count"] == 0 and report["warning_count"] == 0, report["diagnostics"]


@pytest.mark.parametrize("module", MODULES)
def test_modules_have_the_four_files_pinned_and_documented_variables(module):
    folder = TERRAFORM / "modules" / module
    assert sorted(p.name for p in folder.glob("*.tf")) == ["main.tf", "outputs.tf", "variables.tf", "versions.tf"]
    versions = (folder / "versions.tf").read_text()
    assert 'required_version = ">= 1.6"' in versions
    assert re.search(r'source\s*=\s*"hashicorp/aws"\s*\n\s*version\s*=\s*"~> 5\.100"', versions)
    blocks = re.split(r'(?m)^variable "', (folder / "variables.tf").read_text())[1:]
    assert blocks
    for block in blocks:
        name = block.split('"', 1)[0]
        assert re.search(r"(?m)^\s+description\s*=", block), f"{module}: variable {name} has no description"
        assert re.search(r"(?m)^\s+type\s*=", block), f"{module}: variable {name} has no type"
    for block in re.split(r'(?m)^output "', (folder / "outputs.tf").read_text())[1:]:
        assert "description" in block, f"{module}: output {block.split(chr(34), 1)[0]} has no description"


def test_example_env_outputs_exactly_what_the_runner_profiles_read():
    names = set(re.findall(r'(?m)^output "([a-z0-9_]+)"', (TERRAFORM / "envs/example/outputs.tf").read_text()))
    assert names == EXAMPLE_OUTPUTS
    assert (TERRAFORM / "envs/example/terraform.tfvars.example").is_file()
    profiles = "".join(p.read_text() for p in (REPO / "beam_rtbf" / "profiles").glob("*.yaml"))
    assert set(re.findall(r"\$\{tf\.([a-z0-9_]+)\}", profiles)) <= EXAMPLE_OUTPUTS


# ---- 2. variable validation bites (plan evaluates it; validate does not) ----


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("noncurrent_version_days", "90", "noncurrent_version_days must be a whole number between 1 and 30"),
        ("noncurrent_version_days", "0", "GDPR gives one month to erase"),
        ("stream_retention_hours", "9999", "retention_hours must be a whole number of hours between 24 and 168"),
        ("stream_retention_hours", "12", "a stream may hold an erased user's records for that long"),
    ],
)
def test_bad_values_are_refused_with_the_modules_message(tf, moto_server, var, value, message):
    tf.init("envs/moto")
    result = tf(
        "envs/moto",
        "plan",
        "-json",
        "-input=false",
        "-refresh=false",
        f"-var=endpoint={moto_server.endpoint}",
        f"-var={var}={value}",
        timeout=300,
    )
    assert result.returncode != 0
    errors = [d for d in _diagnostics(result) if d["severity"] == "error"]
    assert any(d["summary"] == "Invalid value for variable" and message in d["detail"] for d in errors), errors


def test_the_moto_env_refuses_a_non_loopback_endpoint(tf):
    tf.init("envs/moto")
    result = tf("envs/moto", "plan", "-json", "-input=false", "-var=endpoint=https://kinesis.eu-west-1.amazonaws.com")
    assert result.returncode != 0
    assert any("endpoint must be a loopback URL" in d["detail"] for d in _diagnostics(result))


# ---- 3. checkov ----


def test_checkov_finds_no_failed_check():
    assert CHECKOV.is_file(), f"checkov not found at {CHECKOV}: scripts/test.sh installs it into .tools/checkov"
    result = subprocess.run(
        [
            str(CHECKOV),
            "-d",
            str(TERRAFORM),
            "--config-file",
            str(REPO / ".checkov.yaml"),
            "--framework",
            "terraform",
            "--quiet",
            "--compact",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']}): {c['check_name']}"
        for r in reports
        for c in r["results"]["failed_checks"]
    ]
    assert failed == [], "\n".join(failed)
    summary = reports[0]["summary"]
    # Everything was parsed and checked: the modules' resources through the envs' module calls.
    assert summary["parsing_errors"] == 0 and summary["passed"] > 300 and summary["resource_count"] > 100, summary
    # The inline, reasoned skips (access-log bucket SSE-S3 and self-logging, Redis secret rotation, EMR groups).
    assert summary["skipped"] == 4, summary
    assert result.returncode == 0, result.stderr[-2000:]


# ---- 4. apply against moto, the pipeline reads the stream Terraform made, destroy ----


def _aws(service: str, endpoint: str):
    import boto3

    return boto3.client(
        service,
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name=REGION,
    )


def _cli(args: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_DEFAULT_REGION=REGION)
    return subprocess.run(
        [sys.executable, "-m", "beam_rtbf.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_moto_env_applies_feeds_the_pipeline_and_destroys(tf, moto_server, tmp_path):
    endpoint = moto_server.endpoint
    tf.init("envs/moto")
    started = time.monotonic()
    apply = tf(
        "envs/moto", "apply", "-auto-approve", "-input=false", "-no-color", f"-var=endpoint={endpoint}", timeout=900
    )
    assert apply.returncode == 0, apply.stdout[-4000:] + apply.stderr
    apply_s = time.monotonic() - started
    out = {k: v["value"] for k, v in json.loads(tf("envs/moto", "output", "-json").stdout).items()}
    assert out["sessions_stream_name"] == "rtbf-moto-sessions"
    assert out["requests_stream_name"] == "rtbf-moto-requests"
    buckets = out["bucket_names"]
    assert buckets == {k: f"rtbf-moto-{k}" for k in ("archive", "manifests", "analytics", "receipts", "artifacts")}
    assert out["eks_cluster_name"] == "rtbf-moto-flink"

    # The resources exist as declared.
    s3 = _aws("s3", endpoint)
    for name in buckets.values():
        assert s3.get_bucket_versioning(Bucket=name)["Status"] == "Enabled"
        block = s3.get_public_access_block(Bucket=name)["PublicAccessBlockConfiguration"]
        assert block == dict.fromkeys(
            ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets"), True
        )
        (rule,) = s3.get_bucket_lifecycle_configuration(Bucket=name)["Rules"]
        assert rule["Status"] == "Enabled" and rule["NoncurrentVersionExpiration"]["NoncurrentDays"] == 7
        assert rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] == 1
        assert rule["Expiration"] == {"ExpiredObjectDeleteMarker": True}
        (sse,) = s3.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"]["Rules"]
        assert sse["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
        assert s3.get_bucket_ownership_controls(Bucket=name)["OwnershipControls"]["Rules"] == [
            {"ObjectOwnership": "BucketOwnerEnforced"}
        ]
        assert s3.get_bucket_logging(Bucket=name)["LoggingEnabled"]["TargetBucket"] == out["access_log_bucket"]
        policy = json.loads(s3.get_bucket_policy(Bucket=name)["Policy"])
        (deny,) = policy["Statement"]
        assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    kinesis = _aws("kinesis", endpoint)
    for stream in (out["sessions_stream_name"], out["requests_stream_name"]):
        summary = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]
        assert summary["StreamStatus"] == "ACTIVE" and summary["RetentionPeriodHours"] == 24
        assert summary["EncryptionType"] == "KMS"
    iam = _aws("iam", endpoint)
    role = out["pipeline_role_arn"].rsplit("/", 1)[1]
    attached = iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]
    assert [p["PolicyArn"] for p in attached] == [out["pipeline_policy_arn"]]
    version = iam.get_policy(PolicyArn=out["pipeline_policy_arn"])["Policy"]["DefaultVersionId"]
    document = iam.get_policy_version(PolicyArn=out["pipeline_policy_arn"], VersionId=version)["PolicyVersion"][
        "Document"
    ]
    document = json.loads(document) if isinstance(document, str) else document
    resources = [
        r for s in document["Statement"] for r in ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"])
    ]
    assert "*" not in resources and all(r.startswith("arn:aws:") for r in resources)
    flink_role = out["flink_service_account_role_arn"].rsplit("/", 1)[1]
    trust = iam.get_role(RoleName=flink_role)["Role"]["AssumeRolePolicyDocument"]
    trust = json.loads(trust) if isinstance(trust, str) else trust
    (condition,) = [v for k, v in trust["Statement"][0]["Condition"]["StringEquals"].items() if k.endswith(":sub")]
    assert condition == "system:serviceaccount:beam-rtbf:flink"
    assert (
        _aws("eks", endpoint).describe_cluster(name=out["eks_cluster_name"])["cluster"]["resourcesVpcConfig"][
            "endpointPublicAccess"
        ]
        is False
    )

    # The pipeline reads the streams Terraform created.
    query = f"?region={REGION}&endpoint={endpoint}"
    generate = _cli(
        [
            "generate",
            f"--to=kinesis://{out['sessions_stream_name']}{query}",
            f"--requests-to=kinesis://{out['requests_stream_name']}{query}",
            "--sessions=400",
            "--users=40",
            "--requests=3",
        ],
        tmp_path,
        timeout=120,
    )
    assert generate.returncode == 0, generate.stderr[-3000:]
    assert json.loads(generate.stdout)["sessions"]["written"] == 400, generate.stdout
    source = f"{query}&start=TRIM_HORIZON&idle_stop_s=2"
    run = _cli(
        [
            "run",
            f"--output={tmp_path / 'out'}",
            f"--registry=embedded://{tmp_path / 'registry.sqlite'}",
            f"--sessions=kinesis://{out['sessions_stream_name']}{source}",
            f"--requests=kinesis://{out['requests_stream_name']}{source}",
        ],
        tmp_path,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["mode"] == "streaming"
    assert summary["sessions_in"] == 400 and summary["conservation_ok"] is True
    assert summary["requests_in"] == 3 and summary["requests_accepted"] == 3
    assert summary["clean"] + summary["suppressed"] + summary["dead_lettered"] == 400

    # Destroy: everything is gone.
    started = time.monotonic()
    destroy = tf(
        "envs/moto", "destroy", "-auto-approve", "-input=false", "-no-color", f"-var=endpoint={endpoint}", timeout=900
    )
    assert destroy.returncode == 0, destroy.stdout[-4000:] + destroy.stderr
    destroy_s = time.monotonic() - started
    assert not set(buckets.values()) & {b["Name"] for b in s3.list_buckets()["Buckets"]}
    assert not {out["sessions_stream_name"], out["requests_stream_name"]} & set(kinesis.list_streams()["StreamNames"])
    assert role not in {r["RoleName"] for r in iam.list_roles()["Roles"]}
    assert out["eks_cluster_name"] not in _aws("eks", endpoint).list_clusters()["clusters"]
    vpcs = _aws("ec2", endpoint).describe_vpcs(VpcIds=[])["Vpcs"]
    assert out["vpc_id"] not in {v["VpcId"] for v in vpcs}
    state = json.loads(tf("envs/moto", "show", "-json").stdout)
    assert "root_module" not in state.get("values", {}) or not state["values"]["root_module"].get("resources")
    print(f"terraform apply {apply_s:.0f}s, destroy {destroy_s:.0f}s")
