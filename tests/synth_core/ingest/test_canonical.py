"""The canonical form: RAS+ 1 mm, world positions preserved, grid placement, normalization."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from schemas.config import GridConfig, InputLimits, NormalizationConfig
from schemas.labels import MODALITIES
from synth_core.ingest.canonical import CanonicalSubject, canonicalize, quantiles
from synth_core.ingest.types import InputRejected, Volume
from tests.synth_core.ingest.volumes import LPS_1MM, affine, brain_image, ellipsoid, volume

LIMITS = InputLimits()
NORM = NormalizationConfig()
NO_CLIP = NormalizationConfig(clip=1e9)


def _images(
    shape: tuple[int, int, int], aff: np.ndarray, seed: int = 0, radii: tuple[float, float, float] | None = None
) -> dict[str, Volume]:
    return {m: volume(brain_image(shape, seed + i, radii), aff, f"s/{m}.nii.gz") for i, m in enumerate(MODALITIES)}


def _world(aff: np.ndarray, index: np.ndarray) -> np.ndarray:
    """World coordinates of voxel indices (N, 3)."""
    return index @ aff[:3, :3].T + aff[:3, 3]


def _grid_index(cs: CanonicalSubject, world: np.ndarray) -> np.ndarray:
    inv = np.linalg.inv(cs.affine)
    return world @ inv[:3, :3].T + inv[:3, 3]


def _raw(cs: CanonicalSubject, channel: int) -> np.ndarray:
    """Undo the normalization (valid where nothing was clipped)."""
    center, scale = cs.norm[MODALITIES[channel]]  # type: ignore[misc]
    return cs.image[channel].astype(np.float64) * scale + center


def _ramp(world: np.ndarray) -> np.ndarray:
    return 200.0 + 1.0 * world[..., 0] + 2.0 * world[..., 1] + 0.5 * world[..., 2]


def _ramp_images(shape: tuple[int, int, int], aff: np.ndarray) -> dict[str, Volume]:
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=-1).astype(np.float64)
    values = _ramp(_world(aff, idx.reshape(-1, 3))).reshape(shape)
    brain = ellipsoid(shape, tuple(0.4 * s for s in shape))  # type: ignore[arg-type]
    data = np.where(brain, values, 0.0).astype(np.float32)
    assert data[brain].min() > 0
    return {m: volume(data, aff, f"s/{m}.nii.gz") for m in MODALITIES}


# ------------------------------------------------------------------------------------ orientation


def test_lps_reorientation_preserves_world_positions() -> None:
    shape = (40, 44, 36)
    images = _images(shape, LPS_1MM)
    tumor = np.zeros(shape, np.uint8)
    marks = {(10, 12, 14): 4, (20, 25, 18): 5, (15, 30, 20): 6}
    for ijk, v in marks.items():
        tumor[ijk] = v
    cs = canonicalize(images, tumor, GridConfig(shape=(32, 40, 32)), NORM, LIMITS)
    assert cs.source_orientation == "LPS" and not cs.resampled
    assert cs.source_shape == shape and cs.spacing == (1.0, 1.0, 1.0)
    np.testing.assert_array_equal(cs.affine[:3, :3], np.eye(3))
    assert cs.image.shape == (4, 32, 40, 32) and cs.image.dtype == np.float32
    assert cs.brain.dtype == np.bool_ and cs.tumor.dtype == np.uint8 and cs.affine.dtype == np.float64
    assert np.count_nonzero(cs.tumor) == 3
    for ijk, v in marks.items():
        j = _grid_index(cs, _world(LPS_1MM, np.array([ijk], dtype=np.float64)))[0]
        np.testing.assert_allclose(j, np.rint(j), atol=1e-9)
        assert cs.tumor[tuple(np.rint(j).astype(int))] == v
    # every brain voxel lands on a brain voxel of the grid, with its (normalized) intensity
    src = images["t2"].data
    idx = np.argwhere(src != 0)
    j = np.rint(_grid_index(cs, _world(LPS_1MM, idx.astype(np.float64)))).astype(int)
    assert cs.brain[tuple(j.T)].all()
    assert np.count_nonzero(cs.brain) == len(idx)
    center, scale = cs.norm["t2"]  # type: ignore[misc]
    expected = np.clip((src[tuple(idx.T)] - center) / scale, -NORM.clip, NORM.clip)
    np.testing.assert_allclose(cs.image[2][tuple(j.T)], expected, atol=1e-5)
    assert cs.brain_fraction_cut == 0.0


def test_2mm_source_is_resampled_to_1mm() -> None:
    shape = (20, 22, 18)
    aff = affine(spacing=(2.0, 2.0, 2.0), flips=(-1, -1, 1), translation=(20.0, 25.0, -10.0))
    images = _ramp_images(shape, aff)
    tumor = np.zeros(shape, np.uint8)
    tumor[10, 11, 9] = 6
    cs = canonicalize(images, tumor, GridConfig(shape=(40, 40, 32)), NO_CLIP, LIMITS)
    assert cs.resampled and cs.spacing == (2.0, 2.0, 2.0) and cs.source_orientation == "LPS"
    np.testing.assert_array_equal(cs.affine[:3, :3], np.eye(3))
    # linear interpolation of a linear ramp is exact away from the brain's edge
    interior = ndimage.binary_erosion(cs.brain, iterations=3)
    assert interior.sum() > 1000
    j = np.argwhere(interior).astype(np.float64)
    np.testing.assert_allclose(_raw(cs, 0)[interior], _ramp(_world(cs.affine, j)), atol=2e-3)
    # the tumour voxel (nearest neighbour) sits where it was in the world
    w = _world(aff, np.array([[10.0, 11.0, 9.0]]))
    g = np.rint(_grid_index(cs, w)[0]).astype(int)
    assert cs.tumor[tuple(g)] == 6
    assert 4 <= np.count_nonzero(cs.tumor == 6) <= 27
    # 1 mm voxels: about 8 per 2 mm source voxel
    n_src = np.count_nonzero(images["t1"].data)
    assert abs(np.count_nonzero(cs.brain) / (8 * n_src) - 1) < 0.1


def test_oblique_source_is_resampled() -> None:
    shape = (30, 30, 24)
    aff = affine(translation=(-10.0, 5.0, 7.0), rotate_z_deg=25.0)
    images = _ramp_images(shape, aff)
    cs = canonicalize(images, None, GridConfig(shape=(40, 40, 32)), NO_CLIP, LIMITS)
    assert cs.resampled
    interior = ndimage.binary_erosion(cs.brain, iterations=3)
    j = np.argwhere(interior).astype(np.float64)
    np.testing.assert_allclose(_raw(cs, 3)[interior], _ramp(_world(cs.affine, j)), atol=2e-3)
    n_src = np.count_nonzero(images["t1"].data)
    assert abs(np.count_nonzero(cs.brain) / n_src - 1) < 0.05
    assert not cs.tumor.any()


def test_nearly_aligned_affine_is_not_resampled() -> None:
    aff = LPS_1MM.copy()
    aff[0, 1] = 2e-4
    aff[2, 2] = 1.0005
    cs = canonicalize(_images((20, 20, 20), aff), None, GridConfig(shape=(24, 24, 24)), NORM, LIMITS)
    assert not cs.resampled


# --------------------------------------------------------------------------------------- grid


def _expected_offset(mask: np.ndarray, grid: tuple[int, int, int]) -> tuple[int, ...]:
    idx = np.argwhere(mask)
    lo, hi = idx.min(axis=0), idx.max(axis=0)
    return tuple(int(np.floor((a + b) / 2 - (s - 1) / 2 + 0.5)) for a, b, s in zip(lo, hi, grid, strict=True))


@pytest.mark.parametrize(
    ("shape", "center", "grid"),
    [
        ((60, 50, 40), (20.0, 30.0, 15.0), (32, 32, 32)),  # crop, off-centre brain
        ((20, 24, 18), None, (32, 32, 32)),  # pad on every side
    ],
)
def test_crop_and_pad_offsets(shape, center, grid) -> None:
    rng = np.random.default_rng(7)
    mask = ellipsoid(shape, (8.0, 8.0, 7.0), center)
    data = np.where(mask, rng.uniform(10, 20, shape), 0.0).astype(np.float32)
    images = {"t1": volume(data, np.eye(4), "s/t1.nii.gz")}
    cs = canonicalize(images, None, GridConfig(shape=grid), NO_CLIP, LIMITS)
    assert cs.grid_offset == _expected_offset(mask, grid)
    np.testing.assert_allclose(cs.affine[:3, 3], cs.grid_offset)
    raw = _raw(cs, 0)
    for j in np.ndindex(*grid):
        if not cs.brain[j]:
            assert cs.image[0][j] == 0.0
            continue
        i = tuple(a + o for a, o in zip(j, cs.grid_offset, strict=True))
        assert raw[j] == pytest.approx(float(data[i]), abs=1e-4)
    assert np.count_nonzero(cs.brain) == np.count_nonzero(mask)
    centre = [(a + b) / 2 for a, b in zip(np.argwhere(cs.brain).min(0), np.argwhere(cs.brain).max(0), strict=True)]
    assert all(abs(c - (s - 1) / 2) <= 0.5 for c, s in zip(centre, grid, strict=True))
    if shape[0] < grid[0]:
        assert all(o < 0 for o in cs.grid_offset)


def test_brain_outside_grid() -> None:
    shape = (40, 40, 40)
    images = _images(shape, np.eye(4), radii=(18.0, 18.0, 18.0))
    grid = GridConfig(shape=(24, 24, 24))
    with pytest.raises(InputRejected) as info:
        canonicalize(images, None, grid, NORM, LIMITS)
    err = info.value
    assert err.check == "brain_outside_grid" and err.file == "s/t1.nii.gz"
    mask = images["t1"].data != 0
    o = _expected_offset(mask, (24, 24, 24))
    inside = np.count_nonzero(mask[o[0] : o[0] + 24, o[1] : o[1] + 24, o[2] : o[2] + 24])
    fraction = 1 - inside / np.count_nonzero(mask)
    assert float(err.value) == pytest.approx(fraction, abs=1e-6)
    cs = canonicalize(images, None, grid, NORM, InputLimits(max_brain_outside_grid=1.0))
    assert cs.brain_fraction_cut == pytest.approx(fraction)
    assert np.count_nonzero(cs.brain) == inside


def test_empty_brain() -> None:
    zeros = np.zeros((16, 16, 16), np.float32)
    images = {"flair": volume(zeros, np.eye(4), "s/flair.nii.gz"), "t1c": volume(zeros, np.eye(4), "s/t1c.nii.gz")}
    with pytest.raises(InputRejected) as info:
        canonicalize(images, None, GridConfig(shape=(16, 16, 16)), NORM, LIMITS)
    assert info.value.check == "empty_brain" and info.value.value == "0" and info.value.file == "s/t1c.nii.gz"


# ------------------------------------------------------------------------------ normalization


def test_robust_zscore_inside_the_brain() -> None:
    shape = (30, 30, 30)
    rng = np.random.default_rng(11)
    mask = ellipsoid(shape, (11.0, 11.0, 11.0))
    data = np.where(mask, rng.lognormal(4.0, 0.5, shape), 0.0).astype(np.float32)
    data[mask & (rng.random(shape) < 0.01)] = 5000.0  # outliers the clip must tame
    images = {"t1": volume(data, np.eye(4), "s/t1.nii.gz")}
    unclipped = canonicalize(images, None, GridConfig(shape=(32, 32, 32)), NO_CLIP, LIMITS)
    z = unclipped.image[0][unclipped.brain].astype(np.float64)
    assert np.median(z) == pytest.approx(0.0, abs=1e-5)
    p25, p75 = np.percentile(z, [25, 75])
    assert (p75 - p25) / 1.349 == pytest.approx(1.0, abs=1e-5)
    values = data[mask].astype(np.float64)
    center, scale = unclipped.norm["t1"]  # type: ignore[misc]
    assert center == pytest.approx(np.median(values), rel=1e-6)
    q25, q75 = np.percentile(values, [25, 75])
    assert scale == pytest.approx((q75 - q25) / 1.349, rel=1e-6)
    assert unclipped.norm_method["t1"] == "iqr"
    assert np.all(unclipped.image[0][~unclipped.brain] == 0.0)

    clipped = canonicalize(images, None, GridConfig(shape=(32, 32, 32)), NORM, LIMITS)
    assert float(np.abs(clipped.image[0]).max()) == pytest.approx(NORM.clip)
    assert clipped.norm["t1"] == unclipped.norm["t1"]
    assert np.all(clipped.image[0][~clipped.brain] == 0.0)


def test_scale_fallbacks() -> None:
    shape = (20, 20, 20)
    mask = ellipsoid(shape, (8.0, 8.0, 8.0))
    constant = np.where(mask, 7.0, 0.0).astype(np.float32)
    peaked = constant.copy()
    idx = np.argwhere(mask)
    peaked[tuple(idx[::10].T)] = 20.0  # 10 % of the brain differs: IQR 0, std > 0
    images = {"t1": volume(constant, np.eye(4), "s/t1.nii.gz"), "t2": volume(peaked, np.eye(4), "s/t2.nii.gz")}
    cs = canonicalize(images, None, GridConfig(shape=(24, 24, 24)), NORM, LIMITS)
    assert cs.norm_method["t1"] == "unit" and cs.norm["t1"] == (7.0, 1.0)
    assert np.all(cs.image[0][cs.brain] == 0.0)
    assert cs.norm_method["t2"] == "std"
    assert cs.norm["t2"][1] == pytest.approx(float(np.std(peaked[mask])))  # type: ignore[index]


def test_missing_modality_is_nan_never_zero() -> None:
    images = _images((20, 20, 20), LPS_1MM)
    del images["t2"]
    cs = canonicalize(images, None, GridConfig(shape=(24, 24, 24)), NORM, LIMITS)
    assert np.isnan(cs.image[MODALITIES.index("t2")]).all()
    assert cs.norm["t2"] is None and cs.norm_method["t2"] is None
    for m in ("t1", "t1c", "flair"):
        assert np.isfinite(cs.image[MODALITIES.index(m)]).all()
        assert cs.norm[m] is not None
    assert not cs.tumor.any()


def test_tumour_outside_mask_and_holes_join_the_brain() -> None:
    shape = (24, 24, 24)
    images = _images(shape, np.eye(4), radii=(8.0, 8.0, 8.0))
    hole = (slice(10, 13), slice(10, 13), slice(10, 13))
    for vol in images.values():
        vol.data[hole] = 0.0
    tumor = np.zeros(shape, np.uint8)
    tumor[11, 11, 2] = 4  # outside the ellipsoid, images are zero there
    cs = canonicalize(images, tumor, GridConfig(shape=(24, 24, 24)), NORM, LIMITS)
    o = np.asarray(cs.grid_offset)
    assert cs.brain[tuple(np.array([11, 11, 2]) - o)]
    assert cs.tumor[tuple(np.array([11, 11, 2]) - o)] == 4
    assert cs.brain[tuple(np.array([11, 11, 11]) - o)]
    n_expected = np.count_nonzero(images["t1"].data) + 27 + 1
    assert np.count_nonzero(cs.brain) == n_expected


def test_bad_arguments() -> None:
    images = _images((16, 16, 16), np.eye(4))
    with pytest.raises(ValueError, match="unknown modalities"):
        canonicalize({"dwi": images["t1"]}, None, GridConfig(shape=(16, 16, 16)), NORM, LIMITS)
    with pytest.raises(ValueError, match="uint8"):
        canonicalize(images, np.zeros((16, 16, 16), np.int16), GridConfig(shape=(16, 16, 16)), NORM, LIMITS)
    with pytest.raises(ValueError):
        canonicalize({}, None, GridConfig(shape=(16, 16, 16)), NORM, LIMITS)


def test_quantiles_match_numpy() -> None:
    rng = np.random.default_rng(3)
    for values in (
        rng.normal(size=10_001).astype(np.float32),
        rng.integers(0, 4, 5000).astype(np.float32),
        np.r_[np.zeros(1000), rng.exponential(size=7) ** 4].astype(np.float32),
        np.array([3.0], np.float32),
    ):
        pcts = (0.0, 12.5, 25.0, 50.0, 75.0, 99.0, 100.0)
        np.testing.assert_allclose(quantiles(values, pcts), np.percentile(values.astype(np.float64), pcts), rtol=1e-6)


@pytest.mark.parametrize("order", [0, 1])
def test_separable_resampling_matches_scipy(order: int) -> None:
    from synth_core.ingest.canonical import _resample

    rng = np.random.default_rng(9)
    src = rng.normal(size=(9, 11, 7)).astype(np.float32)
    inv = np.diag([0.5, 0.4, 0.5, 1.0])  # 2 mm / 2.5 mm source voxels
    inv[:3, 3] = [0.3, -0.2, 0.1]
    origin = np.array([1.0, 2.0, -0.5])
    out = np.zeros((14, 20, 11), np.float32)
    _resample(src, inv, origin, out, order=order)
    expected = ndimage.affine_transform(
        src, inv[:3, :3], offset=inv[:3, :3] @ origin + inv[:3, 3], output_shape=out.shape, order=order, mode="constant"
    )
    coords = [inv[a, a] * (np.arange(out.shape[a]) + origin[a]) + inv[a, 3] for a in range(3)]
    inside = np.ix_(*[(c >= 0) & (c <= n - 1) for c, n in zip(coords, src.shape, strict=True)])
    np.testing.assert_allclose(out[inside], expected[inside], atol=1e-5)
    outside = np.ones(out.shape, bool)
    outside[np.ix_(*[(c >= -0.5) & (c <= n - 0.5) for c, n in zip(coords, src.shape, strict=True)])] = False
    assert np.all(out[outside] == 0)
