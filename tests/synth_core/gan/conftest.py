"""Stores for the GAN tests: the session phantom (4 subjects, 3 with tumours) ingested once, and one small
hand-made subject written straight to a store."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from schemas.config import GridConfig, IngestConfig, SourceConfig, StoreConfig
from schemas.train import SnapshotRef
from schemas.labels import MODALITIES
from synth_core.storage import Store


@dataclass(frozen=True)
class GanSnapshot:
    store: Store
    ref: SnapshotRef
    grid: tuple[int, int, int]


@pytest.fixture(scope="session")
def gan_snapshot(phantom_root: Path, tmp_path_factory: pytest.TempPathFactory) -> GanSnapshot:
    from synth_core.ingest.snapshot import run_ingest
    from synth_core.ingest.sources import discover_source
    from synth_core.storage import open_store

    store = open_store(StoreConfig(url=str(tmp_path_factory.mktemp("gan-store"))))
    config = IngestConfig(source=SourceConfig(kind="brats", path=str(phantom_root)), store=store.config)
    result = run_ingest(store, config, discover_source(config.source, phantom_root))
    assert result.n_subjects == 4
    return GanSnapshot(store, SnapshotRef(source_id=result.source_id, snapshot_id=result.snapshot_id), config.grid.shape)


Box = tuple[slice, slice, slice]


def write_small_subject(
    root: Path, subject_id: str, shape: tuple[int, int, int], boxes: Mapping[int, Box], *, missing: str, seed: int
) -> tuple[Store, str]:
    """One subject written straight to a fresh store at ``root``: label ``v`` filled into each box in order (so
    later boxes nest inside earlier ones), seeded noise inside the labels, the ``missing`` modality all-NaN (as
    ingest stores an absent modality). Returns the store and the subject's key."""
    from synth_core.ingest.omezarr import write_subject_group
    from synth_core.storage import open_store

    store = open_store(StoreConfig(url=str(root)))
    grid = GridConfig(shape=shape)
    label = np.zeros(shape, dtype=np.uint8)
    for value, box in boxes.items():
        label[box] = value
    rng = np.random.default_rng(seed)
    image = np.where(label > 0, rng.normal(size=(len(MODALITIES), *shape)), 0.0).astype(np.float32)
    image[MODALITIES.index(missing)] = np.nan
    key = f"test/volumes.zarr/{subject_id}"
    write_subject_group(
        store.zarr_store(key), name=subject_id, image=image, label=label, affine=np.eye(4), grid=grid,
        modalities_present={m: m != missing for m in MODALITIES},
    )
    return store, key
