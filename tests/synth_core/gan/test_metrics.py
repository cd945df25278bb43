"""Masked MAE / PSNR / SSIM and label intensity signatures on small seeded volumes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from schemas.labels import MODALITIES
from synth_core.gan.metrics import (
    PSNR_CAP_DB,
    label_signature,
    masked_mae,
    masked_psnr,
    masked_ssim,
    signature_checks,
)

SHAPE = (20, 22, 18)


def _volume(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A smooth 4-channel image (z-score-like) and an ellipsoid brain mask."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, s) for s in SHAPE], indexing="ij")
    base = np.stack([np.sin(3 * grids[0] + k) + np.cos(2 * grids[1] - k) + grids[2] * k for k in range(4)])
    image = (base + 0.1 * rng.normal(size=base.shape)).astype(np.float32)
    mask = (grids[0] ** 2 + grids[1] ** 2 + grids[2] ** 2) < 0.7
    return image, mask


def test_identical_images() -> None:
    image, mask = _volume()
    mae = masked_mae(image, image.copy(), mask)
    psnr = masked_psnr(image, image.copy(), mask)
    ssim = masked_ssim(image, image.copy(), mask)
    assert list(mae) == list(MODALITIES) == list(psnr) == list(ssim)
    assert all(v == 0.0 for v in mae.values())
    assert all(v == PSNR_CAP_DB for v in psnr.values())  # capped, not inf
    assert all(v == pytest.approx(1.0, abs=1e-9) for v in ssim.values())


def test_known_values() -> None:
    image, mask = _volume()
    fake = image + 0.5
    mae = masked_mae(fake, image, mask)
    psnr = masked_psnr(fake, image, mask, data_range=10.0)
    assert all(v == pytest.approx(0.5, rel=1e-5) for v in mae.values())
    assert all(v == pytest.approx(10 * math.log10(100 / 0.25), rel=1e-5) for v in psnr.values())
    ssim = masked_ssim(fake, image, mask)
    # a shift only changes the luminance term, which is strict around z-score means near 0
    assert all(0.0 < v < 1.0 for v in ssim.values())  # type: ignore[operator]


def test_noise_lowers_ssim_monotonically() -> None:
    image, mask = _volume()
    rng = np.random.default_rng(1)
    noise = rng.normal(size=image.shape).astype(np.float32)
    values = [masked_ssim(image + s * noise, image, mask)["t1"] for s in (0.0, 0.2, 1.0)]
    assert values[0] == pytest.approx(1.0)
    assert values[0] > values[1] > values[2]  # type: ignore[operator]
    assert values[2] < 0.7  # type: ignore[operator]


def test_outside_mask_does_not_matter() -> None:
    image, mask = _volume()
    fake = image + np.random.default_rng(2).normal(scale=0.3, size=image.shape).astype(np.float32)
    ref = (masked_mae(fake, image, mask), masked_psnr(fake, image, mask), masked_ssim(fake, image, mask))
    fake2, real2 = fake.copy(), image.copy()
    fake2[:, ~mask] = 100.0
    real2[:, ~mask] = np.nan
    out = (masked_mae(fake2, real2, mask), masked_psnr(fake2, real2, mask), masked_ssim(fake2, real2, mask))
    for a, b in zip(ref, out, strict=True):
        for m in MODALITIES:
            assert a[m] == pytest.approx(b[m], rel=1e-9, abs=1e-12)


def test_inside_mask_matters() -> None:
    image, mask = _volume()
    fake = image.copy()
    fake[:, mask] += 1.0
    assert masked_mae(fake, image, mask)["t2"] == pytest.approx(1.0, rel=1e-5)


def test_missing_modality_is_none() -> None:
    image, mask = _volume()
    real = image.copy()
    real[1] = np.nan
    for fn in (masked_mae, masked_psnr, masked_ssim):
        out = fn(image, real, mask)
        assert out["t1c"] is None
        assert out["t1"] is not None and math.isfinite(out["t1"])


def test_input_validation() -> None:
    image, mask = _volume()
    with pytest.raises(ValueError, match="mask"):
        masked_mae(image, image, mask.astype(np.uint8))
    with pytest.raises(ValueError, match="empty"):
        masked_mae(image, image, np.zeros_like(mask))
    with pytest.raises(ValueError, match="fake"):
        masked_psnr(image[:3], image[:3], mask)
    with pytest.raises(ValueError, match="real"):
        masked_ssim(image, image[:, :-1], mask)
    with pytest.raises(ValueError, match="data_range"):
        masked_psnr(image, image, mask, data_range=0.0)


def _phantom(means: dict[int, tuple[float, float, float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Label slabs along x; each label's voxels get its per-modality mean plus small noise."""
    label = np.zeros((14, 6, 6), np.uint8)
    for i, value in enumerate(sorted(means)):
        label[2 * i : 2 * i + 2] = value
    rng = np.random.default_rng(0)
    image = np.zeros((4, *label.shape), np.float32)
    for value, m in means.items():
        image[:, label == value] = np.asarray(m, np.float32)[:, None]
    image += rng.normal(scale=0.01, size=image.shape).astype(np.float32)
    return image, label


#                       t1    t1c   t2    flair
GOOD = {1: (-1.5, -1.4, 2.0, -1.0), 2: (0.0, 0.1, 0.8, 0.3), 3: (1.0, 0.9, -0.5, 0.0),
        4: (-0.3, -0.2, 1.5, 1.8), 5: (-0.8, -0.5, 1.2, 0.7), 6: (0.2, 1.5, 0.6, 0.9)}


def test_label_signature_values() -> None:
    image, label = _phantom(GOOD)
    sig = label_signature(image, label)
    assert sorted(sig) == [1, 2, 3, 4, 5, 6]
    for value, means in GOOD.items():
        assert list(sig[value]) == list(MODALITIES)
        for name, expected in zip(MODALITIES, means, strict=True):
            assert sig[value][name] == pytest.approx(expected, abs=0.01)


def test_signature_checks_pass_and_fail() -> None:
    image, label = _phantom(GOOD)
    checks = signature_checks(label_signature(image, label))
    assert checks == {
        "t1_wm_gt_gm_gt_csf": True,
        "t2_csf_brightest": True,
        "flair_edema_gt_wm": True,
        "t1c_enhancing_gt_wm": True,
    }
    bad = dict(GOOD)
    bad[6] = (0.2, -0.66, 0.6, 0.9)  # enhancing rendered like edema on T1c (design.md §9)
    bad[2] = (1.2, 0.1, 0.8, 0.3)  # GM brighter than WM on T1
    bad[4] = (-0.3, -0.2, 1.5, -0.5)  # edema darker than WM on FLAIR
    bad[3] = (1.0, 0.9, 2.5, 0.0)  # WM brighter than CSF on T2
    image, label = _phantom(bad)
    assert signature_checks(label_signature(image, label)) == dict.fromkeys(checks, False)


def test_signature_checks_omit_absent_labels_and_modalities() -> None:
    anatomy = {k: v for k, v in GOOD.items() if k <= 3}
    image, label = _phantom(anatomy)
    sig = label_signature(image, label)
    assert sorted(sig) == [1, 2, 3]
    assert set(signature_checks(sig)) == {"t1_wm_gt_gm_gt_csf", "t2_csf_brightest"}
    image[2] = np.nan  # T2 missing
    sig = label_signature(image, label)
    assert "t2" not in sig[1]
    assert set(signature_checks(sig)) == {"t1_wm_gt_gm_gt_csf"}
    assert signature_checks({}) == {}
