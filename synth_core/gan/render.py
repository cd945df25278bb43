"""A validation picture: label map, real and synthetic modalities in three orthogonal slices, as PNG bytes.

Rows are axial, coronal and sagittal slices through one centre voxel (default: the tumour centroid, else
the volume centre); columns are the label map, then real and synthetic side by side for each modality in
``schemas.labels.MODALITIES`` order. Volumes are RAS+ (design.md §2) and each slice is shown ``rot90``-ed:
anterior up in the axial row, superior up in the coronal and sagittal rows. Intensities map −3..3 → 0..255
grey; NaN (a missing modality) is dark red. The PNG is encoded here with ``zlib`` and ``struct`` (no
imaging library).
"""

from __future__ import annotations

import struct
import zlib
from typing import Final

import numpy as np

from schemas.labels import LABELS, MODALITIES, TUMOR_LABELS

PALETTE: Final[np.ndarray] = np.array(
    [
        (0, 0, 0),  # 0 background: black
        (70, 130, 180),  # 1 CSF: steelblue
        (128, 128, 128),  # 2 gray matter: grey
        (235, 235, 235),  # 3 white matter: white-ish
        (255, 215, 0),  # 4 edema: gold
        (178, 34, 34),  # 5 necrotic core: firebrick
        (255, 105, 180),  # 6 enhancing tumour: hotpink
    ],
    dtype=np.uint8,
)
"""RGB colour per label value (index = label)."""

NAN_RGB: Final[tuple[int, int, int]] = (110, 0, 0)
"""Dark red, for NaN voxels (missing modality)."""

GAP_RGB: Final[tuple[int, int, int]] = (40, 40, 40)
"""Separator and padding between panels."""

GREY_RANGE: Final[tuple[float, float]] = (-3.0, 3.0)
"""Intensity window mapped to grey levels 0..255."""

_GAP = 2
_PNG_SIGNATURE: Final[bytes] = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png(rgb: np.ndarray, compress_level: int = 6) -> bytes:
    """Encode an (H, W, 3) uint8 RGB array as an 8-bit truecolour, non-interlaced PNG (filter type 0)."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise ValueError(f"rgb: expected shape (H, W, 3) with H, W ≥ 1, received {rgb.shape}")
    if rgb.dtype != np.uint8:
        raise ValueError(f"rgb: expected dtype uint8, received {rgb.dtype}")
    if not 0 <= compress_level <= 9:
        raise ValueError(f"compress_level: expected 0..9, received {compress_level}")
    height, width = rgb.shape[:2]
    rows = np.empty((height, 1 + 3 * width), dtype=np.uint8)
    rows[:, 0] = 0  # filter: none
    rows[:, 1:] = np.ascontiguousarray(rgb).reshape(height, 3 * width)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        _PNG_SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(rows.tobytes(), compress_level))
        + _chunk(b"IEND", b"")
    )


def _grey(values: np.ndarray) -> np.ndarray:
    """Float slice → RGB uint8: −3..3 → 0..255 grey, NaN → dark red."""
    lo, hi = GREY_RANGE
    finite = np.isfinite(values)
    scaled = np.clip((np.where(finite, values, lo) - lo) / (hi - lo) * 255.0, 0.0, 255.0)
    grey = np.rint(scaled).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    rgb[~finite] = NAN_RGB
    return rgb


def _slices(volume: np.ndarray, center: tuple[int, int, int]) -> list[np.ndarray]:
    """Axial, coronal, sagittal slices of an (X, Y, Z) volume, rotated for display (anterior/superior up)."""
    cx, cy, cz = center
    return [np.rot90(volume[:, :, cz]), np.rot90(volume[:, cy, :]), np.rot90(volume[cx, :, :])]


def _default_center(label: np.ndarray) -> tuple[int, int, int]:
    tumour = label >= min(TUMOR_LABELS)
    if tumour.any():
        centroid = np.argwhere(tumour).mean(axis=0)
        x, y, z = (int(min(max(round(float(v)), 0), s - 1)) for v, s in zip(centroid, label.shape, strict=True))
        return x, y, z
    x, y, z = (s // 2 for s in label.shape)
    return x, y, z


def validation_grid(
    label: np.ndarray,
    real: np.ndarray,
    fake: np.ndarray,
    *,
    center: tuple[int, int, int] | None = None,
    zoom: int = 1,
) -> bytes:
    """PNG bytes of the label map and real | synthetic per modality in axial, coronal and sagittal slices.

    ``label`` (X, Y, Z) integer 0..6, ``real``/``fake`` (4, X, Y, Z) float (NaN allowed), ``center`` a voxel
    index (default: tumour centroid, else the volume centre), ``zoom`` an integer nearest-neighbour upscale.
    """
    label = np.asarray(label)
    real = np.asarray(real)
    fake = np.asarray(fake)
    if label.ndim != 3:
        raise ValueError(f"label: expected shape (X, Y, Z), received {label.shape}")
    if not np.issubdtype(label.dtype, np.integer):
        raise ValueError(f"label: expected an integer dtype, received {label.dtype}")
    expected = (len(MODALITIES), *label.shape)
    if real.shape != expected:
        raise ValueError(f"real: expected shape {expected}, received {real.shape}")
    if fake.shape != expected:
        raise ValueError(f"fake: expected shape {expected}, received {fake.shape}")
    if isinstance(zoom, bool) or not isinstance(zoom, int) or not 1 <= zoom <= 16:
        raise ValueError(f"zoom: expected an integer 1..16, received {zoom!r}")
    bad = np.setdiff1d(np.unique(label), np.fromiter(LABELS, dtype=np.int64))
    if bad.size:
        raise ValueError(f"label: expected values in {sorted(LABELS)}, received unexpected values {bad.tolist()}")
    if center is None:
        at = _default_center(label)
    else:
        coords = tuple(int(c) for c in center)
        if len(coords) != 3 or any(not 0 <= c < s for c, s in zip(coords, label.shape, strict=True)):
            raise ValueError(f"center: expected a voxel index inside {label.shape}, received {center}")
        at = (coords[0], coords[1], coords[2])

    columns: list[list[np.ndarray]] = [[PALETTE[s] for s in _slices(label, at)]]
    for c in range(len(MODALITIES)):
        columns.append([_grey(s.astype(np.float32)) for s in _slices(real[c], at)])
        columns.append([_grey(s.astype(np.float32)) for s in _slices(fake[c], at)])
    if zoom > 1:
        columns = [[p.repeat(zoom, axis=0).repeat(zoom, axis=1) for p in col] for col in columns]

    row_heights = [max(col[r].shape[0] for col in columns) for r in range(3)]
    col_widths = [max(p.shape[1] for p in col) for col in columns]
    height = sum(row_heights) + _GAP * 4
    width = sum(col_widths) + _GAP * (len(columns) + 1)
    canvas = np.empty((height, width, 3), dtype=np.uint8)
    canvas[:] = GAP_RGB
    x0 = _GAP
    for col, cw in zip(columns, col_widths, strict=True):
        y0 = _GAP
        for panel, rh in zip(col, row_heights, strict=True):
            ph, pw = panel.shape[:2]
            top, left = y0 + (rh - ph) // 2, x0 + (cw - pw) // 2
            canvas[top : top + ph, left : left + pw] = panel
            y0 += rh + _GAP
        x0 += cw + _GAP
    return write_png(canvas)


__all__ = ["GAP_RGB", "NAN_RGB", "PALETTE", "validation_grid", "write_png"]
