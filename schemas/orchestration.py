"""How flows execute: task runners (threads or Dask), GPU slots, and where a deployed build sends its GPU stages.

These are flow parameters next to each stage's own config (they show as their own section of the Prefect UI
form). They never change *what* is produced: snapshot ids, model and dataset versions are derived from the
stage configs alone, so the same inputs give the same bytes on threads, a local Dask cluster or SLURM.
"""

from __future__ import annotations

import re
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_FROZEN = ConfigDict(frozen=True, extra="forbid", validate_default=True)
_CLASS_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
_DEPLOYMENT = re.compile(r"^[^/\s]+/[^/\s]+$")

TaskRunnerKind = Literal["threads", "dask"]

WORKER_MALLOC_ENVIRON: dict[str, str] = {
    # glibc: keep freed memory (up to 1 GiB) and serve allocations below 32 MiB from the heap, as its
    # dynamic default does; dask's MALLOC_TRIM_THRESHOLD_=65536 disables that dynamic threshold
    "MALLOC_TRIM_THRESHOLD_": str(1 << 30),
    "MALLOC_MMAP_THRESHOLD_": str(1 << 25),
}
WORKER_DASK_CONFIG: dict[str, Any] = {"distributed.worker.profile.enabled": False}
TASK_RUNNER_KINDS: tuple[str, ...] = ("threads", "dask")


class DaskClusterSpec(BaseModel):
    """A Dask cluster to start for a flow run: ``cluster_class(**cluster_kwargs)``, optionally adaptive.

    ``infra/dask/*.yaml`` holds ready specs (LocalCluster, dask-jobqueue's SLURMCluster, dask-kubernetes'
    KubeCluster); load one with :func:`load_cluster_spec`.
    """

    model_config = _FROZEN

    cluster_class: str = Field(
        default="distributed.LocalCluster",
        description="Import path of the cluster class, e.g. dask_jobqueue.SLURMCluster",
    )
    cluster_kwargs: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments of the cluster class")
    adapt_kwargs: dict[str, Any] | None = Field(
        default=None, description="cluster.adapt(**adapt_kwargs), e.g. {minimum: 0, maximum: 20}; None: fixed size"
    )

    @field_validator("cluster_class")
    @classmethod
    def _class_path(cls, value: str) -> str:
        if not _CLASS_PATH.match(value):
            raise ValueError(f"cluster_class: expected an import path like 'dask_jobqueue.SLURMCluster', received {value!r}")
        return value

    @field_validator("adapt_kwargs")
    @classmethod
    def _adapt(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return value
        unknown = sorted(set(value) - {"minimum", "maximum", "minimum_jobs", "maximum_jobs", "interval", "wait_count",
                                       "target_duration", "minimum_cores", "maximum_cores", "minimum_memory",
                                       "maximum_memory"})
        if unknown:
            raise ValueError(f"adapt_kwargs: unknown keys {unknown}; valid keys include minimum, maximum, "
                             f"minimum_jobs, maximum_jobs, interval, wait_count, target_duration")
        return value


class ExecutionConfig(BaseModel):
    """Where the per-subject (ingest) and per-shard (generate) tasks of a flow run.

    - ``threads`` (default): a thread pool in the flow's process, ``max_workers`` wide.
    - ``dask``: prefect-dask's ``DaskTaskRunner``. ``dask_address`` joins a running scheduler; else
      ``cluster`` starts one (a ``LocalCluster`` of ``n_workers`` processes by default; dask-jobqueue or
      dask-kubernetes through the specs in ``infra/dask/``). Dask process workers talk to the Prefect API
      themselves: run them against a Prefect server (``PREFECT_API_URL``), not the ephemeral one.
    """

    model_config = _FROZEN

    task_runner: TaskRunnerKind = Field(default="threads", description="threads or dask")
    max_workers: int | None = Field(
        default=None, ge=1, le=1024,
        description="Tasks in flight at once (None: the stage's own setting, e.g. ingest max_workers)",
    )
    dask_address: str | None = Field(default=None, description="tcp://host:8786 of a running Dask scheduler")
    n_workers: int = Field(default=2, ge=1, le=512, description="LocalCluster worker processes (dask, no address)")
    threads_per_worker: int = Field(default=1, ge=1, le=64, description="Threads per LocalCluster worker")
    cluster: DaskClusterSpec | None = Field(
        default=None, description="Cluster to start instead of a LocalCluster (see infra/dask/*.yaml)"
    )
    worker_environ: dict[str, str] = Field(
        default_factory=lambda: dict(WORKER_MALLOC_ENVIRON),
        description="Set in each Dask worker process before it starts (dask's distributed.nanny.pre-spawn-environ) "
        "for clusters started here. Default: glibc malloc thresholds; dask's own MALLOC_TRIM_THRESHOLD_=65536 "
        "makes every large array a fresh mmap and slowed ingest by a third (docs/benchmarks.md).",
    )
    dask_config: dict[str, Any] = Field(
        default_factory=lambda: dict(WORKER_DASK_CONFIG),
        description="Dask config set while a cluster started here runs (its workers inherit it). Default: "
        "no statistical profiler in the workers (it samples every thread's stack every 10 ms).",
    )
    gpu_limit: str | None = Field(
        default="gpu",
        description="Prefect global concurrency limit that bounds GPU slots; each training run and each "
        "generation shard holds one slot while it runs. None: unbounded. A missing limit is not an error.",
    )

    @field_validator("dask_address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parsed = urlparse(value)
        if parsed.scheme not in ("tcp", "tls", "ws", "wss", "inproc", "ucx") or not parsed.netloc:
            raise ValueError(f"dask_address: expected 'tcp://host:port' (or tls://, ws://), received {value!r}")
        return value

    @model_validator(mode="after")
    def _dask_only(self) -> ExecutionConfig:
        if self.task_runner == "threads" and (self.dask_address or self.cluster):
            raise ValueError(
                "task_runner: dask_address/cluster need task_runner='dask', received task_runner='threads'; "
                f"valid choices: {', '.join(TASK_RUNNER_KINDS)}"
            )
        if self.dask_address and self.cluster:
            raise ValueError("dask_address and cluster: give one (join a running scheduler, or start a cluster), received both")
        return self


DispatchMode = Literal["auto", "in_process", "deployments"]


class DispatchConfig(BaseModel):
    """How ``build_dataset`` runs its GPU stages (train, generate).

    ``auto``: through ``run_deployment`` on the GPU work pool when the build itself runs from a deployment,
    in-process when it runs locally (``synthmri build``). ``in_process`` / ``deployments`` force one.
    """

    model_config = _FROZEN

    mode: DispatchMode = Field(default="auto", description="auto, in_process or deployments")
    train_deployment: str = Field(default="train_gan/train-gan", description="<flow name>/<deployment name>")
    generate_deployment: str = Field(default="generate/generate", description="<flow name>/<deployment name>")
    poll_seconds: float = Field(default=5.0, gt=0, le=300, description="How often the build polls a child run")

    @field_validator("train_deployment", "generate_deployment")
    @classmethod
    def _deployment(cls, value: str) -> str:
        if not _DEPLOYMENT.match(value):
            raise ValueError(f"deployment: expected '<flow name>/<deployment name>', received {value!r}")
        return value


ModelOrigin = Literal["standalone", "build_dataset"]


def load_cluster_spec(path: str) -> DaskClusterSpec:
    """Read a YAML or JSON cluster spec (``infra/dask/*.yaml``) and validate it."""
    from pathlib import Path

    import yaml

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"cluster spec: no file at {p}")
    data = yaml.safe_load(p.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"cluster spec {p}: expected a mapping with cluster_class and cluster_kwargs, received {type(data).__name__}")
    return DaskClusterSpec.model_validate(data)


__all__ = [
    "TASK_RUNNER_KINDS",
    "WORKER_DASK_CONFIG",
    "WORKER_MALLOC_ENVIRON",
    "DaskClusterSpec",
    "DispatchConfig",
    "DispatchMode",
    "ExecutionConfig",
    "ModelOrigin",
    "TaskRunnerKind",
    "load_cluster_spec",
]
