"""Tumour attributes measured on a label map, and the pathology strata they fall into (design.md §3).

Pure functions on arrays (plus :func:`source_distribution`, which reads a committed snapshot). The same
:func:`measure` is used to plan a dataset (on simulated edits) and to describe its final samples, so a
plan's predicted stratum is the stratum a reader measures on the published label map.

Definitions (unified labels, design.md §2: 4 edema, 5 necrotic / non-enhancing core, 6 enhancing):

- Volumes (ml): ``edema`` = 4, ``necrotic`` = 5, ``enhancing`` = 6, ``whole`` = 4|5|6, ``core`` = 5|6;
  voxel count × the voxel volume ``|det(affine[:3, :3])|`` mm³ / 1000.
- ``centroid_mm``: the whole tumour's voxel centroid mapped through the affine (world, scanner RAS mm).
- ``hemisphere``: the brain midline is the world x of the *brain's* centroid (brain = ``label > 0``, the
  tumour included, or the mask passed as ``brain``). A per-brain midline instead of ``x = 0`` keeps the
  definition valid whatever the crop/padding of the canonical grid and whatever the head's position in
  the scanner. RAS+: a tumour centroid with world ``x < midline`` is ``"left"``, otherwise ``"right"``.
- ``region``: where the tumour centroid lies along the brain's anterior–posterior extent. With
  ``y_min``/``y_max`` the world y of the most posterior/anterior brain voxel centres (RAS+: +y is
  anterior) and ``f = (y − y_min) / (y_max − y_min)``: ``f ≥ 2/3`` → ``"frontal"`` (anterior third),
  ``f < 1/3`` → ``"posterior"`` (posterior third), otherwise ``"central"``. Coarse thirds of each brain's
  own extent, not an atlas lobe.
- ``n_components``: the number of 26-connected components of the whole tumour with at least
  ``min_component_voxels`` voxels (default 10: specks left by resampling do not count), but at least 1
  whenever the map has any tumour voxel.
- ``enhancing`` / ``necrosis``: any voxel of label 6 / label 5.

A tumour-free map has all volumes 0, ``centroid_mm``/``hemisphere``/``region`` ``None``,
``n_components`` 0, and no stratum.

Strata. :func:`stratum_of` joins ``axis=value`` for the configured axes (``StrataConfig.axes``, in that
order) with ``|``, e.g. ``"volume=10-50ml|hemisphere=left|enhancing=yes"``. Values per axis:

- ``volume``: bins ``[0, e0)`` → ``"<e0ml"``, ``[e_k, e_k+1)`` → ``"e_k-e_k+1ml"``, ``[e_last, ∞)`` →
  ``">e_lastml"`` (edges printed with ``%g``: ``10.0`` → ``10``);
- ``hemisphere``: ``left``, ``right``; ``region``: ``frontal``, ``central``, ``posterior``;
- ``enhancing``, ``necrosis``: ``yes``, ``no``;
- ``components``: ``"1"``, …, ``"m-1"``, ``"m+"`` with ``m = max_components`` (default 2: ``1``, ``2+``).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import pandas as pd
from scipy import ndimage

from schemas.generate import REGIONS, STRATUM_AXES, StrataConfig

if TYPE_CHECKING:
    from synth_core.storage import Store

LABEL_ARRAY: Final[str] = "labels/anatomy/0"
EDEMA, NECROTIC, ENHANCING = 4, 5, 6
MAX_LABEL: Final[int] = 6
HEMISPHERES: Final[tuple[str, ...]] = ("left", "right")
YES_NO: Final[tuple[str, ...]] = ("yes", "no")
DEFAULT_MIN_COMPONENT_VOXELS: Final[int] = 10
_STRUCTURE_26: Final[np.ndarray] = np.ones((3, 3, 3), dtype=bool)


@dataclass(frozen=True)
class TumorAttributes:
    """What :func:`measure` found in one label map (see the module docstring for the definitions)."""

    edema_ml: float
    necrotic_ml: float
    enhancing_ml: float
    whole_ml: float
    core_ml: float
    centroid_mm: tuple[float, float, float] | None
    hemisphere: str | None
    region: str | None
    n_components: int
    enhancing: bool
    necrosis: bool

    @property
    def has_tumor(self) -> bool:
        return self.whole_ml > 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-able: plain floats/ints/bools/strings, the centroid as a list (or ``None``)."""
        out = asdict(self)
        out["centroid_mm"] = None if self.centroid_mm is None else [float(v) for v in self.centroid_mm]
        return out

    def as_row(self) -> dict[str, Any]:
        """Flat columns for a table: the centroid as ``centroid_{x,y,z}_mm`` (NaN without a tumour)."""
        out = asdict(self)
        centroid = out.pop("centroid_mm")
        for axis, value in zip("xyz", centroid if centroid is not None else (np.nan,) * 3, strict=True):
            out[f"centroid_{axis}_mm"] = float(value)
        return out


def _check_label(label: np.ndarray) -> np.ndarray:
    arr = np.asarray(label)
    if arr.ndim != 3:
        raise ValueError(f"label: expected a 3-D label map, received shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"label: expected an integer (uint8) label map, received dtype {arr.dtype}")
    return arr


def _check_affine(affine: np.ndarray) -> np.ndarray:
    aff = np.asarray(affine, dtype=np.float64)
    if aff.shape != (4, 4) or not np.isfinite(aff).all():
        raise ValueError(f"affine: expected a finite 4x4 matrix, received shape {aff.shape}")
    if abs(float(np.linalg.det(aff[:3, :3]))) <= 0.0:
        raise ValueError("affine: expected a non-singular 3x3 part, received a singular matrix")
    return aff


def _voxel_centroid(mask: np.ndarray) -> np.ndarray:
    """Voxel-index centroid of a boolean mask via projections (no coordinate arrays)."""
    plane = mask.sum(axis=2, dtype=np.int64)  # (x, y)
    px = plane.sum(axis=1)
    py = plane.sum(axis=0)
    pz = mask.sum(axis=(0, 1), dtype=np.int64)
    n = float(px.sum())
    return np.array(
        [
            float(np.dot(px, np.arange(px.size))) / n,
            float(np.dot(py, np.arange(py.size))) / n,
            float(np.dot(pz, np.arange(pz.size))) / n,
        ],
        dtype=np.float64,
    )


def _world_y_extent(mask: np.ndarray, affine: np.ndarray) -> tuple[float, float]:
    """World y of the most posterior and most anterior voxel centre of ``mask``."""
    row = affine[1, :3]
    nz = np.flatnonzero(np.abs(row) > 1e-12 * np.abs(row).max())
    if nz.size == 1:  # axis-aligned (the canonical RAS+ grid): one voxel axis carries y
        axis = int(nz[0])
        others = tuple(a for a in range(3) if a != axis)
        idx = np.flatnonzero(mask.any(axis=others))
        ends = row[axis] * np.array([idx[0], idx[-1]], dtype=np.float64) + affine[1, 3]
    else:  # oblique grid: exact over every voxel
        coords = np.argwhere(mask).astype(np.float64)
        ys = coords @ row + affine[1, 3]
        ends = np.array([ys.min(), ys.max()], dtype=np.float64)
    return float(ends.min()), float(ends.max())


@dataclass(frozen=True)
class BrainFrame:
    """The per-brain reference of ``hemisphere`` and ``region``: world midline x and y extent (mm)."""

    midline_x_mm: float
    y_min_mm: float
    y_max_mm: float


def brain_frame(brain: np.ndarray, affine: np.ndarray) -> BrainFrame:
    """Midline (world x of the brain's centroid) and anterior–posterior extent of a brain mask."""
    mask = np.asarray(brain).astype(bool, copy=False)
    aff = _check_affine(affine)
    if mask.ndim != 3 or not mask.any():
        raise ValueError(
            f"brain: expected a non-empty 3-D mask, received shape {mask.shape} with {int(mask.sum())} voxels"
        )
    midline_x = float(aff[0, :3] @ _voxel_centroid(mask) + aff[0, 3])
    y_min, y_max = _world_y_extent(mask, aff)
    return BrainFrame(midline_x, y_min, y_max)


def hemisphere_of(x_mm: float, frame: BrainFrame) -> str:
    """``left`` if ``x_mm`` is left of the brain midline (RAS+: smaller x), else ``right``."""
    return HEMISPHERES[0] if x_mm < frame.midline_x_mm else HEMISPHERES[1]


def region_of(y_mm: float, y_min: float, y_max: float) -> str:
    """``frontal``/``central``/``posterior`` third of ``[y_min, y_max]`` (RAS+: +y anterior)."""
    f = 0.5 if y_max <= y_min else (y_mm - y_min) / (y_max - y_min)
    if f >= 2.0 / 3.0:
        return REGIONS[0]
    if f < 1.0 / 3.0:
        return REGIONS[2]
    return REGIONS[1]


def measure(
    label: np.ndarray,
    affine: np.ndarray,
    *,
    brain: np.ndarray | None = None,
    min_component_voxels: int = DEFAULT_MIN_COMPONENT_VOXELS,
) -> TumorAttributes:
    """Measure the tumour of one label map (definitions in the module docstring).

    ``brain``: the brain mask used for the midline and the anterior–posterior extent (default
    ``label > 0``). Works in the tumour's bounding box for the component count.
    """
    lab = _check_label(label)
    aff = _check_affine(affine)
    if min_component_voxels < 1:
        raise ValueError(f"min_component_voxels: expected an integer >= 1, received {min_component_voxels}")
    lo, hi = int(lab.min(initial=0)), int(lab.max(initial=0))
    if lo < 0 or hi > MAX_LABEL:
        bad = lo if lo < 0 else hi
        raise ValueError(f"label: expected values in 0..{MAX_LABEL} (design.md §2), received {bad}")
    counts = np.bincount(lab.ravel(), minlength=MAX_LABEL + 1)
    vox_ml = abs(float(np.linalg.det(aff[:3, :3]))) / 1000.0
    n_ed, n_nc, n_en = (int(counts[v]) for v in (EDEMA, NECROTIC, ENHANCING))
    n_whole = n_ed + n_nc + n_en
    volumes = dict(
        edema_ml=n_ed * vox_ml,
        necrotic_ml=n_nc * vox_ml,
        enhancing_ml=n_en * vox_ml,
        whole_ml=n_whole * vox_ml,
        core_ml=(n_nc + n_en) * vox_ml,
    )
    if n_whole == 0:
        return TumorAttributes(
            **volumes, centroid_mm=None, hemisphere=None, region=None, n_components=0, enhancing=False, necrosis=False
        )

    if brain is None:
        brain_mask = lab > 0
    else:
        brain_mask = np.asarray(brain).astype(bool, copy=False)
        if brain_mask.shape != lab.shape:
            raise ValueError(f"brain: expected a mask of shape {lab.shape}, received {brain_mask.shape}")
        if not brain_mask.any():
            raise ValueError("brain: expected a non-empty brain mask, received an empty one")

    tumour = lab >= EDEMA
    box = tuple(
        slice(int(idx[0]), int(idx[-1]) + 1)
        for idx in (np.flatnonzero(tumour.any(axis=tuple(a for a in range(3) if a != k))) for k in range(3))
    )
    crop = tumour[box]
    c_vox = _voxel_centroid(crop) + np.array([s.start for s in box], dtype=np.float64)
    centroid = aff[:3, :3] @ c_vox + aff[:3, 3]

    components, n_all = ndimage.label(crop, structure=_STRUCTURE_26)
    if n_all > 1:
        sizes = np.bincount(components.ravel())[1:]
        n_components = max(1, int((sizes >= min_component_voxels).sum()))
    else:
        n_components = 1

    frame = brain_frame(brain_mask, aff)
    return TumorAttributes(
        **volumes,
        centroid_mm=(float(centroid[0]), float(centroid[1]), float(centroid[2])),
        hemisphere=hemisphere_of(float(centroid[0]), frame),
        region=region_of(float(centroid[1]), frame.y_min_mm, frame.y_max_mm),
        n_components=n_components,
        enhancing=n_en > 0,
        necrosis=n_nc > 0,
    )


ATTRIBUTE_COLUMNS: Final[tuple[str, ...]] = tuple(
    TumorAttributes(0.0, 0.0, 0.0, 0.0, 0.0, None, None, None, 0, False, False).as_row()
)
"""Column names of :meth:`TumorAttributes.as_row`, in order."""


# ---------------------------------------------------------------------------------------------- strata


def _fmt(edge: float) -> str:
    return f"{edge:g}"


def volume_bin_labels(config: StrataConfig) -> tuple[str, ...]:
    """The volume axis values, smallest first: ``"<10ml"``, ``"10-50ml"``, ``">50ml"`` by default."""
    edges = config.volume_bins_ml
    inner = [f"{_fmt(lo)}-{_fmt(hi)}ml" for lo, hi in itertools.pairwise(edges)]
    return (f"<{_fmt(edges[0])}ml", *inner, f">{_fmt(edges[-1])}ml")


def volume_bin_range(value: str, config: StrataConfig) -> tuple[float, float]:
    """``[low, high)`` in ml of a volume bin label (``0`` / ``inf`` for the open ends)."""
    labels = volume_bin_labels(config)
    if value not in labels:
        raise ValueError(f"volume: expected one of {list(labels)}, received {value!r}")
    k = labels.index(value)
    edges = (0.0, *config.volume_bins_ml, float("inf"))
    return float(edges[k]), float(edges[k + 1])


def component_labels(config: StrataConfig) -> tuple[str, ...]:
    m = config.max_components
    return (*(str(k) for k in range(1, m)), f"{m}+")


def axis_values(axis: str, config: StrataConfig) -> tuple[str, ...]:
    """Every value of one stratum axis, in its natural order."""
    if axis == "volume":
        return volume_bin_labels(config)
    if axis == "hemisphere":
        return HEMISPHERES
    if axis == "region":
        return REGIONS
    if axis in ("enhancing", "necrosis"):
        return YES_NO
    if axis == "components":
        return component_labels(config)
    raise ValueError(f"axis: valid choices are {list(STRATUM_AXES)}, received {axis!r}")


def _axis_value(axis: str, attrs: TumorAttributes, config: StrataConfig) -> str:
    if axis == "volume":
        labels = volume_bin_labels(config)
        k = int(np.searchsorted(np.asarray(config.volume_bins_ml, dtype=np.float64), attrs.whole_ml, side="right"))
        return labels[k]
    if axis == "hemisphere":
        return str(attrs.hemisphere)
    if axis == "region":
        return str(attrs.region)
    if axis == "enhancing":
        return YES_NO[0] if attrs.enhancing else YES_NO[1]
    if axis == "necrosis":
        return YES_NO[0] if attrs.necrosis else YES_NO[1]
    if axis == "components":
        m = config.max_components
        return f"{m}+" if attrs.n_components >= m else str(attrs.n_components)
    raise ValueError(f"axis: valid choices are {list(STRATUM_AXES)}, received {axis!r}")


def format_stratum(values: Mapping[str, str], config: StrataConfig) -> str:
    """The stratum key of per-axis values (every configured axis, in the configured order)."""
    missing = [a for a in config.axes if a not in values]
    if missing:
        raise ValueError(f"values: expected a value for every axis {list(config.axes)}, missing {missing}")
    return "|".join(f"{a}={values[a]}" for a in config.axes)


def parse_stratum(key: str, config: StrataConfig) -> dict[str, str]:
    """Per-axis values of a stratum key; raises ``ValueError`` for a key not in :func:`all_strata`."""
    parts = key.split("|") if isinstance(key, str) else []
    values: dict[str, str] = {}
    for part in parts:
        axis, sep, value = part.partition("=")
        if not sep:
            break
        values[axis] = value
    if (
        len(parts) != len(config.axes)
        or list(values) != list(config.axes)
        or any(values[a] not in axis_values(a, config) for a in config.axes)
    ):
        raise ValueError(
            f"stratum: expected a key of axes {list(config.axes)} such as {all_strata(config)[0]!r}, received {key!r}"
        )
    return values


def stratum_of(attrs: TumorAttributes, config: StrataConfig) -> str | None:
    """The stratum key of measured attributes; ``None`` for a tumour-free map."""
    if not attrs.has_tumor:
        return None
    return format_stratum({a: _axis_value(a, attrs, config) for a in config.axes}, config)


def all_strata(config: StrataConfig) -> list[str]:
    """Every stratum of the configured axes: the cartesian product, first axis slowest, values in order."""
    grids = [axis_values(a, config) for a in config.axes]
    return [format_stratum(dict(zip(config.axes, combo, strict=True)), config) for combo in itertools.product(*grids)]


# ------------------------------------------------------------------------------------ source snapshots


def read_label(store: Store, key: str) -> tuple[np.ndarray, np.ndarray]:
    """The label map (uint8) and 4x4 affine of the OME-Zarr subject group at ``key``."""
    import zarr

    group = zarr.open_group(store.zarr_store(key, read_only=True), mode="r")
    label = np.asarray(group[LABEL_ARRAY][...], dtype=np.uint8)
    try:
        affine = np.asarray(group.attrs["synthmri"]["affine"], dtype=np.float64)
    except KeyError as exc:
        raise ValueError(f"{key}: expected the affine in attrs['synthmri']['affine'], received none") from exc
    return label, affine


def measure_snapshot(
    store: Store,
    source_id: str,
    snapshot_id: str,
    config: StrataConfig,
    *,
    min_component_voxels: int = DEFAULT_MIN_COMPONENT_VOXELS,
) -> pd.DataFrame:
    """One row per subject of a committed snapshot: ``subject_id``, the attributes and ``stratum``."""
    from synth_core.ingest.snapshot import read_subjects, snapshot_prefix

    subjects = read_subjects(store, source_id, snapshot_id)
    prefix = snapshot_prefix(source_id, snapshot_id)
    rows: list[dict[str, Any]] = []
    for row in subjects.sort_values("subject_id").itertuples(index=False):
        label, affine = read_label(store, f"{prefix}/{row.zarr_path}")
        attrs = measure(label, affine, min_component_voxels=min_component_voxels)
        rows.append({"subject_id": row.subject_id, **attrs.as_row(), "stratum": stratum_of(attrs, config)})
    columns = ["subject_id", *ATTRIBUTE_COLUMNS, "stratum"]
    return pd.DataFrame(rows, columns=columns)


def distribution(strata: pd.Series | list[str | None], config: StrataConfig) -> pd.DataFrame:
    """``stratum``, ``count``, ``fraction`` over :func:`all_strata` (zeros included) of a list of keys.

    ``None`` (tumour-free) entries are not counted; ``fraction`` is over the tumour-bearing entries.
    """
    keys = all_strata(config)
    observed = pd.Series(list(strata), dtype="object").dropna()
    unknown = sorted(set(observed) - set(keys))
    if unknown:
        raise ValueError(f"strata: expected keys among all_strata(config), received {unknown}")
    counts = observed.value_counts().reindex(keys, fill_value=0).astype("int64")
    total = int(counts.sum())
    fraction = (counts / total).astype("float64") if total else pd.Series(0.0, index=keys, dtype="float64")
    return pd.DataFrame(
        {
            "stratum": pd.Series(keys, dtype="object"),
            "count": counts.to_numpy(dtype=np.int64),
            "fraction": fraction.to_numpy(dtype=np.float64),
        }
    )


def source_distribution(store: Store, source_id: str, snapshot_id: str, config: StrataConfig) -> pd.DataFrame:
    """How a committed snapshot's tumours spread over the strata: ``stratum``, ``count``, ``fraction``.

    Every subject's ``labels/anatomy/0`` is measured with :func:`measure`; every stratum of
    :func:`all_strata` has a row (zero counts included, which is the point: they show what the source
    lacks). ``fraction`` is over the tumour-bearing subjects; ``df.attrs`` carries ``n_subjects`` and
    ``n_tumor_free``.
    """
    measured = measure_snapshot(store, source_id, snapshot_id, config)
    out = distribution(measured["stratum"], config)
    out.attrs["n_subjects"] = len(measured)
    out.attrs["n_tumor_free"] = int(measured["stratum"].isna().sum())
    return out


__all__ = [
    "ATTRIBUTE_COLUMNS",
    "DEFAULT_MIN_COMPONENT_VOXELS",
    "HEMISPHERES",
    "LABEL_ARRAY",
    "BrainFrame",
    "TumorAttributes",
    "all_strata",
    "axis_values",
    "brain_frame",
    "component_labels",
    "distribution",
    "format_stratum",
    "hemisphere_of",
    "measure",
    "measure_snapshot",
    "parse_stratum",
    "read_label",
    "region_of",
    "source_distribution",
    "stratum_of",
    "volume_bin_labels",
    "volume_bin_range",
]
