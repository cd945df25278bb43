"""Tiny seeded volumes with real affines for the ingest tests (no files bigger than a few hundred kB)."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import nibabel as nib
import numpy as np

from synth_core.ingest.types import Volume

RAS_1MM = np.eye(4)


def affine(
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    flips: tuple[int, int, int] = (1, 1, 1),
    translation: tuple[float, float, float] = (0.0, 0.0, 0.0),
    rotate_z_deg: float = 0.0,
) -> np.ndarray:
    """Voxel-to-world affine: diag(flips * spacing), then a rotation about z, then a translation."""
    a = np.eye(4)
    a[:3, :3] = np.diag(np.asarray(flips, dtype=np.float64) * np.asarray(spacing, dtype=np.float64))
    t = math.radians(rotate_z_deg)
    rot = np.array([[math.cos(t), -math.sin(t), 0.0], [math.sin(t), math.cos(t), 0.0], [0.0, 0.0, 1.0]])
    a[:3, :3] = rot @ a[:3, :3]
    a[:3, 3] = translation
    return a


LPS_1MM = affine(flips=(-1, -1, 1), translation=(45.0, 60.0, -20.0))


def ellipsoid(
    shape: tuple[int, int, int], radii: tuple[float, float, float], center: tuple[float, ...] | None = None
) -> np.ndarray:
    """Bool ellipsoid (voxel units) centred in the array unless ``center`` is given."""
    c = [(s - 1) / 2.0 for s in shape] if center is None else list(center)
    grids = np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape], indexing="ij")
    r2 = sum(((g - ci) / ri) ** 2 for g, ci, ri in zip(grids, c, radii, strict=True))
    return r2 <= 1.0


def brain_image(shape: tuple[int, int, int], seed: int, radii: tuple[float, float, float] | None = None) -> np.ndarray:
    """float32 skull-stripped 'brain': positive noisy intensities in an ellipsoid, exact zeros outside."""
    rng = np.random.default_rng(seed)
    if radii is None:
        radii = tuple(0.35 * s for s in shape)  # type: ignore[assignment]
    mask = ellipsoid(shape, radii)  # type: ignore[arg-type]
    values = rng.normal(100.0, 15.0, size=shape).astype(np.float32) + np.float32(50.0)
    return np.where(mask, values, np.float32(0.0)).astype(np.float32)


def volume(data: np.ndarray, aff: np.ndarray, file: str) -> Volume:
    return Volume(data=data, affine=aff, file=file)


def write_nifti(
    path: Path,
    data: np.ndarray,
    aff: np.ndarray,
    *,
    version: int = 1,
    endianness: str | None = None,
) -> Path:
    """Write with nibabel (``.nii`` or ``.nii.gz`` from the suffix), keeping ``data``'s dtype."""
    if version == 1:
        header = nib.Nifti1Header(endianness=endianness) if endianness else None
        img: nib.Nifti1Image | nib.Nifti2Image = nib.Nifti1Image(data, aff, header=header)
    else:
        img = nib.Nifti2Image(data, aff)
    img.set_data_dtype(data.dtype)
    nib.save(img, path)
    return path


def raw_nifti1(
    data: np.ndarray,
    aff: np.ndarray,
    **fields: object,
) -> bytearray:
    """Bytes of an uncompressed single-file NIfTI-1 with header ``fields`` overridden after the fact."""
    header = nib.Nifti1Header()
    header.set_data_dtype(data.dtype)
    header.set_data_shape(data.shape)
    header.set_sform(aff, code=1)
    header.set_qform(aff, code=1)
    header["vox_offset"] = 352
    for key, value in fields.items():
        header[key] = value
    block = bytearray(header.binaryblock) + b"\x00\x00\x00\x00"
    block += data.tobytes(order="F")
    return block


def write_bytes(path: Path, payload: bytes | bytearray, *, gz: bool | None = None) -> Path:
    """Write ``payload`` (gzip-compressed when ``gz`` or when the name ends in .gz)."""
    if gz is None:
        gz = path.name.endswith(".gz")
    path.write_bytes(gzip.compress(bytes(payload), compresslevel=1, mtime=0) if gz else bytes(payload))
    return path


__all__ = [
    "LPS_1MM",
    "RAS_1MM",
    "affine",
    "brain_image",
    "ellipsoid",
    "raw_nifti1",
    "volume",
    "write_bytes",
    "write_nifti",
]
