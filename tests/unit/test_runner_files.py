"""runners/: the deployment files of each target agree with the profiles, setup.py and Terraform.

Nothing here reaches a cluster: the Kubernetes manifests and EMR steps are rendered by the real
submit scripts (--dry-run) from a full set of Terraform outputs and checked field by field.
"""

from __future__ import annotations

import ast
import json
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet

from beam_rtbf.cli import job_spec
from beam_rtbf.jobspec import load_profile

ROOT = Path(__file__).resolve().parents[2]
RUNNERS = ROOT / "runners"
FLINK = RUNNERS / "flink-k8s"
EMR = RUNNERS / "spark-emr"
IMAGE = "registry.example/acme/beam-rtbf:0.1.0"
SCRIPTS = sorted(RUNNERS.rglob("*.sh"))


def _tf_outputs() -> dict:
    """Every output envs/example declares, with a plausible value."""
    names = re.findall(r'^output "(\w+)"', (ROOT / "terraform/envs/example/outputs.tf").read_text(), re.M)
    values = {
        "aws_region": "eu-west-1",
        "redis_port": 6379,
        "emr_cluster_id": "j-2AXXXXXXGAPLF",
        "flink_namespace": "beam-rtbf",
        "flink_service_account": "flink",
        "flink_service_account_role_arn": "arn:aws:iam::123456789012:role/acme-rtbf-flink-sa",
        "pipeline_role_arn": "arn:aws:iam::123456789012:role/acme-rtbf-pipeline",
        "redis_auth_secret_arn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:acme-rtbf-redis-AbCdEf",
        "redis_primary_endpoint": "master.acme-rtbf.abc123.euw1.cache.amazonaws.com",
        "msk_bootstrap_brokers_tls": "",
    }
    return {name: {"value": values.get(name, f"acme-rtbf-{name.replace('_', '-')}")} for name in names}


@pytest.fixture(scope="module")
def tf_json(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tf") / "tf.json"
    path.write_text(json.dumps(_tf_outputs()))
    return path


def _script(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", *args], cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})}
    )


def _setup_py() -> dict:
    """EXTRAS, install_requires and python_requires of setup.py, read without running it."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    found: dict = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "EXTRAS":
            found["extras"] = set(ast.literal_eval(node.value))
        if isinstance(node, ast.keyword) and node.arg in ("install_requires", "python_requires"):
            found[node.arg] = ast.literal_eval(node.value)
    return found


def _beam_spec() -> SpecifierSet:
    (requirement,) = [r for r in _setup_py()["install_requires"] if r.startswith("apache-beam")]
    return SpecifierSet(requirement[len("apache-beam") :])


def _dockerfile() -> tuple[dict[str, str], list[str]]:
    """ARG defaults and the instructions (continuation lines joined) of the Flink image."""
    text = re.sub(r"\\\n", " ", (FLINK / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", "\n".join(lines), re.M))
    return args, lines


# -- every target ---------------------------------------------------------------------------


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(RUNNERS)))
def test_scripts_parse_and_entry_points_are_executable(script):
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    if script.name != "lib.sh":  # sourced, not run
        assert script.stat().st_mode & stat.S_IXUSR, f"{script} is not executable"
        assert script.read_text().startswith("#!/usr/bin/env bash\n")


def test_each_target_has_its_folder_and_readme():
    for target in ("direct", "flink-k8s", "spark-emr"):
        readme = RUNNERS / target / "README.md"
        assert readme.is_file(), readme
    assert "runners/spark-emr/README.md" in (ROOT / "README.md").read_text()


# -- direct -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["batch.yaml", "streaming.yaml"])
def test_direct_configs_are_valid_options(name):
    spec = job_spec(["run", "--config", str(RUNNERS / "direct" / name)], env={})  # raises on any unknown key
    assert spec.value("sessions").startswith("synthetic://") and spec.value("filter_strategy") == "auto"
    assert spec.profile is None and spec.value("runner") is None


@pytest.mark.slow
def test_direct_batch_config_runs_and_detach_is_ignored_locally(tmp_path):
    from beam_rtbf.pipeline import run

    argv = ["run", "--config", str(RUNNERS / "direct" / "batch.yaml")] + [
        "--sessions=synthetic://sessions?users=2000&sessions=20000&seed=3",
        "--requests=synthetic://requests?users=2000&requests=40&seed=3",
        f"--output={tmp_path}/out",
        f"--registry=embedded://{tmp_path}/registry.sqlite",
        "--detach",  # only for cluster runners: a local job would die with this process
    ]
    summary = run(job_spec(argv).pipeline_options())
    assert "detached" not in summary
    assert (summary["runner"], summary["filter_strategy"], summary["mode"]) == ("FnApiRunner", "broadcast", "bounded")
    assert summary["sessions_in"] == 20_000
    assert summary["sessions_in"] == summary["clean"] + summary["suppressed"] + summary["dead_lettered"]
    assert summary["requests_accepted"] == summary["manifests_written"] == 40
    assert summary["suppressed"] > 0


@pytest.mark.slow
def test_direct_streaming_config_streams_locally(tmp_path):
    from beam_rtbf.pipeline import run

    argv = ["run", "--config", str(RUNNERS / "direct" / "streaming.yaml")] + [
        "--sessions=synthetic://sessions?users=500&rate=2000&duration_s=4&seed=2",
        "--requests=synthetic://requests?users=500&request_rate=3&duration_s=4&active_users=50&seed=2",
        f"--output={tmp_path}/out",
        f"--registry=embedded://{tmp_path}/registry.sqlite",
    ]
    summary = run(job_spec(argv).pipeline_options())
    assert (summary["runner"], summary["filter_strategy"], summary["mode"]) == (
        "LocalStreamingRunner",
        "state",
        "streaming",
    )
    assert summary["sessions_in"] > 4_000
    assert summary["sessions_in"] == summary["clean"] + summary["suppressed"] + summary["dead_lettered"]
    assert summary["requests_accepted"] >= 6 and summary["manifests_written"] == summary["requests_accepted"]


# -- flink-k8s ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def flink_dry_run(tf_json) -> tuple[dict[str, dict], str]:
    done = _script(
        str(FLINK / "submit.sh"), "--dry-run", str(tf_json), IMAGE, env={"RTBF_REDIS_PASSWORD": "hunter2-secret"}
    )
    assert done.returncode == 0, done.stderr
    manifests, _, commands = done.stdout.partition("\n...\n")
    docs = [doc for doc in yaml.safe_load_all(manifests) if doc]
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in docs}, commands


def test_flink_manifests_render_from_terraform_outputs(flink_dry_run):
    docs, commands = flink_dry_run
    assert set(docs) == {
        "Namespace/beam-rtbf",
        "ServiceAccount/flink",
        "Role/beam-rtbf-flink",
        "RoleBinding/beam-rtbf-flink",
        "FlinkDeployment/beam-rtbf",
        "Job/beam-rtbf-submit",
    }
    assert "${" not in json.dumps(list(docs.values()))
    for name, doc in docs.items():
        if not name.startswith("Namespace/"):
            assert doc["metadata"]["namespace"] == "beam-rtbf", name
    account = docs["ServiceAccount/flink"]
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == (
        "arn:aws:iam::123456789012:role/acme-rtbf-flink-sa"
    )
    binding = docs["RoleBinding/beam-rtbf-flink"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "flink", "namespace": "beam-rtbf"}]
    rules = docs["Role/beam-rtbf-flink"]["rules"]
    core = next(rule for rule in rules if rule["apiGroups"] == [""])
    assert {"pods", "configmaps"} <= set(core["resources"]) and "create" in core["verbs"]
    # The secret's value never reaches the terminal; the order of the steps is the one that works.
    assert "hunter2-secret" not in commands
    verbs = [line.split()[2] for line in commands.splitlines() if line.startswith("+ kubectl")]
    assert verbs == ["apply", "create", "create", "apply", "wait", "delete", "apply", "wait", "logs"]


def test_flink_deployment_has_what_the_operator_and_the_profile_need(flink_dry_run):
    spec = flink_dry_run[0]["FlinkDeployment/beam-rtbf"]
    profile = load_profile("flink").options
    assert flink_dry_run[0]["FlinkDeployment/beam-rtbf"]["apiVersion"] == "flink.apache.org/v1beta1"
    spec = spec["spec"]
    version = profile["flink_version"]
    assert spec["flinkVersion"] == "v" + version.replace(".", "_")
    image_version = re.fullmatch(r"flink:(\d+\.\d+\.\d+)-java(11|17|21)", spec["image"]).group(1)
    assert image_version.startswith(version + ".")
    assert spec["serviceAccount"] == "flink" and spec["mode"] == "native"
    conf = spec["flinkConfiguration"]
    assert all(isinstance(value, str) for value in conf.values()), "operator wants string values"
    assert conf["state.backend.type"] == "rocksdb" and conf["state.backend.incremental"] == "true"
    assert conf["execution.checkpointing.mode"] == "EXACTLY_ONCE"
    assert re.fullmatch(r"\d+s", conf["execution.checkpointing.interval"])
    bucket = "s3://acme-rtbf-artifacts-bucket/flink/"
    for key in ("state.checkpoints.dir", "state.savepoints.dir", "high-availability.storageDir"):
        assert conf[key].startswith(bucket), key
    assert conf["high-availability.type"] == "kubernetes"
    assert conf["execution.checkpointing.externalized-checkpoint-retention"] == "RETAIN_ON_CANCELLATION"
    slots = int(conf["taskmanager.numberOfTaskSlots"]) * spec["taskManager"]["replicas"]
    assert slots >= profile["parallelism"], "not enough task slots for the profile's parallelism"
    for role in ("jobManager", "taskManager"):
        assert {"memory", "cpu"} <= set(spec[role]["resource"]), role
        main = spec[role]["podTemplate"]["spec"]["containers"][0]
        assert main["name"] == "flink-main-container"  # the name the operator merges into
        plugins = {e["name"]: e["value"] for e in main["env"]}["ENABLE_BUILT_IN_PLUGINS"]
        assert plugins == f"flink-s3-fs-presto-{image_version}.jar"  # checkpoints on s3://
    containers = {c["name"]: c for c in spec["taskManager"]["podTemplate"]["spec"]["containers"]}
    pool = containers["beam-worker-pool"]
    assert pool["image"] == IMAGE and pool["args"] == ["--worker_pool"]
    assert profile["environment_type"] == "EXTERNAL"
    host, port = profile["environment_config"].split(":")
    assert host == "localhost" and [p["containerPort"] for p in pool["ports"]] == [int(port)]
    secret = {e["name"]: e.get("valueFrom", {}).get("secretKeyRef") for e in pool["env"]}["RTBF_REDIS_PASSWORD"]
    assert secret == {"name": "beam-rtbf-secrets", "key": "redis-password"}
    assert pool["resources"]["limits"]["memory"] == pool["resources"]["requests"]["memory"]


def test_flink_submit_job_uses_the_profile_and_the_jar_in_the_image(flink_dry_run):
    job = flink_dry_run[0]["Job/beam-rtbf-submit"]["spec"]
    args_of_image, _ = _dockerfile()
    assert job["backoffLimit"] == 0, "a retried submit would start a second copy of the streaming job"
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["serviceAccountName"] == "flink"
    (container,) = pod["containers"]
    assert container["image"] == IMAGE and container["command"] == ["beam-rtbf"]
    args = container["args"]
    assert args[:2] == ["run", "--runner=flink"]
    jar = f"beam-runners-flink-{load_profile('flink').options['flink_version']}-job-server-"
    jar += f"{args_of_image['BEAM_VERSION']}.jar"
    assert f"--flink_job_server_jar=/opt/beam-rtbf/jars/{jar}" in args
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["FLINK_MASTER"] == "http://beam-rtbf-rest:8081"  # the operator's REST service of "beam-rtbf"
    mount = container["volumeMounts"][0]["mountPath"]
    assert f"--tf_outputs={mount}/tf.json" in args
    assert pod["volumes"][0]["configMap"]["name"] == "beam-rtbf-tf-outputs"
    assert "create configmap beam-rtbf-tf-outputs" in flink_dry_run[1]


def test_flink_dry_run_shows_the_options_the_job_resolves(flink_dry_run):
    commands = flink_dry_run[1]
    assert "beam-rtbf run: dry run, runner profile flink" in commands
    for flag in (
        "--flink_master=http://beam-rtbf-rest:8081",
        "--flink_submit_uber_jar",
        "--detach",
        "--sessions=kinesis://acme-rtbf-sessions-stream-name?region=eu-west-1",
        "--registry=rediss://master.acme-rtbf.abc123.euw1.cache.amazonaws.com:6379/0",
    ):
        assert f"\n  {flag}\n" in commands, flag
    assert "unresolved" not in commands


def test_flink_submit_refuses_missing_outputs_and_arguments(tmp_path, tf_json):
    outputs = json.loads(tf_json.read_text())
    del outputs["flink_service_account_role_arn"]
    partial = tmp_path / "tf.json"
    partial.write_text(json.dumps(outputs))
    done = _script(str(FLINK / "submit.sh"), "--dry-run", str(partial), IMAGE)
    assert done.returncode != 0 and "flink_service_account_role_arn" in done.stderr
    done = _script(str(FLINK / "submit.sh"), "--dry-run", str(tf_json))
    assert done.returncode == 2 and "TF_OUTPUTS_JSON IMAGE" in done.stderr


def test_flink_image_matches_setup_py_and_the_profile():
    args, lines = _dockerfile()
    setup = _setup_py()
    assert args["BEAM_VERSION"] in _beam_spec(), "the image's Beam must satisfy setup.py's pin"
    assert args["PYTHON_VERSION"] in SpecifierSet(setup["python_requires"])
    assert args["FLINK_VERSION"] == load_profile("flink").options["flink_version"]
    assert "FROM apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION}" in lines
    (install,) = [line for line in lines if "pip install" in line]
    extras = re.search(r'"\$\{wheel\}\[([a-z,]+)\]"', install).group(1).split(",")
    assert set(extras) <= setup["extras"] and {"aws", "redis"} <= set(extras)
    # Nothing but the wheel (whose own requirements are setup.py's) and the image's own Beam.
    packages = re.findall(r'"([^"]+)"', install.split("pip install", 1)[1].split(";", 1)[0])
    assert packages == ["${wheel}[" + ",".join(extras) + "]", "apache-beam==${BEAM_VERSION}"]


# -- spark-emr ----------------------------------------------------------------------------------


def test_emr_upload_puts_the_bootstrap_where_terraform_points(tf_json):
    done = _script(str(EMR / "submit.sh"), "--dry-run", "upload", str(tf_json), "dist/beam_rtbf-0.1.0-py3-none-any.whl")
    assert done.returncode == 0, done.stderr
    targets = [line.split()[-1] for line in done.stdout.splitlines() if line.startswith("+ aws s3 cp")]
    prefix = "s3://acme-rtbf-artifacts-bucket/bootstrap/"
    assert targets == [prefix + p for p in ("install-beam-rtbf.sh", "rtbf-job.sh", "wheels/beam_rtbf-0.1.0-py3-none-any.whl", "tf.json")]  # fmt: skip
    emr = (ROOT / "terraform/modules/emr/main.tf").read_text()
    assert 's3://${var.artifacts_bucket}/bootstrap/install-beam-rtbf.sh"' in emr
    example = (ROOT / "terraform/envs/example/main.tf").read_text()
    assert '"--artifacts", "s3://${module.storage.bucket_names["artifacts"]}/bootstrap"' in example
    done = _script(str(EMR / "submit.sh"), "--dry-run", "upload", str(tf_json), "dist/not-a-wheel.tar.gz")
    assert done.returncode == 2 and "not a beam-rtbf wheel" in done.stderr


@pytest.mark.parametrize("job", ["purge", "run"])
def test_emr_steps_write_the_jar_then_spark_submit_it(tf_json, job):
    user_flags = ["--confirm"] if job == "purge" else ["--sessions=s3://acme/in/*.jsonl", "--requests=s3://acme/rq/*.jsonl"]  # fmt: skip
    done = _script(
        str(EMR / "submit.sh"), "--dry-run", job, str(tf_json), *user_flags, env={"STAMP": "20261123T000000Z"}
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    steps = json.loads(out.split("\nsteps:\n", 1)[1].split("\n+ aws emr add-steps", 1)[0])
    jar = f"/mnt/rtbf/jobs/{job}-20261123T000000Z.jar"
    build, submit = steps
    assert build["Jar"] == submit["Jar"] == "command-runner.jar"
    assert build["Args"] == ["/opt/beam-rtbf/bin/rtbf-job", job, f"--output_executable_path={jar}", *user_flags]
    assert build["ActionOnFailure"] == "CANCEL_AND_WAIT" and submit["ActionOnFailure"] == "CONTINUE"
    # Step 2 is exactly the `then:` command the spark profile's dry run prints for that jar.
    then = out.split("\nthen:\n  ", 1)[1].splitlines()[0]
    assert submit["Args"] == then.split()
    assert submit["Args"][-1] == jar and "--deploy-mode" in submit["Args"]
    assert f"beam-rtbf {job}: dry run, runner profile spark" in out and "unresolved" not in out
    assert "+ aws emr add-steps --region eu-west-1 --cluster-id j-2AXXXXXXGAPLF" in out


def test_emr_run_refuses_streams_like_the_profile(tf_json):
    done = _script(str(EMR / "submit.sh"), "--dry-run", "run", str(tf_json), "--sessions=kinesis://s", "--requests=kinesis://r")  # fmt: skip
    assert done.returncode != 0 and "no streaming" in (done.stdout + done.stderr)


def test_emr_bootstrap_installs_the_package_the_profile_needs():
    text = (EMR / "bootstrap.sh").read_text()
    extras = re.search(r'"\$\{wheel\}\[([a-z,]+)\]"', text).group(1).split(",")
    assert set(extras) <= _setup_py()["extras"] and {"aws", "redis"} <= set(extras)
    port = load_profile("spark").options["environment_config"].split(":")[1]
    assert f"worker_pool_main --service_port={port}" in text
    python = re.search(r"^PYTHON=python(\d+\.\d+)", text, re.M).group(1)
    assert python in SpecifierSet(_setup_py()["python_requires"])
    assert "beam-runners-spark-3-job-server" in text and load_profile("spark").options["spark_version"] == "3"


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "--artifacts s3://BUCKET/PREFIX is required"),
        (["--artifacts", "/local/path"], "--artifacts s3://BUCKET/PREFIX is required"),
        (["--artifacts", "s3://b/bootstrap", "--secret", "RTBF_REDIS_PASSWORD=hunter2"], "ENV=SECRET_ARN"),
        (["--artifacts", "s3://b/bootstrap", "--frobnicate"], "unknown argument --frobnicate"),
    ],
)
def test_emr_bootstrap_refuses_bad_arguments_before_touching_the_node(args, message):
    done = _script(str(EMR / "bootstrap.sh"), *args)
    assert done.returncode == 2 and message in done.stderr
    assert "hunter2" not in done.stderr  # a value mistakenly given instead of an ARN is not echoed


def test_emr_job_step_refuses_unknown_commands():
    done = _script(str(EMR / "rtbf-job.sh"), "generate")
    assert done.returncode == 2 and "usage: rtbf-job run|purge" in done.stderr


def test_render_fails_on_an_unset_placeholder(tmp_path):
    template = tmp_path / "t.yaml"
    template.write_text("a: ${SET_ONE}\nb: ${NOT_SET_ANYWHERE}\n")
    done = subprocess.run(
        ["bash", "-c", f". {RUNNERS / 'lib.sh'}; render {template}"],
        capture_output=True,
        text=True,
        env={**os.environ, "SET_ONE": "x"},
    )
    assert done.returncode != 0 and "set NOT_SET_ANYWHERE" in done.stderr
