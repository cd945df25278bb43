"""Task runners built from an :class:`~schemas.orchestration.ExecutionConfig`, and GPU slots.

A flow picks its runner from a parameter at run time (a deployment's UI form can switch a run to Dask),
so flows enter the runner here and submit through it, exactly as ``Task.submit`` does through the flow's
own runner. Dask comes from prefect-dask's ``DaskTaskRunner``: a ``LocalCluster`` by default, a running
scheduler (``dask_address``) or any cluster class (dask-jobqueue, dask-kubernetes) from a spec.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from schemas.orchestration import ExecutionConfig

def in_flight(execution: ExecutionConfig, default_workers: int) -> int:
    """Tasks a flow keeps in flight: ``execution.max_workers``, else the stage's own ``default_workers``."""
    return execution.max_workers or default_workers


def make_task_runner(execution: ExecutionConfig, default_workers: int) -> TaskRunner:
    """A fresh (not yet started) task runner for ``execution``; ``default_workers`` when it names none."""
    if execution.task_runner == "threads":
        return ThreadPoolTaskRunner(max_workers=in_flight(execution, default_workers))
    from prefect_dask import DaskTaskRunner

    if execution.dask_address:
        return DaskTaskRunner(address=execution.dask_address)
    if execution.cluster is not None:
        spec = execution.cluster
        return DaskTaskRunner(cluster_class=spec.cluster_class, cluster_kwargs=dict(spec.cluster_kwargs),
                              adapt_kwargs=dict(spec.adapt_kwargs) if spec.adapt_kwargs else None)
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": execution.n_workers,
            "threads_per_worker": execution.threads_per_worker,
            "processes": True,
            "dashboard_address": None,  # no fixed port: two flows on one host must not collide
        },
    )


def describe(execution: ExecutionConfig, default_workers: int) -> str:
    if execution.task_runner == "threads":
        return f"threads ({in_flight(execution, default_workers)} in flight)"
    if execution.dask_address:
        return f"dask scheduler {execution.dask_address}"
    if execution.cluster is not None:
        return f"dask {execution.cluster.cluster_class}"
    return f"dask LocalCluster ({execution.n_workers} workers × {execution.threads_per_worker} thread(s))"


@contextmanager
def cluster_config(execution: ExecutionConfig) -> Iterator[None]:
    """Dask config for clusters created in the block: ``execution.dask_config``, and
    ``execution.worker_environ`` set in each worker process before it starts.

    Nannies take ``distributed.nanny.pre-spawn-environ``, but a variable already in this process's
    environment wins over it, and they write it into this process's environment before spawning (so one
    cluster with dask's defaults poisons the next). The block therefore sets the variables here too,
    and restores this process's environment afterwards. Only clusters started here (LocalCluster) are
    affected; workers started elsewhere (SLURM jobs, Kubernetes pods) take the same settings from their
    spec (``infra/dask/*.yaml``).
    """
    import os

    import dask

    merged = {**dask.config.get("distributed.nanny.pre-spawn-environ", default={}), **execution.worker_environ}
    touched = [*merged, "PYTHONHASHSEED"]
    saved = {k: os.environ.get(k) for k in touched}
    os.environ.update({k: str(v) for k, v in execution.worker_environ.items()})
    try:
        with dask.config.set({**execution.dask_config, "distributed.nanny.pre-spawn-environ": merged}):
            yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def task_runner(execution: ExecutionConfig, default_workers: int) -> Iterator[TaskRunner]:
    """Start the runner for the block; shut it (and a cluster it started) down after."""
    runner = make_task_runner(execution, default_workers)
    with ExitStack() as stack:
        if execution.task_runner == "dask" and execution.dask_address is None:
            # for the whole block: prefect-dask starts the cluster lazily, at the first submit
            stack.enter_context(cluster_config(execution))
        stack.enter_context(runner)
        yield runner


def submit(runner: TaskRunner, task: Any, **parameters: Any) -> Any:
    """``task.submit(**parameters)`` on ``runner`` instead of the flow's default runner."""
    return runner.submit(task, parameters)


@contextmanager
def gpu_slot(execution: ExecutionConfig, device: str) -> Iterator[None]:
    """Hold one slot of the ``gpu_limit`` global concurrency limit while CUDA work runs (``device``: the
    resolved device type, ``synth_core.gan.train.select_device(...).type``).

    Only CUDA work takes a slot (CPU runs never wait on GPUs). A limit that does not exist is not an
    error: Prefect logs it and the work runs unbounded (``infra/bootstrap.sh`` creates ``gpu``).
    """
    if not execution.gpu_limit or device != "cuda":
        yield
        return
    from prefect.concurrency.sync import concurrency

    with concurrency(execution.gpu_limit, occupy=1, strict=False):
        yield


__all__ = ["describe", "gpu_slot", "in_flight", "make_task_runner", "submit", "task_runner", "cluster_config"]
