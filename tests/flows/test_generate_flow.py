"""The ``generate`` flow on a real Prefect server: shards as tasks, artifacts, idempotent rerun."""

from __future__ import annotations

import asyncio

import pytest

from schemas.config import StoreConfig
from schemas.generate import GenerateConfig, PlanConfig
from synth_core.storage import Store
from tests.servers import PrefectServer
from tests.synth_core.generate.test_shard import model_store  # noqa: F401 - fixture reuse

pytestmark = pytest.mark.e2e


def test_generate_flow(prefect_api: PrefectServer, model_store: Store) -> None:  # noqa: F811
    from prefect.client.orchestration import get_client

    from flows.generate import generate

    config = GenerateConfig(store=StoreConfig(url=model_store.url), dataset_name="flow-gen",
                            plan=PlanConfig(n_samples=12, seed=3), shard_size=5, batch_size=2, device="cpu")
    summary = generate(config)
    assert summary["created"] and summary["samples"] == 12 and set(summary["counts_per_stratum"].values()) == {1}

    async def artifacts():
        async with get_client() as client:
            return [a for a in await client.read_artifacts() if (a.key or "") == "strata-flow-gen"]

    arts = asyncio.run(artifacts())
    assert arts and "source subjects" in str(arts[0].data)
    again = generate(config)
    assert again["created"] is False and again["version"] == summary["version"]
