"""The cluster recipes in docker/: the TFJob against the Kubeflow Training Operator's CRD schema, the TF
Serving Deployment + Service, the Slurm batch script; and the trainer accepting the flags they pass."""
import copy
import json
import os
import re
import subprocess

import jsonschema
import pytest
import yaml
from absl import flags

from bl_net_tf.training import config as cfg, flags as training_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K8S = os.path.join(REPO, "docker", "k8s")
SBATCH = os.path.join(REPO, "docker", "slurm", "train.sbatch")
# kubeflow/training-operator v1.9.0, manifests/base/crds/kubeflow.org_tfjobs.yaml (tests/data/README.md).
SCHEMA = os.path.join(REPO, "tests", "data", "kubeflow_tfjob_v1_openapi_schema.json")


def strict(schema):
    """``schema`` rejecting fields it does not name, as the API server's strict field validation
    (``kubectl apply --validate=strict``) does; Kubernetes' own schemas leave that implicit."""
    if isinstance(schema, dict):
        schema = {key: strict(value) for key, value in schema.items()}
        if ("properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        schema = [strict(value) for value in schema]
    return schema


@pytest.fixture(scope="module")
def tfjob_schema():
    with open(SCHEMA, encoding="utf-8") as f:
        return strict(json.load(f))


@pytest.fixture(scope="module")
def pod_template_schema(tfjob_schema):
    """The Pod template schema embedded in the CRD (core/v1 PodTemplateSpec of Kubernetes 1.31)."""
    return tfjob_schema["properties"]["spec"]["properties"]["tfReplicaSpecs"]["additionalProperties"][
        "properties"]["template"]


def load(name: str) -> list:
    with open(os.path.join(K8S, name), encoding="utf-8") as f:
        return list(yaml.safe_load_all(f))


def errors(schema, document) -> list:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in jsonschema.Draft4Validator(schema).iter_errors(document)]


def trainer_config(args):
    """What the trainer makes of ``args`` (as ``bl-net-train ARGS --print_config`` would)."""
    flag_values = flags.FlagValues()
    training_flags.define_flags(flag_values)
    flag_values(["bl-net-train", *training_flags.expand_recipes(list(args))])
    return cfg.resolve(*training_flags.config_from_flags(flag_values))


def mounted_at(path: str, mounts: list) -> dict:
    """The volume mount that holds ``path``."""
    (mount,) = [m for m in mounts if path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/")]
    return mount


def test_the_tfjob_validates_against_the_training_operators_crd_schema(tfjob_schema):
    (job,) = load("tfjob.yaml")
    assert (job["apiVersion"], job["kind"]) == ("kubeflow.org/v1", "TFJob")
    assert errors(tfjob_schema, job) == []
    # The validation is not vacuous: a misspelt field and a wrong type are both caught.
    broken = copy.deepcopy(job)
    worker = broken["spec"]["tfReplicaSpecs"]["Worker"]
    worker["replica"] = worker.pop("replicas")
    worker["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "2222"
    assert sorted(errors(tfjob_schema, broken)) == sorted([
        "spec/tfReplicaSpecs/Worker: Additional properties are not allowed ('replica' was unexpected)",
        "spec/tfReplicaSpecs/Worker/template/spec/containers/0/ports/0/containerPort: '2222' is not of type 'integer'"])


def test_the_tfjob_trains_a_paper_row_on_eight_gpus_per_worker_from_its_volumes():
    (job,) = load("tfjob.yaml")
    worker = job["spec"]["tfReplicaSpecs"]["Worker"]
    pod = worker["template"]["spec"]
    (container,) = pod["containers"]
    assert container["name"] == "tensorflow"  # the container the operator gives TF_CONFIG
    assert [port["name"] for port in container["ports"]] == ["tfjob-port"]
    config = trainer_config(container["args"])
    assert config.gpus == container["resources"]["limits"]["nvidia.com/gpu"] == 8
    assert (config.arch, config.epochs, config.batch_size) == ("bl-resnext101-32x4d", 110, 256)
    mounts, volumes = container["volumeMounts"], {v["name"]: v for v in pod["volumes"]}
    assert {m["name"] for m in mounts} == set(volumes)
    data, runs = mounted_at(config.data_dir, mounts), mounted_at(config.model_dir, mounts)
    assert data["readOnly"] and volumes[data["name"]]["persistentVolumeClaim"]["readOnly"]
    assert not runs.get("readOnly") and mounted_at(config.export_dir, mounts) == runs
    assert volumes[mounted_at("/dev/shm", mounts)["name"]]["emptyDir"]["medium"] == "Memory"
    assert pod["securityContext"]["runAsUser"] == 10001  # docker/Dockerfile's APP_UID
    # A preempted worker exits 143 after its checkpoint and must come back to resume.
    assert worker["restartPolicy"] in ("OnFailure", "ExitCode") and pod["terminationGracePeriodSeconds"] >= 60


def test_the_serving_deployment_and_service_fit_together(pod_template_schema):
    deployment, service, batching = load("serving.yaml")
    assert (deployment["apiVersion"], deployment["kind"]) == ("apps/v1", "Deployment")
    assert (service["apiVersion"], service["kind"]) == ("v1", "Service")
    template = deployment["spec"]["template"]
    assert errors(pod_template_schema, template) == []
    labels = template["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    (container,) = template["spec"]["containers"]
    image, tag = container["image"].rsplit(":", 1)
    assert image == "tensorflow/serving" and re.fullmatch(r"\d+\.\d+\.\d+", tag)  # pinned
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"grpc": 8500, "http": 8501}  # TF Serving's defaults in the image
    assert {port["targetPort"] for port in service["spec"]["ports"]} == set(ports)
    env = {item["name"]: item["value"] for item in container["env"]}
    model_path = f"{env['MODEL_BASE_PATH']}/{env['MODEL_NAME']}"  # what the image serves
    mount, batching_mount = container["volumeMounts"]
    assert mount["mountPath"] == model_path and mount["readOnly"]
    # Batching with the project's parameters file, from a ConfigMap that holds it unchanged.
    with open(os.path.join(REPO, "docker", "batching_parameters.txt"), encoding="utf-8") as f:
        assert (batching["kind"], batching["data"]) == ("ConfigMap", {"batching_parameters.txt": f.read()})
    assert container["args"] == ["--enable_batching=true", "--batching_parameters_file="
                                 f"{batching_mount['mountPath']}/batching_parameters.txt"]
    assert container["readinessProbe"]["httpGet"]["path"] == f"/v1/models/{env['MODEL_NAME']}"
    # The runs volume the TFJob exports to, at the folder holding the version directories.
    (job,) = load("tfjob.yaml")
    (trainer,) = job["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["containers"]
    export_dir = trainer_config(trainer["args"]).export_dir
    runs = mounted_at(export_dir, trainer["volumeMounts"])
    assert os.path.dirname(export_dir) == f"{runs['mountPath']}/{mount['subPath']}"
    volume, config = template["spec"]["volumes"]
    assert (config["name"], config["configMap"]["name"]) == (batching_mount["name"], batching["metadata"]["name"])
    assert volume["persistentVolumeClaim"]["claimName"] == next(
        v for v in job["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["volumes"]
        if v["name"] == runs["name"])["persistentVolumeClaim"]["claimName"]


def test_the_sbatch_script_runs_one_eight_gpu_task_per_node_and_requeues_on_sigterm():
    assert subprocess.run(["bash", "-n", SBATCH], capture_output=True).returncode == 0
    with open(SBATCH, encoding="utf-8") as f:
        text = f.read()
    directives = dict(re.findall(r"^#SBATCH --([\w-]+)(?:=(\S+))?", text, flags=re.M))
    assert directives["ntasks-per-node"] == "1" and directives["gpus-per-node"] == "8"
    assert directives["signal"].startswith("TERM@") and "requeue" in directives
    assert '--gpus=8 "$@"' in text and "scontrol requeue" in text
    # The recipe it trains by default exists.
    recipe = re.search(r'^recipe="\$\{RECIPE:-([^}]+)\}"', text, flags=re.M).group(1)
    assert recipe in training_flags.recipes()
