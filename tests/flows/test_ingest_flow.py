"""The ``ingest`` flow on a real Prefect server (started by the test session), and the CLI around it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from schemas.config import IngestConfig, SourceConfig, StoreConfig
from synth_core.ingest.snapshot import read_subjects, snapshot_prefix
from synth_core.storage import open_store, verify_objects
from tests.flows.conftest import record_submissions
from tests.servers import PrefectServer, S3Server

pytestmark = pytest.mark.e2e

SYNTHMRI = str(Path(sys.executable).parent / "synthmri")


def _config(root: Path, store: str, **kw: object) -> IngestConfig:
    return IngestConfig(source=SourceConfig(kind="brats", path=str(root)), store=StoreConfig(url=store, **kw), max_workers=2)


async def _artifacts(key_prefix: str, flow_run_id):  # noqa: ANN001
    """This flow run's artifacts (the session's server also holds other tests' runs)."""
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return [a for a in await client.read_artifacts() if a.flow_run_id == flow_run_id
                and ((a.key or "").startswith(key_prefix) or a.type == "progress")]


async def _task_states(flow_run_id) -> list[tuple[str, str]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async with get_client() as client:
        runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        return [(r.name, r.state.name) for r in runs]


def test_ingest_flow_commits_and_reports(prefect_api: PrefectServer, phantom_root: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    import flows.ingest
    from flows.ingest import ingest

    submissions = record_submissions(monkeypatch, flows.ingest)
    store_dir = tmp_path / "store"
    state = ingest(_config(phantom_root, str(store_dir)), return_state=True)
    assert state.is_completed(), state
    submitted = [dict(p["plan"].subject_ids) for p in submissions]
    # each subject task gets its own id only, not the dataset's whole map (arguments must not grow with N)
    assert len(submitted) == 4 and all(len(ids) == 1 for ids in submitted)
    assert len({next(iter(ids)) for ids in submitted}) == 4
    summary = state.result()
    assert summary["subjects"] == 4 and summary["quarantined"] == 0 and summary["created"] is True
    assert sorted(o["status"] for o in summary["outcomes"]) == ["accepted"] * 4
    arts = asyncio.run(_artifacts("ingest-brats", state.state_details.flow_run_id))
    tables = [a for a in arts if a.type == "table"]
    assert len(tables) == 1
    import json

    rows = tables[0].data if isinstance(tables[0].data, list) else json.loads(tables[0].data)
    assert sorted(r["status"] for r in rows) == ["accepted"] * 4 and all(r["subject_id"].startswith("sub-") for r in rows)
    progress = [a for a in arts if a.type == "progress"]
    assert progress and max(float(a.data) for a in progress) == pytest.approx(100.0)

    # a crash after the subjects but before the commit: the rerun hits Prefect's cache for every subject
    store = open_store(StoreConfig(url=str(store_dir)))
    prefix = snapshot_prefix(summary["source_id"], summary["snapshot_id"])
    store.delete(f"{prefix}/snapshot.json")
    state2 = ingest(_config(phantom_root, str(store_dir)), return_state=True)
    assert state2.is_completed()
    states = asyncio.run(_task_states(state2.state_details.flow_run_id))
    subject_states = [s for n, s in states if n.startswith("ingest-BraTS")]
    assert subject_states == ["Cached"] * 4, states
    again = state2.result()
    assert again["subjects"] == 4 and again["created"] is True

    # rerun after completion: no subject task at all
    state3 = ingest(_config(phantom_root, str(store_dir)), return_state=True)
    assert state3.result()["created"] is False and state3.result()["outcomes"] == []
    states3 = asyncio.run(_task_states(state3.state_details.flow_run_id))
    assert not [n for n, _ in states3 if n.startswith("ingest-BraTS")]


@pytest.mark.slow
def test_ingest_flow_to_s3(prefect_api: PrefectServer, s3_env: S3Server, phantom_root: Path, tmp_path: Path) -> None:
    from flows.ingest import ingest

    local = ingest(_config(phantom_root, str(tmp_path / "store")))
    remote = ingest(_config(phantom_root, f"s3://{s3_env.bucket}/flow", endpoint_url=s3_env.endpoint))
    assert remote["snapshot_id"] == local["snapshot_id"] and remote["subjects"] == 4
    s3_store = open_store(StoreConfig(url=f"s3://{s3_env.bucket}/flow", endpoint_url=s3_env.endpoint))
    local_store = open_store(StoreConfig(url=str(tmp_path / "store")))
    prefix = snapshot_prefix(remote["source_id"], remote["snapshot_id"])
    from synth_core.storage import read_record

    r_remote = read_record(s3_store, f"{prefix}/snapshot.json")
    r_local = read_record(local_store, f"{prefix}/snapshot.json")

    def arrays(record):
        return {o["key"]: o["sha256"] for o in record["objects"] if o["key"].startswith("volumes.zarr/sub-")}

    assert arrays(r_remote) == arrays(r_local)
    assert verify_objects(s3_store, prefix, r_remote["objects"]) == []


def _cli_env(prefect_api: PrefectServer, extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, **prefect_api.env(), **(extra or {})}


def test_cli_wrong_s3_credentials(prefect_api: PrefectServer, s3: S3Server, phantom_root: Path) -> None:
    env = _cli_env(prefect_api, {**s3.env(), "AWS_SECRET_ACCESS_KEY": "wrong-secret-value"})
    proc = subprocess.run(
        [SYNTHMRI, "ingest", "--source", "brats", "--path", str(phantom_root),
         "--store", f"s3://{s3.bucket}/cli", "--endpoint-url", s3.endpoint],
        env=env, capture_output=True, text=True, timeout=180,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "refused the credentials" in out and s3.endpoint in out
    assert "wrong-secret-value" not in out


@pytest.mark.slow
def test_cli_sigkill_midrun_then_rerun(prefect_api: PrefectServer, phantom_root: Path, tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    args = [SYNTHMRI, "ingest", "--source", "brats", "--path", str(phantom_root), "--store", str(store_dir), "--workers", "1"]
    env = _cli_env(prefect_api)
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 240
    records: list[Path] = []
    while time.monotonic() < deadline and proc.poll() is None:
        records = list(store_dir.glob("sources/brats/*/_subjects/*.json"))
        if records:
            break
        time.sleep(0.05)
    assert records, f"no subject finished before the deadline: {proc.stdout.read().decode() if proc.poll() is not None else ''}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    snapshot_dir = records[0].parent.parent
    assert not (snapshot_dir / "snapshot.json").exists(), "killed before the commit: must not look finished"
    rerun = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    store = open_store(StoreConfig(url=str(store_dir)))
    source_id, snapshot_id = "brats", snapshot_dir.name
    subjects = read_subjects(store, source_id, snapshot_id)
    assert len(subjects) == 4 and subjects["subject_id"].is_unique
    record_files = list(snapshot_dir.glob("_subjects/*.json"))
    assert len(record_files) == 4
    from synth_core.storage import read_record

    record = read_record(store, f"{snapshot_prefix(source_id, snapshot_id)}/snapshot.json")
    assert verify_objects(store, snapshot_prefix(source_id, snapshot_id), record["objects"]) == []
    assert "committed" in rerun.stdout
