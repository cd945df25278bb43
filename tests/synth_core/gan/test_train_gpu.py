"""The same training code on CUDA with bf16 autocast (skipped without a GPU)."""

from __future__ import annotations

import math

import pytest
import torch

from synth_core.gan.train import train
from synth_core.storage import Store
from tests.synth_core.gan.test_train import snapshot_store, tiny  # noqa: F401 - fixture reuse

pytestmark = pytest.mark.gpu


def test_cuda_bf16_training_runs_and_commits(snapshot_store: Store) -> None:  # noqa: F811
    config = tiny(snapshot_store, model_name="gpu", device="cuda", amp=True, steps=20, checkpoint_every=10,
                  validate_every=20)
    result = train(snapshot_store, config)
    assert result.created and result.record["device"] == "cuda"
    final = result.record["metrics"]["final"]
    assert math.isfinite(final["mae_mean"]) and final["mae_mean"] < result.record["metrics"]["initial"]["mae_mean"]
    assert torch.cuda.max_memory_allocated() > 0


def test_device_cache_on_cuda_equals_the_loader(snapshot_store: Store) -> None:  # noqa: F811
    """Patches cut on the GPU = the worker loader's batches copied there, bit for bit; auto picks the cache."""
    from synth_core.gan.data import DevicePrefetcher, PatchDataset, list_training_subjects, make_loader
    from synth_core.gan.device_cache import DeviceVolumeCache, use_device_cache

    config = tiny(snapshot_store, device="cuda")
    subjects = [(sid, key) for _snap, sid, key in list_training_subjects(snapshot_store, ())]
    cuda = torch.device("cuda")
    loader = make_loader(PatchDataset(snapshot_store.config, subjects, config.data, 7, 16), batch_size=2,
                         start_step=0, steps=8, workers=2, pin_memory=True)
    expected = list(DevicePrefetcher(loader, cuda))
    dataset = PatchDataset(snapshot_store.config, subjects, config.data, 7, 16)
    assert use_device_cache("auto", dataset, cuda) is True  # four 2 mm subjects fit any card
    got = list(DeviceVolumeCache(dataset, cuda).batches(batch_size=2, start_step=0, steps=8))
    assert len(got) == len(expected) == 8
    for a, b in zip(expected, got, strict=True):
        for key in ("label", "image", "channel_mask", "index"):
            assert b[key].device.type == "cuda" and a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
