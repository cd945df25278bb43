"""Training patches cut on the device from subjects held there (the GPU-resident volume cache).

On an H100 the default model takes a step in ≈ 21 ms. The worker pipeline (``make_loader`` →
pinned memory → ``DevicePrefetcher``) must then move ≈ 850 MB/s of 128³ four-channel patches through
worker processes, shared memory, the main process's pin-memory thread and PCIe, and it reached 0.86
of the in-memory rate (docs/benchmarks.md). Here every training subject is copied to the device once,
and each batch is cut there with the dataset's own random choices (:meth:`PatchDataset.choose`).
That needs no worker processes and no host→device copies per step. On the CPU the "device" is
host memory: one copy of the subjects in the training process, instead of loader workers that
compete with the step for the same cores (bench/train.py on 2 cores: 0.89–1.04 of the in-memory
rate against 0.69–0.90 for 2 loader workers).

The batches equal ``make_loader(dataset, …)`` moved to the device, bit for bit, at the same steps
(tested on the CPU). A subject at 1 mm takes ≈ 44 MB (float16 image + uint8 label), so 300 subjects take
≈ 13 GiB. ``DataConfig.device_cache = "auto"`` uses the cache when the subjects fit in half of the
free memory of the device (GPU memory on CUDA, host memory on the CPU).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, Final

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from synth_core.gan.data import (
    _N_CHANNELS,
    IMAGE_ARRAY,
    LABEL_ARRAY,
    PatchDataset,
    _axis_window,
    check_step_range,
    load_subject,
    transfer_dtype,
)

AUTO_MEMORY_FRACTION: Final[float] = 0.5
"""``device_cache="auto"``: use the cache when the subjects take at most this share of free device memory."""

def cache_bytes(dataset: PatchDataset) -> int:
    """Device bytes the cache needs for ``dataset``'s subjects (from array shapes; reads no voxels)."""
    import zarr

    store = dataset._store()
    per_voxel = _N_CHANNELS * transfer_dtype(dataset.resolution_mm).itemsize + 1
    total = 0
    for key in dataset.keys:
        group = zarr.open_group(store.zarr_store(key, read_only=True), mode="r")
        shape = group[LABEL_ARRAY].shape
        if group[IMAGE_ARRAY].shape[1:] != shape:
            raise ValueError(f"{store.url_for(key)}: image {group[IMAGE_ARRAY].shape} is not on the label grid {shape}")
        voxels = int(np.prod([s // dataset.resolution_mm for s in shape]))
        total += voxels * per_voxel
    return total


def available_bytes(device: torch.device) -> int:
    """Free memory where the cache would live: the CUDA device's, or the host's (free pages, not the page cache)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))


def use_device_cache(mode: str, dataset: PatchDataset, device: torch.device) -> bool:
    """Resolve ``DataConfig.device_cache``: ``on``, ``off``, or ``auto``: on when the subjects take at most
    :data:`AUTO_MEMORY_FRACTION` of the free memory of ``device`` (GPU memory, or host memory on the CPU,
    where it also beats loader worker processes that compete with the step for the same cores)."""
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"device_cache: expected one of 'auto', 'on', 'off', received {mode!r}")
    if mode != "auto":
        return mode == "on"
    return cache_bytes(dataset) <= AUTO_MEMORY_FRACTION * available_bytes(device)


class DeviceVolumeCache:
    """Every subject of ``dataset`` on ``device``; :meth:`batches` cuts the same batches as the loader.

    Subjects are read one at a time (the host never holds more than one); missing modalities (NaN)
    become 0 before the copy, as in ``PatchDataset.__getitem__``.
    """

    def __init__(self, dataset: PatchDataset, device: torch.device | str) -> None:
        if not isinstance(dataset, PatchDataset):
            raise TypeError(f"dataset: expected a PatchDataset, received {type(dataset).__name__}")
        self.dataset = dataset
        self.device = torch.device(device)
        dtype = getattr(torch, transfer_dtype(dataset.resolution_mm).name)  # the loader's dtype, as torch's
        self.images: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []
        self.channel_masks: list[torch.Tensor] = []
        store = dataset._store()
        for j, key in enumerate(dataset.keys):
            vol = load_subject(store, key, dataset.subject_ids[j], dataset.resolution_mm)
            dataset.adopt(j, vol)  # shape, channel mask and tumour voxels for choose(), without keeping the voxels
            image = np.where(np.isfinite(vol.image), vol.image, np.float32(0.0)).astype(np.float32, copy=False)
            self.images.append(torch.from_numpy(image).to(dtype).to(self.device))
            self.labels.append(torch.from_numpy(np.ascontiguousarray(vol.label, dtype=np.uint8)).to(self.device))
            self.channel_masks.append(torch.from_numpy(np.array(vol.channel_mask, dtype=bool)).to(self.device))
            del vol, image

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.images, *self.labels))

    def sample(self, i: int) -> dict[str, Any]:
        """Sample ``i`` on the device: what ``dataset[i]`` returns, there."""
        ds = self.dataset
        j, centre, flipped, _tumour = ds.choose(i)
        shape = tuple(self.labels[j].shape)
        windows = [_axis_window(c, d, s) for c, d, s in zip(centre, shape, ds.patch_size, strict=True)]
        sl = tuple(slice(w[0], w[1]) for w in windows)
        image = self.images[j][(slice(None), *sl)]
        label = self.labels[j][sl]
        if any(w[2] or w[3] for w in windows):
            pad = [p for w in reversed(windows) for p in (w[2], w[3])]  # F.pad: last axis first
            image = F.pad(image, pad, mode="constant", value=0.0)
            label = F.pad(label, pad, mode="constant", value=0)
        if flipped:
            image = torch.flip(image, dims=(1,))
            label = torch.flip(label, dims=(0,))
        return {"label": label, "image": image, "channel_mask": self.channel_masks[j], "index": i}

    def batch(self, step: int, batch_size: int) -> dict[str, Any]:
        """The batch of global step ``step``: samples ``step·batch_size … (step+1)·batch_size − 1``."""
        samples = [self.sample(i) for i in range(step * batch_size, (step + 1) * batch_size)]
        return {
            "label": torch.stack([s["label"] for s in samples]),
            "image": torch.stack([s["image"] for s in samples]),
            "channel_mask": torch.stack([s["channel_mask"] for s in samples]),
            "index": torch.tensor([s["index"] for s in samples], dtype=torch.int64, device=self.device),
        }

    def batches(self, *, batch_size: int, start_step: int, steps: int) -> Iterator[dict[str, Any]]:
        """Batches of global steps ``start_step … steps − 1``, as ``make_loader`` orders them."""
        check_step_range(len(self.dataset), batch_size=batch_size, start_step=start_step, steps=steps)
        for step in range(start_step, steps):
            yield self.batch(step, batch_size)


__all__ = ["AUTO_MEMORY_FRACTION", "DeviceVolumeCache", "available_bytes", "cache_bytes", "use_device_cache"]
