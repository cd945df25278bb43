"""Training on a phantom snapshot: it learns, it resumes exactly, and checkpoints never unpickle."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from schemas.config import IngestConfig, SourceConfig, StoreConfig
from schemas.train import DataConfig, DiscriminatorConfig, GeneratorConfig, OptimConfig, TrainConfig
from synth_core.gan.checkpoint import committed_steps, load_module_bytes
from synth_core.gan.train import MODEL_RECORD, config_hash, load_generator, model_prefix, train
from synth_core.ingest.snapshot import run_ingest
from synth_core.ingest.sources import discover_source
from synth_core.storage import ObjectExistsError, Store, open_store, verify_objects


@pytest.fixture(scope="module")
def snapshot_store(phantom_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Store:
    store = open_store(StoreConfig(url=str(tmp_path_factory.mktemp("train-store"))))
    config = IngestConfig(source=SourceConfig(kind="brats", path=str(phantom_root)), store=StoreConfig(url=store.url))
    run_ingest(store, config, discover_source(config.source, phantom_root))
    return store


def tiny(store: Store, **kw: object) -> TrainConfig:
    base: dict[str, object] = dict(
        store=StoreConfig(url=store.url),
        generator=GeneratorConfig(base_width=8, depth=3, dropout=0.0),
        discriminator=DiscriminatorConfig(base_width=8, n_layers=2),
        data=DataConfig(resolution_mm=2, patch_size=(32, 32, 32), batch_size=2, val_subjects=1, loader_workers=0),
        optim=OptimConfig(lr_generator=1e-3, lr_discriminator=2e-4),
        steps=8, checkpoint_every=4, validate_every=1000, device="cpu", threads=2, seed=3,
    )
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


@pytest.mark.slow
def test_learns_tissue_contrast(snapshot_store: Store) -> None:
    config = tiny(snapshot_store, model_name="learn", steps=500, checkpoint_every=500, validate_every=500)
    result = train(snapshot_store, config)
    initial, final = result.record["metrics"]["initial"], result.record["metrics"]["final"]
    assert final["mae_mean"] <= 0.7 * initial["mae_mean"], (initial["mae_mean"], final["mae_mean"])
    checks = final["signature_checks"]
    assert checks["t1_wm_gt_gm_gt_csf"] and checks["t2_csf_brightest"], checks
    prefix = model_prefix("learn", result.version)
    assert verify_objects(snapshot_store, prefix, result.record["objects"]) == []
    assert snapshot_store.exists(f"{prefix}/validation/step-00000500.png")
    generator, record = load_generator(snapshot_store, "learn", result.version)
    assert record["steps"] == 500 and not generator.training


def test_resume_equals_uninterrupted(snapshot_store: Store) -> None:
    straight = train(snapshot_store, tiny(snapshot_store, model_name="straight"))
    interrupted = train(snapshot_store, tiny(snapshot_store, model_name="resumed"), stop_after=4)
    assert interrupted.steps == 4 and not interrupted.created
    prefix = model_prefix("resumed", interrupted.version)
    assert committed_steps(snapshot_store, prefix) == [4] and not snapshot_store.exists(f"{prefix}/{MODEL_RECORD}")
    resumed = train(snapshot_store, tiny(snapshot_store, model_name="resumed"))
    assert resumed.version == interrupted.version and resumed.resumed_from == 4 and resumed.created
    a, _ = load_generator(snapshot_store, "straight", straight.version)
    b, _ = load_generator(snapshot_store, "resumed", resumed.version)
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=0, atol=1e-6, msg=name)
    # a committed model is never retrained or duplicated
    again = train(snapshot_store, tiny(snapshot_store, model_name="resumed"))
    assert again.created is False and again.version == resumed.version
    assert snapshot_store.list_dirs("models/resumed") == [resumed.version]


def test_device_cache_trains_the_same_weights(snapshot_store: Store) -> None:
    """Patches cut from subjects held on the device = the loader's batches: same weights, same identity."""
    base = tiny(snapshot_store)
    loader = tiny(snapshot_store, model_name="via-loader", steps=4, checkpoint_every=4,
                  data=base.data.model_copy(update={"device_cache": "off"}))
    cached = tiny(snapshot_store, model_name="via-cache", steps=4, checkpoint_every=4,
                  data=base.data.model_copy(update={"device_cache": "on"}))
    # how batches reach the device is not part of a run's identity
    assert config_hash(loader) == config_hash(cached.model_copy(update={"model_name": "via-loader"}))
    a_run, b_run = train(snapshot_store, loader), train(snapshot_store, cached)
    a, _ = load_generator(snapshot_store, "via-loader", a_run.version)
    b, _ = load_generator(snapshot_store, "via-cache", b_run.version)
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=0, atol=1e-6, msg=name)


def test_other_config_gets_a_new_version(snapshot_store: Store) -> None:
    first = train(snapshot_store, tiny(snapshot_store, model_name="versions", steps=2, checkpoint_every=2))
    second = train(snapshot_store, tiny(snapshot_store, model_name="versions", steps=2, checkpoint_every=2, seed=4))
    assert (first.version, second.version) == ("v1", "v2")
    with pytest.raises(ObjectExistsError, match="another config"):
        train(snapshot_store, tiny(snapshot_store, model_name="versions", model_version="v1", steps=2, seed=5))


class _Exploit:
    def __reduce__(self):  # what a malicious pickle does when loaded
        return (os.system, (f"touch {os.environ.get('SYNTHMRI_PWNED', '/tmp/synthmri-pwned')}",))


def test_checkpoints_never_unpickle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "pwned"
    monkeypatch.setenv("SYNTHMRI_PWNED", str(marker))
    payload = pickle.dumps({"weight": _Exploit()})
    module = torch.nn.Linear(2, 2)
    with pytest.raises(Exception):  # safetensors refuses the bytes: it has no code path that unpickles
        load_module_bytes(module, payload, source="evil.safetensors")
    legacy = tmp_path / "legacy.pt"
    torch.save({"weight": torch.zeros(2, 2)}, legacy)
    with pytest.raises(Exception):
        load_module_bytes(module, legacy.read_bytes(), source="legacy.pt")
    assert not marker.exists()
