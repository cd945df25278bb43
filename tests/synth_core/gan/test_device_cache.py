"""The device-resident volume cache cuts the same batches as the worker loader, bit for bit."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from schemas.train import DataConfig
from synth_core.gan.data import PatchDataset, list_training_subjects, load_subject, make_loader
from synth_core.gan import device_cache
from synth_core.gan.device_cache import DeviceVolumeCache, available_bytes, cache_bytes, use_device_cache
from synth_core.storage import Store
from tests.synth_core.gan.conftest import GanSnapshot, write_small_subject


def _pairs(gan_snapshot: GanSnapshot) -> list[tuple[str, str]]:
    return [(s.subject_id, s.key) for s in list_training_subjects(gan_snapshot.store, [gan_snapshot.ref])]


def _same_batches(loader_batches: list[dict], cached: list[dict]) -> None:
    assert len(loader_batches) == len(cached)
    for a, b in zip(loader_batches, cached, strict=True):
        for key in ("label", "image", "channel_mask", "index"):
            assert a[key].dtype == b[key].dtype, key
            assert a[key].shape == b[key].shape, key
            assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("resolution", [2, 1])
def test_same_batches_as_the_loader_and_on_resume(gan_snapshot: GanSnapshot, resolution: int) -> None:
    cfg = DataConfig(resolution_mm=resolution, patch_size=(32, 32, 32), tumor_fraction=0.5, flip=True)
    loader_ds = PatchDataset(gan_snapshot.store.config, _pairs(gan_snapshot), cfg, 5, 24)
    cache_ds = PatchDataset(gan_snapshot.store.config, _pairs(gan_snapshot), cfg, 5, 24)
    expected = list(make_loader(loader_ds, batch_size=3, start_step=0, steps=8, workers=0, pin_memory=False))
    cache = DeviceVolumeCache(cache_ds, "cpu")
    assert cache_ds._proc().volumes == {}, "the cache keeps no host copy of the volumes"
    got = list(cache.batches(batch_size=3, start_step=0, steps=8))
    _same_batches(expected, got)
    assert {bool(b["image"].dtype == (torch.float16 if resolution == 1 else torch.float32)) for b in got} == {True}
    # the draws cover both branches the cache must reproduce: flips and tumour-centred patches
    choices = [cache_ds.choose(i) for i in range(24)]
    assert any(c[2] for c in choices) and not all(c[2] for c in choices)
    assert any(c[3] for c in choices)
    resumed = list(cache.batches(batch_size=3, start_step=5, steps=8))
    _same_batches(expected[5:], resumed)
    assert cache.nbytes == cache_bytes(cache_ds)


@pytest.fixture(scope="module")
def small_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, str]:
    """One 32×24×32 subject: FLAIR missing (NaN), a tumour near an edge so patches need padding."""
    s = slice
    boxes = {3: (s(2, 30), s(2, 22), s(2, 30)), 1: (s(4, 8), s(4, 8), s(4, 8)),
             4: (s(3, 9), s(16, 22), s(20, 28)), 5: (s(4, 8), s(17, 21), s(22, 26))}
    return write_small_subject(tmp_path_factory.mktemp("small-cache"), "sub-00000000000c", (32, 24, 32), boxes,
                               missing="flair", seed=2)


@pytest.mark.parametrize("resolution", [1, 2])
def test_padding_and_a_missing_modality(small_store: tuple[Store, str], resolution: int) -> None:
    store, key = small_store
    cfg = DataConfig(resolution_mm=resolution, patch_size=(40, 16, 24), tumor_fraction=0.7)
    subjects = [("sub-00000000000c", key)]
    expected = list(make_loader(PatchDataset(store.config, subjects, cfg, 1, 12), batch_size=2, start_step=0,
                                steps=6, workers=0, pin_memory=False))
    cache = DeviceVolumeCache(PatchDataset(store.config, subjects, cfg, 1, 12), torch.device("cpu"))
    got = list(cache.batches(batch_size=2, start_step=0, steps=6))
    _same_batches(expected, got)
    for b in got:
        assert b["channel_mask"].tolist() == [[True, True, True, False]] * 2
        assert (b["image"][:, 3] == 0).all() and torch.isfinite(b["image"]).all()
        assert tuple(b["label"].shape) == (2, 40, 16, 24)


def test_mode_resolution_and_errors(small_store: tuple[Store, str], monkeypatch: pytest.MonkeyPatch) -> None:
    store, key = small_store
    ds = PatchDataset(store.config, [("sub-00000000000c", key)], DataConfig(resolution_mm=1, patch_size=(16, 16, 16)), 0, 4)
    cpu = torch.device("cpu")
    assert use_device_cache("on", ds, cpu) is True
    assert use_device_cache("off", ds, cpu) is False
    need = cache_bytes(ds)
    assert need == 32 * 24 * 32 * (4 * 2 + 1)  # float16 image + uint8 label at 1 mm
    assert available_bytes(cpu) > 0
    monkeypatch.setattr(device_cache, "available_bytes", lambda _device: 2 * need)
    assert use_device_cache("auto", ds, cpu) is True  # fits in half the free memory
    monkeypatch.setattr(device_cache, "available_bytes", lambda _device: 2 * need - 1)
    assert use_device_cache("auto", ds, cpu) is False
    assert use_device_cache("on", ds, cpu) is True  # "on" never asks
    with pytest.raises(ValueError, match="device_cache: expected one of 'auto', 'on', 'off', received 'yes'"):
        use_device_cache("yes", ds, cpu)
    cache = DeviceVolumeCache(ds, cpu)
    with pytest.raises(ValueError, match="exceeds the dataset length 4"):
        list(cache.batches(batch_size=2, start_step=0, steps=3))
    with pytest.raises(ValueError, match="steps: expected an int ≥ start_step"):
        list(cache.batches(batch_size=2, start_step=2, steps=1))
    with pytest.raises(TypeError, match="expected a PatchDataset"):
        DeviceVolumeCache(object(), cpu)  # type: ignore[arg-type]
    other = dataclasses.replace(load_subject(store, key, "sub-00000000000c", 1), subject_id="sub-ffffffffffff")
    with pytest.raises(ValueError, match="adopt: subject 0 is 'sub-00000000000c'"):
        ds.adopt(0, other)
