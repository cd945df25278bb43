"""``montage.png``: a grid of axial slices through the tumour centroid of up to 16 samples.

Each sample is one tile of three panels, left to right: the label map's colours over T1c (tumour labels
opaque, anatomy blended), T1c, FLAIR; outside the brain is black. Tiles run left to right, top to
bottom, four per row, in the order given (the datasheet lists the sample id of each position). Slices
are ``rot90``-ed like the validation pictures (anterior up); intensities map −3..3 → 0..255 grey.
Encoded with ``synth_core.gan.render``'s dependency-free PNG writer, so the same inputs always give the
same bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np

from schemas.labels import MODALITIES, TUMOR_LABELS
from synth_core.gan.render import GAP_RGB, GREY_RANGE, PALETTE, write_png

MAX_SAMPLES: Final[int] = 16
TILES_PER_ROW: Final[int] = 4
_GAP = 2
_TILE_GAP = 6
_T1C = MODALITIES.index("t1c")
_FLAIR = MODALITIES.index("flair")


def pick_samples(indices: Sequence[int], limit: int = MAX_SAMPLES) -> list[int]:
    """Up to ``limit`` sample indices spread evenly over ``indices`` (sorted), first and last included."""
    ordered = sorted(int(i) for i in indices)
    if len(ordered) <= limit:
        return ordered
    picks = np.linspace(0, len(ordered) - 1, limit).round().astype(int)
    return [ordered[i] for i in sorted(set(picks.tolist()))]


def tumour_slice(label: np.ndarray) -> int:
    """Axial (z) index through the tumour centroid, or the middle slice without tumour."""
    tumour = label >= min(TUMOR_LABELS)
    if not tumour.any():
        return label.shape[2] // 2
    z = np.nonzero(tumour.any(axis=(0, 1)))[0]
    weights = tumour.sum(axis=(0, 1))[z]
    return int(round(float((z * weights).sum() / weights.sum())))


def _grey(values: np.ndarray) -> np.ndarray:
    lo, hi = GREY_RANGE
    v = np.where(np.isfinite(values), values, lo).astype(np.float32)
    g = np.rint(np.clip((v - lo) / (hi - lo) * 255.0, 0.0, 255.0)).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=-1)


def sample_tile(label: np.ndarray, image: np.ndarray) -> np.ndarray:
    """RGB tile (H, 3·W + gaps, 3) of one sample: label over T1c | T1c | FLAIR at the tumour's axial slice.

    ``label`` (X, Y, Z) integer 0..6; ``image`` (4, X, Y, Z) in :data:`schemas.labels.MODALITIES` order.
    """
    label = np.asarray(label)
    image = np.asarray(image)
    if label.ndim != 3:
        raise ValueError(f"label: expected shape (X, Y, Z), received {label.shape}")
    if image.shape != (len(MODALITIES), *label.shape):
        raise ValueError(f"image: expected shape {(len(MODALITIES), *label.shape)}, received {image.shape}")
    z = tumour_slice(label)
    lab = np.rot90(label[:, :, z])
    t1c = _grey(np.rot90(image[_T1C, :, :, z]))
    flair = _grey(np.rot90(image[_FLAIR, :, :, z]))
    colours = PALETTE[np.clip(lab, 0, len(PALETTE) - 1)]
    overlay = t1c.astype(np.float32)
    anatomy = (lab > 0) & (lab < min(TUMOR_LABELS))
    overlay[anatomy] = 0.75 * overlay[anatomy] + 0.25 * colours[anatomy]
    tumour = lab >= min(TUMOR_LABELS)
    overlay[tumour] = colours[tumour]
    panels = [np.rint(overlay).astype(np.uint8), t1c, flair]
    for panel in panels:
        panel[lab == 0] = 0  # outside the brain: black, whatever the intensity window maps 0 to
    h, w = lab.shape
    tile = np.empty((h, 3 * w + 2 * _GAP, 3), dtype=np.uint8)
    tile[:] = GAP_RGB
    for k, panel in enumerate(panels):
        tile[:, k * (w + _GAP) : k * (w + _GAP) + w] = panel
    return tile


def montage_png(tiles: Sequence[np.ndarray], per_row: int = TILES_PER_ROW) -> bytes:
    """PNG bytes of ``tiles`` (equal shapes) in a grid, ``per_row`` tiles per row."""
    if not tiles:
        raise ValueError("tiles: expected at least one sample tile, received none")
    shape = tiles[0].shape
    if any(t.shape != shape for t in tiles):
        raise ValueError(f"tiles: expected equal shapes, received {sorted({t.shape for t in tiles})}")
    rows = -(-len(tiles) // per_row)
    cols = min(per_row, len(tiles))
    th, tw = shape[:2]
    canvas = np.empty((rows * th + (rows + 1) * _TILE_GAP, cols * tw + (cols + 1) * _TILE_GAP, 3), dtype=np.uint8)
    canvas[:] = (0, 0, 0)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, per_row)
        top, left = _TILE_GAP + r * (th + _TILE_GAP), _TILE_GAP + c * (tw + _TILE_GAP)
        canvas[top : top + th, left : left + tw] = tile
    return write_png(canvas)


__all__ = ["MAX_SAMPLES", "TILES_PER_ROW", "montage_png", "pick_samples", "sample_tile", "tumour_slice"]
