"""ExecutionConfig / DispatchConfig / DaskClusterSpec: valid choices pass, invalid ones name the field and value."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from schemas.config import StoreConfig
from schemas.orchestration import DaskClusterSpec, DispatchConfig, ExecutionConfig, load_cluster_spec


def test_defaults_are_threads_and_auto_dispatch() -> None:
    e = ExecutionConfig()
    assert e.task_runner == "threads" and e.dask_address is None and e.gpu_limit == "gpu"
    assert DispatchConfig().mode == "auto"


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"task_runner": "threads", "dask_address": "tcp://127.0.0.1:8786"}, "task_runner: dask_address/cluster need task_runner='dask'"),
        ({"task_runner": "dask", "dask_address": "127.0.0.1:8786"}, "dask_address: expected 'tcp://host:port'"),
        ({"task_runner": "dask", "dask_address": "tcp://h:1", "cluster": {"cluster_class": "a.B"}}, "give one"),
        ({"task_runner": "ray"}, "task_runner"),
        ({"n_workers": 0}, "n_workers"),
    ],
)
def test_invalid_execution_is_named(kwargs: dict, needle: str) -> None:
    with pytest.raises(ValidationError) as err:
        ExecutionConfig(**kwargs)
    assert needle in str(err.value)


def test_cluster_spec_checks_class_path_and_adapt_keys() -> None:
    with pytest.raises(ValidationError, match="cluster_class: expected an import path"):
        DaskClusterSpec(cluster_class="SLURMCluster")
    with pytest.raises(ValidationError, match=r"adapt_kwargs: unknown keys \['max'\]"):
        DaskClusterSpec(adapt_kwargs={"max": 3})
    assert DaskClusterSpec(cluster_class="dask_jobqueue.SLURMCluster", adapt_kwargs={"maximum_jobs": 3}).adapt_kwargs


def test_load_cluster_spec_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="cluster spec: no file at"):
        load_cluster_spec(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="expected a mapping with cluster_class"):
        load_cluster_spec(str(bad))


def test_dispatch_deployment_names() -> None:
    with pytest.raises(ValidationError, match="expected '<flow name>/<deployment name>'"):
        DispatchConfig(train_deployment="train-gan")
    with pytest.raises(ValidationError, match="mode"):
        DispatchConfig(mode="remote")


def test_blank_store_fields_from_forms_are_none() -> None:
    cfg = StoreConfig(url="s3://b/p", endpoint_url="", credentials_block=" ", region="")
    assert cfg.endpoint_url is None and cfg.credentials_block is None and cfg.region is None
    with pytest.raises(ValidationError, match="endpoint_url: expected"):
        StoreConfig(url="s3://b/p", endpoint_url="minio:9000")
