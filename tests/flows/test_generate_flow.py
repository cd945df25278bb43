"""The ``generate`` flow on a real Prefect server: shards as tasks, artifacts, idempotent rerun."""

from __future__ import annotations

import asyncio

import pytest

from schemas.config import StoreConfig
from schemas.generate import GenerateConfig, PlanConfig
from synth_core.storage import Store
from tests.flows.conftest import record_submissions
from tests.servers import PrefectServer
from tests.synth_core.generate.test_shard import model_store  # noqa: F401 - fixture reuse

pytestmark = pytest.mark.e2e


def test_generate_flow(prefect_api: PrefectServer, model_store: Store,  # noqa: F811
                       monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.client.orchestration import get_client

    import flows.generate
    from flows.generate import generate

    submissions = record_submissions(monkeypatch, flows.generate)
    config = GenerateConfig(store=StoreConfig(url=model_store.url), dataset_name="flow-gen",
                            plan=PlanConfig(n_samples=12, seed=3), shard_size=5, batch_size=2, device="cpu")
    summary = generate(config)
    # each shard task gets only its own rows of the plan, in sample order
    submitted = [(p["shard_index"], [row["index"] for row in p["rows"]]) for p in submissions]
    assert sorted(submitted) == [(0, [0, 1, 2, 3, 4]), (1, [5, 6, 7, 8, 9]), (2, [10, 11])]
    assert summary["created"] and summary["samples"] == 12 and set(summary["counts_per_stratum"].values()) == {1}

    async def artifacts():
        async with get_client() as client:
            return [a for a in await client.read_artifacts() if (a.key or "") == "strata-flow-gen"]

    arts = asyncio.run(artifacts())
    assert arts and "source subjects" in str(arts[0].data)
    again = generate(config)
    assert again["created"] is False and again["version"] == summary["version"]


@pytest.mark.slow
def test_generate_flow_on_dask_matches_threads(prefect_api: PrefectServer, model_store: Store) -> None:  # noqa: F811
    """Shards fanned out over a 2-worker LocalCluster: the same samples as the thread runner."""
    import numpy as np
    import zarr

    from flows.generate import generate
    from schemas.orchestration import ExecutionConfig
    from synth_core.generate.run import DATA, dataset_prefix, read_samples

    def config(name: str) -> GenerateConfig:
        return GenerateConfig(store=StoreConfig(url=model_store.url), dataset_name=name,
                              plan=PlanConfig(n_samples=8, seed=5), shard_size=4, batch_size=2, device="cpu", threads=1)

    threads = generate(config("gen-threads"))
    dask = generate(config("gen-dask"), ExecutionConfig(task_runner="dask", n_workers=2))
    assert dask["created"] and dask["samples"] == threads["samples"] == 8
    assert dask["counts_per_stratum"] == threads["counts_per_stratum"]
    import pandas as pd

    pd.testing.assert_frame_equal(read_samples(model_store, "gen-threads", threads["version"]),
                                  read_samples(model_store, "gen-dask", dask["version"]))

    def arrays(name: str, version: str) -> tuple[np.ndarray, np.ndarray]:
        group = zarr.open_group(model_store.zarr_store(f"{dataset_prefix(name, version)}/{DATA}", read_only=True), mode="r")
        return group["image"][...], group["label"][...]

    (ia, la), (ib, lb) = arrays("gen-threads", threads["version"]), arrays("gen-dask", dask["version"])
    assert np.array_equal(la, lb)  # the edits: exact
    assert np.array_equal(ia, ib, equal_nan=True)  # one torch thread each side: the same bytes
