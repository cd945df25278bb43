"""Training data for the label→MRI GAN: subjects of committed snapshots, and a deterministic patch sampler.

- :func:`list_training_subjects` lists the subjects of committed snapshots (``snapshot.json`` present);
  :func:`split_subjects` holds some out for validation, tumour subjects first.
- :func:`load_subject` reads one whole subject (validation, generation from real label maps).
- :class:`PatchDataset` is a map-style dataset whose sample ``i`` depends only on ``(seed, i)``: every
  random choice comes from ``np.random.default_rng([seed, i])``. Sample ``i`` is the same in any worker
  process and in any order, so a resumed run that starts its index range at ``step · batch_size``
  sees exactly the batches an uninterrupted run would have seen.
- :func:`make_loader` wraps it in a ``DataLoader`` over the indices of steps ``start_step … steps − 1``.

Resolution. Snapshots are 1 mm. The CPU demo trains at 2 mm (design.md §8): :func:`downsample2` halves
each axis — the image by a NaN-aware 2×2×2 mean, the label map by a tumour-preserving vote:

    per 2×2×2 block, count each label c[l] (0 … 6). A tumour sub-region (4, 5, 6) that covers at least
    3 of the 8 voxels wins over anything else; among several such sub-regions the larger wins. Otherwise
    the most frequent label wins (plain majority). Ties always go to the higher label value.

A plain majority would erase enhancing rims and small necrotic cores one voxel thick; with the ≥ 3 of 8
rule they survive down-sampling (the higher-label tie-break also keeps a 4-vs-4 tumour/anatomy block in
the tumour).

Reading. The dataset holds only the :class:`~schemas.config.StoreConfig` (it is picklable for worker
processes) and opens the store lazily once per process. With ``preload`` it loads each subject once per
process and slices patches in memory; without, it reads only the patch region from the Zarr arrays (a
ranged read of the chunks it needs — what makes 1 mm training on large datasets possible). At 2 mm the
region read is the 1 mm region aligned to even offsets, so both ways give identical patches.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
import zarr
from torch.utils.data import DataLoader, Dataset

from schemas.config import StoreConfig
from schemas.labels import MODALITIES, N_LABELS, TUMOR_LABELS
from schemas.train import DataConfig, SnapshotRef
from synth_core.ingest.snapshot import (
    SNAPSHOT_RECORD,
    SUBJECTS_TABLE,
    load_snapshot_record,
    snapshot_prefix,
)
from synth_core.storage import Store, open_store

IMAGE_ARRAY = "0"
LABEL_ARRAY = "labels/anatomy/0"
TUMOR_MIN_VOXELS = 3
"""A tumour sub-region covering at least this many of the 8 voxels of a 2×2×2 block wins the block."""
PRELOAD_LIMIT_BYTES = 2 * 1024**3
"""``preload=None`` preloads at 1 mm when all subjects (float32 image + uint8 label) fit under this."""

_N_CHANNELS = len(MODALITIES)
_FIRST_TUMOR = min(TUMOR_LABELS)


# --------------------------------------------------------------------------------------------- volumes
@dataclass(frozen=True)
class SubjectVolumes:
    """One subject at the training resolution.

    ``image`` float32 (4, X, Y, Z) in :data:`~schemas.labels.MODALITIES` order, NaN where a modality is
    missing; ``label`` uint8 (X, Y, Z); ``channel_mask`` bool (4,), True where the modality is present;
    ``tumor_voxels`` int32 (N, 3), the indices of label ≥ 4 (empty for a healthy subject).
    """

    subject_id: str
    image: np.ndarray
    label: np.ndarray
    channel_mask: np.ndarray
    tumor_voxels: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.label.shape)  # type: ignore[return-value]


def _as_float32(array: np.ndarray) -> np.ndarray:
    """``array`` as float32 (no copy when it already is). ``np.copyto`` converts float16 about twice as
    fast as ``astype`` here; both are exact."""
    array = np.asarray(array)
    if array.dtype == np.float32:
        return array
    out = np.empty(array.shape, dtype=np.float32)
    np.copyto(out, array, casting="unsafe")
    return out


def _check_even(shape: Sequence[int], name: str) -> None:
    if any(int(s) % 2 for s in shape):
        raise ValueError(f"{name}: 2× down-sampling needs even sizes on every spatial axis, received {tuple(shape)}")


def downsample_image2(image: np.ndarray) -> np.ndarray:
    """(C, X, Y, Z) → float32 (C, X/2, Y/2, Z/2): mean of each 2×2×2 block over its finite voxels.

    A block without any finite voxel (a missing modality is all-NaN) stays NaN. The eight block
    members are added in a fixed order, element-wise, so the result of a block never depends on the
    size of the array it was cut from.
    """
    image = np.asarray(image)
    if image.ndim != 4:
        raise ValueError(f"image: expected (C, X, Y, Z), received shape {image.shape}")
    _check_even(image.shape[1:], "image")
    x = _as_float32(image)
    out = np.empty((x.shape[0], *(s // 2 for s in x.shape[1:])), dtype=np.float32)
    offsets = [(dx, dy, dz) for dx in (0, 1) for dy in (0, 1) for dz in (0, 1)]
    for c in range(x.shape[0]):
        channel = x[c]
        finite = np.isfinite(channel)
        total = np.zeros(out.shape[1:], dtype=np.float32)
        if finite.all():  # the common case; bit-identical to the general one (same additions, count 8)
            for dx, dy, dz in offsets:
                total += channel[dx::2, dy::2, dz::2]
            out[c] = total / np.float32(8.0)
            continue
        if not finite.any():  # a missing modality
            out[c] = np.nan
            continue
        count = np.zeros(out.shape[1:], dtype=np.float32)
        for dx, dy, dz in offsets:
            part = channel[dx::2, dy::2, dz::2]
            ok = finite[dx::2, dy::2, dz::2]
            total += np.where(ok, part, np.float32(0.0))
            count += ok
        with np.errstate(invalid="ignore", divide="ignore"):
            out[c] = total / count  # 0/0 → NaN: a block without data stays NaN
    return out


def downsample_label2(label: np.ndarray) -> np.ndarray:
    """(X, Y, Z) uint8 → uint8 (X/2, Y/2, Z/2) by the tumour-preserving vote (see the module docstring)."""
    label = np.asarray(label)
    if label.ndim != 3:
        raise ValueError(f"label: expected (X, Y, Z), received shape {label.shape}")
    _check_even(label.shape, "label")
    if label.size and int(label.max()) >= N_LABELS:
        raise ValueError(f"label: expected values 0…{N_LABELS - 1}, received max {int(label.max())}")
    out_shape = tuple(s // 2 for s in label.shape)
    counts = np.zeros((N_LABELS, *out_shape), dtype=np.uint8)
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                part = label[dx::2, dy::2, dz::2]
                for value in range(N_LABELS):
                    counts[value] += part == value
    # score = count · 8 + label (ties → higher label); tumour sub-regions with ≥ 3 voxels get +128,
    # which beats any count (≤ 8 · 8 + 6 = 70) of a label without the bonus.
    score = counts.astype(np.int16) * 8 + np.arange(N_LABELS, dtype=np.int16).reshape(-1, 1, 1, 1)
    for value in TUMOR_LABELS:
        score[value] += np.where(counts[value] >= TUMOR_MIN_VOXELS, np.int16(128), np.int16(0))
    return np.argmax(score, axis=0).astype(np.uint8)


def downsample2(image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2× down-sampling for the 2 mm CPU demo: ``(image, label)`` → ``(image/2, label/2)``.

    ``image`` (C, X, Y, Z) by a NaN-aware 2×2×2 mean (float32); ``label`` (X, Y, Z) uint8 by the
    tumour-preserving vote. Spatial sizes must be even (the canonical grid is); ``ValueError`` otherwise.
    """
    image = np.asarray(image)
    label = np.asarray(label)
    if image.ndim != 4 or image.shape[1:] != label.shape:
        raise ValueError(
            f"image/label: expected (C, X, Y, Z) and (X, Y, Z) on the same grid, received {image.shape} and {label.shape}"
        )
    return downsample_image2(image), downsample_label2(label)


def tumor_voxels(label: np.ndarray) -> np.ndarray:
    """int32 (N, 3) indices of the tumour voxels (label ≥ 4) of ``label``."""
    return np.argwhere(np.asarray(label) >= _FIRST_TUMOR).astype(np.int32)


def _check_resolution(resolution_mm: int) -> int:
    if resolution_mm not in (1, 2):
        raise ValueError(f"resolution_mm: valid choices are 1 or 2, received {resolution_mm!r}")
    return int(resolution_mm)


def _channel_mask_from_attrs(attrs: Mapping[str, Any]) -> np.ndarray | None:
    present = (attrs.get("synthmri") or {}).get("modalities_present")
    if not isinstance(present, Mapping) or any(m not in present for m in MODALITIES):
        return None
    return np.array([bool(present[m]) for m in MODALITIES], dtype=bool)


def load_subject(store: Store, key: str, subject_id: str, resolution_mm: int) -> SubjectVolumes:
    """Read the whole OME-Zarr subject group at ``key`` (image ``0`` and ``labels/anatomy/0``).

    At ``resolution_mm == 2`` the volumes are down-sampled by :func:`downsample2`. ``channel_mask`` is
    True for each channel that holds any finite value (a missing modality is all-NaN).
    """
    resolution_mm = _check_resolution(resolution_mm)
    group = zarr.open_group(store.zarr_store(key, read_only=True), mode="r")
    image = _as_float32(group[IMAGE_ARRAY][...])
    label = np.asarray(group[LABEL_ARRAY][...]).astype(np.uint8, copy=False)
    if image.shape != (_N_CHANNELS, *label.shape):
        raise ValueError(
            f"{store.url_for(key)}: expected image (4, X, Y, Z) on the label grid, "
            f"received image {image.shape} and label {label.shape}"
        )
    if resolution_mm == 2:
        image, label = downsample2(image, label)
    mask = np.isfinite(image).reshape(_N_CHANNELS, -1).any(axis=1)
    return SubjectVolumes(
        subject_id=str(subject_id),
        image=image,
        label=label,
        channel_mask=mask.astype(bool),
        tumor_voxels=tumor_voxels(label),
    )


# --------------------------------------------------------------------------------------------- subjects
class _SubjectRow(NamedTuple):
    snapshot: SnapshotRef
    subject_id: str
    key: str


class TrainingSubject(_SubjectRow):
    """``(snapshot, subject_id, key)`` — a 3-tuple — plus ``has_tumor`` from the subjects table.

    ``key`` is the store key of the subject's OME-Zarr group. ``has_tumor`` is an attribute, not a
    tuple field, so ``for snapshot, subject_id, key in subjects`` keeps working.
    """

    has_tumor: bool

    def __new__(cls, snapshot: SnapshotRef, subject_id: str, key: str, has_tumor: bool = False) -> TrainingSubject:
        self = super().__new__(cls, snapshot, subject_id, key)
        self.has_tumor = bool(has_tumor)
        return self

    def __repr__(self) -> str:
        return (
            f"TrainingSubject(snapshot={self.snapshot.source_id}/{self.snapshot.snapshot_id}, "
            f"subject_id={self.subject_id!r}, key={self.key!r}, has_tumor={self.has_tumor})"
        )


def _created(record: Mapping[str, Any]) -> datetime:
    """``created`` of a completion record as an aware datetime (naive: UTC; unreadable: the earliest)."""
    try:
        value = datetime.fromisoformat(str(record.get("created")))
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def newest_snapshot(store: Store) -> SnapshotRef:
    """The committed snapshot under ``sources/`` with the latest ``snapshot.json`` ``created`` time.

    Ties (same time) go to the larger ``(source_id, snapshot_id)``. ``FileNotFoundError`` naming the
    store url when there is none.
    """
    best: tuple[datetime, str, str] | None = None
    for source_id in store.list_dirs("sources"):
        for snapshot_id in store.list_dirs(f"sources/{source_id}"):
            record = load_snapshot_record(store, source_id, snapshot_id)
            if record is None:
                continue  # not committed: invisible to readers
            candidate = (_created(record), source_id, snapshot_id)
            if best is None or candidate > best:
                best = candidate
    if best is None:
        raise FileNotFoundError(
            f"{store.url}: no committed snapshot under sources/ (no {SNAPSHOT_RECORD}); run the ingest flow first"
        )
    return SnapshotRef(source_id=best[1], snapshot_id=best[2])


def list_training_subjects(store: Store, snapshots: Sequence[SnapshotRef]) -> list[TrainingSubject]:
    """``(snapshot, subject_id, key)`` for every subject of the committed ``snapshots``, table order.

    ``snapshots`` empty: the newest committed snapshot under ``sources/`` (by ``snapshot.json``
    ``created``). An uncommitted or missing snapshot raises ``FileNotFoundError`` naming its url.
    """
    refs = list(snapshots) or [newest_snapshot(store)]
    out: list[TrainingSubject] = []
    seen: set[tuple[str, str]] = set()
    for ref in refs:
        if not isinstance(ref, SnapshotRef):
            raise TypeError(f"snapshots: expected SnapshotRef items, received {type(ref).__name__}")
        if (ref.source_id, ref.snapshot_id) in seen:
            continue
        seen.add((ref.source_id, ref.snapshot_id))
        prefix = snapshot_prefix(ref.source_id, ref.snapshot_id)
        if load_snapshot_record(store, ref.source_id, ref.snapshot_id) is None:
            raise FileNotFoundError(
                f"{store.url_for(prefix)}: snapshot not committed ({SNAPSHOT_RECORD} missing); "
                f"ingest it or pick a committed one"
            )
        table = pd.read_parquet(
            io.BytesIO(store.get_bytes(f"{prefix}/{SUBJECTS_TABLE}")), columns=["subject_id", "zarr_path", "has_tumor"]
        )
        for row in table.itertuples(index=False):
            out.append(TrainingSubject(ref, str(row.subject_id), f"{prefix}/{row.zarr_path}", bool(row.has_tumor)))
    return out


def split_subjects(subjects: Sequence[Any], val_subjects: int, seed: int) -> tuple[list[Any], list[Any]]:
    """Deterministic ``(train, val)`` split of ``subjects`` by ``seed``; both keep the input order.

    The subjects are shuffled by ``seed``; validation takes tumour subjects first (items with a true
    ``has_tumor`` attribute, e.g. :class:`TrainingSubject`), so validation shows tumours, but leaves at
    least one tumour subject to training when there are two or more; the rest of validation is filled
    with other subjects. ``ValueError`` when fewer than ``val_subjects + 1`` subjects are given.
    """
    items = list(subjects)
    if isinstance(val_subjects, bool) or not isinstance(val_subjects, int) or val_subjects < 0:
        raise ValueError(f"val_subjects: expected an int ≥ 0, received {val_subjects!r}")
    if len(items) < val_subjects + 1:
        raise ValueError(
            f"subjects: need at least val_subjects + 1 = {val_subjects + 1} subjects (validation plus one "
            f"for training), received {len(items)}"
        )
    order = np.random.default_rng(seed).permutation(len(items)).tolist()
    tumour = [i for i in order if bool(getattr(items[i], "has_tumor", False))]
    other = [i for i in order if not bool(getattr(items[i], "has_tumor", False))]
    n_tumour = min(val_subjects, len(tumour) - 1 if len(tumour) >= 2 else len(tumour))
    val_idx = tumour[:n_tumour] + other[: val_subjects - n_tumour]
    if len(val_idx) < val_subjects:  # too few other subjects: more tumour subjects
        val_idx += tumour[n_tumour : n_tumour + val_subjects - len(val_idx)]
    chosen = set(val_idx)
    train = [items[i] for i in range(len(items)) if i not in chosen]
    val = [items[i] for i in range(len(items)) if i in chosen]
    return train, val


# --------------------------------------------------------------------------------------------- patches
def _axis_window(center: int, dim: int, size: int) -> tuple[int, int, int, int]:
    """(start, stop, pad_before, pad_after) of a ``size`` window centred near ``center`` on ``[0, dim)``."""
    if dim >= size:
        start = min(max(center - size // 2, 0), dim - size)
        return start, start + size, 0, 0
    before = (size - dim) // 2
    return 0, dim, before, size - dim - before


@dataclass(frozen=True)
class _SubjectMeta:
    shape: tuple[int, int, int]  # at the training resolution
    channel_mask: np.ndarray
    tumor_voxels: np.ndarray


class _ProcessState:
    """What one process opens and caches (never pickled): the store, open arrays, loaded subjects, metadata.

    A forked worker keeps what its parent had loaded (numpy data, shared copy-on-write) and opens its
    own store and arrays.
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.store: Store | None = None
        self.arrays: dict[int, tuple[Any, Any, Mapping[str, Any]]] = {}
        self.volumes: dict[int, SubjectVolumes] = {}
        self.meta: dict[int, _SubjectMeta] = {}
        self.preload: bool | None = None
        self.tumour_pool: list[int] | None = None


class PatchDataset(Dataset):
    """Deterministic map-style dataset of training patches; see the module docstring.

    ``subjects``: ``(subject_id, key)`` pairs, ``(subject_id, key, has_tumor)`` triples or
    :class:`TrainingSubject` items; ``key`` is the store key of the subject's OME-Zarr group. When
    ``has_tumor`` is unknown for some subject, the subjects with tumour voxels are found from the label
    maps (once per process, at the first tumour-centred draw).

    ``__getitem__(i)`` returns ``{"label": uint8 (X, Y, Z), "image": float16 at 1 mm / float32 at 2 mm (4, X, Y, Z) with NaN → 0,
    "channel_mask": bool (4,), "index": i}``. Its random choices, all from
    ``np.random.default_rng([seed, i])`` in this order: tumour-centred or not (``config.tumor_fraction``),
    the subject (among tumour subjects for a tumour-centred patch, else among all), the centre (a
    uniformly drawn tumour voxel, else a uniform position of the patch inside the volume), the
    left-right flip (x axis, p = 0.5, when ``config.flip``). A tumour-centred draw with no tumour
    subject, or on a subject whose tumour vanished at 2 mm, falls back to a uniform position.

    ``preload``: None → True at 2 mm, or at 1 mm when all subjects take less than
    :data:`PRELOAD_LIMIT_BYTES` in memory (per process).
    """

    def __init__(
        self,
        store_config: StoreConfig,
        subjects: Sequence[Any],
        config: DataConfig,
        seed: int,
        length: int,
        preload: bool | None = None,
    ) -> None:
        if not isinstance(store_config, StoreConfig):
            raise TypeError(f"store_config: expected a StoreConfig, received {type(store_config).__name__}")
        if not isinstance(config, DataConfig):
            raise TypeError(f"config: expected a DataConfig, received {type(config).__name__}")
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise ValueError(f"length: expected an int ≥ 1, received {length!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed: expected an int ≥ 0, received {seed!r}")
        if preload is not None and not isinstance(preload, bool):
            raise ValueError(f"preload: expected True, False or None, received {preload!r}")
        self.store_config = store_config
        self.config = config
        self.seed = int(seed)
        self.length = int(length)
        self.resolution_mm = _check_resolution(config.resolution_mm)
        self.patch_size: tuple[int, int, int] = tuple(int(v) for v in config.patch_size)  # type: ignore[assignment]
        self.subject_ids, self.keys, self.has_tumor = self._normalize(subjects)
        self.preload_requested = preload
        self._state: _ProcessState | None = None

    @staticmethod
    def _normalize(subjects: Sequence[Any]) -> tuple[list[str], list[str], list[bool | None]]:
        ids: list[str] = []
        keys: list[str] = []
        tumour: list[bool | None] = []
        for item in subjects:
            if isinstance(item, TrainingSubject):
                ids.append(item.subject_id)
                keys.append(item.key)
                tumour.append(item.has_tumor)
                continue
            parts = tuple(item) if isinstance(item, Sequence) and not isinstance(item, str) else ()
            if len(parts) == 2 and all(isinstance(p, str) for p in parts):
                ids.append(parts[0])
                keys.append(parts[1])
                tumour.append(None)
            elif len(parts) == 3 and isinstance(parts[0], str) and isinstance(parts[1], str) and isinstance(parts[2], bool | np.bool_):
                ids.append(parts[0])
                keys.append(parts[1])
                tumour.append(bool(parts[2]))
            else:
                raise ValueError(
                    "subjects: expected (subject_id, key), (subject_id, key, has_tumor) or TrainingSubject "
                    f"items, received {item!r}"
                )
        if not ids:
            raise ValueError("subjects: expected at least one subject, received none")
        return ids, keys, tumour

    # ------------------------------------------------------------------ pickling (worker processes)
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_state"] = None  # the open store, arrays and caches belong to one process
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __len__(self) -> int:
        return self.length

    # ------------------------------------------------------------------ per-process state
    def _proc(self) -> _ProcessState:
        state = self._state
        if state is None:
            state = self._state = _ProcessState()
        elif state.pid != os.getpid():
            # a forked child: the open store and arrays (sockets, event loops) belong to the parent, but
            # what was already loaded is plain numpy data, shared copy-on-write: keep it
            fresh = _ProcessState()
            fresh.volumes, fresh.meta = state.volumes, state.meta
            fresh.preload, fresh.tumour_pool = state.preload, state.tumour_pool
            state = self._state = fresh
        return state

    def _store(self) -> Store:
        state = self._proc()
        if state.store is None:
            state.store = open_store(self.store_config, check=False)
        return state.store

    def _arrays(self, j: int) -> tuple[Any, Any, Mapping[str, Any]]:
        state = self._proc()
        cached = state.arrays.get(j)
        if cached is None:
            group = zarr.open_group(self._store().zarr_store(self.keys[j], read_only=True), mode="r")
            image = group[IMAGE_ARRAY]
            label = group[LABEL_ARRAY]
            if image.shape != (_N_CHANNELS, *label.shape):
                raise ValueError(
                    f"{self._store().url_for(self.keys[j])}: expected image (4, X, Y, Z) on the label grid, "
                    f"received image {image.shape} and label {label.shape}"
                )
            cached = (image, label, dict(group.attrs))
            state.arrays[j] = cached
        return cached

    @property
    def preload(self) -> bool:
        """Whether this process loads whole subjects (resolved lazily, the same way in every process)."""
        state = self._proc()
        if state.preload is None:
            if self.preload_requested is not None:
                state.preload = self.preload_requested
            elif self.resolution_mm == 2:
                state.preload = True
            else:
                _image, label, _attrs = self._arrays(0)
                per_subject = int(np.prod(label.shape)) * (_N_CHANNELS * 4 + 1)
                state.preload = per_subject * len(self.keys) < PRELOAD_LIMIT_BYTES
        return state.preload

    def volume(self, j: int) -> SubjectVolumes:
        """Subject ``j`` at the training resolution, loaded once per process."""
        state = self._proc()
        vol = state.volumes.get(j)
        if vol is None:
            vol = load_subject(self._store(), self.keys[j], self.subject_ids[j], self.resolution_mm)
            state.volumes[j] = vol
        return vol

    def _meta(self, j: int) -> _SubjectMeta:
        state = self._proc()
        meta = state.meta.get(j)
        if meta is not None:
            return meta
        if self.preload:
            vol = self.volume(j)
            meta = _SubjectMeta(vol.shape, vol.channel_mask, vol.tumor_voxels)
        else:
            image, label_arr, attrs = self._arrays(j)
            label = np.asarray(label_arr[...]).astype(np.uint8, copy=False)  # labels are small (uint8)
            if self.resolution_mm == 2:
                label = downsample_label2(label)
            mask = _channel_mask_from_attrs(attrs)
            if mask is None:  # a missing modality is all-NaN: one voxel per channel tells
                mask = np.isfinite(np.asarray(image[:, 0, 0, 0], dtype=np.float32))
            meta = _SubjectMeta(tuple(int(s) for s in label.shape), mask.astype(bool), tumor_voxels(label))  # type: ignore[arg-type]
        state.meta[j] = meta
        return meta

    def adopt(self, j: int, vol: SubjectVolumes) -> None:
        """Record subject ``j``'s metadata (shape, channel mask, tumour voxels) from ``vol``, loaded elsewhere.

        For a holder of the voxels outside this dataset (the device cache), so that :meth:`choose` needs
        no second read and this process keeps no copy of the volumes.
        """
        if not 0 <= j < len(self.keys) or vol.subject_id != self.subject_ids[j]:
            raise ValueError(f"adopt: subject {j} is {self.subject_ids[j] if 0 <= j < len(self.keys) else None!r}, "
                             f"received volumes of {vol.subject_id!r}")
        self._proc().meta[j] = _SubjectMeta(vol.shape, vol.channel_mask, vol.tumor_voxels)

    def _tumour_pool(self) -> list[int]:
        state = self._proc()
        if state.tumour_pool is None:
            pool = []
            for j, known in enumerate(self.has_tumor):
                has = known if known is not None else len(self._meta(j).tumor_voxels) > 0
                if has:
                    pool.append(j)
            state.tumour_pool = pool
        return state.tumour_pool

    # ------------------------------------------------------------------ sampling
    def choose(self, i: int) -> tuple[int, tuple[int, int, int], bool, bool]:
        """The random choices of sample ``i``: (subject index, centre, flipped, tumour-centred)."""
        rng = np.random.default_rng([self.seed, i])
        want_tumour = bool(rng.random() < self.config.tumor_fraction)
        pool = self._tumour_pool() if want_tumour else []
        tumour_centred = want_tumour and bool(pool)
        j = pool[int(rng.integers(len(pool)))] if tumour_centred else int(rng.integers(len(self.keys)))
        meta = self._meta(j)
        if tumour_centred and len(meta.tumor_voxels):
            centre = tuple(int(v) for v in meta.tumor_voxels[int(rng.integers(len(meta.tumor_voxels)))])
        else:
            tumour_centred = False
            centre = tuple(
                int(rng.integers(dim - size + 1)) + size // 2 if dim >= size else dim // 2
                for dim, size in zip(meta.shape, self.patch_size, strict=True)
            )
        flipped = bool(self.config.flip) and bool(rng.random() < 0.5)
        return j, centre, flipped, tumour_centred  # type: ignore[return-value]

    def _read_patch(self, j: int, windows: Sequence[tuple[int, int, int, int]]) -> tuple[np.ndarray, np.ndarray]:
        """Image float32 (4, …) and label uint8 (…) of the in-volume part of the windows."""
        sl = tuple(slice(w[0], w[1]) for w in windows)
        if self.preload:
            vol = self.volume(j)
            return vol.image[(slice(None), *sl)], vol.label[sl]
        image_arr, label_arr, _attrs = self._arrays(j)
        f = 2 if self.resolution_mm == 2 else 1
        region = tuple(slice(w[0] * f, w[1] * f) for w in windows)  # even offsets at 2 mm
        image = _as_float32(image_arr[(slice(None), *region)])
        label = np.asarray(label_arr[region]).astype(np.uint8, copy=False)
        if f == 2:
            image, label = downsample2(image, label)
        return image, label

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = int(i)
        if not 0 <= i < self.length:
            raise IndexError(f"index: expected 0 ≤ i < {self.length}, received {i}")
        j, centre, flipped, _tumour = self.choose(i)
        meta = self._meta(j)
        windows = [_axis_window(c, d, s) for c, d, s in zip(centre, meta.shape, self.patch_size, strict=True)]
        image, label = self._read_patch(j, windows)
        pads = [(w[2], w[3]) for w in windows]
        if any(p != (0, 0) for p in pads):
            image = np.pad(image, [(0, 0), *pads], mode="constant", constant_values=0.0)
            label = np.pad(label, pads, mode="constant", constant_values=0)
        if flipped:  # views; the copies below make them contiguous
            image = image[:, ::-1]
            label = label[::-1]
        # a new array (never a write into a cached volume): missing modality (NaN) → 0.0
        image = np.where(np.isfinite(image), image, np.float32(0.0)).astype(np.float32, copy=False)
        # compact transfer dtypes (the host→device copy was the loader's cost on a GPU): uint8 labels, and
        # float16 images at 1 mm, where every value came from the float16 store (exact); 2 mm means stay float32
        image_dtype = transfer_dtype(self.config.resolution_mm)
        return {
            "label": torch.from_numpy(np.ascontiguousarray(label, dtype=np.uint8)),
            "image": torch.from_numpy(np.ascontiguousarray(image, dtype=image_dtype)),
            "channel_mask": torch.from_numpy(np.array(meta.channel_mask, dtype=bool)),
            "index": i,
        }


# --------------------------------------------------------------------------------------------- loaders
class DevicePrefetcher:
    """Copy batch k+1 to the GPU on a side CUDA stream while step k computes (pinned memory → async copy).

    On a CPU device it passes batches through unchanged. Tensors are handed to the compute stream with
    ``record_stream`` so the caching allocator never reuses their memory too early.
    """

    def __init__(self, batches: Iterable[Mapping[str, Any]], device: torch.device) -> None:
        self.batches = batches
        self.device = torch.device(device)

    def _copy(self, batch: Mapping[str, Any], stream: Any) -> dict[str, Any]:
        with torch.cuda.stream(stream):
            return {k: (v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self.device.type != "cuda":
            yield from (dict(b) for b in self.batches)
            return
        stream = torch.cuda.Stream(device=self.device)
        it = iter(self.batches)
        nxt = next(it, None)
        pending = self._copy(nxt, stream) if nxt is not None else None
        while pending is not None:
            torch.cuda.current_stream(self.device).wait_stream(stream)
            current = pending
            for v in current.values():
                if isinstance(v, torch.Tensor):
                    v.record_stream(torch.cuda.current_stream(self.device))
            nxt = next(it, None)
            pending = self._copy(nxt, stream) if nxt is not None else None
            yield current

def _worker_init(_worker_id: int) -> None:
    torch.set_num_threads(1)


def check_step_range(length: int, *, batch_size: int, start_step: int, steps: int) -> None:
    """Validate global steps ``start_step … steps − 1`` of ``batch_size`` samples over a dataset of ``length``."""
    for name, value, low in (("batch_size", batch_size, 1), ("start_step", start_step, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name}: expected an int ≥ {low}, received {value!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < start_step:
        raise ValueError(f"steps: expected an int ≥ start_step ({start_step}), received {steps!r}")
    if steps * batch_size > length:
        raise ValueError(
            f"steps: steps · batch_size = {steps * batch_size} exceeds the dataset length {length}; "
            f"build the dataset with length ≥ steps · batch_size"
        )


def transfer_dtype(resolution_mm: int) -> np.dtype:
    """Dtype of a patch's image on its way to the model: float16 at 1 mm (exact: every value came from
    the float16 store), float32 at 2 mm (means of 2×2×2 blocks)."""
    return np.dtype(np.float16 if resolution_mm == 1 else np.float32)


def make_loader(
    dataset: PatchDataset,
    *,
    batch_size: int,
    start_step: int,
    steps: int,
    workers: int,
    pin_memory: bool,
    prefetch_factor: int = 4,
) -> DataLoader:
    """Batches of global steps ``start_step … steps − 1``: indices ``start_step·batch_size … steps·batch_size − 1`` in order.

    No shuffling: the randomness is inside ``dataset[i]``. ``workers > 0`` starts persistent worker
    processes (``fork`` on Linux, the platform default elsewhere), each with one torch thread.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers: expected an int ≥ 0, received {workers!r}")
    check_step_range(len(dataset), batch_size=batch_size, start_step=start_step, steps=steps)
    if isinstance(prefetch_factor, bool) or not isinstance(prefetch_factor, int) or prefetch_factor < 1:
        raise ValueError(f"prefetch_factor: expected an int ≥ 1, received {prefetch_factor!r}")
    indices = range(start_step * batch_size, steps * batch_size)
    kwargs: dict[str, Any] = {}
    if workers > 0:
        kwargs.update(
            persistent_workers=True,
            prefetch_factor=prefetch_factor,
            worker_init_fn=_worker_init,
        )
        if sys.platform.startswith("linux"):
            kwargs["multiprocessing_context"] = "fork"
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=indices,
        shuffle=False,
        drop_last=False,
        num_workers=workers,
        pin_memory=pin_memory,
        **kwargs,
    )


class InMemoryPatches:
    """N batches materialized once, then served from memory (the benchmark's "model fed in-memory tensors")."""

    def __init__(self, batches: Iterable[Mapping[str, Any]]) -> None:
        self.batches: list[dict[str, Any]] = [dict(b) for b in batches]
        if not self.batches:
            raise ValueError("batches: expected at least one batch, received none")

    @classmethod
    def from_loader(cls, loader: Iterable[Mapping[str, Any]], n_batches: int) -> InMemoryPatches:
        """The first ``n_batches`` batches of ``loader``."""
        if isinstance(n_batches, bool) or not isinstance(n_batches, int) or n_batches < 1:
            raise ValueError(f"n_batches: expected an int ≥ 1, received {n_batches!r}")
        out = []
        for batch in loader:
            out.append(batch)
            if len(out) == n_batches:
                break
        if len(out) < n_batches:
            raise ValueError(f"n_batches: the loader gave only {len(out)} batches, {n_batches} requested")
        return cls(out)

    @classmethod
    def from_dataset(cls, dataset: PatchDataset, *, batch_size: int, n_batches: int, start_step: int = 0) -> InMemoryPatches:
        """Batches ``start_step … start_step + n_batches − 1`` of ``dataset``, read in this process."""
        loader = make_loader(
            dataset, batch_size=batch_size, start_step=start_step, steps=start_step + n_batches, workers=0, pin_memory=False
        )
        return cls.from_loader(loader, n_batches)

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, k: int) -> dict[str, Any]:
        return self.batches[k]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.batches)

    def cycle(self, steps: int) -> Iterator[dict[str, Any]]:
        """``steps`` batches, going round the materialized ones."""
        for k in range(steps):
            yield self.batches[k % len(self.batches)]

    def to(self, device: torch.device | str) -> InMemoryPatches:
        """A copy with every tensor on ``device``."""
        return InMemoryPatches(
            {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in b.items()} for b in self.batches
        )


__all__ = [
    "DevicePrefetcher",
    "IMAGE_ARRAY",
    "LABEL_ARRAY",
    "PRELOAD_LIMIT_BYTES",
    "TUMOR_MIN_VOXELS",
    "InMemoryPatches",
    "PatchDataset",
    "SubjectVolumes",
    "TrainingSubject",
    "downsample2",
    "downsample_image2",
    "downsample_label2",
    "list_training_subjects",
    "load_subject",
    "make_loader",
    "newest_snapshot",
    "split_subjects",
    "tumor_voxels",
]
