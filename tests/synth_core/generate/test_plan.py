"""The exact-count balanced plan (synth_core.generate.plan) on synthetic ellipsoid brains.

The edits are simulated by a self-contained stand-in (nearest-neighbour placement/resizing of the donor's
tumour crop, clipped to the brain); one test uses the real edit module when it exists.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd
import pandera.errors
import pytest
from scipy import ndimage

from schemas.generate import PlanConfig, StrataConfig
from synth_core.edit.strata import all_strata, measure, stratum_of
from synth_core.generate.plan import (
    PLAN_COLUMNS,
    BaseBrain,
    Candidate,
    GenerationPlanSchema,
    allocate_counts,
    build_plan,
    build_plan_from_config,
    plan_counts,
    plan_schema,
)

SHAPE = (64, 72, 64)
VOXEL_MM = 2.0
AFFINE = np.diag([VOXEL_MM, VOXEL_MM, VOXEL_MM, 1.0])
AFFINE[:3, 3] = (-70.0, -80.0, -60.0)  # the brain's midline is at world x ≈ -7 mm, not 0
LIMITS = (1.0, 90.0)
SCHEMA_ERRORS = (pandera.errors.SchemaError, pandera.errors.SchemaErrors)


# ------------------------------------------------------------------------------------- synthetic maps


def _ellipsoid_brain(scale: float = 1.0) -> np.ndarray:
    grid = np.indices(SHAPE, dtype=np.float64)
    centre = np.array([31.5, 35.5, 31.5])
    semi = np.array([28.0, 32.0, 26.0]) * scale
    rho = np.sqrt(sum(((grid[a] - centre[a]) / semi[a]) ** 2 for a in range(3)))
    lab = np.zeros(SHAPE, dtype=np.uint8)
    lab[rho <= 1.0] = 1
    lab[rho <= 0.92] = 2
    lab[rho <= 0.82] = 3
    return lab


def _add_tumour(lab: np.ndarray, centre: tuple[float, float, float], radius: float, kind: str) -> np.ndarray:
    """Nested spheres: edema shell; ``full`` = enhancing rim around a necrotic core."""
    out = lab.copy()
    grid = np.indices(SHAPE, dtype=np.float64)
    d = np.sqrt(sum((grid[a] - centre[a]) ** 2 for a in range(3)))
    out[(d <= radius) & (out > 0)] = 4
    if kind in ("full", "edema_enh"):
        out[d <= 0.65 * radius] = 6
    if kind in ("full", "edema_nec"):
        out[d <= 0.4 * radius] = 5
    return out


KINDS = ("full", "edema_enh", "edema_nec", "edema")


@pytest.fixture(scope="module")
def donors() -> list[Candidate]:
    brain = _ellipsoid_brain()
    out = []
    for k, kind in enumerate(KINDS):
        for radius in (4.0, 7.0):
            for side, x in (("l", 20.0), ("r", 43.0)):
                lab = _add_tumour(brain, (x, 30.0 + 4 * k, 32.0), radius, kind)
                out.append(Candidate.from_label(f"d-{kind}-{int(radius)}-{side}", lab, AFFINE))
    return out


@pytest.fixture(scope="module")
def bases() -> list[BaseBrain]:
    out = [BaseBrain.from_label(f"b-{i}", _ellipsoid_brain(s), AFFINE) for i, s in enumerate((0.94, 1.0, 1.04))]
    own = _add_tumour(_ellipsoid_brain(0.98), (22.0, 40.0, 30.0), 5.0, "full")
    out.append(BaseBrain.from_label("b-tumour", own, AFFINE))
    return out


def _crop(lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The tumour's bounding-box crop (tumour labels only) and its centroid inside the crop."""
    tumour = lab >= 4
    idx = np.argwhere(tumour)
    lo, hi = idx.min(axis=0), idx.max(axis=0) + 1
    crop = np.where(tumour, lab, 0)[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]].astype(np.uint8)
    return crop, idx.mean(axis=0) - lo


def _paste(out: np.ndarray, brain: np.ndarray, crop: np.ndarray, centroid: np.ndarray, centre: Any) -> None:
    start = np.rint(np.asarray(centre, dtype=np.float64) - centroid).astype(int)
    src = [slice(max(0, -s), min(c, n - s)) for s, c, n in zip(start, crop.shape, out.shape, strict=True)]
    dst = [slice(s + a.start, s + a.stop) for s, a in zip(start, src, strict=True)]
    piece = crop[tuple(src)]
    target = out[tuple(dst)]
    keep = (piece > 0) & brain[tuple(dst)]
    target[keep] = piece[keep]


def _remove(out: np.ndarray, base: np.ndarray) -> None:
    old = out >= 4
    out[old] = np.where(base[old] >= 4, 3, base[old])


def standin(base: BaseBrain, donor: Candidate, edits: list[dict[str, Any]], seed: int) -> np.ndarray:
    """Deterministic stand-in for ``synth_core.edit.ops``: paste / move / resize a tumour crop (NN)."""
    out = base.label.copy()
    brain = out > 0
    for edit in edits:
        op, p = edit["op"], edit["params"]
        if op == "transplant":
            if p["donor"] != donor.subject_id:
                raise AssertionError("the plan must pass the donor named in the edit")
            crop, c = _crop(donor.label)
            _remove(out, base.label)  # the recipient's own tumour goes first
            _paste(out, brain, crop, c, p["center_vox"])
        elif op == "move":
            crop, c = _crop(out)
            _remove(out, base.label)
            _paste(out, brain, crop, c, p["center_vox"])
        elif op == "resize":
            crop, c = _crop(out)
            centre = c + np.argwhere(out >= 4).min(axis=0)
            zoom = p["factor"] ** (1.0 / 3.0)
            big = ndimage.zoom(crop, zoom, order=0, grid_mode=True, mode="grid-constant")
            if not (big >= 4).any():
                raise ValueError("resize_tumor: the tumour vanished")
            _remove(out, base.label)
            _paste(out, brain, big, c * zoom, centre)
        else:
            raise ValueError(f"unknown op {op}")
    return out


def _remeasure(plan: pd.DataFrame, donors: list[Candidate], bases: list[BaseBrain], config: StrataConfig) -> list[str]:
    by_id = {d.subject_id: d for d in donors}
    base_by_id = {b.subject_id: b for b in bases}
    out = []
    for row in plan.itertuples(index=False):
        base = base_by_id[row.base_subject]
        donor = base.as_donor() if row.donor_subject == row.base_subject else by_id[row.donor_subject]
        label = standin(base, donor, json.loads(row.edits), int(row.seed))
        attrs = measure(label, base.affine)
        assert attrs.whole_ml == pytest.approx(row.whole_ml) and attrs.hemisphere == row.hemisphere
        assert attrs.region == row.region and attrs.n_components == row.n_components
        out.append(stratum_of(attrs, config))
    return out


# ---------------------------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def default_plan(donors, bases) -> pd.DataFrame:
    return build_plan(donors, bases, 120, config=StrataConfig(), seed=11, simulate=standin, volume_limits_ml=LIMITS)


def test_inputs_are_measured(donors, bases) -> None:
    kinds = Counter((d.attributes.enhancing, d.attributes.necrosis) for d in donors)
    assert kinds == {(True, True): 4, (True, False): 4, (False, True): 4, (False, False): 4}
    assert {d.attributes.hemisphere for d in donors} == {"left", "right"}
    assert [b.has_tumor for b in bases] == [False, False, False, True]
    for b in bases:
        assert len(b.sites) > 100 and (b.label[tuple(b.sites.T)] == 3).all()
        assert set(b.site_hemisphere.tolist()) == {0, 1} and set(b.site_region.tolist()) == {0, 1, 2}
    with pytest.raises(ValueError, match="tumour"):
        Candidate.from_label("x", _ellipsoid_brain(), AFFINE)
    with pytest.raises(ValueError, match="uint8"):
        BaseBrain.from_label("x", _ellipsoid_brain().astype(np.int16), AFFINE)


def test_uniform_plan_has_exactly_ten_per_stratum_after_measurement(default_plan, donors, bases) -> None:
    config = StrataConfig()
    assert len(default_plan) == 120 and tuple(default_plan.columns) == PLAN_COLUMNS
    assert plan_counts(default_plan, config) == {k: 10 for k in all_strata(config)}
    remeasured = _remeasure(default_plan, donors, bases, config)  # replay every edit, measure again
    assert remeasured == default_plan["stratum"].tolist()
    assert Counter(remeasured) == {k: 10 for k in all_strata(config)}
    GenerationPlanSchema.validate(default_plan)
    plan_schema(config).validate(default_plan)
    assert default_plan["index"].tolist() == list(range(120))
    assert default_plan["sample_id"].iloc[7] == "s-000007"
    assert default_plan["seed"].is_unique and default_plan["seed"].dtype == np.int64
    # both routes are used: transplant (into any base), move (a tumour-bearing base keeps its own)
    first = [json.loads(e)[0]["op"] for e in default_plan["edits"]]
    assert set(first) == {"transplant", "move"}
    moved = default_plan[[op == "move" for op in first]]
    assert (moved["donor_subject"] == moved["base_subject"]).all() and (moved["base_subject"] == "b-tumour").all()
    assert ((default_plan["base_subject"] == "b-tumour") & (default_plan["donor_subject"] != "b-tumour")).any()


def test_edits_are_ordered_json(default_plan) -> None:
    for text in default_plan["edits"]:
        edits = json.loads(text)
        assert edits[0]["op"] in ("transplant", "move") and edits[-1]["op"] == "resize"
        assert len(edits[0]["params"]["center_vox"]) == 3 and edits[-1]["params"]["factor"] > 0


def test_weighted_plan_has_largest_remainder_counts(donors, bases) -> None:
    config = StrataConfig()
    keys = all_strata(config)
    weights = {keys[0]: 3.0, keys[3]: 1.0, keys[7]: 1.0, keys[11]: 2.0}
    # 25 * (3, 1, 1, 2) / 7 = 10.71, 3.57, 3.57, 7.14 → floors 10, 3, 3, 7 (23); +1 to the largest
    # remainders: 10.71 (keys[0]) then 3.57 (keys[3], earlier of the tie)
    want = {k: 0 for k in keys} | {keys[0]: 11, keys[3]: 4, keys[7]: 3, keys[11]: 7}
    assert allocate_counts(25, config, weights) == want
    plan = build_plan(
        donors, bases, 25, config=config, weights=weights, seed=3, simulate=standin, volume_limits_ml=LIMITS
    )
    assert plan_counts(plan, config) == want
    assert Counter(_remeasure(plan, donors, bases, config)) == {k: v for k, v in want.items() if v}


def test_allocate_counts() -> None:
    config = StrataConfig()
    keys = all_strata(config)
    assert sum(allocate_counts(1000, config).values()) == 1000
    assert allocate_counts(13, config) == {k: 2 if j == 0 else 1 for j, k in enumerate(keys)}  # tie: first
    assert allocate_counts(0, config) == {k: 0 for k in keys}
    thirds = allocate_counts(10, config, {keys[0]: 1 / 3, keys[1]: 1 / 3, keys[2]: 1 / 3})
    assert [thirds[k] for k in keys[:3]] == [4, 3, 3] and sum(thirds.values()) == 10
    with pytest.raises(ValueError, match="unknown strata"):
        allocate_counts(5, config, {"volume=huge": 1.0})
    with pytest.raises(ValueError, match="positive"):
        allocate_counts(5, config, {keys[0]: 0.0})
    with pytest.raises(ValueError, match="non-negative"):
        allocate_counts(5, config, {keys[0]: -1.0})


def test_infeasible_stratum_names_it_and_why(donors, bases) -> None:
    no_enh = [d for d in donors if not d.attributes.enhancing]
    tumour_free = [b for b in bases if not b.has_tumor]
    with pytest.raises(ValueError, match=r"enhancing=yes'.*no donor has enhancing tumour") as info:
        build_plan(no_enh, tumour_free, 12, config=StrataConfig(), seed=0, simulate=standin)
    assert "volume=<10ml|hemisphere=left|enhancing=yes" in str(info.value)
    # a zero-weight infeasible stratum is fine
    keys = [k for k in all_strata(StrataConfig()) if k.endswith("enhancing=no")]
    plan = build_plan(
        no_enh,
        tumour_free,
        6,
        config=StrataConfig(),
        weights=dict.fromkeys(keys, 1.0),
        seed=0,
        simulate=standin,
        volume_limits_ml=LIMITS,
    )
    assert set(plan["stratum"]) == set(keys) and not plan["enhancing"].any()


def test_unreachable_after_max_tries(donors, bases) -> None:
    def always_left(base, donor, edits, seed):  # ignores the centre: the tumour stays where the donor had it
        lab = base.label.copy()
        lab[donor.label >= 4] = donor.label[donor.label >= 4]
        return lab

    left_donors = [d for d in donors if d.attributes.hemisphere == "left"]
    config = StrataConfig(axes=("hemisphere",))
    with pytest.raises(ValueError, match=r"stratum 'hemisphere=right' not reached .* max_tries_per_sample=5"):
        build_plan(left_donors, bases[:1], 4, config=config, seed=0, simulate=always_left, max_tries_per_sample=5)

    def broken(base, donor, edits, seed):
        raise ValueError("cannot place the tumour")

    with pytest.raises(ValueError, match="last edit error: ValueError: cannot place the tumour"):
        build_plan(donors, bases, 2, config=config, seed=0, simulate=broken, max_tries_per_sample=3)


def test_same_seed_same_plan_other_seed_other_plan(donors, bases) -> None:
    config = StrataConfig(axes=("volume", "hemisphere", "region", "necrosis"), volume_bins_ml=(10.0,))
    kw: dict[str, Any] = dict(config=config, simulate=standin, volume_limits_ml=LIMITS)
    a = build_plan(donors, bases, 48, seed=5, **kw)
    b = build_plan(donors, bases, 48, seed=5, **kw)
    c = build_plan(donors, bases, 48, seed=6, **kw)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c) and a["seed"].tolist() != c["seed"].tolist()
    assert plan_counts(a, config) == plan_counts(c, config) == {k: 2 for k in all_strata(config)}
    assert Counter(_remeasure(a, donors, bases, config)) == {k: 2 for k in all_strata(config)}
    assert set(a["region"]) == {"frontal", "central", "posterior"}


def test_plan_from_config(donors, bases) -> None:
    cfg = PlanConfig(n_samples=12, seed=2, volume_limits_ml=LIMITS)
    plan = build_plan_from_config(donors, bases, cfg, simulate=standin)
    assert plan_counts(plan, cfg.strata) == {k: 1 for k in all_strata(cfg.strata)}


def test_schema_rejects_broken_plans(default_plan) -> None:
    config = StrataConfig()
    schema = plan_schema(config)
    bad_stratum = default_plan.copy()
    bad_stratum.loc[0, "stratum"] = "volume=huge"
    with pytest.raises(SCHEMA_ERRORS):
        schema.validate(bad_stratum)
    lying = default_plan.copy()  # a stratum that disagrees with the predicted attributes
    other = next(k for k in all_strata(config) if k != lying.loc[0, "stratum"])
    lying.loc[0, "stratum"] = other
    with pytest.raises(SCHEMA_ERRORS):
        schema.validate(lying)
    for column, value in (("edits", "not json"), ("sample_id", "x-1"), ("index", 5), ("whole_ml", 0.0)):
        broken = default_plan.copy()
        broken.loc[0, column] = value
        with pytest.raises(SCHEMA_ERRORS):
            GenerationPlanSchema.validate(broken)
    with pytest.raises(SCHEMA_ERRORS):
        GenerationPlanSchema.validate(default_plan.assign(extra=1))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"seed": -1}, "seed"),
        ({"n": 0}, "n: expected"),
        ({"max_tries_per_sample": 0}, "max_tries_per_sample"),
        ({"volume_limits_ml": (5.0, 1.0)}, "volume_limits_ml"),
        ({"weights": {"nope": 1.0}}, "unknown strata"),
    ],
)
def test_bad_arguments(donors, bases, kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = dict(n=4, config=StrataConfig(), seed=0, simulate=standin) | kwargs
    with pytest.raises(ValueError, match=match):
        build_plan(donors, bases, **args)


def test_volume_bin_outside_limits_is_reported(donors, bases) -> None:
    with pytest.raises(ValueError, match=r">50ml lies outside volume_limits_ml"):
        build_plan(donors, bases, 12, config=StrataConfig(), seed=0, simulate=standin, volume_limits_ml=(1.0, 40.0))


def test_components_axis(donors, bases) -> None:
    config = StrataConfig(axes=("components", "hemisphere"))
    with pytest.raises(ValueError, match="no donor tumour has 2\\+ components"):
        build_plan(donors, bases, 4, config=config, seed=0, simulate=standin)
    one = _add_tumour(_ellipsoid_brain(), (20.0, 24.0, 30.0), 4.0, "full")
    two = _add_tumour(one, (44.0, 48.0, 30.0), 4.0, "edema")
    extra = Candidate.from_label("d-two", two, AFFINE)
    assert extra.attributes.n_components == 2
    plan = build_plan([*donors, extra], bases[:3], 8, config=config, seed=0, simulate=standin)
    assert plan_counts(plan, config) == {k: 2 for k in all_strata(config)}
    assert (plan.loc[plan["stratum"].str.startswith("components=2+"), "donor_subject"] == "d-two").all()


def test_real_edit_module(donors, bases) -> None:
    """With ``synth_core.edit.ops`` present: a small plan whose edits are the real ones."""
    ops = pytest.importorskip("synth_core.edit.ops")
    if not hasattr(ops, "apply_pipeline"):
        pytest.skip("synth_core.edit.ops has no apply_pipeline yet")
    from synth_core.edit import EditError
    from synth_core.generate.plan import EDIT_OPS, pipeline_simulate

    assert set(EDIT_OPS) == set(ops.EDIT_OPS)
    config = StrataConfig()
    plan = build_plan(
        donors,
        bases,
        12,
        config=config,
        seed=1,
        simulate=pipeline_simulate,
        retry_on=(EditError,),
        volume_limits_ml=LIMITS,
    )
    assert plan_counts(plan, config) == {k: 1 for k in all_strata(config)}
    donor_by_id = {d.subject_id: d.label for d in donors} | {b.subject_id: b.label for b in bases}
    for row in plan.itertuples(index=False):  # replay exactly as the generate stage will
        base = next(b for b in bases if b.subject_id == row.base_subject)
        donors_arg = {row.donor_subject: donor_by_id[row.donor_subject]}
        label = ops.apply_pipeline(base.label, json.loads(row.edits), seed=int(row.seed), donors=donors_arg).label
        attrs = measure(label, base.affine)
        assert stratum_of(attrs, config) == row.stratum and attrs.whole_ml == pytest.approx(row.whole_ml)


def test_plan_is_fast_enough(donors, bases) -> None:
    import time

    t0 = time.perf_counter()
    build_plan(donors, bases, 36, config=StrataConfig(), seed=9, simulate=standin, volume_limits_ml=LIMITS)
    assert time.perf_counter() - t0 < 15.0
    assert math.isfinite(t0)
