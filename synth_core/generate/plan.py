"""Exact-count balanced generation plan (design.md §3 ``samples.parquet``, §7 ``generate/plan``).

A plan is a table with one row per sample: which base brain gives the anatomy, which donor gives the
tumour, the ordered label-map edits with their parameters, a seed, and the attributes *measured* on the
simulated result. Counts per stratum are exact:

1. Quotas. :func:`allocate_counts` turns weights over :func:`~synth_core.edit.strata.all_strata`
   (uniform by default) into integer counts by largest-remainder rounding on exact rationals: each
   stratum gets ``floor(n · w / Σw)``, the samples left go one each to the largest remainders (ties:
   the earlier stratum in ``all_strata`` order). The counts sum to ``n``.
2. Slots. The list of strata (each repeated by its count) is shuffled with ``seed``: sample ``index``
   ``i`` has a fixed target stratum.
3. Draw, simulate, measure, redraw. For slot ``i`` try ``t`` = 0, 1, …: every random choice comes from
   ``np.random.default_rng(SeedSequence([seed, 1, i, t]))`` and the edit seed from
   ``SeedSequence([seed, 2, i, t])``; a base brain and a donor whose tumour has the stratum's
   enhancing / necrosis / component values are drawn, a target volume inside the stratum's volume bin
   (log-uniform), and a centre inside the base's white matter on the stratum's side and region, deep
   enough for the tumour. ``simulate`` applies the edits; :func:`~synth_core.edit.strata.measure`
   measures the result; the try is kept only if the measured stratum is the slot's stratum. So the
   plan's counts are the measured counts, exactly. A slot depends only on ``(seed, i, t)`` and its
   stratum: the same seed gives the same plan, in any order of computation.

Edits: a JSON list of ``{"op", "params"}`` in the format of ``synth_core.edit.ops.apply_pipeline``
(replay: ``apply_pipeline(base_label, json.loads(edits), seed=seed, donors={donor_subject: donor_label})``,
which :func:`pipeline_simulate` does):

- donor ≠ base: ``transplant`` ``{"donor": donor_subject, "center_vox": [i, j, k]}`` — the donor's
  tumour, centroid at ``center_vox`` of the base (a base's own tumour, if any, is removed first);
- donor = base (a tumour-bearing base keeps its own tumour): ``move`` ``{"center_vox": [i, j, k],
  "rotate_deg": [rx, ry, rz]}`` (each angle uniform in ±30°);
- then, when the volume axis is stratified, ``resize`` ``{"factor": f}`` with ``f`` = target volume /
  the donor's whole-tumour volume (a volume ratio).

Without the volume axis the tumour keeps its volume (no resize); without the hemisphere/region axes the
centre is drawn anywhere in the white matter. Infeasible draws (``simulate`` raising one of
``retry_on``, default ``ValueError``, which ``EditError`` is) are redrawn like misses. The predicted
attributes hold for the replay of the same edits with the same seed by the same deterministic edits.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Final

import numpy as np
import pandas as pd
import pandera.pandas as pa
from scipy import ndimage

from schemas.generate import REGIONS, PlanConfig, StrataConfig
from synth_core.edit.strata import (
    DEFAULT_MIN_COMPONENT_VOXELS,
    HEMISPHERES,
    TumorAttributes,
    all_strata,
    brain_frame,
    measure,
    parse_stratum,
    region_of,
    stratum_of,
    volume_bin_range,
)

WHITE_MATTER: Final[int] = 3
MAX_SITES: Final[int] = 20_000
"""At most about this many candidate centres are kept per base brain (a lattice of its white matter)."""
ROTATE_DEG_MAX: Final[float] = 30.0
_VOLUME_MARGIN: Final[float] = 0.03  # targets stay this far (relative) inside a bin's edges
_TAG_ORDER, _TAG_DRAW, _TAG_SEED = 0, 1, 2
EDIT_OPS: Final[tuple[str, ...]] = ("transplant", "move", "resize")
"""Op names of the plan's edits (those of ``synth_core.edit.ops``)."""

Edit = dict[str, Any]
Simulate = Callable[["BaseBrain", "Candidate", list[Edit], int], np.ndarray]
"""``simulate(base, donor, edits, seed) -> edited label map`` (uint8, the base's grid)."""


# --------------------------------------------------------------------------------------------- inputs


def _check_map(subject_id: str, label: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(subject_id, str) or not subject_id:
        raise ValueError(f"subject_id: expected a non-empty string, received {subject_id!r}")
    lab = np.asarray(label)
    if lab.ndim != 3 or lab.dtype != np.uint8:
        raise ValueError(f"{subject_id}: label: expected a 3-D uint8 map, received {lab.dtype} {lab.shape}")
    aff = np.asarray(affine, dtype=np.float64)
    if aff.shape != (4, 4) or not np.isfinite(aff).all():
        raise ValueError(f"{subject_id}: affine: expected a finite 4x4 matrix, received shape {aff.shape}")
    return lab, aff


@dataclass(frozen=True, eq=False)
class Candidate:
    """A tumour donor: a subject's label map, its affine and the measured attributes of its tumour."""

    subject_id: str
    label: np.ndarray
    affine: np.ndarray
    attributes: TumorAttributes

    @classmethod
    def from_label(
        cls,
        subject_id: str,
        label: np.ndarray,
        affine: np.ndarray,
        *,
        min_component_voxels: int = DEFAULT_MIN_COMPONENT_VOXELS,
    ) -> Candidate:
        lab, aff = _check_map(subject_id, label, affine)
        attrs = measure(lab, aff, min_component_voxels=min_component_voxels)
        if not attrs.has_tumor:
            raise ValueError(f"{subject_id}: a donor needs a tumour (labels 4-6), received a tumour-free map")
        return cls(subject_id, lab, aff, attrs)


@dataclass(frozen=True, eq=False)
class BaseBrain:
    """A brain giving the anatomy, with its candidate tumour centres precomputed.

    ``sites`` are white-matter voxels on a lattice of stride ``site_stride`` (at most about
    :data:`MAX_SITES`), with their hemisphere, region (both as in :func:`measure`), and depth (mm,
    distance to the outside of the brain, from a distance transform on the same lattice). A base with
    a tumour of its own either keeps it (moved and resized: donor = base) or receives another donor's
    tumour (the transplant removes its own first).
    """

    subject_id: str
    label: np.ndarray
    affine: np.ndarray
    attributes: TumorAttributes
    sites: np.ndarray  # (n, 3) int64 voxel indices
    site_hemisphere: np.ndarray  # (n,) int8 index in HEMISPHERES
    site_region: np.ndarray  # (n,) int8 index in REGIONS
    site_depth_mm: np.ndarray  # (n,) float64
    site_stride: int

    @property
    def has_tumor(self) -> bool:
        return self.attributes.has_tumor

    @classmethod
    def from_label(
        cls,
        subject_id: str,
        label: np.ndarray,
        affine: np.ndarray,
        *,
        min_component_voxels: int = DEFAULT_MIN_COMPONENT_VOXELS,
        max_sites: int = MAX_SITES,
    ) -> BaseBrain:
        lab, aff = _check_map(subject_id, label, affine)
        if max_sites < 1:
            raise ValueError(f"max_sites: expected an integer >= 1, received {max_sites}")
        attrs = measure(lab, aff, min_component_voxels=min_component_voxels)
        brain = lab > 0
        wm = lab == WHITE_MATTER
        n_wm = int(np.count_nonzero(wm))
        if n_wm == 0:
            raise ValueError(f"{subject_id}: a base brain needs white matter (label {WHITE_MATTER}), received none")
        stride = max(1, math.ceil((n_wm / max_sites) ** (1.0 / 3.0)))
        while np.count_nonzero(wm[::stride, ::stride, ::stride]) > max_sites:
            stride += 1
        sub_wm = wm[::stride, ::stride, ::stride]
        if not sub_wm.any():  # tiny white matter off the lattice: fall back to every voxel
            stride, sub_wm = 1, wm
        lattice = np.argwhere(sub_wm).astype(np.int64)
        sites = lattice * stride
        spacing = np.linalg.norm(aff[:3, :3], axis=0) * stride
        padded = np.pad(brain[::stride, ::stride, ::stride], 1, constant_values=False)
        depth = ndimage.distance_transform_edt(padded, sampling=spacing)[1:-1, 1:-1, 1:-1]
        site_depth = depth[tuple(lattice.T)].astype(np.float64)
        frame = brain_frame(brain, aff)
        world = sites.astype(np.float64) @ aff[:3, :3].T + aff[:3, 3]
        hemi = (world[:, 0] >= frame.midline_x_mm).astype(np.int8)  # 0 left, 1 right
        region = np.array(
            [REGIONS.index(region_of(float(y), frame.y_min_mm, frame.y_max_mm)) for y in world[:, 1]], dtype=np.int8
        )
        return cls(subject_id, lab, aff, attrs, sites, hemi, region, site_depth, stride)

    def as_donor(self) -> Candidate:
        """This base as the donor of its own tumour (tumour-bearing bases only)."""
        if not self.has_tumor:
            raise ValueError(f"{self.subject_id}: a tumour-free base cannot be a donor")
        return Candidate(self.subject_id, self.label, self.affine, self.attributes)


# --------------------------------------------------------------------------------------------- quotas


def allocate_counts(n: int, config: StrataConfig, weights: Mapping[str, float] | None = None) -> dict[str, int]:
    """Exact integer counts per stratum (every stratum of ``all_strata(config)``, in order), summing to ``n``.

    ``weights`` (default uniform) name strata of ``all_strata(config)``; strata it omits get weight 0.
    Largest-remainder rounding on exact rationals; ties go to the earlier stratum.
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ValueError(f"n: expected a non-negative integer, received {n!r}")
    keys = all_strata(config)
    if weights is None:
        w = {k: Fraction(1) for k in keys}
    else:
        unknown = sorted(set(weights) - set(keys))
        if unknown:
            raise ValueError(f"weights: unknown strata {unknown}; valid choices are {keys}")
        w = {}
        for k in keys:
            value = float(weights.get(k, 0.0))
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"weights[{k!r}]: expected a finite non-negative weight, received {value}")
            w[k] = Fraction(value)
    total = sum(w.values(), Fraction(0))
    if total <= 0:
        raise ValueError(f"weights: expected at least one positive weight, received {dict(weights or {})}")
    exact = {k: Fraction(int(n)) * w[k] / total for k in keys}
    counts = {k: math.floor(exact[k]) for k in keys}
    left = int(n) - sum(counts.values())
    order = sorted(range(len(keys)), key=lambda j: (-(exact[keys[j]] - counts[keys[j]]), j))
    for j in order[:left]:
        counts[keys[j]] += 1
    return counts


# -------------------------------------------------------------------------------------------- schema


def _edits_ok(value: str) -> bool:
    try:
        edits = json.loads(value)
    except (TypeError, ValueError):
        return False
    return (
        isinstance(edits, list)
        and len(edits) >= 1
        and all(isinstance(e, dict) and e.get("op") in EDIT_OPS and isinstance(e.get("params"), dict) for e in edits)
    )


def _index_is_range(df: pd.DataFrame) -> bool:
    return bool(np.array_equal(np.sort(df["index"].to_numpy()), np.arange(len(df))))


def _sample_id_matches_index(df: pd.DataFrame) -> bool:
    width = max(6, len(str(max(len(df) - 1, 0))))
    return bool((df["sample_id"] == df["index"].map(lambda i: f"s-{i:0{width}d}")).all())


def _volumes_add_up(df: pd.DataFrame) -> bool:
    whole = df["edema_ml"] + df["necrotic_ml"] + df["enhancing_ml"]
    core = df["necrotic_ml"] + df["enhancing_ml"]
    return bool(np.allclose(whole, df["whole_ml"]) and np.allclose(core, df["core_ml"]))


def _flags_match(df: pd.DataFrame) -> bool:
    return bool(
        ((df["enhancing_ml"] > 0) == df["enhancing"]).all() and ((df["necrotic_ml"] > 0) == df["necrosis"]).all()
    )


_PLAN_COLUMNS: dict[str, pa.Column] = {
    "sample_id": pa.Column(str, pa.Check.str_matches(r"^s-[0-9]{6,}$"), unique=True),
    "index": pa.Column("int64", pa.Check.ge(0), unique=True),
    "stratum": pa.Column(str, pa.Check.str_length(min_value=1)),
    "base_subject": pa.Column(str, pa.Check.str_length(min_value=1)),
    "donor_subject": pa.Column(str, pa.Check.str_length(min_value=1)),
    "edits": pa.Column(str, pa.Check(_edits_ok, element_wise=True, error="edits: a JSON list of {op, params}")),
    "seed": pa.Column("int64", pa.Check.ge(0)),
    "attempt": pa.Column("int64", pa.Check.ge(0)),
    "whole_ml": pa.Column("float64", pa.Check.gt(0)),
    "edema_ml": pa.Column("float64", pa.Check.ge(0)),
    "necrotic_ml": pa.Column("float64", pa.Check.ge(0)),
    "enhancing_ml": pa.Column("float64", pa.Check.ge(0)),
    "core_ml": pa.Column("float64", pa.Check.ge(0)),
    "centroid_x_mm": pa.Column("float64", pa.Check(np.isfinite)),
    "centroid_y_mm": pa.Column("float64", pa.Check(np.isfinite)),
    "centroid_z_mm": pa.Column("float64", pa.Check(np.isfinite)),
    "hemisphere": pa.Column(str, pa.Check.isin(HEMISPHERES)),
    "region": pa.Column(str, pa.Check.isin(REGIONS)),
    "enhancing": pa.Column(bool),
    "necrosis": pa.Column(bool),
    "n_components": pa.Column("int64", pa.Check.ge(1)),
}

GenerationPlanSchema: Final[pa.DataFrameSchema] = pa.DataFrameSchema(
    _PLAN_COLUMNS,
    checks=[
        pa.Check(_index_is_range, error="index: expected a permutation of 0..N-1"),
        pa.Check(_sample_id_matches_index, error="sample_id: expected s-<index, zero-padded to 6+ digits>"),
        pa.Check(
            _volumes_add_up, error="volumes: expected whole = edema+necrotic+enhancing, core = necrotic+enhancing"
        ),
        pa.Check(_flags_match, error="enhancing/necrosis: expected to equal enhancing_ml > 0 / necrotic_ml > 0"),
    ],
    strict=True,
    ordered=False,
    coerce=False,
    name="generation_plan",
)
"""The plan table, config-independent. :func:`plan_schema` adds the checks that need the strata config."""

PLAN_COLUMNS: Final[tuple[str, ...]] = tuple(_PLAN_COLUMNS)


def _attributes_of_row(row: Mapping[str, Any]) -> TumorAttributes:
    return TumorAttributes(
        edema_ml=float(row["edema_ml"]),
        necrotic_ml=float(row["necrotic_ml"]),
        enhancing_ml=float(row["enhancing_ml"]),
        whole_ml=float(row["whole_ml"]),
        core_ml=float(row["core_ml"]),
        centroid_mm=(float(row["centroid_x_mm"]), float(row["centroid_y_mm"]), float(row["centroid_z_mm"])),
        hemisphere=str(row["hemisphere"]),
        region=str(row["region"]),
        n_components=int(row["n_components"]),
        enhancing=bool(row["enhancing"]),
        necrosis=bool(row["necrosis"]),
    )


def plan_schema(config: StrataConfig) -> pa.DataFrameSchema:
    """:data:`GenerationPlanSchema` plus: ``stratum`` among ``all_strata(config)``, and equal to the
    stratum of the row's predicted attributes."""

    def _stratum_matches(df: pd.DataFrame) -> pd.Series:
        return pd.Series(
            [stratum_of(_attributes_of_row(r), config) == r["stratum"] for r in df.to_dict("records")],
            index=df.index,
            dtype=bool,
        )

    return pa.DataFrameSchema(
        {**GenerationPlanSchema.columns, "stratum": pa.Column(str, pa.Check.isin(all_strata(config)))},
        checks=[
            *GenerationPlanSchema.checks,
            pa.Check(_stratum_matches, error="stratum: expected the stratum of the row's predicted attributes"),
        ],
        strict=True,
        ordered=False,
        coerce=False,
        name="generation_plan",
    )


# ------------------------------------------------------------------------------------------ planning


def _entropy_int(*words: int) -> int:
    """A non-negative int64 from ``SeedSequence(words)``."""
    state = np.random.SeedSequence([int(w) for w in words]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def _donor_fits(attrs: TumorAttributes, values: Mapping[str, str], config: StrataConfig) -> bool:
    if "enhancing" in values and attrs.enhancing != (values["enhancing"] == "yes"):
        return False
    if "necrosis" in values and attrs.necrosis != (values["necrosis"] == "yes"):
        return False
    if "components" in values:
        m = config.max_components
        got = f"{m}+" if attrs.n_components >= m else str(attrs.n_components)
        if got != values["components"]:
            return False
    return True


def _why_no_donor(values: Mapping[str, str], attrs: Sequence[TumorAttributes], config: StrataConfig) -> str:
    """A human reason why no donor tumour has the stratum's enhancing/necrosis/components values."""
    reasons = []
    for axis, word in (("enhancing", "enhancing tumour"), ("necrosis", "necrotic core")):
        if axis in values:
            want = values[axis] == "yes"
            if not any(getattr(a, axis) == want for a in attrs):
                reasons.append(f"no donor has {word}" if want else f"every donor has {word} ({axis}=no impossible)")
    if "components" in values:
        single = {"components": values["components"]}
        if not any(_donor_fits(a, single, config) for a in attrs):
            reasons.append(f"no donor tumour has {values['components']} components")
    if not reasons:
        wanted = ", ".join(f"{a}={values[a]}" for a in ("enhancing", "necrosis", "components") if a in values)
        reasons.append(f"no single donor combines {wanted}")
    return "; ".join(reasons) + f" (donor tumours: {len(attrs)})"


@dataclass(frozen=True)
class _Route:
    base: BaseBrain
    donors: tuple[Candidate, ...]  # feasible donors (a tumour-bearing base's own tumour included)


def _site_mask(base: BaseBrain, values: Mapping[str, str]) -> np.ndarray:
    mask = np.ones(len(base.sites), dtype=bool)
    if "hemisphere" in values:
        mask &= base.site_hemisphere == HEMISPHERES.index(values["hemisphere"])
    if "region" in values:
        mask &= base.site_region == REGIONS.index(values["region"])
    return mask


def _target_range(
    key: str, values: Mapping[str, str], config: StrataConfig, limits: tuple[float, float]
) -> tuple[float, float] | None:
    if "volume" not in values:
        return None
    lo, hi = volume_bin_range(values["volume"], config)
    lo, hi = max(lo, limits[0]), min(hi, limits[1])
    if not lo < hi:
        raise ValueError(
            f"stratum {key!r} cannot be reached: volume bin {values['volume']} lies outside volume_limits_ml {limits}; "
            "widen volume_limits_ml or give this stratum weight 0"
        )
    return lo * (1.0 + _VOLUME_MARGIN), hi * (1.0 - _VOLUME_MARGIN)


def _pick_donor(
    rng: np.random.Generator, donors: Sequence[Candidate], target_ml: float | None, max_factor: float
) -> Candidate:
    if target_ml is None or len(donors) == 1:
        return donors[int(rng.integers(len(donors)))]
    ratio = np.array([abs(math.log(target_ml / d.attributes.whole_ml)) for d in donors], dtype=np.float64)
    close = np.flatnonzero(ratio <= math.log(max_factor))
    if close.size == 0:  # none within the factor: the closest ones (within 10 % of the best ratio)
        close = np.flatnonzero(ratio <= ratio.min() * 1.1 + 1e-12)
    return donors[int(close[int(rng.integers(close.size))])]


def _pick_site(rng: np.random.Generator, base: BaseBrain, mask: np.ndarray, radius_mm: float) -> np.ndarray:
    idx = np.flatnonzero(mask)
    depth = base.site_depth_mm[idx]
    deep = idx[depth >= radius_mm]
    if deep.size == 0:  # nothing deep enough: the deepest fifth
        deep = idx[depth >= np.quantile(depth, 0.8)]
    return base.sites[int(deep[int(rng.integers(deep.size))])]


def _draw(
    rng: np.random.Generator,
    route: _Route,
    values: Mapping[str, str],
    target_range: tuple[float, float] | None,
    site_mask: np.ndarray,
    max_factor: float,
) -> tuple[Candidate, list[Edit]]:
    target = None if target_range is None else float(math.exp(rng.uniform(*np.log(target_range))))
    donor = _pick_donor(rng, route.donors, target, max_factor)
    current = donor.attributes.whole_ml
    volume = current if target is None else target
    radius = (3.0 * volume * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)
    center = [int(v) for v in _pick_site(rng, route.base, site_mask, radius)]
    if donor.subject_id == route.base.subject_id:
        rotate = [round(float(a), 3) for a in rng.uniform(-ROTATE_DEG_MAX, ROTATE_DEG_MAX, size=3)]
        edits: list[Edit] = [{"op": "move", "params": {"center_vox": center, "rotate_deg": rotate}}]
    else:
        edits = [{"op": "transplant", "params": {"donor": donor.subject_id, "center_vox": center}}]
    if target is not None:
        edits.append({"op": "resize", "params": {"factor": float(target / current)}})
    return donor, edits


def _routes(
    key: str,
    values: Mapping[str, str],
    donors: Sequence[Candidate],
    bases: Sequence[BaseBrain],
    config: StrataConfig,
) -> tuple[list[_Route], list[np.ndarray]]:
    feasible = tuple(d for d in donors if _donor_fits(d.attributes, values, config))
    routes: list[_Route] = []
    masks: list[np.ndarray] = []
    no_site: list[str] = []
    for base in bases:
        pool = [d for d in feasible if d.subject_id != base.subject_id]
        if base.has_tumor and _donor_fits(base.attributes, values, config):
            pool.append(base.as_donor())  # its own tumour, moved
        if not pool:
            continue
        route = _Route(base, tuple(pool))
        mask = _site_mask(base, values)
        if not mask.any():
            no_site.append(base.subject_id)
            continue
        routes.append(route)
        masks.append(mask)
    if not routes:
        if no_site:
            where = ", ".join(f"{a}={values[a]}" for a in ("hemisphere", "region") if a in values)
            why = f"no base brain has white matter at {where} (bases checked: {sorted(no_site)})"
        else:
            pool = [d.attributes for d in donors] + [b.attributes for b in bases if b.has_tumor]
            why = _why_no_donor(values, pool, config)
        raise ValueError(f"stratum {key!r} cannot be reached: {why}")
    return routes, masks


def build_plan(
    donors: Sequence[Candidate],
    bases: Sequence[BaseBrain],
    n: int,
    *,
    config: StrataConfig,
    weights: Mapping[str, float] | None = None,
    seed: int,
    simulate: Simulate,
    max_tries_per_sample: int = 50,
    volume_limits_ml: tuple[float, float] = (1.0, 120.0),
    max_volume_factor: float = 8.0,
    retry_on: tuple[type[Exception], ...] = (ValueError,),
    min_component_voxels: int = DEFAULT_MIN_COMPONENT_VOXELS,
) -> pd.DataFrame:
    """An exact-count balanced plan of ``n`` samples (see the module docstring), validated.

    ``retry_on``: exceptions of ``simulate`` that mean "this draw is infeasible, redraw" (pass the edit
    module's ``EditError``). Raises ``ValueError`` naming the stratum when a stratum with a positive
    count has no feasible donor/base, or is not reached after ``max_tries_per_sample`` draws.
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, received {seed!r}")
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n: expected the number of samples, an integer >= 1, received {n!r}")
    if isinstance(max_tries_per_sample, bool) or not isinstance(max_tries_per_sample, int) or max_tries_per_sample < 1:
        raise ValueError(f"max_tries_per_sample: expected an integer >= 1, received {max_tries_per_sample!r}")
    if not max_volume_factor > 1.0:
        raise ValueError(f"max_volume_factor: expected a factor > 1, received {max_volume_factor}")
    if not 0.0 < volume_limits_ml[0] < volume_limits_ml[1] < math.inf:
        raise ValueError(f"volume_limits_ml: expected 0 < low < high (ml), received {volume_limits_ml}")
    if not callable(simulate):
        raise ValueError(f"simulate: expected a callable (base, donor, edits, seed) -> label, received {simulate!r}")
    for name, items, kind in (("donors", donors, Candidate), ("bases", bases, BaseBrain)):
        bad = [type(x).__name__ for x in items if not isinstance(x, kind)]
        if bad:
            raise ValueError(f"{name}: expected {kind.__name__} items, received {sorted(set(bad))}")
        ids = [x.subject_id for x in items]
        if len(set(ids)) != len(ids):
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            raise ValueError(f"{name}: expected unique subject ids, received duplicates {dupes}")
    if not bases:
        raise ValueError("bases: expected at least one base brain, received none")

    counts = allocate_counts(n, config, weights)
    active = [k for k, c in counts.items() if c > 0]
    plans: dict[str, tuple[dict[str, str], list[_Route], list[np.ndarray], tuple[float, float] | None]] = {}
    for key in active:  # fail fast, before any simulation, on a stratum nothing can reach
        values = parse_stratum(key, config)
        routes, masks = _routes(key, values, donors, bases, config)
        plans[key] = (values, routes, masks, _target_range(key, values, config, volume_limits_ml))

    slots = np.array([k for k in counts for _ in range(counts[k])], dtype=object)
    slots = slots[np.random.default_rng(np.random.SeedSequence([int(seed), _TAG_ORDER])).permutation(len(slots))]
    width = max(6, len(str(max(int(n) - 1, 0))))

    rows: list[dict[str, Any]] = []
    for i, key in enumerate(slots.tolist()):
        values, routes, masks, target_range = plans[key]
        misses: Counter[str] = Counter()
        last_error = ""
        for attempt in range(max_tries_per_sample):
            rng = np.random.default_rng(np.random.SeedSequence([int(seed), _TAG_DRAW, i, attempt]))
            r = int(rng.integers(len(routes)))
            route = routes[r]
            donor, edits = _draw(rng, route, values, target_range, masks[r], max_volume_factor)
            edit_seed = _entropy_int(int(seed), _TAG_SEED, i, attempt)
            try:
                out = simulate(route.base, donor, [json.loads(json.dumps(e)) for e in edits], edit_seed)
            except retry_on as exc:
                misses["edit failed"] += 1
                last_error = f"{type(exc).__name__}: {exc}"
                continue
            out = np.asarray(out)
            if out.shape != route.base.label.shape:
                raise ValueError(
                    f"simulate: expected a label map of shape {route.base.label.shape}, received {out.shape}"
                )
            attrs = measure(out, route.base.affine, min_component_voxels=min_component_voxels)
            got = stratum_of(attrs, config)
            if got != key:
                misses[str(got)] += 1
                continue
            rows.append(
                {
                    "sample_id": f"s-{i:0{width}d}",
                    "index": i,
                    "stratum": key,
                    "base_subject": route.base.subject_id,
                    "donor_subject": donor.subject_id,
                    "edits": json.dumps(edits, separators=(",", ":")),
                    "seed": edit_seed,
                    "attempt": attempt,
                    **attrs.as_row(),
                }
            )
            break
        else:
            seen = ", ".join(f"{k}: {v}" for k, v in misses.most_common(5))
            tail = f"; last edit error: {last_error}" if last_error else ""
            raise ValueError(
                f"stratum {key!r} not reached for sample index {i} after max_tries_per_sample="
                f"{max_tries_per_sample} draws (measured instead: {seen}){tail}"
            )

    frame = pd.DataFrame(rows, columns=list(PLAN_COLUMNS))
    frame = frame.astype(
        {
            "index": "int64",
            "seed": "int64",
            "attempt": "int64",
            "n_components": "int64",
            "enhancing": bool,
            "necrosis": bool,
            **{c: "float64" for c in PLAN_COLUMNS if c.endswith("_ml") or c.endswith("_mm")},
        }
    )
    return plan_schema(config).validate(frame)


def pipeline_simulate(base: BaseBrain, donor: Candidate, edits: list[Edit], seed: int) -> np.ndarray:
    """The real ``simulate``: ``synth_core.edit.ops.apply_pipeline`` on the base's label map.

    The donor is passed by its subject id (``donors={donor.subject_id: donor.label}``); it raises
    ``EditError`` (a ``ValueError``) when an edit is infeasible, which :func:`build_plan` redraws.
    """
    from synth_core.edit.ops import apply_pipeline

    return apply_pipeline(base.label, edits, seed=seed, donors={donor.subject_id: donor.label}).label


def build_plan_from_config(
    donors: Sequence[Candidate],
    bases: Sequence[BaseBrain],
    plan: PlanConfig,
    *,
    simulate: Simulate,
    retry_on: tuple[type[Exception], ...] = (ValueError,),
) -> pd.DataFrame:
    """:func:`build_plan` with the parameters of a :class:`~schemas.generate.PlanConfig`."""
    return build_plan(
        donors,
        bases,
        plan.n_samples,
        config=plan.strata,
        weights=plan.weights,
        seed=plan.seed,
        simulate=simulate,
        max_tries_per_sample=plan.max_tries_per_sample,
        volume_limits_ml=plan.volume_limits_ml,
        max_volume_factor=plan.max_volume_factor,
        retry_on=retry_on,
    )


def plan_counts(plan: pd.DataFrame, config: StrataConfig) -> dict[str, int]:
    """Samples per stratum of a plan, every stratum of ``all_strata(config)`` included."""
    observed = Counter(plan["stratum"].tolist())
    return {k: int(observed.get(k, 0)) for k in all_strata(config)}


__all__ = [
    "EDIT_OPS",
    "PLAN_COLUMNS",
    "BaseBrain",
    "Candidate",
    "GenerationPlanSchema",
    "Simulate",
    "allocate_counts",
    "build_plan",
    "build_plan_from_config",
    "pipeline_simulate",
    "plan_counts",
    "plan_schema",
]
