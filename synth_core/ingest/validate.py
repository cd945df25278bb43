"""Cross-volume checks of one subject and the explicit source-label mapping (design.md §2, §6).

* :func:`check_subject` — every modality and the label map are 3D, share one shape (``shape_match``)
  and one affine within ``limits.affine_tolerance_mm`` (``affine_match``), and every image voxel is
  finite (``finite``).
* :func:`map_labels` — maps source label values to the unified label map through a lookup table,
  refusing any value that is not a key of the converter's mapping (``label_values``). A LUT costs one
  gather and one comparison per voxel; ``np.unique`` would sort the whole volume.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from schemas.config import InputLimits
from synth_core.ingest.types import InputRejected, Volume


def check_subject(images: Mapping[str, Volume], label: Volume | None, limits: InputLimits) -> None:
    """Raise :class:`InputRejected` unless all volumes agree on a 3D shape and affine and images are finite.

    The first image in ``images`` is the reference; the offending (other) file is named in the error.
    """
    if not images:
        raise ValueError("check_subject: at least one image is required, received none")
    volumes: list[tuple[str, Volume]] = list(images.items())
    if label is not None:
        volumes.append(("label", label))
    ref_name, ref = volumes[0]
    for role, vol in volumes:
        if vol.data.ndim != 3:
            raise InputRejected(
                "shape_match",
                vol.file,
                tuple(vol.data.shape),
                f"{role}: expected a 3D volume, received {vol.data.ndim}D with shape {tuple(vol.data.shape)}",
            )
    for role, vol in volumes[1:]:
        if vol.data.shape != ref.data.shape:
            raise InputRejected(
                "shape_match",
                vol.file,
                f"{tuple(vol.data.shape)} vs {tuple(ref.data.shape)}",
                f"{role} has shape {tuple(vol.data.shape)}, {ref_name} ({ref.file}) has {tuple(ref.data.shape)}",
            )
    for role, vol in volumes[1:]:
        ref_affine = np.asarray(ref.affine, dtype=np.float64)
        diff = float(np.max(np.abs(np.asarray(vol.affine, dtype=np.float64) - ref_affine)))
        if not diff <= limits.affine_tolerance_mm:  # also catches NaN
            raise InputRejected(
                "affine_match",
                vol.file,
                f"{diff:.6g}",
                f"{role} affine differs from {ref_name} ({ref.file}) by {diff:.6g} (max abs entry), over the "
                f"tolerance of {limits.affine_tolerance_mm} (limits.affine_tolerance_mm)",
            )
    for role, vol in images.items():
        n_bad = count_nonfinite(vol.data)
        if n_bad:
            raise InputRejected(
                "finite", vol.file, n_bad, f"{role}: {n_bad} voxels are NaN or infinite"
            )


def count_nonfinite(data: np.ndarray) -> int:
    """Number of NaN/inf voxels; one vectorized sum when there are none (the usual case).

    NaN and inf propagate through a sum, so a finite sum proves every voxel finite; a non-finite sum
    (a NaN/inf voxel, or an overflow of large finite values) falls back to an exact count.
    """
    if data.dtype.kind in "iub":
        return 0
    with np.errstate(over="ignore", invalid="ignore"):
        total = float(data.sum(dtype=data.dtype))
    if math.isfinite(total):
        return 0
    return int(data.size - np.count_nonzero(np.isfinite(data)))


def map_labels(label: Volume, mapping: Mapping[int, int]) -> np.ndarray:
    """Source label values -> unified labels (uint8, same shape and memory order as ``label.data``).

    Every value present must be a key of ``mapping``, else :class:`InputRejected` ``label_values``
    whose value is the sorted list of unexpected values and whose message lists the valid ones.
    """
    data = label.data
    if not mapping:
        raise ValueError("map_labels: the mapping is empty")
    keys = sorted(int(k) for k in mapping)
    values = {int(v) for v in mapping.values()}
    if any(v < 0 or v > 255 for v in values):
        raise ValueError(f"map_labels: mapped values must be uint8 labels in [0, 255], received {sorted(values)}")
    if data.dtype.kind == "f":
        data = _integral(label)
    elif data.dtype.kind == "b":
        data = data.view(np.uint8)
    elif data.dtype.kind not in "iu":
        raise ValueError(f"map_labels: expected an integer label volume, received dtype {data.dtype}")
    free = [s for s in range(255, -1, -1) if s not in values]
    if not free:
        raise ValueError("map_labels: the mapping uses all 256 uint8 values; no sentinel is left")
    sentinel = free[0]

    if data.dtype.itemsize <= 2:
        # LUT over every representable value; signed values index through their unsigned view.
        bits = 8 * data.dtype.itemsize
        unsigned = np.dtype(f"u{data.dtype.itemsize}")
        lut = np.full(1 << bits, sentinel, dtype=np.uint8)
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if data.dtype.kind == "i" else (0, (1 << bits) - 1)
        for k in keys:
            if lo <= k <= hi:
                lut[k & ((1 << bits) - 1)] = np.uint8(mapping[k])
        native = data if data.dtype.isnative else data.astype(data.dtype.newbyteorder("="))
        index = native.view(unsigned)
        out = lut[index]
    else:
        lo, hi = int(data.min()), int(data.max())
        if hi - lo > 1 << 24:
            unexpected = sorted({lo, hi} - set(keys))
            _reject(label, unexpected, keys)
        lut = np.full(hi - lo + 1, sentinel, dtype=np.uint8)
        for k in keys:
            if lo <= k <= hi:
                lut[k - lo] = np.uint8(mapping[k])
        out = lut[(data - lo).astype(np.intp, copy=False)]
    bad = out == sentinel
    if bad.any():
        unexpected = np.unique(data[bad]).tolist()
        _reject(label, [int(u) for u in unexpected], keys)
    return out


def _integral(label: Volume) -> np.ndarray:
    data = label.data
    if count_nonfinite(data):
        raise InputRejected("label_values", label.file, "non-finite", "label map has NaN/inf voxels")
    ints = data.astype(np.int64)
    if not np.array_equal(ints, data):
        raise InputRejected("label_values", label.file, "non-integral", "label map holds non-integral values")
    return ints


def _reject(label: Volume, unexpected: list[int], keys: list[int]) -> None:
    raise InputRejected(
        "label_values",
        label.file,
        unexpected,
        f"label values {unexpected} are not in the converter's mapping; valid values: {keys}",
    )


__all__ = ["check_subject", "count_nonfinite", "map_labels"]
