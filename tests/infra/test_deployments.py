"""End to end, the way an operator runs the factory: a real ``prefect server start`` (with its UI), work pools,
limits and automations from ``infra/bootstrap.sh``, every deployment from ``infra/prefect.yaml``, a ``cpu`` and
a ``gpu`` process worker (the gpu one runs on CPU here), and builds triggered through the API exactly as the
UI's "Run" button does (``POST /deployments/{id}/create_flow_run``).

Checked: the build completes on the cpu pool while its train and generate children run on the gpu pool; the
published dataset verifies; headless Chromium shows the run as Completed in the Prefect UI; a failing child
fails the build with the child's name and error; a standalone training run's ``synthmri.model.registered``
event makes the ``generate`` deployment's trigger generate with the new model.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from schemas.build import BuildConfig, demo_generate, demo_train
from schemas.config import IngestConfig, PhantomConfig, SourceConfig, StoreConfig
from schemas.generate import PlanConfig
from synth_core.consume import open_dataset
from synth_core.publish import read_latest
from synth_core.storage import open_store
from tests.servers import PrefectServer, prefect_server, prefect_worker, using_prefect

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


@dataclass(frozen=True)
class Factory:
    server: PrefectServer
    store: str
    workdir: Path
    deployments: dict[str, Any]  # "<flow>/<deployment>" -> id


@pytest.fixture(scope="module")
def factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Factory]:
    workdir = tmp_path_factory.mktemp("deployed")
    store = f"file://{workdir / 'store'}"
    with prefect_server(workdir, ui=True) as server, using_prefect(server):
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")},
            **server.env(),
            "SYNTHMRI_STORE": store,
            "PREFECT": str(Path(sys.executable).parent / "prefect"),
            "PREFECT_WORKER_QUERY_SECONDS": "2",
            "PREFECT_WORKER_PREFETCH_SECONDS": "2",
        }
        boot = subprocess.run(["bash", "infra/bootstrap.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert boot.returncode == 0, boot.stdout[-3000:] + boot.stderr[-3000:]
        with prefect_worker("cpu", env, workdir, ROOT), prefect_worker("gpu", env, workdir, ROOT):
            yield Factory(server, store, workdir, asyncio.run(_deployments()))


async def _deployments() -> dict[str, Any]:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        flows = {f.id: f.name for f in await client.read_flows()}
        return {f"{flows[d.flow_id]}/{d.name}": d.id for d in await client.read_deployments()}


def _run_like_the_ui(deployment_id: Any, parameters: dict[str, Any]) -> Any:
    """What the UI's Run / Custom run does: create a flow run from the deployment with the form's values."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.create_flow_run_from_deployment(deployment_id, parameters=parameters).id


def _wait(flow_run_id: Any, timeout: float, logs: list[Path]) -> Any:
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            run = client.read_flow_run(flow_run_id)
            if run.state is not None and run.state.type.value in FINAL:
                return run
            time.sleep(2)
    tails = "\n".join(f"--- {p.name}\n{p.read_text()[-4000:]}" for p in logs if p.exists())
    raise AssertionError(f"flow run {flow_run_id} not finished after {timeout} s\n{tails}")


def _flow_runs(deployment_id: Any) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))


def _build_parameters(store: str, phantom: Path, **train_update: Any) -> dict[str, Any]:
    config = BuildConfig(
        store=StoreConfig(url=store),
        ingest=IngestConfig(source=SourceConfig(kind="phantom", path=str(phantom),
                                                phantom=PhantomConfig(n_subjects=12, seed=7, voxel_size_mm=2.0))),
        train=demo_train().model_copy(update={"steps": 4, "checkpoint_every": 4, "validate_every": 4, **train_update}),
        generate=demo_generate().model_copy(update={"plan": PlanConfig(n_samples=12, seed=0), "shard_size": 6}),
    )
    return {"config": config.model_dump(mode="json"), "dispatch": {"mode": "auto", "poll_seconds": 1}}


def _logs(factory: Factory) -> list[Path]:
    return [factory.workdir / "worker-cpu.log", factory.workdir / "worker-gpu.log"]


def test_bootstrap_created_pools_limits_automations_and_deployments(factory: Factory) -> None:
    from prefect.client.orchestration import get_client

    assert set(factory.deployments) == {"build_dataset/build-dataset", "ingest/ingest", "train_gan/train-gan",
                                        "generate/generate", "publish/publish"}
    with get_client(sync_client=True) as client:
        pools = {p.name: p.type for p in client.read_work_pools()}
        assert pools == {"cpu": "process", "gpu": "process"}
        assert client.read_global_concurrency_limit_by_name("gpu").limit == 1
        automations = {a.name for a in client.read_automations()}
        assert {"synthmri-crash-stale-flow-runs", "generate-on-new-model"} <= automations
        build = client.read_deployment(factory.deployments["build_dataset/build-dataset"])
        assert build.work_pool_name == "cpu" and [s.schedule.cron for s in build.schedules] == ["0 3 * * 1"]
        ingest = client.read_deployment(factory.deployments["ingest/ingest"])
        assert [s.schedule.cron for s in ingest.schedules] == ["0 2 * * *"]
        for name in ("train_gan/train-gan", "generate/generate"):
            assert client.read_deployment(factory.deployments[name]).work_pool_name == "gpu"
        # the UI form: pydantic parameter models, filled with the deployment's defaults
        props = build.parameter_openapi_schema["properties"]
        assert {"config", "execution", "dispatch"} <= set(props)
        assert build.parameters["config"]["store"]["url"] == factory.store
        assert build.job_variables["env"]["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == "30"
    # rerunning the bootstrap is idempotent: same pools, no duplicated automations
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}, **factory.server.env(),
           "SYNTHMRI_STORE": factory.store, "PREFECT": str(Path(sys.executable).parent / "prefect")}
    again = subprocess.run(["bash", "infra/bootstrap.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    with get_client(sync_client=True) as client:
        names = [a.name for a in client.read_automations()]
        assert names.count("generate-on-new-model") == 1 and names.count("synthmri-crash-stale-flow-runs") == 1


def test_build_from_the_ui_dispatches_gpu_stages_and_publishes(factory: Factory, tmp_path: Path) -> None:
    deployment = factory.deployments["build_dataset/build-dataset"]
    run_id = _run_like_the_ui(deployment, _build_parameters(factory.store, factory.workdir / "phantom"))
    run = _wait(run_id, 900, _logs(factory))
    assert run.state.type.value == "COMPLETED", (run.state, "\n".join(p.read_text()[-3000:] for p in _logs(factory)))
    assert run.work_pool_name == "cpu"

    # the GPU stages ran as children on the gpu pool, through their deployments
    for name in ("train_gan/train-gan", "generate/generate"):
        children = [r for r in _flow_runs(factory.deployments[name]) if r.parent_task_run_id is not None]
        assert len(children) == 1, (name, children)
        assert children[0].work_pool_name == "gpu" and children[0].state.type.value == "COMPLETED"

    store = open_store(StoreConfig(url=factory.store))
    assert read_latest(store, "synthmri-demo") == "v1"
    ds = open_dataset(store, "synthmri-demo")
    assert len(ds.samples) == 12 and ds.verify() == []
    assert store.list_dirs("models/label2mri") == ["v1"]

    # a real browser shows the run as Completed on its page in the Prefect UI
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (Debian package 'chromium'; .ci/run installs it)")
        pytest.skip("chromium is not installed (Debian package 'chromium')")
    ui = factory.server.api_url.removesuffix("/api")
    url = f"{ui}/runs/flow-run/{run_id}"
    dom = subprocess.run([chromium, *CHROMIUM_FLAGS, "--virtual-time-budget=20000", "--window-size=1400,900",
                          "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    assert run.name in dom, dom[-2000:]
    assert "Completed" in dom, dom[-2000:]
    shot = tmp_path / "flow-run-completed.png"
    subprocess.run([chromium, *CHROMIUM_FLAGS, "--virtual-time-budget=20000", "--window-size=1400,900",
                    "--hide-scrollbars", f"--screenshot={shot}", url], capture_output=True, timeout=120, check=True)
    assert shot.stat().st_size > 20_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("SYNTHMRI_SCREENSHOT_DIR"):  # docs/img/ in this repository was made this way
        shutil.copy(shot, Path(os.environ["SYNTHMRI_SCREENSHOT_DIR"]) / shot.name)


def test_failing_child_fails_the_build_with_its_name(factory: Factory) -> None:
    """models/label2mri/v1 was trained with another config: the train child refuses it, and the build says so."""
    deployment = factory.deployments["build_dataset/build-dataset"]
    params = _build_parameters(factory.store, factory.workdir / "phantom", model_version="v1", steps=5)
    run = _wait(_run_like_the_ui(deployment, params), 600, _logs(factory))
    assert run.state.type.value == "FAILED", run.state
    message = run.state.message or ""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        logs = client.read_logs()
    text = message + "\n".join(entry.message for entry in logs if entry.flow_run_id == run.id)
    assert "train: child flow run" in text and "train_gan/train-gan" in text and "Failed" in text, text[-3000:]
    assert "another config" in "\n".join(entry.message for entry in logs), "the child's own error is in its logs"


def test_standalone_model_triggers_generation(factory: Factory) -> None:
    """A standalone train_gan run registers v2; the generate deployment's trigger generates with it."""
    train = demo_train().model_copy(update={"steps": 4, "checkpoint_every": 4, "validate_every": 4, "seed": 1,
                                            "store": StoreConfig(url=factory.store)})
    run = _wait(_run_like_the_ui(factory.deployments["train_gan/train-gan"], {"config": train.model_dump(mode="json")}),
                600, _logs(factory))
    assert run.state.type.value == "COMPLETED", run.state
    assert run.work_pool_name == "gpu"

    generate = factory.deployments["generate/generate"]
    deadline = time.monotonic() + 120
    triggered: list[Any] = []
    while time.monotonic() < deadline and not triggered:
        triggered = [r for r in _flow_runs(generate)
                     if r.parameters.get("config", {}).get("model_version") == "v2"]
        time.sleep(2)
    assert len(triggered) == 1, "the model-registered trigger did not start exactly one generate run"
    done = _wait(triggered[0].id, 600, _logs(factory))
    assert done.state.type.value == "COMPLETED", done.state
    params = done.parameters["config"]
    assert params["store"]["url"] == factory.store and params["model_name"] == "label2mri"
    store = open_store(StoreConfig(url=factory.store))
    from synth_core.generate.run import read_samples

    versions = store.list_dirs("datasets/synthmri-demo")
    models = {v: set(read_samples(store, "synthmri-demo", v)["model_version"]) for v in versions
              if store.exists(f"datasets/synthmri-demo/{v}/generation.json")}
    assert {"v2"} in models.values(), models
