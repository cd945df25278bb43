"""Evaluation of synthetic volumes against real ones (numpy; validation only, never in the training graph).

Images are (4, X, Y, Z) in ``schemas.labels.MODALITIES`` order, in canonical units (robust z-scores clipped
at ±5, so ``data_range`` defaults to 10); ``mask`` is a bool (X, Y, Z) brain mask. A modality whose real
values are all NaN inside the mask is missing: its metric is ``None``. Real NaN voxels elsewhere are
ignored voxel by voxel.

* :func:`masked_mae`, :func:`masked_psnr`, :func:`masked_ssim`: per-modality scores inside the mask.
  PSNR is capped at :data:`PSNR_CAP_DB` (100 dB) for identical images, so results stay finite (JSON- and
  mean-friendly). SSIM uses a Gaussian window computed as a *normalized convolution* over the valid
  voxels: local means/variances draw only on voxels inside the mask, so values outside it never matter.
* :func:`label_signature` and :func:`signature_checks`: each label's mean intensity per modality and the
  tissue-contrast rules a generator must reproduce (design.md §9).
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
from scipy.ndimage import gaussian_filter

from schemas.labels import LABELS, MODALITIES

PSNR_CAP_DB: Final[float] = 100.0
"""PSNR reported for identical images (MSE 0) and the ceiling of any PSNR."""

SSIM_K1: Final[float] = 0.01
SSIM_K2: Final[float] = 0.03

_CSF, _GM, _WM, _EDEMA, _ENHANCING = 1, 2, 3, 4, 6

_CHECKS: Final[dict[str, tuple[str, tuple[int, ...]]]] = {
    "t1_wm_gt_gm_gt_csf": ("t1", (_WM, _GM, _CSF)),
    "t2_csf_brightest": ("t2", (_CSF, _GM, _WM)),
    "flair_edema_gt_wm": ("flair", (_EDEMA, _WM)),
    "t1c_enhancing_gt_wm": ("t1c", (_ENHANCING, _WM)),
}


def _validate(fake: np.ndarray, real: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    fake = np.asarray(fake)
    real = np.asarray(real)
    mask = np.asarray(mask)
    expected = (len(MODALITIES),)
    if fake.ndim != 4 or fake.shape[:1] != expected:
        raise ValueError(f"fake: expected shape ({len(MODALITIES)}, X, Y, Z), received {fake.shape}")
    if real.shape != fake.shape:
        raise ValueError(f"real: expected shape {fake.shape} (as fake), received {real.shape}")
    if mask.shape != fake.shape[1:]:
        raise ValueError(f"mask: expected shape {fake.shape[1:]}, received {mask.shape}")
    if mask.dtype != np.bool_:
        raise ValueError(f"mask: expected dtype bool, received {mask.dtype}")
    if not mask.any():
        raise ValueError("mask: expected at least one True voxel, received an empty mask")
    return fake.astype(np.float64, copy=False), real.astype(np.float64, copy=False), mask


def _valid(real_c: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
    """Voxels that count for one modality: inside the mask with a finite real value; None when there are none."""
    valid = mask & np.isfinite(real_c)
    return valid if valid.any() else None


def masked_mae(fake: np.ndarray, real: np.ndarray, mask: np.ndarray) -> dict[str, float | None]:
    """Mean absolute error per modality inside ``mask`` (``None`` for a missing modality)."""
    fake, real, mask = _validate(fake, real, mask)
    out: dict[str, float | None] = {}
    for c, name in enumerate(MODALITIES):
        valid = _valid(real[c], mask)
        out[name] = None if valid is None else float(np.mean(np.abs(fake[c][valid] - real[c][valid])))
    return out


def masked_psnr(
    fake: np.ndarray, real: np.ndarray, mask: np.ndarray, data_range: float = 10.0
) -> dict[str, float | None]:
    """PSNR in dB per modality inside ``mask``: ``10·log10(data_range² / MSE)``, capped at :data:`PSNR_CAP_DB`."""
    if not data_range > 0:
        raise ValueError(f"data_range: expected > 0, received {data_range}")
    fake, real, mask = _validate(fake, real, mask)
    out: dict[str, float | None] = {}
    for c, name in enumerate(MODALITIES):
        valid = _valid(real[c], mask)
        if valid is None:
            out[name] = None
            continue
        mse = float(np.mean((fake[c][valid] - real[c][valid]) ** 2))
        psnr = PSNR_CAP_DB if mse == 0 else 10.0 * math.log10(data_range**2 / mse)
        out[name] = float(min(psnr, PSNR_CAP_DB))
    return out


def masked_ssim(
    fake: np.ndarray, real: np.ndarray, mask: np.ndarray, data_range: float = 10.0, sigma: float = 1.5
) -> dict[str, float | None]:
    """3D SSIM per modality (Gaussian window ``sigma``, K1 = 0.01, K2 = 0.03), the map averaged over ``mask``.

    Local statistics are Gaussian-weighted over valid voxels only (inside the mask, finite real value):
    ``μ = G(x·m) / G(m)`` and likewise for second moments, so values outside the mask do not matter.
    """
    if not data_range > 0:
        raise ValueError(f"data_range: expected > 0, received {data_range}")
    if not sigma > 0:
        raise ValueError(f"sigma: expected > 0, received {sigma}")
    fake, real, mask = _validate(fake, real, mask)
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    out: dict[str, float | None] = {}
    for c, name in enumerate(MODALITIES):
        valid = _valid(real[c], mask)
        if valid is None:
            out[name] = None
            continue
        m = valid.astype(np.float64)
        x = np.where(valid, fake[c], 0.0)
        y = np.where(valid, real[c], 0.0)

        def smooth(a: np.ndarray) -> np.ndarray:
            return gaussian_filter(a, sigma=sigma, mode="constant", cval=0.0)

        norm = smooth(m)[valid]
        mu_x = smooth(x)[valid] / norm
        mu_y = smooth(y)[valid] / norm
        var_x = smooth(x * x)[valid] / norm - mu_x**2
        var_y = smooth(y * y)[valid] / norm - mu_y**2
        cov = smooth(x * y)[valid] / norm - mu_x * mu_y
        ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
        out[name] = float(np.mean(ssim_map))
    return out


def label_signature(image: np.ndarray, label: np.ndarray) -> dict[int, dict[str, float]]:
    """Mean intensity of each label present (1..6) per modality: ``{label: {modality: mean}}``.

    A modality with no finite value under a label (a missing modality) is left out of that label's dict.
    """
    image = np.asarray(image)
    label = np.asarray(label)
    if image.ndim != 4 or image.shape[0] != len(MODALITIES):
        raise ValueError(f"image: expected shape ({len(MODALITIES)}, X, Y, Z), received {image.shape}")
    if label.shape != image.shape[1:]:
        raise ValueError(f"label: expected shape {image.shape[1:]}, received {label.shape}")
    out: dict[int, dict[str, float]] = {}
    for value in sorted(LABELS):
        if value == 0:
            continue
        where = label == value
        if not where.any():
            continue
        means: dict[str, float] = {}
        for c, name in enumerate(MODALITIES):
            values = image[c][where].astype(np.float64)
            values = values[np.isfinite(values)]
            if values.size:
                means[name] = float(values.mean())
        out[value] = means
    return out


def signature_checks(signature: dict[int, dict[str, float]]) -> dict[str, bool]:
    """The tissue-contrast rules of design.md §9 on a :func:`label_signature`.

    ``t1_wm_gt_gm_gt_csf`` (T1: WM > GM > CSF), ``t2_csf_brightest`` (T2: CSF > GM and CSF > WM),
    ``flair_edema_gt_wm`` (FLAIR: edema > WM), ``t1c_enhancing_gt_wm`` (T1c: enhancing > WM). A check
    whose labels (or modality) are absent from ``signature`` is omitted.
    """
    out: dict[str, bool] = {}
    for key, (modality, labels) in _CHECKS.items():
        found = [signature.get(v, {}).get(modality) for v in labels]
        values = [float(v) for v in found if v is not None]
        if len(values) != len(labels):
            continue
        if key == "t1_wm_gt_gm_gt_csf":
            ok = values[0] > values[1] > values[2]
        else:
            ok = all(values[0] > other for other in values[1:])
        out[key] = bool(ok)
    return out


__all__ = [
    "PSNR_CAP_DB",
    "label_signature",
    "masked_mae",
    "masked_psnr",
    "masked_ssim",
    "signature_checks",
]
