"""The ``ingest`` flow on Dask (prefect-dask ``DaskTaskRunner``, a 2-process ``LocalCluster``) gives the same
snapshot, object for object, as the default thread runner. Both run against the session's real Prefect server
(Dask process workers report their task runs to it)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from schemas.config import IngestConfig, SourceConfig, StoreConfig
from schemas.orchestration import ExecutionConfig
from synth_core.ingest.snapshot import snapshot_prefix
from synth_core.storage import open_store, read_record, verify_objects
from tests.servers import PrefectServer

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _objects(store_url: str, summary: dict) -> dict[str, str]:
    store = open_store(StoreConfig(url=store_url))
    prefix = snapshot_prefix(summary["source_id"], summary["snapshot_id"])
    record = read_record(store, f"{prefix}/snapshot.json")
    assert record is not None, "snapshot not committed"
    assert verify_objects(store, prefix, record["objects"]) == []
    return {o["key"]: o["sha256"] for o in record["objects"]}


def test_dask_local_cluster_gives_the_same_snapshot(prefect_api: PrefectServer, phantom_root: Path, tmp_path: Path) -> None:
    from flows.ingest import ingest

    def config(store: Path) -> IngestConfig:
        return IngestConfig(source=SourceConfig(kind="brats", path=str(phantom_root)), store=StoreConfig(url=str(store)))

    threads = ingest(config(tmp_path / "threads"))
    dask_state = ingest(config(tmp_path / "dask"), ExecutionConfig(task_runner="dask", n_workers=2), return_state=True)
    assert dask_state.is_completed(), dask_state
    dask = dask_state.result()

    assert dask["snapshot_id"] == threads["snapshot_id"]
    assert dask["subjects"] == threads["subjects"] == 4
    assert sorted(o["status"] for o in dask["outcomes"]) == ["accepted"] * 4
    # the subjects really ran in the cluster's worker processes, not in this (the flow's) process
    me = f"{socket.gethostname()}:{os.getpid()}"
    assert {o["worker"] for o in threads["outcomes"]} == {me}
    assert me not in {o["worker"] for o in dask["outcomes"]}
    a, b = _objects(str(tmp_path / "threads"), threads), _objects(str(tmp_path / "dask"), dask)
    assert len(a) > 10
    # every volume, label map and table is byte-identical; only the run's own times may differ
    differing = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    assert differing == [], differing
