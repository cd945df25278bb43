"""Generation end to end on CPU: plan → edits → tiny generator → data.zarr + samples.parquet, idempotent."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr

from schemas.config import IngestConfig, PhantomConfig, SourceConfig, StoreConfig
from schemas.generate import GenerateConfig, PlanConfig
from schemas.train import DataConfig, DiscriminatorConfig, GeneratorConfig, TrainConfig
from synth_core.edit.strata import measure, stratum_of
from synth_core.gan.train import train
from synth_core.generate.run import DATA, GENERATION_RECORD, load_label_maps, plan_rows_json, prepare, read_samples
from synth_core.generate.shard import generate_all, generate_shard, load_model, sample_object_keys
from synth_core.ingest.converters.phantom import write_phantom_source
from synth_core.ingest.snapshot import run_ingest
from synth_core.ingest.sources import discover_source
from synth_core.storage import Store, open_store, read_record, verify_objects


@pytest.fixture(scope="module")
def model_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """12 phantom subjects at 2 mm (enough tumour compositions for every default stratum) + a tiny model."""
    work = tmp_path_factory.mktemp("gen")
    write_phantom_source(work / "src", PhantomConfig(n_subjects=12, seed=7, healthy_fraction=0.2, voxel_size_mm=2.0))
    store = open_store(StoreConfig(url=str(work / "store")))
    config = IngestConfig(source=SourceConfig(kind="brats", path=str(work / "src")), store=StoreConfig(url=store.url))
    run_ingest(store, config, discover_source(config.source, work / "src"))
    train(store, TrainConfig(
        store=StoreConfig(url=store.url), generator=GeneratorConfig(base_width=8, depth=3),
        discriminator=DiscriminatorConfig(base_width=8, n_layers=2),
        data=DataConfig(resolution_mm=2, patch_size=(32, 32, 32), batch_size=2, val_subjects=1, loader_workers=0),
        steps=4, checkpoint_every=4, validate_every=100, device="cpu",
    ))
    return store


def _config(store: Store, **kw: object) -> GenerateConfig:
    base: dict[str, object] = dict(store=StoreConfig(url=store.url), plan=PlanConfig(n_samples=24, seed=1),
                                   shard_size=7, batch_size=2, device="cpu", dataset_name="gen-test")
    base.update(kw)
    return GenerateConfig(**base)  # type: ignore[arg-type]


def test_generation_is_balanced_complete_and_measured(model_store: Store) -> None:
    config = _config(model_store)
    record = generate_all(model_store, config)
    assert record["n_samples"] == 24 and set(record["counts_per_stratum"].values()) == {2}  # 12 strata × 2
    assert sum(record["source_per_stratum"].values()) == 12 - 2  # tumour subjects of the source
    samples = read_samples(model_store, "gen-test", record["version"])
    assert sorted(samples["index"]) == list(range(24)) and samples["sample_id"].is_unique
    prefix = f"datasets/gen-test/{record['version']}"
    root = zarr.open_group(model_store.zarr_store(f"{prefix}/{DATA}", read_only=True), mode="r")
    image, label = root["image"], root["label"]
    assert image.metadata.dimension_names == ("sample", "channel", "x", "y", "z") and image.shape[0] == 24
    affine = load_label_maps(model_store, ((_snap(record)),), 2)[samples.iloc[0]["base_subject"]][1]
    for row in samples.itertuples():
        lab = label[row.index]
        attrs = measure(lab, affine)
        assert stratum_of(attrs, config.plan.strata) == row.stratum
        assert attrs.whole_ml == pytest.approx(row.whole_ml) and attrs.hemisphere == row.hemisphere
        img = image[row.index].astype(np.float32)
        assert np.isfinite(img).all() and (img[:, lab == 0] == 0).all() and np.abs(img[:, lab > 0]).max() > 0
        assert json.loads(row.edits) and row.model_version == "v1"
    assert verify_objects(model_store, prefix, record["objects"]) == []
    keys = {o["key"] for o in record["objects"]}
    assert all(f"{DATA}/{k}" in keys for i in range(24) for k in sample_object_keys(i))


def _snap(record):
    from schemas.train import SnapshotRef

    return SnapshotRef(**record["snapshots"][0])


def test_rerun_of_finished_shard_writes_nothing(model_store: Store) -> None:
    config = _config(model_store, dataset_name="gen-rerun", plan=PlanConfig(n_samples=12, seed=2))
    run, plan = prepare(model_store, config)
    maps = load_label_maps(model_store, run.snapshots, run.resolution_mm)
    generator, device = load_model(model_store, run)
    index, start, stop = run.shards()[0]
    first = generate_shard(model_store, run, index, plan_rows_json(plan, start, stop), maps, generator, device)
    assert first["skipped"] is False and len(first["rows"]) == stop - start
    paths = [model_store.local_path(f"{run.prefix}/{o['key']}") for o in first["objects"]]
    before = {p: p.stat().st_mtime_ns for p in paths}
    again = generate_shard(model_store, run, index, plan_rows_json(plan, start, stop), maps, generator, device)
    assert again["skipped"] is True and {p: p.stat().st_mtime_ns for p in paths} == before
    # the rest of the run (as after a crash) completes, reusing shard 0 untouched
    record = generate_all(model_store, config)
    assert record["n_samples"] == 12 and {p: p.stat().st_mtime_ns for p in paths} == before
    assert generate_all(model_store, config)["version"] == record["version"]  # committed: no new version
    assert model_store.list_dirs("datasets/gen-rerun") == [record["version"]]
    assert read_record(model_store, f"{run.prefix}/{GENERATION_RECORD}") == record


def test_same_seed_same_bytes(model_store: Store) -> None:
    a = generate_all(model_store, _config(model_store, dataset_name="gen-a", plan=PlanConfig(n_samples=12, seed=5)))
    b = generate_all(model_store, _config(model_store, dataset_name="gen-b", plan=PlanConfig(n_samples=12, seed=5)))

    def data(record):
        return {o["key"]: o["sha256"] for o in record["objects"] if o["key"].startswith(f"{DATA}/image/c/")}

    assert data(a) == data(b) and len(data(a)) == 12


def test_infeasible_stratum_is_named(model_store: Store) -> None:
    weights = {"volume=>50ml|hemisphere=left|enhancing=yes": 1.0}
    config = _config(model_store, dataset_name="gen-bad",
                     plan=PlanConfig(n_samples=2, seed=0, volume_limits_ml=(1.0, 20.0), weights=weights))
    with pytest.raises(ValueError, match=r"volume=>50ml\|hemisphere=left\|enhancing=yes"):
        generate_all(model_store, config)


def test_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    store = open_store(StoreConfig(url=str(tmp_path)))
    with pytest.raises(FileNotFoundError, match="no committed model"):
        generate_all(store, _config(store))
