"""A small committed snapshot for the GAN tests: the session phantom (4 subjects, 3 with tumours) ingested once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from schemas.config import IngestConfig, SourceConfig, StoreConfig
from schemas.train import SnapshotRef
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
