"""``build_dataset`` end to end on a real Prefect server: a tiny chain, twice (v1, then v2 reusing ingest)."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.build import BuildConfig, demo_generate, demo_train
from schemas.config import IngestConfig, PhantomConfig, SourceConfig, StoreConfig
from schemas.generate import PlanConfig
from synth_core.consume import open_dataset
from synth_core.publish import read_latest
from synth_core.storage import open_store
from tests.servers import PrefectServer

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_build_twice_publishes_v1_then_v2(prefect_api: PrefectServer, tmp_path: Path) -> None:
    from flows.build import build_dataset

    config = BuildConfig(
        store=StoreConfig(url=str(tmp_path / "store")),
        ingest=IngestConfig(source=SourceConfig(kind="phantom", path=str(tmp_path / "phantom"),
                                                phantom=PhantomConfig(n_subjects=12, seed=7, voxel_size_mm=2.0))),
        train=demo_train().model_copy(update={"steps": 4, "checkpoint_every": 4, "validate_every": 4}),
        generate=demo_generate().model_copy(update={"plan": PlanConfig(n_samples=12, seed=0), "shard_size": 6}),
    )
    first = build_dataset(config)
    assert first["version"] == "v1" and first["verify_problems"] == [] and first["samples"] == 12
    assert set(first["counts_per_stratum"].values()) == {1}
    second = build_dataset(config)
    assert second["version"] == "v2" and second["verify_problems"] == []
    assert second["snapshot"] == first["snapshot"] and second["model"] == first["model"]  # reused, not redone
    store = open_store(StoreConfig(url=str(tmp_path / "store")))
    assert read_latest(store, "synthmri-demo") == "v2"
    ds = open_dataset(store, "synthmri-demo")
    assert len(ds.samples) == 12 and ds.verify() == []
    assert store.list_dirs("models/label2mri") == ["v1"]
    assert len(store.list_dirs("sources/phantom")) == 1
