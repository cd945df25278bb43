"""Checks that a label map is a valid conditioning input after an edit (design.md §2 label table).

``check_label_map`` raises :class:`EditError` (a ``ValueError``) naming the rule, what was expected
and what was received. The rules, in the order they are checked:

1. **Array.** A 3-D ``numpy.ndarray`` of dtype ``uint8``.
2. **Values.** Every value is a canonical label, 0..6 (0 background, 1 CSF, 2 GM, 3 WM, 4 edema,
   5 necrotic / non-enhancing core, 6 enhancing tumour).
3. **Brain outline.** Tumour voxels (4|5|6) lie in the brain. The brain of a map is ``label > 0``,
   so this holds by construction for the map itself; with ``original_brain`` (the ``label > 0`` mask
   of the map before editing) the brain outline must be *unchanged*: ``(label > 0) == original_brain``
   voxel for voxel. Edits move tumour and anatomy inside the brain; they never add or remove brain.
4. **Nesting rule N1 — the core is enclosed.** Let the *whole tumour* be 4|5|6 and the *core* 5|6.
   In every connected component of the whole tumour (26-connectivity) that contains at least one
   edema voxel (4), no core voxel shares a *face* (6-neighbourhood) with healthy brain tissue
   (1|2|3). In words: where a tumour has an edema shell, the core sits inside tumour tissue and
   never touches healthy tissue directly. Two cases are deliberately allowed, because real
   annotations have them: a core voxel may touch background (0) — a tumour at the brain's edge —
   and a component without any edema (a core-only lesion) is exempt.

A second, weaker nesting property — **N2, the closed enhancing rim** (necrosis 5 never shares a face
with edema or healthy tissue 1..4, i.e. enhancing tumour lies between necrosis and edema) — is *not*
checked here: real BraTS annotations often have non-enhancing core touching edema directly. The
edits in :mod:`synth_core.edit.ops` preserve N2 when their input tumour satisfies it;
:func:`necrosis_exposed` measures it.

All work is done on the tumour's bounding box (plus a one-voxel ring), not the whole volume, except
the O(N) value and outline comparisons.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from scipy import ndimage

MAX_LABEL: Final[int] = 6
EDEMA: Final[int] = 4
NECROTIC: Final[int] = 5
ENHANCING: Final[int] = 6
_FULL_CONNECTIVITY: Final[np.ndarray] = np.ones((3, 3, 3), dtype=bool)


class EditError(ValueError):
    """A label-map edit cannot be done, or its result breaks a rule of the canonical label map."""


def mask_box(mask: np.ndarray, *, ring: int = 0) -> tuple[slice, slice, slice] | None:
    """Bounding box of a 3-D boolean ``mask`` grown by ``ring`` voxels (clipped), or None if empty.

    Uses axis projections (two passes over the volume), never ``np.nonzero`` of the whole volume.
    """
    proj_xy = mask.any(axis=2)
    xs = np.flatnonzero(proj_xy.any(axis=1))
    if xs.size == 0:
        return None
    ys = np.flatnonzero(proj_xy.any(axis=0))
    zs = np.flatnonzero(mask.any(axis=(0, 1)))
    box = []
    for axis, idx in enumerate((xs, ys, zs)):
        lo = max(int(idx[0]) - ring, 0)
        hi = min(int(idx[-1]) + 1 + ring, mask.shape[axis])
        box.append(slice(lo, hi))
    return box[0], box[1], box[2]


def tumour_box(label: np.ndarray, *, ring: int = 0) -> tuple[slice, slice, slice] | None:
    """Bounding box of the tumour (labels 4|5|6) grown by ``ring`` voxels (clipped), or None if none."""
    return mask_box(label >= EDEMA, ring=ring)


def face_touches(mask: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` that share a face (6-neighbourhood) with a voxel of ``other``.

    Voxels beyond the array's edge count as not in ``other``.
    """
    near = np.zeros(mask.shape, dtype=bool)
    for axis in range(mask.ndim):
        head = [slice(None)] * mask.ndim
        tail = [slice(None)] * mask.ndim
        head[axis] = slice(None, -1)
        tail[axis] = slice(1, None)
        near[tuple(head)] |= other[tuple(tail)]
        near[tuple(tail)] |= other[tuple(head)]
    return near & mask


def core_exposed(label: np.ndarray) -> np.ndarray:
    """Boolean mask of the core voxels that break nesting rule N1 (see the module docstring).

    ``label`` may be a whole map or a crop; pass a crop with a one-voxel ring around the tumour so
    that the neighbours are seen, and with every tumour component whole.
    """
    core = label >= NECROTIC
    healthy = (label >= 1) & (label <= 3)
    exposed = face_touches(core, healthy)
    if not exposed.any():
        return exposed
    components, n = ndimage.label(label >= EDEMA, structure=_FULL_CONNECTIVITY)
    has_edema = np.zeros(n + 1, dtype=bool)
    has_edema[np.unique(components[label == EDEMA])] = True
    has_edema[0] = False
    return exposed & has_edema[components]


def necrosis_exposed(label: np.ndarray) -> np.ndarray:
    """Boolean mask of the necrotic voxels (5) that share a face with labels 1..4 (property N2)."""
    return face_touches(label == NECROTIC, (label >= 1) & (label <= EDEMA))


def check_array(label: object, *, what: str = "check_label_map") -> None:
    """Rules 1–2 only: a 3-D uint8 ``numpy.ndarray`` whose values are 0..6 (edits' input check)."""
    if not isinstance(label, np.ndarray):
        raise EditError(f"{what}: label map: expected a numpy.ndarray, received {type(label).__name__}")
    if label.ndim != 3:
        raise EditError(f"{what}: label map: expected 3 dimensions (X, Y, Z), received shape {label.shape}")
    if label.dtype != np.uint8:
        raise EditError(f"{what}: label map: expected dtype uint8, received {label.dtype}")
    top = int(label.max()) if label.size else 0
    if top > MAX_LABEL:
        bad = int(np.count_nonzero(label > MAX_LABEL))
        raise EditError(
            f"{what}: label values: expected a subset of 0..{MAX_LABEL}, received {bad} voxels above "
            f"{MAX_LABEL} (largest {top})"
        )


def check_label_map(
    label: np.ndarray,
    *,
    original_brain: np.ndarray | None = None,
    what: str = "check_label_map",
) -> None:
    """Raise :class:`EditError` unless ``label`` obeys rules 1–4 of the module docstring.

    ``what`` prefixes every message (e.g. ``"resize"`` or ``"apply_pipeline step 2 (move)"``).
    """
    check_array(label, what=what)
    if original_brain is not None:
        if original_brain.shape != label.shape:
            raise EditError(f"{what}: original_brain: expected shape {label.shape}, received {original_brain.shape}")
        brain = label > 0
        tumour_outside = (label >= EDEMA) & ~original_brain
        if tumour_outside.any():
            first = tuple(int(v) for v in np.argwhere(tumour_outside)[0])
            raise EditError(
                f"{what}: tumour outside the brain: expected every tumour voxel (labels 4-6) inside the "
                f"original brain, received {int(tumour_outside.sum())} outside (first at voxel {first})"
            )
        changed = brain != original_brain
        if changed.any():
            first = tuple(int(v) for v in np.argwhere(changed)[0])
            added = int(np.count_nonzero(brain & ~original_brain))
            removed = int(np.count_nonzero(~brain & original_brain))
            raise EditError(
                f"{what}: brain outline changed: expected (label > 0) identical to the original brain, "
                f"received {added} voxels added and {removed} removed (first at voxel {first})"
            )
    box = tumour_box(label, ring=1)
    if box is None:
        return
    exposed = core_exposed(label[box])
    if exposed.any():
        offset = np.array([s.start for s in box])
        first = tuple(int(v) for v in np.argwhere(exposed)[0] + offset)
        raise EditError(
            f"{what}: nesting rule N1 (core enclosed): expected no core voxel (labels 5|6) sharing a face "
            f"with healthy tissue (labels 1-3) in a tumour component that has edema, received "
            f"{int(exposed.sum())} such voxels (first at voxel {first})"
        )


__all__ = [
    "EditError",
    "check_array",
    "check_label_map",
    "core_exposed",
    "face_touches",
    "mask_box",
    "necrosis_exposed",
    "tumour_box",
]
