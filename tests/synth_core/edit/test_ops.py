"""Label-map edits on tiny seeded volumes: hypothesis properties and constructed examples.

Synthetic cases: an ellipsoidal brain (40x48x40 voxels; CSF, GM, WM shells) and a tumour of nested
spheres (edema shell, enhancing rim, necrotic core; optionally without necrosis or enhancing).

Quick timing check (not a test) on a 160x192x160 map with a 40 ml tumour:
``python -m tests.synth_core.edit.test_ops``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synth_core.edit import (
    EditError,
    EditSpec,
    apply_pipeline,
    check_label_map,
    fill_healthy,
    move_tumor,
    resize_tumor,
    step_seed,
    transplant_tumor,
)
from synth_core.edit.validity import necrosis_exposed

SHAPE = (40, 48, 40)
SEMI = (18.0, 22.0, 18.0)
CENTRE = np.array([(s - 1) / 2 for s in SHAPE])
PROPS = settings(max_examples=25, deadline=None)


def make_brain(shape: tuple[int, int, int] = SHAPE, semi: tuple[float, float, float] = SEMI) -> np.ndarray:
    """Ellipsoidal brain: CSF outer shell, GM shell, WM inside (uint8 labels 0..3)."""
    grids = np.meshgrid(*[np.arange(s, dtype=np.float64) - (s - 1) / 2 for s in shape], indexing="ij")
    q = np.sqrt(sum((g / a) ** 2 for g, a in zip(grids, semi, strict=True)))
    label = np.zeros(shape, dtype=np.uint8)
    label[q <= 1.0] = 1
    label[q <= 0.9] = 2
    label[q <= 0.75] = 3
    return label


def add_tumour(
    brain: np.ndarray,
    centre: np.ndarray | tuple[float, float, float],
    r_edema: float,
    r_core: float,
    r_necrosis: float,
    *,
    enhancing: bool = True,
    necrosis: bool = True,
) -> np.ndarray:
    """Nested spheres: edema (4) to ``r_edema``, core to ``r_core`` (6, or 5 without enhancing), necrosis (5)."""
    grids = np.meshgrid(*[np.arange(s, dtype=np.float64) for s in brain.shape], indexing="ij")
    dist = np.sqrt(sum((g - c) ** 2 for g, c in zip(grids, centre, strict=True)))
    label = brain.copy()
    label[(dist <= r_edema) & (brain > 0)] = 4
    label[(dist <= r_core) & (brain > 0)] = 6 if enhancing else 5
    if enhancing and necrosis:
        label[(dist <= r_necrosis) & (brain > 0)] = 5
    return label


BRAIN = make_brain()


@dataclass(frozen=True)
class Case:
    label: np.ndarray
    centre: np.ndarray
    r_edema: float
    enhancing: bool
    necrosis: bool


@st.composite
def cases(draw: st.DrawFn, max_offset: float = 3.0) -> Case:
    """A nested-sphere tumour well inside the brain (edema shell >= 1.6 voxels, rim >= 1.2)."""
    offset = np.array(draw(st.tuples(*[st.floats(-max_offset, max_offset)] * 3)))
    r_edema = draw(st.floats(3.5, 6.0))
    r_core = r_edema - draw(st.floats(1.6, 2.5))
    r_nec = r_core - draw(st.floats(1.2, 2.0))
    enhancing = draw(st.booleans())
    necrosis = draw(st.booleans())
    centre = CENTRE + offset
    label = add_tumour(BRAIN, centre, r_edema, r_core, r_nec, enhancing=enhancing, necrosis=necrosis)
    return Case(label=label, centre=centre, r_edema=r_edema, enhancing=enhancing, necrosis=necrosis)


def counts(label: np.ndarray) -> dict[str, int]:
    return {
        "whole": int(np.count_nonzero(label >= 4)),
        "core": int(np.count_nonzero(label >= 5)),
        "necrotic": int(np.count_nonzero(label == 5)),
        "enhancing": int(np.count_nonzero(label == 6)),
    }


def centroid(label: np.ndarray) -> np.ndarray:
    return np.argwhere(label >= 4).mean(axis=0)


def assert_valid_edit(before: np.ndarray, after: np.ndarray) -> None:
    """Invariants of every edit: dtype, labels, brain outline, nesting, anatomy outside the tumours kept."""
    assert after.dtype == np.uint8 and after.shape == before.shape
    assert set(np.unique(after).tolist()) <= set(range(7))
    np.testing.assert_array_equal(after > 0, before > 0)
    check_label_map(after, original_brain=before > 0)
    untouched = (before < 4) & (after < 4)
    np.testing.assert_array_equal(after[untouched], before[untouched])
    vacated = (before >= 4) & (after < 4)
    assert np.all((after[vacated] >= 1) & (after[vacated] <= 3))


# --------------------------------------------------------------------------------------------------
# resize


@PROPS
@given(case=cases(), factor=st.floats(0.4, 2.5), seed=st.integers(0, 2**32))
def test_resize_properties(case: Case, factor: float, seed: int) -> None:
    before = case.label.copy()
    result = resize_tumor(case.label, factor, seed=seed)
    np.testing.assert_array_equal(case.label, before)  # pure: the input is untouched
    out = result.label
    assert_valid_edit(before, out)
    original, new = counts(before), counts(out)
    assert abs(new["whole"] - factor * original["whole"]) <= 0.10 * factor * original["whole"]
    assert result.params["brain_limited"] is False
    assert result.params["achieved_factor"] == pytest.approx(new["whole"] / original["whole"])
    assert result.params["factor"] == factor and result.params["seed"] == seed
    # sub-regions: absent stays absent, the closed enhancing rim stays closed (N2)
    if original["necrotic"] == 0:
        assert new["necrotic"] == 0
    if original["enhancing"] == 0:
        assert new["enhancing"] == 0
    if original["necrotic"] and original["enhancing"]:
        assert not necrosis_exposed(out).any()
    if original["core"] * factor >= 8:
        assert new["core"] > 0
    assert np.linalg.norm(centroid(out) - centroid(before)) <= 1.0
    json.dumps(result.record())
    again = resize_tumor(case.label, factor, seed=seed)
    assert again.label.tobytes() == out.tobytes() and again.params == result.params


def test_resize_brain_limited_reports_achieved_factor() -> None:
    label = add_tumour(BRAIN, (19.5, 23.5, 6.0), 4.5, 2.5, 1.0)
    result = resize_tumor(label, 3.0, seed=0)
    assert_valid_edit(label, result.label)
    assert result.params["brain_limited"] is True
    achieved = counts(result.label)["whole"] / counts(label)["whole"]
    assert result.params["achieved_factor"] == pytest.approx(achieved)
    assert 1.0 < achieved < 3.0
    assert result.params["clipped_voxels"] > 0


def test_resize_rejects_bad_arguments() -> None:
    with pytest.raises(EditError, match=r"resize: factor: expected .* received -1"):
        resize_tumor(add_tumour(BRAIN, CENTRE, 5, 3, 1), -1.0, seed=0)
    with pytest.raises(EditError, match="resize: the label map has no tumour"):
        resize_tumor(BRAIN, 2.0, seed=0)
    with pytest.raises(EditError, match="resize: seed"):
        resize_tumor(add_tumour(BRAIN, CENTRE, 5, 3, 1), 2.0, seed=-3)
    with pytest.raises(EditError, match="dtype uint8, received int16"):
        resize_tumor(BRAIN.astype(np.int16), 2.0, seed=0)


def test_resize_repairs_exposed_core() -> None:
    """A tumour whose core touches WM on one side (N1 broken in the input) comes out enclosed."""
    label = add_tumour(BRAIN, CENTRE, 5.0, 3.0, 1.0)
    label[int(CENTRE[0]) + 4 : int(CENTRE[0]) + 7, 22:26, 18:22] = 6  # core pokes out of the edema
    result = resize_tumor(label, 1.5, seed=0)
    check_label_map(result.label, original_brain=BRAIN > 0)


# --------------------------------------------------------------------------------------------------
# move


@PROPS
@given(case=cases(), shift=st.tuples(*[st.floats(-4.0, 4.0)] * 3), seed=st.integers(0, 2**32))
def test_move_translation_properties(case: Case, shift: tuple[float, float, float], seed: int) -> None:
    before = case.label.copy()
    target = tuple(float(v) for v in CENTRE + np.array(shift))
    result = move_tumor(case.label, target, seed=seed)
    np.testing.assert_array_equal(case.label, before)
    out = result.label
    assert_valid_edit(before, out)
    assert np.linalg.norm(centroid(out) - np.array(target)) <= 1.0
    assert result.params["centroid_error_vox"] <= 1.0
    assert abs(counts(out)["whole"] - counts(before)["whole"]) <= 0.05 * counts(before)["whole"]
    assert counts(out) == counts(before)  # whole-voxel shift of the crop: exact
    assert result.params["center_vox"] == list(target) and result.params["seed"] == seed
    json.dumps(result.record())
    assert move_tumor(case.label, target, seed=seed).label.tobytes() == out.tobytes()


@PROPS
@given(
    case=cases(max_offset=2.0),
    shift=st.tuples(*[st.floats(-3.0, 3.0)] * 3),
    angles=st.tuples(*[st.floats(-180.0, 180.0)] * 3),
)
def test_move_with_rotation_properties(
    case: Case, shift: tuple[float, float, float], angles: tuple[float, float, float]
) -> None:
    before = case.label.copy()
    target = tuple(float(v) for v in CENTRE + np.array(shift))
    result = move_tumor(case.label, target, rotate_deg=angles, seed=1)
    out = result.label
    assert_valid_edit(before, out)
    assert abs(counts(out)["whole"] - counts(before)["whole"]) <= 0.05 * counts(before)["whole"]
    assert np.linalg.norm(centroid(out) - np.array(target)) <= 1.0
    assert result.params["rotate_deg"] == list(angles)
    if counts(before)["necrotic"] and counts(before)["enhancing"]:
        assert not necrosis_exposed(out).any()


def test_move_infeasible_raises_naming_move_and_centre() -> None:
    label = add_tumour(BRAIN, CENTRE, 5.0, 3.0, 1.5)
    with pytest.raises(EditError, match=r"move: center_vox=\(2, 23\.5, 19\.5\).*does not fit inside the brain"):
        move_tumor(label, (2.0, 23.5, 19.5), seed=0)
    with pytest.raises(EditError, match=r"move: center_vox=\(-30, 0, 0\)"):
        move_tumor(label, (-30.0, 0.0, 0.0), seed=0)


def test_move_clip_drops_voxels_outside_the_brain() -> None:
    label = add_tumour(BRAIN, CENTRE, 5.0, 3.0, 1.5)
    result = move_tumor(label, (3.0, 23.5, 19.5), clip=True, seed=0)
    assert_valid_edit(label, result.label)
    assert 0 < result.params["clipped_voxels"]
    assert counts(result.label)["whole"] == counts(label)["whole"] - result.params["clipped_voxels"]


def test_move_center_mm_with_affine() -> None:
    label = add_tumour(BRAIN, CENTRE, 5.0, 3.0, 1.5)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = (-40.0, -48.0, -40.0)
    result = move_tumor(label, center_mm=(-4.0, 0.0, 2.0), affine=affine, seed=0)  # voxel (18, 24, 21)
    assert result.params["center_vox"] == [18.0, 24.0, 21.0]
    assert result.params["center_mm"] == [-4.0, 0.0, 2.0]
    assert np.linalg.norm(centroid(result.label) - np.array([18.0, 24.0, 21.0])) <= 1.0
    with pytest.raises(EditError, match="move: centre: expected exactly one"):
        move_tumor(label, (18, 24, 21), center_mm=(0, 0, 0), affine=affine, seed=0)
    with pytest.raises(EditError, match="move: affine"):
        move_tumor(label, center_mm=(0, 0, 0), seed=0)


def test_move_from_brain_edge_keeps_core_enclosed() -> None:
    """A core that touched the background at the brain's edge is enclosed once moved inside (N1 repair)."""
    label = add_tumour(BRAIN, (19.5, 23.5, 2.5), 5.0, 3.0, 1.5)
    result = move_tumor(label, tuple(CENTRE), seed=0)
    assert_valid_edit(label, result.label)


# --------------------------------------------------------------------------------------------------
# transplant

RECIPIENT = make_brain((42, 46, 40), (19.0, 21.0, 17.5))


@PROPS
@given(case=cases(), seed=st.integers(0, 2**32))
def test_transplant_into_healthy_brain(case: Case, seed: int) -> None:
    before = RECIPIENT.copy()
    result = transplant_tumor(RECIPIENT, case.label, seed=seed)
    np.testing.assert_array_equal(RECIPIENT, before)
    out = result.label
    assert_valid_edit(before, out)
    donor = counts(case.label)
    assert abs(counts(out)["whole"] - donor["whole"]) <= 0.05 * donor["whole"]
    centre = result.params["chosen_center_vox"]
    assert RECIPIENT[tuple(centre)] == 3  # a white-matter centre
    assert np.linalg.norm(centroid(out) - np.array(centre)) <= 1.0
    assert result.params["recipient_tumour_removed_voxels"] == 0
    json.dumps(result.record())
    assert transplant_tumor(RECIPIENT, case.label, seed=seed).label.tobytes() == out.tobytes()


def test_transplant_different_seeds_give_different_placements() -> None:
    donor = add_tumour(BRAIN, CENTRE, 4.0, 2.5, 1.0)
    centres = {tuple(transplant_tumor(RECIPIENT, donor, seed=s).params["chosen_center_vox"]) for s in range(6)}
    assert len(centres) >= 3


def test_transplant_replaces_the_recipients_tumour() -> None:
    recipient = add_tumour(RECIPIENT, (14.0, 15.0, 20.0), 4.0, 2.5, 1.0)
    donor = add_tumour(BRAIN, CENTRE, 5.0, 3.0, 1.5)
    result = transplant_tumor(recipient, donor, center_vox=(27.0, 30.0, 20.0), donor_ref="subject-7", seed=0)
    out = result.label
    assert_valid_edit(recipient, out)
    old = recipient >= 4
    assert not (out[old] >= 4).any()  # the old site is healthy again (far from the new one)
    assert counts(out) == counts(donor)
    assert result.params["recipient_tumour_removed_voxels"] == int(old.sum())
    assert result.params["donor_ref"] == "subject-7" and len(result.params["donor_tumour_sha256"]) == 64


def test_transplant_errors() -> None:
    donor = add_tumour(BRAIN, CENTRE, 5.0, 3.0, 1.5)
    with pytest.raises(EditError, match=r"transplant: center_vox=\(2, 23, 20\).*does not fit"):
        transplant_tumor(RECIPIENT, donor, center_vox=(2, 23, 20), seed=0)
    with pytest.raises(EditError, match=r"transplant \(donor\): the label map has no tumour"):
        transplant_tumor(RECIPIENT, BRAIN, seed=0)
    huge = add_tumour(BRAIN, CENTRE, 17.0, 10.0, 5.0)
    with pytest.raises(EditError, match="transplant: center_vox=None: expected a white-matter centre"):
        transplant_tumor(make_brain((30, 30, 30), (12.0, 12.0, 12.0)), huge, seed=0)


# --------------------------------------------------------------------------------------------------
# fill rule


def test_fill_rule_known_answer() -> None:
    """Slabs GM (x < 20) / WM (x >= 20); a thin bar across them is filled slab by slab."""
    label = np.zeros((40, 40, 40), dtype=np.uint8)
    label[2:38, 2:38, 2:38] = 2
    label[20:38, 2:38, 2:38] = 3
    label[10:30, 20:23, 18:21] = 4
    mask = label == 4
    out = fill_healthy(label, mask)
    expected = np.where(np.arange(40) < 20, 2, 3)
    xs = np.nonzero(mask)[0]
    np.testing.assert_array_equal(out[mask], expected[xs])
    np.testing.assert_array_equal(out[~mask], label[~mask])
    assert (label[mask] == 4).all()  # input untouched


def test_fill_rule_outside_brain_stays_background_and_far_sources_are_found() -> None:
    """A mask wrapped in 8 voxels of (unmasked) tumour: the nearest healthy voxel lies beyond the first box."""
    label = np.zeros((50, 50, 50), dtype=np.uint8)
    label[5:45, 5:45, 5:45] = 3
    label[5:45, 5:45, 5:12] = 1  # CSF slab at low z
    label[12:38, 12:38, 12:44] = 4  # edema, not filled
    label[20:30, 20:30, 26:36] = 5  # the filled core
    mask = label == 5
    mask[0:3, 0:3, 0:3] = True  # outside the brain: stays 0
    out = fill_healthy(label, mask)
    assert (out[0:3, 0:3, 0:3] == 0).all()
    # nearest healthy voxels: WM at x or y = 11 or 38, or z = 44 (distance >= 9); CSF (z <= 11) is >= 15 away
    assert (out[20:30, 20:30, 26:36] == 3).all()
    assert (out[label == 4] == 4).all()


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32))
def test_fill_rule_matches_brute_force_nearest(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (24, 26, 22)
    label = rng.integers(1, 4, size=shape).astype(np.uint8)
    label[:2] = 0  # some background
    lo = rng.integers(2, 10, size=3)
    hi = lo + rng.integers(3, 12, size=3)
    mask = np.zeros(shape, dtype=bool)
    mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = True
    out = fill_healthy(label, mask)
    fill = mask & (label > 0)
    src = (label >= 1) & (label <= 3) & ~mask
    from scipy import ndimage

    nearest = ndimage.distance_transform_edt(~src)
    for k in (1, 2, 3):
        dist_k = ndimage.distance_transform_edt(~(src & (label == k)))
        chosen = fill & (out == k)
        np.testing.assert_allclose(dist_k[chosen], nearest[chosen])
    assert np.isin(out[fill], (1, 2, 3)).all()
    np.testing.assert_array_equal(out[~fill], label[~fill])


def test_fill_rule_errors() -> None:
    with pytest.raises(EditError, match=r"fill_healthy: mask: expected shape \(40, 48, 40\)"):
        fill_healthy(BRAIN, np.zeros((3, 3, 3), dtype=bool))
    only_tumour = np.zeros((10, 10, 10), dtype=np.uint8)
    only_tumour[2:8, 2:8, 2:8] = 4
    with pytest.raises(EditError, match="fill rule: expected healthy brain tissue"):
        fill_healthy(only_tumour, only_tumour == 4)


# --------------------------------------------------------------------------------------------------
# pipeline


def _pipeline_case() -> tuple[np.ndarray, np.ndarray]:
    return add_tumour(BRAIN, CENTRE, 5.0, 3.0, 1.5), add_tumour(BRAIN, CENTRE + 2, 4.0, 2.0, 0.5, necrosis=False)


def test_pipeline_applies_edits_in_order_with_derived_seeds() -> None:
    label, donor = _pipeline_case()
    edits = [
        EditSpec("resize", {"factor": 1.6}),
        EditSpec("move", {"center_vox": (17.0, 26.0, 21.0), "rotate_deg": (0.0, 0.0, 30.0)}),
        EditSpec("transplant", {"donor": "d1"}),
        {"op": "resize", "params": {"factor": 0.5}},
    ]
    result = apply_pipeline(label, edits, seed=11, donors={"d1": donor})
    assert_valid_edit(label, result.label)
    assert [r["op"] for r in result.edits] == ["resize", "move", "transplant", "resize"]
    assert [r["seed"] for r in result.edits] == [step_seed(11, i) for i in range(4)]
    assert result.edits[2]["params"]["donor_ref"] == "d1"
    json.dumps(list(result.edits))
    final = counts(result.label)["whole"]
    assert abs(final - 0.5 * counts(donor)["whole"]) <= 0.1 * 0.5 * counts(donor)["whole"]
    again = apply_pipeline(label, edits, seed=11, donors={"d1": donor})
    assert again.label.tobytes() == result.label.tobytes() and again.edits == result.edits
    other = apply_pipeline(label, edits, seed=12, donors={"d1": donor})
    assert other.edits[2]["seed"] != result.edits[2]["seed"]


def test_pipeline_error_names_step_edit_and_params() -> None:
    label, _ = _pipeline_case()
    edits = [EditSpec("resize", {"factor": 1.2}), EditSpec("move", {"center_vox": (1.0, 23.5, 19.5)})]
    with pytest.raises(EditError, match=r"apply_pipeline step 1 \(move, params .*center_vox.*\): move: center_vox"):
        apply_pipeline(label, edits, seed=0)
    with pytest.raises(EditError, match=r"step 0 \(grow.*op: expected one of"):
        apply_pipeline(label, [EditSpec("grow", {"factor": 2})], seed=0)  # type: ignore[arg-type]
    with pytest.raises(EditError, match=r"step 0 \(resize.*unknown \['seed'\]"):
        apply_pipeline(label, [EditSpec("resize", {"factor": 2, "seed": 3})], seed=0)
    with pytest.raises(EditError, match=r"step 0 \(resize, params \[1, 2\]\): params: expected a mapping"):
        apply_pipeline(label, [EditSpec("resize", [1, 2])], seed=0)  # type: ignore[arg-type]
    with pytest.raises(EditError, match=r"step 0 \(transplant.*donor: expected a key of donors"):
        apply_pipeline(label, [EditSpec("transplant", {"donor": "nope"})], seed=0)


def test_pipeline_without_edits_returns_a_copy() -> None:
    label, _ = _pipeline_case()
    result = apply_pipeline(label, [], seed=0)
    assert result.label is not label and result.label.tobytes() == label.tobytes() and result.edits == ()


# --------------------------------------------------------------------------------------------------
# timing check (not a test)


def _timing() -> dict[str, float]:
    """Milliseconds per edit on a 160x192x160 map with a 40 ml tumour (median of 5)."""
    brain = make_brain((160, 192, 160), (72.0, 88.0, 68.0))
    r = (40_000 * 3 / 4 / np.pi) ** (1 / 3)
    label = add_tumour(brain, (70.0, 100.0, 80.0), r, r - 4, r - 8)
    runs = {
        "resize x0.3": lambda: resize_tumor(label, 0.3, seed=0),
        "resize x2.5": lambda: resize_tumor(label, 2.5, seed=0),
        "move (translate)": lambda: move_tumor(label, (90.0, 80.0, 70.0), seed=0),
        "move (rotate)": lambda: move_tumor(label, (90.0, 80.0, 70.0), rotate_deg=(20.0, 30.0, 40.0), seed=0),
        "transplant (random centre)": lambda: transplant_tumor(brain, label, seed=0),
        "fill_healthy (whole tumour)": lambda: fill_healthy(label, label >= 4),
        "check_label_map": lambda: check_label_map(label, original_brain=brain > 0),
    }
    out = {}
    for name, fn in runs.items():
        fn()
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        out[name] = 1e3 * float(np.median(times))
    return out


if __name__ == "__main__":
    for name, ms in _timing().items():
        print(f"{name:30s} {ms:7.1f} ms")  # noqa: T201
