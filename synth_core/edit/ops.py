"""Label-map edits: pure, seeded functions ``label map -> label map`` that create new, exactly annotated
tumour cases (design.md §2 labels, §7 ``edit/``, §8 performance).

Every edit takes a canonical label map (``uint8`` (X, Y, Z), RAS+ grid, labels 0..6), never mutates it,
and returns an :class:`EditResult`: the new map and a JSON-able ``params`` dict holding every
parameter — the requested ones, the ``seed``, and the values actually drawn or achieved (centres,
factors, voxel counts, repairs). Same inputs and seed give byte-identical output.

All work happens in the tumour's bounding box (plus small margins), never on the whole volume,
except O(N) copies and bounding-box projections (design.md §8: a full EDT costs 1.35 s, a box EDT 0.05 s).

**Fill rule** (:func:`fill_healthy`). A voxel that stops being tumour takes the anatomy label (1 CSF,
2 GM, 3 WM) of the nearest healthy brain voxel — the Euclidean-nearest voxel with label 1..3 that is
not itself being filled (ties broken by ``scipy.ndimage.distance_transform_edt``). Voxels outside
the brain (label 0) stay 0. The search runs an EDT with ``return_indices=True`` over the filled
region's bounding box plus a margin (3 voxels); the answer is exact, not approximate: whenever a
filled voxel's nearest healthy voxel inside the box is farther than the box's edge (so a nearer one
might lie outside), the margin is doubled and the EDT rerun, up to the whole volume. If the whole map
has no healthy tissue, :class:`EditError` is raised.

**Nesting.** Three nested regions define a tumour: whole tumour W = 4|5|6, core C = 5|6 and
necrosis N = 5 (enhancing = C \\ N, edema = W \\ C). Geometric edits transform the three regions
together and rebuild the labels from them, so N ⊆ C ⊆ W always holds. After every edit two repairs
make the result obey the rules of :mod:`synth_core.edit.validity`:

* **N1, core enclosed** (always, and checked by ``check_label_map``): in a tumour component that has
  edema, a core voxel sharing a face with healthy tissue (1..3) becomes edema (4). The whole tumour
  is unchanged; the core loses that outer layer. This also covers a tumour moved from the brain's
  edge (core touching background) to the inside.
* **N2, closed enhancing rim** (only when the input tumour has it: no necrotic voxel shares a face
  with labels 1..4): a necrotic voxel that shares a face with edema or healthy tissue becomes
  enhancing (6), so enhancing tumour stays between necrosis and edema. Tumours whose necrosis
  touches edema in the input (common in BraTS: non-enhancing core) are left as they are.

The numbers of repaired voxels are recorded (``repaired_core_to_edema``, ``repaired_necrosis_to_enhancing``).

**Geometry** (``resize`` and ``move`` with rotation). Each nested region's indicator is smoothed by a
Gaussian (sigma 1 voxel) over the tumour crop, resampled linearly at the transformed positions
(resize: isotropic scaling by factor^(1/3) about the whole-tumour centroid, done separably; rotation:
``scipy.ndimage.affine_transform``, order 1), and thresholded by *rank*: the region keeps exactly the
target number of voxels with the highest smoothed values (``np.partition``; voxels tied at the cut
are taken in raster order; an inner region only inside the next outer one; never below the level
0.05, about 1.6 sigma beyond the transformed boundary). Volumes are therefore exact before clipping,
and shapes follow the transformed level set.
Only then is the result clipped to the brain (label > 0): resize drops what falls outside and
reports it (``brain_limited``, ``clipped_voxels``, ``achieved_factor``) instead of bulging elsewhere;
move and transplant refuse (or, with ``clip=True``, drop) it. Pure translation shifts the label crop
by whole voxels (exact shape; the centroid lands within half a voxel per axis).

**Pipelines** (:func:`apply_pipeline`): step ``i`` of a pipeline seeded ``seed`` runs with the seed
:func:`step_seed` ``(seed, i)`` = the first 64-bit word of ``numpy.random.SeedSequence([seed, i])``;
after every step the map is checked with ``check_label_map`` against the input's brain outline, and
any failure raises :class:`EditError` naming the step index, the edit and its parameters.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any, Final, Literal

import numpy as np
from scipy import ndimage

from synth_core.edit.validity import (
    EDEMA,
    ENHANCING,
    NECROTIC,
    EditError,
    check_array,
    check_label_map,
    core_exposed,
    mask_box,
    necrosis_exposed,
    tumour_box,
)

EditOp = Literal["resize", "move", "transplant"]
EDIT_OPS: Final[tuple[str, ...]] = ("resize", "move", "transplant")
FACTOR_RANGE: Final[tuple[float, float]] = (0.01, 30.0)
"""Accepted ``resize`` factors (volume ratio), exclusive of 0."""
MAX_PLACEMENT_TRIES: Final[int] = 2000
"""Random transplant centres tested before giving up."""

_SIGMA: Final[float] = 1.0  # Gaussian smoothing of the region indicators, voxels
_TRUNCATE: Final[float] = 4.0
_PAD: Final[int] = int(math.ceil(_SIGMA * _TRUNCATE)) + 1  # zero padding around the crop for the tail
_LEVEL_MIN: Final[float] = 0.05  # lowest smoothed level a region may extend to (~1.6 sigma outside)
_FILL_MARGIN: Final[int] = 3
_BATCH: Final[int] = 256  # random candidate centres drawn at a time


@dataclass(frozen=True)
class EditResult:
    """One edit's output: the new label map and every parameter of the edit (JSON-able)."""

    label: np.ndarray
    op: str
    params: dict[str, Any]

    def record(self) -> dict[str, Any]:
        """``{"op": ..., "params": {...}}``, a deep copy ready for ``json.dumps``."""
        return {"op": self.op, "params": copy.deepcopy(self.params)}


@dataclass(frozen=True)
class EditSpec:
    """One step of a pipeline: ``op`` and its keyword parameters (no seed: it is derived per step).

    * ``resize``: ``factor``.
    * ``move``: ``center_vox`` or ``center_mm`` + ``affine``; optional ``rotate_deg``, ``clip``.
    * ``transplant``: ``donor`` (a key of ``apply_pipeline``'s ``donors``, or a label map);
      optional ``center_vox``, ``clip``.
    """

    op: EditOp
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PipelineResult:
    """The final label map and the ordered, JSON-able records of the applied edits."""

    label: np.ndarray
    edits: tuple[dict[str, Any], ...]
    seed: int


# --------------------------------------------------------------------------------------------------
# argument checks


def _require_seed(seed: object, what: str) -> int:
    if isinstance(seed, bool) or not isinstance(seed, Integral) or int(seed) < 0:
        raise EditError(f"{what}: seed: expected a non-negative integer, received {seed!r}")
    return int(seed)


def _require_triple(value: object, name: str, what: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        arr = np.empty(0)
    if arr.shape != (3,) or not np.all(np.isfinite(arr)):
        raise EditError(f"{what}: {name}: expected three finite numbers, received {value!r}")
    return arr


def _require_bool(value: object, name: str, what: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise EditError(f"{what}: {name}: expected True or False, received {value!r}")
    return bool(value)


def _resolve_centre(
    center_vox: object, center_mm: object, affine: object, what: str
) -> tuple[np.ndarray, dict[str, Any]]:
    """The requested centre in voxel coordinates, and its description for the record."""
    if (center_vox is None) == (center_mm is None):
        raise EditError(
            f"{what}: centre: expected exactly one of center_vox or center_mm, received "
            f"center_vox={center_vox!r}, center_mm={center_mm!r}"
        )
    if center_vox is not None:
        vox = _require_triple(center_vox, "center_vox", what)
        return vox, {"center_vox": vox.tolist(), "center_mm": None, "affine": None}
    mm = _require_triple(center_mm, "center_mm", what)
    try:
        aff = np.asarray(affine, dtype=np.float64)
    except (TypeError, ValueError):
        aff = np.empty(0)
    if aff.shape != (4, 4) or not np.all(np.isfinite(aff)) or abs(np.linalg.det(aff[:3, :3])) < 1e-12:
        raise EditError(
            f"{what}: affine: expected a finite invertible 4x4 voxel-to-mm matrix with center_mm, received {affine!r}"
        )
    vox = (np.linalg.inv(aff) @ np.append(mm, 1.0))[:3]
    return vox, {"center_vox": vox.tolist(), "center_mm": mm.tolist(), "affine": aff.tolist()}


def _fmt(vec: np.ndarray | Sequence[float]) -> str:
    return "(" + ", ".join(f"{float(v):g}" for v in vec) + ")"


# --------------------------------------------------------------------------------------------------
# tumour extraction and geometry helpers


@dataclass(frozen=True)
class _Tumour:
    crop: np.ndarray  # uint8 over the box: tumour labels 4..6, 0 elsewhere
    lo: np.ndarray  # int64 (3,), the box's origin in the map
    centroid: np.ndarray  # float64 (3,), whole-tumour centroid in voxel coordinates of the map
    counts: dict[str, int]
    rim_closed: bool  # property N2 holds in the input


def _counts(crop: np.ndarray) -> dict[str, int]:
    return {
        "whole": int(np.count_nonzero(crop >= EDEMA)),
        "edema": int(np.count_nonzero(crop == EDEMA)),
        "core": int(np.count_nonzero(crop >= NECROTIC)),
        "necrotic": int(np.count_nonzero(crop == NECROTIC)),
        "enhancing": int(np.count_nonzero(crop == ENHANCING)),
    }


def _centroid(crop: np.ndarray, lo: np.ndarray) -> np.ndarray:
    pts = np.nonzero(crop >= EDEMA)
    return np.array([p.mean() for p in pts], dtype=np.float64) + lo


def _extract(label: np.ndarray, what: str, verb: str) -> _Tumour:
    box = tumour_box(label, ring=1)
    if box is None:
        raise EditError(f"{what}: the label map has no tumour (labels 4-6): nothing to {verb}")
    ringed = label[box]
    crop = np.where(ringed >= EDEMA, ringed, np.uint8(0)).astype(np.uint8)
    lo = np.array([s.start for s in box], dtype=np.int64)
    return _Tumour(
        crop=crop,
        lo=lo,
        centroid=_centroid(crop, lo),
        counts=_counts(crop),
        rim_closed=not bool(necrosis_exposed(ringed).any()),
    )


def _slices(lo: np.ndarray, hi: np.ndarray) -> tuple[slice, slice, slice]:
    return slice(int(lo[0]), int(hi[0])), slice(int(lo[1]), int(hi[1])), slice(int(lo[2]), int(hi[2]))


def _window(label: np.ndarray, lo: np.ndarray, shape: Sequence[int]) -> tuple[np.ndarray, tuple, tuple]:
    """Slices of the map and of a window at ``lo`` with ``shape`` where the two overlap."""
    vol = np.asarray(label.shape)
    hi = lo + np.asarray(shape)
    vlo = np.clip(lo, 0, vol)
    vhi = np.clip(hi, 0, vol)
    vhi = np.maximum(vhi, vlo)
    return vlo, _slices(vlo, vhi), _slices(vlo - lo, vhi - lo)


def _brain_window(label: np.ndarray, lo: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """``label > 0`` over a window that may reach past the volume (False there)."""
    out = np.zeros(tuple(int(s) for s in shape), dtype=bool)
    _, in_map, in_win = _window(label, lo, shape)
    out[in_win] = label[in_map] > 0
    return out


def _place(target: np.ndarray, lo: np.ndarray, crop: np.ndarray) -> None:
    """Write the non-zero voxels of ``crop`` (placed at ``lo``) into ``target`` in place.

    The caller guarantees that the crop's non-zero voxels lie inside the volume.
    """
    _, in_map, in_win = _window(target, lo, crop.shape)
    part = crop[in_win]
    view = target[in_map]
    np.copyto(view, part, where=part > 0)


def _fields(crop: np.ndarray, lo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Smoothed indicators of W, C and N (float32, (3, ...)) over the crop padded by ``_PAD``."""
    shape = tuple(s + 2 * _PAD for s in crop.shape)
    ind = np.zeros((3, *shape), dtype=np.float32)
    inner = tuple(slice(_PAD, _PAD + s) for s in crop.shape)
    ind[(0, *inner)] = crop >= EDEMA
    ind[(1, *inner)] = crop >= NECROTIC
    ind[(2, *inner)] = crop == NECROTIC
    same = [False, bool(np.array_equal(ind[1], ind[0])), bool(np.array_equal(ind[2], ind[1]))]
    for ch in range(3):
        if same[ch]:
            ind[ch] = ind[ch - 1]  # same region (no edema / no enhancing): same field, smoothed once
        elif ind[ch].any():
            ind[ch] = ndimage.gaussian_filter(ind[ch], _SIGMA, truncate=_TRUNCATE, mode="constant")
    return ind, lo - _PAD


def _interp_axis(f: np.ndarray, x: np.ndarray, axis: int) -> np.ndarray:
    """Linear interpolation of ``f`` along ``axis`` at float positions ``x`` (zero outside)."""
    n = f.shape[axis]
    pad = [(0, 0)] * f.ndim
    pad[axis] = (1, 1)
    fp = np.pad(f, pad)
    xp = np.clip(x + 1.0, 0.0, n + 1.0)
    i0 = np.minimum(np.floor(xp).astype(np.intp), n)
    w_shape = [1] * f.ndim
    w_shape[axis] = -1
    w = (xp - i0).astype(np.float32).reshape(w_shape)
    a = np.take(fp, i0, axis=axis)
    b = np.take(fp, i0 + 1, axis=axis)
    return a + (b - a) * w


def _resample_scaled(
    fields: np.ndarray, origin: np.ndarray, centre: np.ndarray, scale: float, olo: np.ndarray, oshape: np.ndarray
) -> np.ndarray:
    """Fields sampled at y -> centre + (y - centre) / scale for the output voxels y in [olo, olo+oshape)."""
    out = fields
    for axis in range(3):
        y = olo[axis] + np.arange(int(oshape[axis]), dtype=np.float64)
        x = centre[axis] + (y - centre[axis]) / scale - origin[axis]
        out = _interp_axis(out, x, axis + 1)
    return out


def _resample_affine(
    fields: np.ndarray,
    origin: np.ndarray,
    c_in: np.ndarray,
    c_out: np.ndarray,
    rot: np.ndarray,
    olo: np.ndarray,
    oshape: np.ndarray,
) -> np.ndarray:
    """Fields sampled at y -> c_in + rot.T (y - c_out) for the output voxels y in [olo, olo+oshape)."""
    inv = rot.T
    offset = c_in - origin + inv @ (olo - c_out)
    out = np.empty((3, *(int(s) for s in oshape)), dtype=np.float32)
    for ch in range(3):
        if ch > 0 and np.array_equal(fields[ch], fields[ch - 1]):
            out[ch] = out[ch - 1]
            continue
        ndimage.affine_transform(
            fields[ch],
            inv,
            offset=offset,
            output_shape=out.shape[1:],
            output=out[ch],
            order=1,
            mode="constant",
            cval=0.0,
        )
    return out


def _rank_threshold(values: np.ndarray, allowed: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` allowed voxels with the highest values, none below ``_LEVEL_MIN``.

    Exactly ``n`` when there are enough: voxels tied at the cut level are taken in raster order.
    """
    if n <= 0:
        return np.zeros(values.shape, dtype=bool)
    cand = allowed & (values >= _LEVEL_MIN)
    vals = values[cand]
    if vals.size <= n:
        return cand
    k = vals.size - n
    level = np.partition(vals, k)[k]
    chosen = cand & (values > level)
    need = n - int(np.count_nonzero(chosen))
    if need > 0:
        tied = np.flatnonzero(cand & (values == level))[:need]
        chosen.flat[tied] = True
    return chosen


def _assemble(whole: np.ndarray, core: np.ndarray, nec: np.ndarray) -> np.ndarray:
    out = np.zeros(whole.shape, dtype=np.uint8)
    out[whole] = EDEMA
    out[core & whole] = ENHANCING
    out[nec & core & whole] = NECROTIC
    return out


def _regions(res: np.ndarray, brain: np.ndarray, counts: Mapping[str, int], ratio: float) -> tuple[np.ndarray, int]:
    """Rebuild the nested labels from resampled fields with ``ratio`` x the original counts, then clip
    them to ``brain``; returns the label crop and the number of tumour voxels the clipping removed."""
    anywhere = np.ones(res.shape[1:], dtype=bool)
    whole = _rank_threshold(res[0], anywhere, int(round(ratio * counts["whole"])))
    core = _rank_threshold(res[1], whole, int(round(ratio * counts["core"])))
    nec = _rank_threshold(res[2], core, int(round(ratio * counts["necrotic"])))
    clipped = int(np.count_nonzero(whole & ~brain))
    return _assemble(whole & brain, core & brain, nec & brain), clipped


def _repair(label: np.ndarray, lo: np.ndarray, shape: Sequence[int], rim_closed: bool) -> tuple[int, int]:
    """Apply the N1 (and, if ``rim_closed``, N2) repairs in place around the window; return the counts."""
    vol = np.asarray(label.shape)
    wlo = np.clip(lo - 1, 0, vol)
    whi = np.clip(lo + np.asarray(shape) + 1, 0, vol)
    view = label[_slices(wlo, np.maximum(whi, wlo))]
    exposed = core_exposed(view)
    n1 = int(np.count_nonzero(exposed))
    if n1:
        view[exposed] = EDEMA
    n2 = 0
    if rim_closed:
        nexp = necrosis_exposed(view)
        n2 = int(np.count_nonzero(nexp))
        if n2:
            view[nexp] = ENHANCING
    return n1, n2


def _measure(label: np.ndarray, lo: np.ndarray, shape: Sequence[int]) -> tuple[dict[str, int], list[float] | None]:
    vlo, in_map, _ = _window(label, lo, shape)
    crop = label[in_map]
    counts = _counts(crop)
    if counts["whole"] == 0:
        return counts, None
    return counts, _centroid(crop, vlo).tolist()


def _rotation(deg: np.ndarray) -> np.ndarray:
    """Rotation by deg[0] about x (R), then deg[1] about y (A), then deg[2] about z (S): Rz Ry Rx."""
    ax, ay, az = np.deg2rad(deg)
    cx, sx, cy, sy, cz, sz = math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay), math.cos(az), math.sin(az)
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cx, -sx], [0.0, sx, cx]])
    ry = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
    rz = np.array([[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]])
    return rz @ ry @ rx


def _fit(
    label: np.ndarray, crop: np.ndarray, lo: np.ndarray, clip: bool, what: str, where: str
) -> tuple[np.ndarray, int]:
    """Check that the crop's tumour placed at ``lo`` lies in the brain; clip or raise otherwise."""
    tumour = crop > 0
    outside = tumour & ~_brain_window(label, lo, crop.shape)
    n_out = int(np.count_nonzero(outside))
    if n_out == 0:
        return crop, 0
    total = int(np.count_nonzero(tumour))
    if not clip:
        raise EditError(
            f"{what}: {where}: the tumour does not fit inside the brain there: expected all {total} tumour "
            f"voxels inside the brain (label > 0), received {n_out} outside the brain or the volume; "
            f"choose another centre or pass clip=True to drop them"
        )
    if n_out == total:
        raise EditError(
            f"{what}: {where}: clip=True would drop the whole tumour: expected some of its {total} voxels "
            f"inside the brain, received none"
        )
    return np.where(outside, np.uint8(0), crop).astype(np.uint8), n_out


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, Integral):
        return int(obj)
    if isinstance(obj, Real):
        return float(obj)
    return obj


# --------------------------------------------------------------------------------------------------
# fill rule


def _fill_box(label: np.ndarray, lo: np.ndarray, mask_crop: np.ndarray, what: str) -> np.ndarray:
    """A copy of ``label`` with the voxels of ``mask_crop`` (placed at ``lo``) filled by the fill rule."""
    vol = np.asarray(label.shape, dtype=np.int64)
    hi = lo + np.asarray(mask_crop.shape)
    margin = _FILL_MARGIN
    while True:
        blo = np.maximum(lo - margin, 0)
        bhi = np.minimum(hi + margin, vol)
        sub = label[_slices(blo, bhi)]
        inside = np.zeros(sub.shape, dtype=bool)
        inside[_slices(lo - blo, hi - blo)] = mask_crop
        fill = inside & (sub > 0)
        src = (sub >= 1) & (sub <= 3) & ~inside
        whole_volume = bool(np.all(blo == 0) and np.all(bhi == vol))
        if not fill.any():
            return label.copy()
        if src.any():
            dist, idx = ndimage.distance_transform_edt(~src, return_indices=True)
            pts = np.nonzero(fill)
            if whole_volume:
                break
            # exact iff no voxel beyond the box edge can be nearer than the nearest one found inside
            limit = np.full(pts[0].shape, np.inf)
            for axis in range(3):
                if blo[axis] > 0:
                    limit = np.minimum(limit, pts[axis] + 1)
                if bhi[axis] < vol[axis]:
                    limit = np.minimum(limit, sub.shape[axis] - pts[axis])
            if np.all(dist[pts] <= limit):
                break
        elif whole_volume:
            raise EditError(
                f"{what}: fill rule: expected healthy brain tissue (labels 1-3) to fill "
                f"{int(np.count_nonzero(fill))} vacated voxels from, received none in the whole map"
            )
        margin *= 2
    out = label.copy()
    view = out[_slices(blo, bhi)]
    view[pts] = sub[idx[0][pts], idx[1][pts], idx[2][pts]]
    return out


def fill_healthy(label: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """THE fill rule: a copy of ``label`` whose ``mask`` voxels inside the brain get the anatomy label
    (1/2/3) of the nearest healthy brain voxel (label 1..3, not in ``mask``); outside the brain they stay 0.

    Exact (see the module docstring), computed over the mask's bounding box plus a margin.
    Raises :class:`EditError` if ``mask`` has the wrong shape or the map has no healthy tissue to fill from.
    """
    what = "fill_healthy"
    check_array(label, what=what)
    mask = np.asarray(mask)
    if mask.shape != label.shape:
        raise EditError(f"{what}: mask: expected shape {label.shape}, received {mask.shape}")
    if mask.dtype != np.bool_:
        mask = mask != 0
    box = mask_box(mask & (label > 0))
    if box is None:
        return label.copy()
    lo = np.array([s.start for s in box], dtype=np.int64)
    return _fill_box(label, lo, mask[box], what)


# --------------------------------------------------------------------------------------------------
# edits


def resize_tumor(label: np.ndarray, factor: float, *, seed: int) -> EditResult:
    """Scale the whole tumour's volume by ``factor`` about its centroid, keeping the sub-region nesting.

    Every nested region (whole tumour, core, necrosis) is scaled by ``factor ** (1/3)`` in each
    direction and keeps ``factor`` x its voxel count (see *Geometry*); growth is restricted to the
    brain: voxels that would fall outside it (label 0) are dropped, ``params["brain_limited"]`` is
    then True and ``params["achieved_factor"]`` (new / original whole-tumour voxels) says what was
    reached. Voxels the tumour gives up are filled by the fill rule. ``seed`` is recorded (the edit
    draws nothing).
    """
    what = "resize"
    check_array(label, what=what)
    seed = _require_seed(seed, what)
    if isinstance(factor, bool) or not isinstance(factor, Real) or not math.isfinite(float(factor)):
        raise EditError(f"{what}: factor: expected a finite number, received {factor!r}")
    factor = float(factor)
    if not FACTOR_RANGE[0] <= factor <= FACTOR_RANGE[1]:
        raise EditError(f"{what}: factor: expected a volume ratio in {list(FACTOR_RANGE)}, received {factor}")
    tum = _extract(label, what, "resize")
    scale = factor ** (1.0 / 3.0)
    fields, origin = _fields(tum.crop, tum.lo)
    c = tum.centroid
    fshape = np.asarray(fields.shape[1:], dtype=np.float64)
    olo = np.floor(c + scale * (origin - c)).astype(np.int64) - 1
    ohi = np.ceil(c + scale * (origin + fshape - 1 - c)).astype(np.int64) + 2
    oshape = ohi - olo
    res = _resample_scaled(fields, origin, c, scale, olo, oshape)
    crop, clipped = _regions(res, _brain_window(label, olo, oshape), tum.counts, factor)
    out = _fill_box(label, tum.lo, tum.crop > 0, what)
    _place(out, olo, crop)
    n1, n2 = _repair(out, olo, oshape, tum.rim_closed)
    counts, centroid = _measure(out, olo, oshape)
    params = {
        "factor": factor,
        "seed": seed,
        "scale": scale,
        "achieved_factor": counts["whole"] / tum.counts["whole"],
        "brain_limited": clipped > 0,
        "clipped_voxels": clipped,
        "centroid_vox": c.tolist(),
        "new_centroid_vox": centroid,
        "original_voxels": tum.counts,
        "new_voxels": counts,
        "repaired_core_to_edema": n1,
        "repaired_necrosis_to_enhancing": n2,
    }
    return EditResult(label=out, op="resize", params=_jsonable(params))


def move_tumor(
    label: np.ndarray,
    center_vox: tuple[float, float, float] | None = None,
    *,
    center_mm: tuple[float, float, float] | None = None,
    affine: np.ndarray | None = None,
    rotate_deg: tuple[float, float, float] = (0.0, 0.0, 0.0),
    clip: bool = False,
    seed: int,
) -> EditResult:
    """Translate (and optionally rotate) the tumour so its centroid lands at the requested centre.

    The centre is given in voxel coordinates (``center_vox``) or in mm with the grid's 4x4
    voxel-to-mm ``affine`` (``center_mm``). ``rotate_deg`` rotates the tumour about its centroid by
    (x, y, z) degrees, applied as Rz Ry Rx about the grid's x (R), y (A), z (S) axes. Without
    rotation the label crop is shifted by whole voxels: the shape is exact and the centroid lands
    within half a voxel per axis of the centre. The whole tumour must land inside the brain
    (label > 0); otherwise :class:`EditError` names the edit, the centre and how many voxels fall
    outside — or, with ``clip=True``, those voxels are dropped (``params["clipped_voxels"]``).
    Vacated voxels are filled by the fill rule. ``seed`` is recorded (the edit draws nothing).
    """
    what = "move"
    check_array(label, what=what)
    seed = _require_seed(seed, what)
    target, centre_params = _resolve_centre(center_vox, center_mm, affine, what)
    rot_deg = _require_triple(rotate_deg, "rotate_deg", what)
    clip = _require_bool(clip, "clip", what)
    tum = _extract(label, what, "move")
    c = tum.centroid
    if not np.any(rot_deg):
        shift = np.rint(target - c).astype(np.int64)
        crop, nlo = tum.crop, tum.lo + shift
    else:
        rot = _rotation(rot_deg)
        fields, origin = _fields(tum.crop, tum.lo)
        # every tumour voxel, and the smoothed tail that can be kept, lies within this radius of the
        # centroid whatever the rotation: a tight cube, instead of the rotated crop's bounding box
        pts = np.argwhere(tum.crop >= EDEMA) + tum.lo
        radius = float(np.sqrt(((pts - c) ** 2).sum(axis=1).max())) + _PAD
        nlo = np.floor(target - radius).astype(np.int64)
        nhi = np.ceil(target + radius).astype(np.int64) + 1
        res = _resample_affine(fields, origin, c, target, rot, nlo.astype(np.float64), nhi - nlo)
        crop, _ = _regions(res, np.ones(res.shape[1:], dtype=bool), tum.counts, 1.0)
    where = f"center_vox={_fmt(target)}" + (
        f" (center_mm={_fmt(centre_params['center_mm'])})" if centre_params["center_mm"] is not None else ""
    )
    crop, n_out = _fit(label, crop, nlo, clip, what, where)
    out = _fill_box(label, tum.lo, tum.crop > 0, what)
    _place(out, nlo, crop)
    n1, n2 = _repair(out, nlo, crop.shape, tum.rim_closed)
    counts, centroid = _measure(out, nlo, crop.shape)
    params = {
        **centre_params,
        "rotate_deg": rot_deg.tolist(),
        "clip": clip,
        "seed": seed,
        "centroid_vox": c.tolist(),
        "new_centroid_vox": centroid,
        "centroid_error_vox": float(np.linalg.norm(np.asarray(centroid) - target)),
        "clipped_voxels": n_out,
        "original_voxels": tum.counts,
        "new_voxels": counts,
        "repaired_core_to_edema": n1,
        "repaired_necrosis_to_enhancing": n2,
    }
    return EditResult(label=out, op="move", params=_jsonable(params))


def _random_centre(
    healthy: np.ndarray, tum: _Tumour, rng: np.random.Generator, what: str
) -> tuple[np.ndarray, np.ndarray, int]:
    """A seeded white-matter voxel of ``healthy`` at which the tumour fits in the brain."""
    box = mask_box(healthy == 3)
    if box is None:
        raise EditError(f"{what}: recipient: expected white matter (label 3) to place the tumour in, received none")
    lo = np.array([s.start for s in box], dtype=np.int64)
    hi = np.array([s.stop for s in box], dtype=np.int64)
    tested = 0
    drawn = 0
    while tested < MAX_PLACEMENT_TRIES and drawn < 200 * MAX_PLACEMENT_TRIES:
        pts = rng.integers(lo, hi, size=(_BATCH, 3))
        drawn += _BATCH
        for p in pts[healthy[pts[:, 0], pts[:, 1], pts[:, 2]] == 3]:
            tested += 1
            nlo = tum.lo + np.rint(p - tum.centroid).astype(np.int64)
            if not np.any((tum.crop > 0) & ~_brain_window(healthy, nlo, tum.crop.shape)):
                return p.astype(np.int64), nlo, tested
            if tested >= MAX_PLACEMENT_TRIES:
                break
    raise EditError(
        f"{what}: center_vox=None: expected a white-matter centre where the donor tumour "
        f"({tum.counts['whole']} voxels) fits inside the recipient's brain, received none in {tested} "
        f"seeded tries"
    )


def transplant_tumor(
    recipient_label: np.ndarray,
    donor_label: np.ndarray,
    *,
    center_vox: tuple[float, float, float] | None = None,
    clip: bool = False,
    donor_ref: str | None = None,
    seed: int,
) -> EditResult:
    """Place the donor's tumour (labels 4–6, its shape) into the recipient, centroid at ``center_vox``.

    The recipient's own tumour, if any, is removed first (fill rule). With ``center_vox=None`` the
    centre is a seeded random white-matter voxel of the recipient where the whole donor tumour
    fits inside the recipient's brain (up to ``MAX_PLACEMENT_TRIES`` candidates). Both maps are on
    the same canonical spacing (the grids' shapes may differ). A given centre where the tumour does
    not fit raises :class:`EditError` unless ``clip=True``. ``donor_ref`` (e.g. the donor's subject id)
    is recorded with a sha256 of the donor tumour crop.
    """
    what = "transplant"
    check_array(recipient_label, what=f"{what} (recipient)")
    check_array(donor_label, what=f"{what} (donor)")
    seed = _require_seed(seed, what)
    clip = _require_bool(clip, "clip", what)
    if donor_ref is not None and not isinstance(donor_ref, str):
        raise EditError(f"{what}: donor_ref: expected a string or None, received {donor_ref!r}")
    tum = _extract(donor_label, f"{what} (donor)", "transplant")
    rbox = tumour_box(recipient_label)
    removed = 0
    if rbox is None:
        healthy = recipient_label.copy()
    else:
        rcrop = recipient_label[rbox] >= EDEMA
        removed = int(np.count_nonzero(rcrop))
        healthy = _fill_box(recipient_label, np.array([s.start for s in rbox], dtype=np.int64), rcrop, what)
    tries = 0
    if center_vox is None:
        rng = np.random.default_rng(seed)
        centre, nlo, tries = _random_centre(healthy, tum, rng, what)
        crop, n_out = tum.crop, 0
    else:
        centre, _ = _resolve_centre(center_vox, None, None, what)
        nlo = tum.lo + np.rint(centre - tum.centroid).astype(np.int64)
        crop, n_out = _fit(healthy, tum.crop, nlo, clip, what, f"center_vox={_fmt(centre)}")
    out = healthy
    _place(out, nlo, crop)
    n1, n2 = _repair(out, nlo, crop.shape, tum.rim_closed)
    counts, centroid = _measure(out, nlo, crop.shape)
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(tum.crop).tobytes())
    digest.update(np.asarray([*tum.crop.shape, *tum.lo], dtype=np.int64).tobytes())
    params = {
        "center_vox": None if center_vox is None else centre.tolist(),
        "clip": clip,
        "seed": seed,
        "donor_ref": donor_ref,
        "donor_tumour_sha256": digest.hexdigest(),
        "chosen_center_vox": centre.tolist(),
        "placement_tries": tries,
        "donor_centroid_vox": tum.centroid.tolist(),
        "new_centroid_vox": centroid,
        "recipient_tumour_removed_voxels": removed,
        "clipped_voxels": n_out,
        "donor_voxels": tum.counts,
        "new_voxels": counts,
        "repaired_core_to_edema": n1,
        "repaired_necrosis_to_enhancing": n2,
    }
    return EditResult(label=out, op="transplant", params=_jsonable(params))


# --------------------------------------------------------------------------------------------------
# pipeline


def step_seed(seed: int, step_index: int) -> int:
    """The seed of pipeline step ``step_index``: first 64-bit word of ``SeedSequence([seed, step_index])``."""
    return int(np.random.SeedSequence([int(seed), int(step_index)]).generate_state(1, dtype=np.uint64)[0])


_ALLOWED: Final[dict[str, tuple[frozenset[str], frozenset[str]]]] = {
    # op: (required, optional)
    "resize": (frozenset({"factor"}), frozenset()),
    "move": (frozenset(), frozenset({"center_vox", "center_mm", "affine", "rotate_deg", "clip"})),
    "transplant": (frozenset({"donor"}), frozenset({"center_vox", "clip"})),
}


def _describe(params: object) -> str:
    if not isinstance(params, Mapping):
        return repr(params)
    shown = {
        k: (f"<array {v.shape} {v.dtype}>" if isinstance(v, np.ndarray) else _jsonable(v)) for k, v in params.items()
    }
    return json.dumps(shown, sort_keys=True, default=repr)


def _as_spec(spec: object) -> EditSpec:
    if isinstance(spec, EditSpec):
        return spec
    if isinstance(spec, Mapping) and set(spec) <= {"op", "params"} and "op" in spec:
        return EditSpec(op=spec["op"], params=spec.get("params", {}))
    raise EditError(f"expected an EditSpec or a mapping with 'op' and 'params', received {spec!r}")


def _run_step(label: np.ndarray, spec: EditSpec, seed: int, donors: Mapping[str, np.ndarray] | None) -> EditResult:
    if spec.op not in _ALLOWED:
        raise EditError(f"op: expected one of {list(EDIT_OPS)}, received {spec.op!r}")
    if not isinstance(spec.params, Mapping):
        raise EditError(f"params: expected a mapping, received {type(spec.params).__name__}")
    required, optional = _ALLOWED[spec.op]
    keys = set(spec.params)
    missing = sorted(required - keys)
    unknown = sorted(keys - required - optional)
    if missing or unknown:
        raise EditError(
            f"params: expected {sorted(required)} and optionally {sorted(optional)}, received "
            f"{sorted(keys)} (missing {missing}, unknown {unknown}; the seed is derived per step)"
        )
    p = dict(spec.params)
    if spec.op == "resize":
        return resize_tumor(label, p["factor"], seed=seed)
    if spec.op == "move":
        return move_tumor(label, seed=seed, **p)
    donor = p.pop("donor")
    ref: str | None
    if isinstance(donor, str):
        if donors is None or donor not in donors:
            known = sorted(donors) if donors is not None else []
            raise EditError(f"donor: expected a key of donors {known}, received {donor!r}")
        ref, donor_label = donor, donors[donor]
    elif isinstance(donor, np.ndarray):
        ref, donor_label = None, donor
    else:
        raise EditError(f"donor: expected a key of donors or a label map, received {type(donor).__name__}")
    return transplant_tumor(label, donor_label, donor_ref=ref, seed=seed, **p)


def apply_pipeline(
    label: np.ndarray,
    edits: Sequence[EditSpec],
    *,
    seed: int,
    donors: Mapping[str, np.ndarray] | None = None,
) -> PipelineResult:
    """Apply ``edits`` in order; step ``i`` runs with :func:`step_seed` ``(seed, i)``.

    After every step the map is checked (``check_label_map`` with the input's brain outline); any
    failure — a bad parameter, an infeasible edit, an invalid result — raises :class:`EditError`
    naming the step index, the edit and its parameters. ``donors`` maps the ``donor`` keys of
    ``transplant`` steps to label maps. Returns the final map and, per step, ``{"step", "op",
    "seed", "params"}`` (JSON-able; a transplant's donor is recorded by key and sha256).
    """
    what = "apply_pipeline"
    check_array(label, what=what)
    seed = _require_seed(seed, what)
    if isinstance(edits, (str, bytes)) or not isinstance(edits, Sequence):
        raise EditError(f"{what}: edits: expected a sequence of EditSpec, received {type(edits).__name__}")
    original_brain = label > 0
    current = label
    records: list[dict[str, Any]] = []
    for index, raw in enumerate(edits):
        derived = step_seed(seed, index)
        op = raw.op if isinstance(raw, EditSpec) else (raw.get("op") if isinstance(raw, Mapping) else None)
        try:
            spec = _as_spec(raw)
            context = f"{what} step {index} ({spec.op}, params {_describe(spec.params)})"
        except EditError as err:
            raise EditError(f"{what} step {index} ({op!r}): {err}") from err
        try:
            result = _run_step(current, spec, derived, donors)
            check_label_map(result.label, original_brain=original_brain, what="result")
        except EditError as err:
            raise EditError(f"{context}: {err}") from err
        records.append({"step": index, "op": spec.op, "seed": derived, "params": result.params})
        current = result.label
    final = current.copy() if current is label else current
    return PipelineResult(label=final, edits=tuple(records), seed=seed)


__all__ = [
    "EDIT_OPS",
    "FACTOR_RANGE",
    "MAX_PLACEMENT_TRIES",
    "EditOp",
    "EditResult",
    "EditSpec",
    "PipelineResult",
    "apply_pipeline",
    "fill_healthy",
    "move_tumor",
    "resize_tumor",
    "step_seed",
    "transplant_tumor",
]
