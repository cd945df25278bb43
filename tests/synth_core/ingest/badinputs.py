"""Build a BraTS-2021-layout source mixing good subjects with every kind of bad input, from the phantom."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np

SUFFIXES = ("t1", "t1ce", "t2", "flair", "seg")

# subject id → the quarantine check it must trigger (None: a good subject that must be accepted)
EXPECTED: dict[str, str | None] = {
    "BraTS2021_10000": None,
    "BraTS2021_10001": None,
    "BraTS2021_20001": "readable",  # truncated .nii.gz
    "BraTS2021_20002": "nifti_format",  # a text file named .nii.gz
    "BraTS2021_20003": "shape_match",  # T1c one slice short
    "BraTS2021_20004": "affine_match",  # T2 shifted by 5 mm
    "BraTS2021_20005": "finite",  # NaN voxels in T1
    "BraTS2021_20006": "label_values",  # label 3 in a BraTS 2021 seg
    "BraTS2021_20007": "missing_modality",  # FLAIR absent
    "BraTS2021_20008": "empty_brain",  # all-zero images
    "BraTS2021_20009": "header_dims",  # header declares absurd dimensions
    "BraTS2021_20010": "duplicate_content",  # byte-identical copy of BraTS2021_10000
}
DUPLICATE_ID = "BraTS2021_10001"  # also present in a second folder → duplicate_subject


def _files(folder: Path, sid: str) -> dict[str, Path]:
    return {s: folder / f"{sid}_{s}.nii.gz" for s in SUFFIXES}


def _copy_subject(src: Path, dst_root: Path, new_id: str) -> dict[str, Path]:
    src_id = src.name
    out = dst_root / new_id
    out.mkdir(parents=True)
    for s in SUFFIXES:
        shutil.copyfile(src / f"{src_id}_{s}.nii.gz", out / f"{new_id}_{s}.nii.gz")
    return _files(out, new_id)


def _rewrite(path: Path, fn) -> None:
    img = nib.load(str(path))
    data, affine = fn(np.asarray(img.dataobj), img.affine.copy())
    new = nib.Nifti1Image(data, affine)
    new.header.set_xyzt_units("mm")
    nib.save(new, str(path))


def build_bad_source(phantom_root: Path, out: Path) -> Path:
    """Subjects 10000/10001 are good; 200xx each break one check (see :data:`EXPECTED`)."""
    good = sorted(p for p in phantom_root.iterdir() if p.is_dir() and p.name.startswith("BraTS2021_"))
    healthy_or_not = good[0]
    out.mkdir(parents=True)
    _copy_subject(healthy_or_not, out, "BraTS2021_10000")
    _copy_subject(good[1], out, "BraTS2021_10001")
    f = _copy_subject(good[1], out, "BraTS2021_20001")
    raw = f["t1"].read_bytes()
    f["t1"].write_bytes(raw[: len(raw) // 2])
    f = _copy_subject(good[1], out, "BraTS2021_20002")
    f["t2"].write_bytes(gzip.compress(b"this is a clinical note, not an image\n" * 50))
    f = _copy_subject(good[1], out, "BraTS2021_20003")
    _rewrite(f["t1ce"], lambda d, a: (d[:, :, :-1], a))
    f = _copy_subject(good[1], out, "BraTS2021_20004")

    def shift(d, a):
        a[0, 3] += 5.0
        return d, a

    _rewrite(f["t2"], shift)
    f = _copy_subject(good[1], out, "BraTS2021_20005")

    def nan(d, a):
        d = d.astype(np.float32)
        d[d.shape[0] // 2, d.shape[1] // 2, :5] = np.nan
        return d, a

    _rewrite(f["t1"], nan)
    f = _copy_subject(good[1], out, "BraTS2021_20006")

    def label3(d, a):
        d = d.copy()
        d[d.shape[0] // 2, d.shape[1] // 2, d.shape[2] // 2] = 3
        return d, a

    _rewrite(f["seg"], label3)
    f = _copy_subject(good[1], out, "BraTS2021_20007")
    f["flair"].unlink()
    f = _copy_subject(good[1], out, "BraTS2021_20008")
    for s in ("t1", "t1ce", "t2", "flair", "seg"):
        _rewrite(f[s], lambda d, a: (np.zeros_like(d), a))
    f = _copy_subject(good[1], out, "BraTS2021_20009")
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.int16)
    hdr.set_data_shape((2, 2, 2))
    hdr.set_zooms((1.0, 1.0, 1.0))
    raw = bytearray(hdr.binaryblock + b"\x00" * 4 + b"\x00" * 16)
    # dim = [3, 60000, 60000, 60000, 1, ...]: 432 TB declared; must be refused before any allocation
    dims = np.array([3, 30000, 30000, 30000, 1, 1, 1, 1], dtype="<i2")
    raw[40:56] = dims.tobytes()
    f["t1"].write_bytes(gzip.compress(bytes(raw)))
    _copy_subject(out / "BraTS2021_10000", out, "BraTS2021_20010")
    dup = out / "zz_second_copy"  # a second folder holding files of the same subject id
    dup.mkdir()
    for s in SUFFIXES:
        shutil.copyfile(good[2] / f"{good[2].name}_{s}.nii.gz", dup / f"{DUPLICATE_ID}_{s}.nii.gz")
    return out


__all__ = ["DUPLICATE_ID", "EXPECTED", "build_bad_source"]
