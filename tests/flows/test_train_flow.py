"""The ``train_gan`` flow on a real Prefect server: artifacts, and SIGKILL mid-training then resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from schemas.config import IngestConfig, SourceConfig, StoreConfig
from synth_core.ingest.snapshot import run_ingest
from synth_core.ingest.sources import discover_source
from synth_core.storage import open_store, read_record, verify_objects
from tests.servers import PrefectServer

pytestmark = pytest.mark.e2e
SYNTHMRI = str(Path(sys.executable).parent / "synthmri")
TINY = ["--resolution", "2", "--patch", "32,32,32", "--batch", "2", "--width", "8", "--depth", "3",
        "--disc-width", "8", "--loader-workers", "0", "--device", "cpu", "--validate-every", "1000"]


@pytest.fixture(scope="module")
def store_dir(phantom_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("train-flow-store")
    store = open_store(StoreConfig(url=str(root)))
    config = IngestConfig(source=SourceConfig(kind="brats", path=str(phantom_root)), store=StoreConfig(url=store.url))
    run_ingest(store, config, discover_source(config.source, phantom_root))
    return root


def test_train_flow_reports_validation(prefect_api: PrefectServer, store_dir: Path) -> None:
    import asyncio

    from prefect.client.orchestration import get_client

    from flows.train import train_gan
    from schemas.train import DataConfig, DiscriminatorConfig, GeneratorConfig, TrainConfig

    config = TrainConfig(
        store=StoreConfig(url=str(store_dir)), model_name="flowtest",
        generator=GeneratorConfig(base_width=8, depth=3), discriminator=DiscriminatorConfig(base_width=8, n_layers=2),
        data=DataConfig(resolution_mm=2, patch_size=(32, 32, 32), batch_size=1, val_subjects=1, loader_workers=0),
        steps=4, checkpoint_every=2, validate_every=2, device="cpu",
    )
    summary = train_gan(config)
    assert summary["created"] and summary["steps"] == 4 and summary["version"] == "v1"

    async def artifacts():
        async with get_client() as client:
            return [a for a in await client.read_artifacts() if (a.key or "") == "validation-flowtest"]

    arts = asyncio.run(artifacts())
    assert len(arts) >= 1 and "data:image/png;base64," in arts[0].data and "| t1 |" in arts[0].data


@pytest.mark.slow
def test_sigkill_midtraining_then_rerun_resumes(prefect_api: PrefectServer, store_dir: Path) -> None:
    args = [SYNTHMRI, "train", "--store", str(store_dir), "--model-name", "killed", "--steps", "40",
            "--checkpoint-every", "10", *TINY]
    env = {**os.environ, **prefect_api.env()}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    ckpt = store_dir / "models" / "killed" / "v1" / "checkpoints" / "step-00000010" / "checkpoint.json"
    while time.monotonic() < deadline and proc.poll() is None and not ckpt.exists():
        time.sleep(0.05)
    assert ckpt.exists(), proc.stdout.read().decode() if proc.poll() is not None else "no checkpoint in time"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (store_dir / "models" / "killed" / "v1" / "model.json").exists()
    rerun = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "resumed from step" in rerun.stdout
    assert sorted(p.name for p in (store_dir / "models" / "killed").iterdir()) == ["v1"]
    store = open_store(StoreConfig(url=str(store_dir)))
    record = read_record(store, "models/killed/v1/model.json")
    assert record is not None and record["steps"] == 40
    assert verify_objects(store, "models/killed/v1", record["objects"]) == []
    assert json.loads((store_dir / "models/killed/v1/run.json").read_text())["config_hash"] == record["config_hash"]
