"""CSF/GM/WM segmentation on seeded synthetic phantoms (no timing tests)."""

from __future__ import annotations

import numpy as np
import pytest

from schemas.config import TissueConfig
from synth_core.ingest.tissue import segment_tissue

CONFIG = TissueConfig()


def _phantom(
    seed: int, means: tuple[float, float, float], noise: float = 0.06
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nested spheres: WM core, GM shell, CSF shell; returns (image, mask, truth labels 1/2/3)."""
    shape = (48, 52, 44)
    grids = np.meshgrid(*[np.arange(s, dtype=np.float64) - (s - 1) / 2 for s in shape], indexing="ij")
    r = np.sqrt(sum(g**2 for g in grids))
    truth = np.zeros(shape, np.uint8)
    truth[r < 19] = 1
    truth[r < 15] = 2
    truth[r < 9] = 3
    rng = np.random.default_rng(seed)
    lut = np.array([0.0, *means])
    image = (lut[truth] + rng.normal(0.0, noise, shape)).astype(np.float32)
    image[truth == 0] = 0.0
    return image, truth > 0, truth


def test_t1_phantom_is_recovered() -> None:
    image, mask, truth = _phantom(0, (0.3, 0.6, 0.9))
    labels, params = segment_tissue(image, mask, CONFIG)
    assert labels.dtype == np.uint8 and labels.shape == image.shape
    assert np.mean(labels[mask] == truth[mask]) >= 0.95
    assert not labels[~mask].any()
    assert params["contrast"] == "t1" and params["converged"] and 1 <= params["iterations"] <= CONFIG.em_iterations
    np.testing.assert_allclose(params["means"], [0.3, 0.6, 0.9], atol=0.03)
    np.testing.assert_allclose(params["stds"], [0.06] * 3, atol=0.02)
    assert sum(params["weights"]) == pytest.approx(1.0)
    true_weights = [np.mean(truth[mask] == k) for k in (1, 2, 3)]
    np.testing.assert_allclose(params["weights"], true_weights, atol=0.05)


def test_t2_contrast_reverses_the_order() -> None:
    image, mask, truth = _phantom(1, (0.9, 0.6, 0.3))  # CSF brightest, WM darkest
    labels, params = segment_tissue(image, mask, CONFIG, contrast="t2")
    assert np.mean(labels[mask] == truth[mask]) >= 0.95
    assert params["contrast"] == "t2"
    assert params["means"][0] > params["means"][1] > params["means"][2]
    # the same image read as T1 swaps CSF and WM: the contrast argument matters
    as_t1, _ = segment_tissue(image, mask, CONFIG, contrast="t1")
    assert np.mean(as_t1[mask] == truth[mask]) < 0.5


def test_noisier_phantom_needs_the_spatial_prior() -> None:
    image, mask, truth = _phantom(2, (0.3, 0.6, 0.9), noise=0.12)
    smooth, _ = segment_tissue(image, mask, TissueConfig(smoothing_voxels=3))
    raw, _ = segment_tissue(image, mask, TissueConfig(smoothing_voxels=1))
    acc_smooth = np.mean(smooth[mask] == truth[mask])
    acc_raw = np.mean(raw[mask] == truth[mask])
    assert acc_smooth >= 0.95 and acc_smooth > acc_raw


def test_deterministic() -> None:
    image, mask, _ = _phantom(3, (0.3, 0.6, 0.9))
    a, pa = segment_tissue(image, mask, CONFIG)
    b, pb = segment_tissue(image.copy(), mask.copy(), CONFIG)
    np.testing.assert_array_equal(a, b)
    assert pa == pb


def test_mask_excludes_tumour() -> None:
    image, mask, truth = _phantom(4, (0.3, 0.6, 0.9))
    tumour = np.zeros_like(mask)
    tumour[20:28, 20:28, 18:26] = True
    labels, _ = segment_tissue(image, mask & ~tumour, CONFIG)
    assert not labels[tumour].any()
    keep = mask & ~tumour
    assert np.mean(labels[keep] == truth[keep]) >= 0.95


def test_empty_mask_and_constant_image() -> None:
    image = np.ones((10, 10, 10), np.float32)
    labels, params = segment_tissue(image, np.zeros((10, 10, 10), bool), CONFIG)
    assert not labels.any()
    assert params["n_voxels"] == 0 and params["means"] is None and "empty" in params["note"]
    mask = np.zeros((10, 10, 10), bool)
    mask[2:8, 2:8, 2:8] = True
    labels, params = segment_tissue(image, mask, CONFIG)
    assert np.all(labels[mask] == 2) and not labels[~mask].any()
    assert "constant" in params["note"]


def test_bad_inputs() -> None:
    image, mask, _ = _phantom(5, (0.3, 0.6, 0.9))
    with pytest.raises(ValueError, match="contrast"):
        segment_tissue(image, mask, CONFIG, contrast="flair")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        segment_tissue(image, mask[:-1], CONFIG)
    with pytest.raises(ValueError):
        segment_tissue(image, mask.astype(np.uint8), CONFIG)
    nan = image.copy()
    nan[mask] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        segment_tissue(nan, mask, CONFIG)
