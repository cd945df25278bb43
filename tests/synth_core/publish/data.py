"""One generated dataset version shared by every publish test (built once per test process).

The recipe is ``tests/synth_core/generate/test_shard.py::model_store`` (12 phantom subjects at 2 mm, a tiny
generator) with two differences: every source NIfTI header carries planted free text in ``descrip`` (what
the privacy gate must keep out of a published dataset), and a 12-sample version of ``DATASET`` is generated
at the end. ``model_store`` itself is module-scoped, so importing it into the publish test modules and the
flow test would train it once per module; this builder is memoized per process instead, and each test works
on its own cheap copy (:func:`copy_store` / :func:`upload`).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from synth_core.storage import Store, open_store

DATASET = "pub-demo"
PLANTED_DESCRIP = "St-Elsewhere MR3 operator jdoe"
N_SAMPLES = 8


@dataclass(frozen=True)
class Built:
    root: Path  # the store folder
    src: Path  # the phantom source (BraTS 2021 layout) with the planted header text
    version: str
    source_refs: tuple[str, ...]


_BUILT: dict[str, Built] = {}


def _plant_descrip(src: Path) -> None:
    import nibabel as nib

    for path in sorted(src.rglob("*.nii.gz")):
        img = nib.load(path)
        planted = nib.Nifti1Image(np.asanyarray(img.dataobj.get_unscaled()), img.affine, img.header.copy())
        planted.header["descrip"] = PLANTED_DESCRIP.encode()
        nib.save(planted, path)


def build(base: Path) -> Built:
    """Phantom (planted descrip) → ingest → tiny model → a 12-sample dataset version; memoized per process."""
    if "built" in _BUILT:
        return _BUILT["built"]
    from schemas.config import IngestConfig, PhantomConfig, SourceConfig, StoreConfig
    from schemas.generate import GenerateConfig, PlanConfig
    from schemas.train import DataConfig, DiscriminatorConfig, GeneratorConfig, TrainConfig
    from synth_core.gan.train import train
    from synth_core.generate.shard import generate_all
    from synth_core.ingest.converters.phantom import write_phantom_source
    from synth_core.ingest.snapshot import run_ingest
    from synth_core.ingest.sources import discover_source

    src = base / "src"
    write_phantom_source(src, PhantomConfig(n_subjects=12, seed=7, healthy_fraction=0.2, voxel_size_mm=2.0))
    _plant_descrip(src)
    store = open_store(StoreConfig(url=str(base / "store")))
    config = IngestConfig(source=SourceConfig(kind="brats", path=str(src)), store=StoreConfig(url=store.url))
    run_ingest(store, config, discover_source(config.source, src))
    train(store, TrainConfig(
        store=StoreConfig(url=store.url), generator=GeneratorConfig(base_width=8, depth=3),
        discriminator=DiscriminatorConfig(base_width=8, n_layers=2),
        data=DataConfig(resolution_mm=2, patch_size=(32, 32, 32), batch_size=2, val_subjects=1, loader_workers=0),
        steps=4, checkpoint_every=4, validate_every=100, device="cpu",
    ))
    record = generate_all(store, GenerateConfig(
        store=StoreConfig(url=store.url), dataset_name=DATASET, plan=PlanConfig(n_samples=N_SAMPLES, seed=1),
        shard_size=6, batch_size=2, device="cpu",
    ))
    refs = tuple(sorted(p.name for p in src.iterdir() if p.is_dir()))
    _BUILT["built"] = Built(base / "store", src, record["version"], refs)
    return _BUILT["built"]


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The shared generated dataset (import this fixture into a test module to use it)."""
    return build(tmp_path_factory.mktemp("publish-data"))


def needed_keys(store: Store) -> list[str]:
    """What publishing needs: the dataset, the snapshots' records and tables, the model's record and weights."""
    keep = []
    for key in store.list(""):
        parts = key.split("/")
        if parts[0] == "datasets":
            keep.append(key)
        elif parts[0] == "sources" and len(parts) == 4 and parts[3] in (
            "snapshot.json", "subjects.parquet", "quarantine.parquet"
        ):
            keep.append(key)
        elif parts[0] == "models" and len(parts) == 4 and parts[3] in ("model.json", "generator.safetensors"):
            keep.append(key)
    return keep


def copy_store(built: Built, dest: Path) -> Store:
    """A private local copy of what publishing needs (so each test may publish, kill or tamper freely)."""
    source = open_store(str(built.root))
    for key in needed_keys(source):
        target = dest / key
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source.local_path(key), target)
    return open_store(str(dest))


def upload(built: Built, store: Store) -> int:
    """Copy what publishing needs into ``store`` (an S3 store), object by object. Returns the count."""
    source = open_store(str(built.root))
    keys = needed_keys(source)
    for key in keys:
        store.put_bytes(key, source.get_bytes(key))
    return len(keys)


__all__ = ["DATASET", "N_SAMPLES", "PLANTED_DESCRIP", "Built", "build", "built", "copy_store", "needed_keys", "upload"]
