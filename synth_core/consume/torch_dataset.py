"""A ``torch.utils.data.Dataset`` over a :class:`~synth_core.consume.dataset.SyntheticDataset`.

Each ``__getitem__`` reads exactly one sample (its two zarr shards) from the store; nothing is loaded
up front. The object is picklable and reopens the store lazily in every process, so it works in a
``DataLoader`` with worker processes (fork or spawn), also over ``s3://``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from synth_core.consume.dataset import SyntheticDataset

Sample = dict[str, Any]


class SyntheticTorchDataset(Dataset):
    """Samples of ``dataset`` (all, or ``indices`` — data.zarr sample indices) as tensors.

    Each item is ``{"image": float32 (C, X, Y, Z), "label": int64 (X, Y, Z), "sample_id": str,
    "index": int}`` (``index`` is the sample's index in ``data.zarr``); ``transform`` (if given) is
    applied to that dict and its result returned.
    """

    def __init__(
        self,
        dataset: SyntheticDataset,
        indices: Iterable[int] | None = None,
        *,
        transform: Callable[[Sample], Any] | None = None,
    ) -> None:
        if not isinstance(dataset, SyntheticDataset):
            raise TypeError(f"dataset: expected a SyntheticDataset, received {type(dataset).__name__}")
        if transform is not None and not callable(transform):
            raise TypeError(f"transform: expected a callable or None, received {type(transform).__name__}")
        known = dict(zip(dataset.samples["index"].astype(int), dataset.samples["sample_id"].astype(str), strict=True))
        if indices is None:
            chosen = list(dataset.indices)
        else:
            chosen = []
            for i in indices:
                if isinstance(i, bool) or not isinstance(i, int | np.integer):
                    raise TypeError(f"indices: expected integers (data.zarr sample indices), received {i!r}")
                if int(i) not in known:
                    raise IndexError(
                        f"indices: expected sample indices present in samples.parquet (0…{max(known, default=-1)}), "
                        f"received {int(i)}"
                    )
                chosen.append(int(i))
        self.dataset = dataset
        self.indices: list[int] = chosen
        self.transform = transform
        self._sample_ids = {i: known[i] for i in chosen}

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int) -> Any:
        if isinstance(item, bool) or not isinstance(item, int | np.integer):
            raise TypeError(f"item: expected an integer position, received {item!r}")
        n = len(self.indices)
        if not -n <= int(item) < n:
            raise IndexError(f"item: expected a position in [{-n}, {n}), received {int(item)}")
        index = self.indices[int(item)]
        image, label = self.dataset.read_sample(index)
        sample: Sample = {
            "image": torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
            "label": torch.from_numpy(label.astype(np.int64)),
            "sample_id": self._sample_ids[index],
            "index": index,
        }
        return self.transform(sample) if self.transform is not None else sample


__all__ = ["SyntheticTorchDataset"]
