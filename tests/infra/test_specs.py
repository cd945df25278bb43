"""Every file under ``infra/`` is checked against what consumes it: deployments against the flows' parameter
models, the trigger's parameters against ``generate``, automations against Prefect's model, Kubernetes base job
templates against their own variables, Dask specs by starting (LocalCluster) or rendering (SLURM) them, and
the Dockerfiles against the repository and its pins."""

from __future__ import annotations

import importlib
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from schemas.orchestration import DaskClusterSpec, load_cluster_spec

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
ENV = {"SYNTHMRI_PROJECT_DIR": str(ROOT), "SYNTHMRI_STORE": "s3://bucket/factory",
       "SYNTHMRI_S3_ENDPOINT": "http://127.0.0.1:9000", "SYNTHMRI_CREDENTIALS_BLOCK": ""}
EVENT = {  # what tasks.events.announce_model sends
    "event.payload.store": {"url": "s3://bucket/factory", "endpoint_url": "http://127.0.0.1:9000", "region": None,
                            "credentials_block": None, "checksum_mode": None, "conditional_writes": "auto"},
    "event.payload.model_name": "label2mri",
    "event.payload.model_version": "v7",
}


def _fill(value: Any, values: dict[str, Any]) -> Any:
    """Resolve ``{{ name }}`` / ``{{ $NAME }}`` placeholders the way prefect deploy and the trigger do."""
    if isinstance(value, dict):
        return {k: _fill(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, values) for v in value]
    if isinstance(value, str):
        m = re.fullmatch(r"\{\{\s*\$?([\w.\[\]'-]+)\s*\}\}", value)
        if m:
            assert m.group(1) in values, f"placeholder {value!r} has no value"
            return values[m.group(1)]
    return value


def _project() -> dict[str, Any]:
    return yaml.safe_load((INFRA / "prefect.yaml").read_text())


def _flow(entrypoint: str) -> Any:
    path, name = entrypoint.split(":")
    return getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), name)


def test_every_deployment_loads_and_its_defaults_validate() -> None:
    from prefect import Flow

    project = _project()
    pull = _fill(project["pull"], ENV)
    assert pull == [{"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}]
    seen = {}
    for d in project["deployments"]:
        flow = _flow(d["entrypoint"])
        assert isinstance(flow, Flow), d["entrypoint"]
        params = flow.validate_parameters(_fill(d.get("parameters", {}), ENV))  # the UI form's defaults
        assert (ROOT / d["entrypoint"].split(":")[0]).is_file()
        seen[f"{flow.name}/{d['name']}"] = (d["work_pool"]["name"], params)
    assert set(seen) == {"build_dataset/build-dataset", "ingest/ingest", "train_gan/train-gan", "generate/generate",
                         "publish/publish"}
    pools = {k: v[0] for k, v in seen.items()}
    assert pools["train_gan/train-gan"] == pools["generate/generate"] == "gpu"
    assert pools["build_dataset/build-dataset"] == pools["ingest/ingest"] == pools["publish/publish"] == "cpu"
    build = seen["build_dataset/build-dataset"][1]
    # the build's dispatch targets are the deployments defined here
    assert build["dispatch"].train_deployment in seen and build["dispatch"].generate_deployment in seen
    assert build["config"].store.url == "s3://bucket/factory" and build["config"].store.credentials_block is None


def test_schedules_and_heartbeats() -> None:
    deployments = {d["name"]: d for d in _project()["deployments"]}
    assert [s["cron"] for s in deployments["build-dataset"]["schedules"]] == ["0 3 * * 1"]  # weekly
    assert [s["cron"] for s in deployments["ingest"]["schedules"]] == ["0 2 * * *"]  # nightly
    for d in deployments.values():
        assert d["work_pool"]["job_variables"]["env"]["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == "30"


def test_model_registered_trigger_produces_valid_generate_parameters() -> None:
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

    from tasks.events import MODEL_REGISTERED, model_resource

    generate = next(d for d in _project()["deployments"] if d["name"] == "generate")
    (trigger,) = generate["triggers"]
    DeploymentEventTrigger.model_validate(trigger)
    assert trigger["expect"] == [MODEL_REGISTERED]
    resource = model_resource("label2mri", "v7", "standalone")
    assert all(re.fullmatch(v.replace(".", r"\.").replace("*", ".*"), resource[k])
               for k, v in trigger["match"].items())
    assert model_resource("label2mri", "v7", "build_dataset")["synthmri.model.origin"] != trigger["match"]["synthmri.model.origin"]
    params = _flow(generate["entrypoint"]).validate_parameters(_fill(trigger["parameters"], {**ENV, **EVENT}))
    assert params["config"].model_version == "v7" and params["config"].store.endpoint_url == "http://127.0.0.1:9000"


def test_automations_validate() -> None:
    from prefect.events.schemas.automations import AutomationCore

    for path in (INFRA / "automations").glob("*.yaml"):
        for item in yaml.safe_load(path.read_text())["automations"]:
            automation = AutomationCore.model_validate(item)
            assert automation.actions, path


@pytest.mark.parametrize("pool", ["cpu", "gpu"])
def test_kubernetes_base_job_templates(pool: str) -> None:
    template = json.loads((INFRA / "k8s" / f"{pool}-base-job-template.json").read_text())
    declared = set(template["variables"]["properties"])
    used = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", json.dumps(template["job_configuration"])))
    assert used <= declared, f"undeclared template variables: {sorted(used - declared)}"
    container = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    limits = container["resources"]["limits"]
    assert ("nvidia.com/gpu" in limits) == (pool == "gpu")
    image = template["variables"]["properties"]["image"]["default"]
    dockerfile = INFRA / "docker" / ("cuda.Dockerfile" if pool == "gpu" else "cpu.Dockerfile")
    assert image in dockerfile.read_text(), "the template's image is the one its Dockerfile builds"


def test_dask_specs_validate_and_local_one_starts() -> None:
    specs = {p.stem: load_cluster_spec(str(p)) for p in (INFRA / "dask").glob("*.yaml")}
    assert set(specs) == {"local", "slurm", "kubernetes"}
    assert specs["slurm"].cluster_class == "dask_jobqueue.SLURMCluster"
    assert specs["kubernetes"].cluster_class == "dask_kubernetes.operator.KubeCluster"
    local = specs["local"]
    module, name = local.cluster_class.rsplit(".", 1)
    cluster = getattr(importlib.import_module(module), name)(**local.cluster_kwargs)
    try:
        assert len(cluster.workers) == local.cluster_kwargs["n_workers"]
    finally:
        cluster.close()


def test_slurm_spec_renders_a_job_script() -> None:
    jobqueue = pytest.importorskip("dask_jobqueue")
    spec: DaskClusterSpec = load_cluster_spec(str(INFRA / "dask" / "slurm.yaml"))
    cluster = jobqueue.SLURMCluster(**spec.cluster_kwargs, scheduler_options={"host": "127.0.0.1", "dashboard_address": None})
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "#SBATCH --cpus-per-task=8" in script and "#SBATCH -p cpu" in script and "#SBATCH -t 02:00:00" in script
    assert "/opt/synthmri/.venv/bin/python -m distributed.cli.dask_worker" in script and "--nworkers 4" in script
    assert "PREFECT_API_URL" in script and "export DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False" in script
    _assert_worker_environ(next(line.split("=", 1)[1].strip('"') for line in script.splitlines()
                                if line.startswith("export DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON=")))


def _assert_worker_environ(value: str) -> None:
    """A DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON value gives the workers the flows' malloc settings."""
    import dask

    from schemas.orchestration import WORKER_MALLOC_ENVIRON

    with dask.config.set(dask.config.collect_env({"DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON": value})):
        environ = dask.config.get("distributed.nanny.pre-spawn-environ")
    assert {k: environ[k] for k in WORKER_MALLOC_ENVIRON} == WORKER_MALLOC_ENVIRON


def test_kubernetes_dask_spec_sets_the_worker_environ() -> None:
    spec = load_cluster_spec(str(INFRA / "dask" / "kubernetes.yaml"))
    _assert_worker_environ(spec.cluster_kwargs["env"]["DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON"])
    assert spec.cluster_kwargs["env"]["DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED"] == "False"


@pytest.mark.parametrize("name", ["cpu.Dockerfile", "cuda.Dockerfile"])
def test_dockerfiles_match_the_repository(name: str) -> None:
    text = (INFRA / "docker" / name).read_text()
    for src in re.findall(r"^COPY\s+(.+?)\s+\S+$", text, flags=re.M):
        for part in src.split():
            assert (ROOT / part).exists(), f"{name}: COPY {part} does not exist"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    torch_pin = next(d for d in pyproject["project"]["dependencies"] if d.startswith("torch"))
    assert f'"{torch_pin}"' in text, f"{name} must install {torch_pin} first"
    assert "-c constraints.txt" in text
    assert re.search(r'^FROM python:3\.11', text, flags=re.M)
    pool = re.search(r'CMD \["prefect", "worker", "start", "--pool", "(\w+)"\]', text).group(1)
    assert pool == ("gpu" if name.startswith("cuda") else "cpu")
    assert "SYNTHMRI_PROJECT_DIR=/opt/synthmri" in text  # the pull step's working directory in the image
