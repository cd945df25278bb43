"""Task runners from ExecutionConfig, GPU slots, and the build's dispatch decision."""

from __future__ import annotations

import pytest
from prefect.task_runners import ThreadPoolTaskRunner
from prefect_dask import DaskTaskRunner

from schemas.orchestration import DaskClusterSpec, DispatchConfig, ExecutionConfig
from tasks.dispatch import use_deployments
from synth_core.gan.train import select_device
from tasks.runners import describe, gpu_slot, make_task_runner


def test_threads_use_the_stage_width_unless_overridden() -> None:
    runner = make_task_runner(ExecutionConfig(), default_workers=3)
    assert isinstance(runner, ThreadPoolTaskRunner) and runner._max_workers == 3
    assert make_task_runner(ExecutionConfig(max_workers=5), 3)._max_workers == 5
    assert describe(ExecutionConfig(), 3) == "threads (3 in flight)"


def test_dask_local_cluster_address_and_spec() -> None:
    local = make_task_runner(ExecutionConfig(task_runner="dask", n_workers=2), 1)
    assert isinstance(local, DaskTaskRunner)
    assert local.cluster_class == "distributed.LocalCluster" or local.cluster_class.__name__ == "LocalCluster"
    assert local.cluster_kwargs == {"n_workers": 2, "threads_per_worker": 1, "processes": True, "dashboard_address": None}
    remote = make_task_runner(ExecutionConfig(task_runner="dask", dask_address="tcp://10.0.0.5:8786"), 1)
    assert remote.address == "tcp://10.0.0.5:8786"
    spec = DaskClusterSpec(cluster_class="dask_jobqueue.SLURMCluster", cluster_kwargs={"cores": 8},
                           adapt_kwargs={"maximum_jobs": 4})
    slurm = make_task_runner(ExecutionConfig(task_runner="dask", cluster=spec), 1)
    assert slurm.cluster_kwargs == {"cores": 8} and slurm.adapt_kwargs == {"maximum_jobs": 4}
    assert "SLURMCluster" in describe(ExecutionConfig(task_runner="dask", cluster=spec), 1)


def test_gpu_slot_is_free_on_cpu_and_without_a_limit() -> None:
    # no Prefect API is touched: CPU work and gpu_limit=None never ask for a slot
    with gpu_slot(ExecutionConfig(), "cpu"):
        pass
    with gpu_slot(ExecutionConfig(gpu_limit=None), "cuda"):
        pass
    assert select_device("cpu").type == "cpu" and select_device("auto").type in ("cpu", "cuda")


@pytest.mark.parametrize(("mode", "expected"), [("in_process", False), ("deployments", True), ("auto", False)])
def test_dispatch_mode_outside_a_deployment(mode: str, expected: bool) -> None:
    assert use_deployments(DispatchConfig(mode=mode)) is expected  # auto: not run from a deployment here


@pytest.mark.e2e
def test_gpu_slots_serialize_cuda_work(prefect_api) -> None:  # noqa: ANN001 - session fixture
    """Two CUDA jobs with a 1-slot limit never overlap (a real Prefect server's global concurrency limit)."""
    import contextvars
    import threading
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.settings import PREFECT_API_URL

    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name="gpu-test-slots", limit=1))
    execution = ExecutionConfig(gpu_limit="gpu-test-slots")
    spans: list[tuple[float, float]] = []

    apis: list[str | None] = []

    def job() -> None:
        apis.append(PREFECT_API_URL.value())
        with gpu_slot(execution, "cuda"):
            start = time.monotonic()
            time.sleep(0.8)
            spans.append((start, time.monotonic()))

    # as Prefect's task runners do: each thread runs in a copy of this context (the session's server).
    # A bare thread would see Prefect's import-time settings and start a temporary server of its own.
    threads = [threading.Thread(target=contextvars.copy_context().run, args=(job,)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert apis == [prefect_api.api_url] * 2 and len(spans) == 2
    (a0, a1), (b0, b1) = sorted(spans)
    assert b0 >= a1, f"overlapping GPU slots: {spans}"


def _worker_settings() -> dict:
    import os

    import dask

    return {"env": {k: os.environ.get(k) for k in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")},
            "profile": dask.config.get("distributed.worker.profile.enabled")}


@pytest.mark.slow
def test_local_cluster_workers_get_the_worker_environ() -> None:
    """Workers of a cluster started by a flow run with ExecutionConfig.worker_environ, not dask's 65536 trim."""
    from schemas.orchestration import WORKER_MALLOC_ENVIRON
    from tasks.runners import task_runner

    with task_runner(ExecutionConfig(task_runner="dask", n_workers=1), 1) as runner:
        (settings,) = runner.client.run(_worker_settings).values()
    assert settings == {"env": WORKER_MALLOC_ENVIRON, "profile": False}
