"""Tiny NIfTI fixtures in the real layouts of the public datasets (real affines, seeded data)."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from collections.abc import Iterable
from pathlib import Path

import nibabel as nib
import numpy as np

SHAPE: tuple[int, int, int] = (12, 14, 10)

LPS_AFFINE: np.ndarray = np.array(
    [
        [-1.0, 0.0, 0.0, 5.5],
        [0.0, -1.0, 0.0, 6.5],
        [0.0, 0.0, 1.0, -4.5],
        [0.0, 0.0, 0.0, 1.0],
    ]
)
"""1 mm LPS-stored grid (as BraTS/MSD files are) with a translation: RAS x and y axes flipped."""

BRATS2021_FILES: dict[str, str] = {"t1": "t1", "t1c": "t1ce", "t2": "t2", "flair": "flair", "label": "seg"}
BRATS2023_FILES: dict[str, str] = {"t1": "t1n", "t1c": "t1c", "t2": "t2w", "flair": "t2f", "label": "seg"}

MSD_DATASET_JSON_BASE: dict[str, object] = {
    "name": "BRATS",
    "description": "Gliomas segmentation tumour and oedema in on brain images",
    "reference": "https://www.med.upenn.edu/sbia/brats2017.html",
    "licence": "CC-BY-SA 4.0",
    "release": "2.0 04/05/2018",
    "tensorImageSize": "4D",
    "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
    "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"},
}


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def image_data(seed: int, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    return _rng(seed).integers(0, 1000, size=shape).astype(np.int16)


def label_data(seed: int, values: Iterable[int], shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    values = list(values)
    data = np.zeros(shape, dtype=np.uint8)
    rng = _rng(seed)
    core = data[3:9, 4:10, 3:7]
    core[...] = rng.choice(values, size=core.shape)
    return data


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray = LPS_AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))
    return path


def nifti_bytes(data: np.ndarray, affine: np.ndarray = LPS_AFFINE) -> bytes:
    """A gzipped NIfTI-1 file's bytes (for building archives)."""
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    raw = img.to_bytes()
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz:
        gz.write(raw)
    return buf.getvalue()


def make_brats_subject(
    root: Path,
    sid: str,
    *,
    layout: str = "2021",
    folder: str | None = "",
    missing: Iterable[str] = (),
    seed: int = 0,
) -> dict[str, Path]:
    """Write one BraTS subject; ``folder=""`` → ``root/<sid>/``, ``None`` → flat in root, else ``root/<folder>/``.

    ``missing``: roles (``t1``, ``t1c``, ``t2``, ``flair``, ``label``) not written. Returns role → path.
    """
    names = BRATS2021_FILES if layout == "2021" else BRATS2023_FILES
    sep = "_" if layout == "2021" else "-"
    labels = (1, 2, 4) if layout == "2021" else (1, 2, 3)
    where = root if folder is None else root / (folder or sid)
    out: dict[str, Path] = {}
    for i, (role, suffix) in enumerate(names.items()):
        if role in missing:
            continue
        path = where / f"{sid}{sep}{suffix}.nii.gz"
        data = label_data(seed, labels) if role == "label" else image_data(seed * 10 + i)
        out[role] = write_nifti(path, data)
    return out


def msd_dataset_json(ids: Iterable[str], *, test_ids: Iterable[str] = (), **overrides: object) -> dict[str, object]:
    ids = list(ids)
    test_ids = list(test_ids)
    meta: dict[str, object] = dict(MSD_DATASET_JSON_BASE)
    meta.update(
        numTraining=len(ids),
        numTest=len(test_ids),
        training=[{"image": f"./imagesTr/{i}.nii.gz", "label": f"./labelsTr/{i}.nii.gz"} for i in ids],
        test=[f"./imagesTs/{i}.nii.gz" for i in test_ids],
    )
    meta.update(overrides)
    return meta


def msd_files(ids: Iterable[str], *, test_ids: Iterable[str] = (), seed: int = 0) -> dict[str, bytes]:
    """Relative path → bytes of a tiny MSD Task01 tree (4D images, labels, dataset.json, a ``._`` file)."""
    ids = list(ids)
    test_ids = list(test_ids)
    files: dict[str, bytes] = {}
    for k, sid in enumerate(ids):
        files[f"imagesTr/{sid}.nii.gz"] = nifti_bytes(image_data(seed + k, (*SHAPE, 4)))
        files[f"labelsTr/{sid}.nii.gz"] = nifti_bytes(label_data(seed + k, (1, 2, 3)))
        files[f"imagesTr/._{sid}.nii.gz"] = b"\x00\x05\x16\x07AppleDouble junk"
    for k, sid in enumerate(test_ids):
        files[f"imagesTs/{sid}.nii.gz"] = nifti_bytes(image_data(seed + 100 + k, (*SHAPE, 4)))
    files["dataset.json"] = json.dumps(msd_dataset_json(ids, test_ids=test_ids), indent=4).encode()
    return files


def make_msd_root(root: Path, ids: Iterable[str], *, test_ids: Iterable[str] = (), seed: int = 0) -> Path:
    for rel, data in msd_files(ids, test_ids=test_ids, seed=seed).items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def make_tar(
    path: Path,
    files: dict[str, bytes],
    *,
    prefix: str = "",
    extra: Iterable[tarfile.TarInfo] = (),
    mode: str = "w",
) -> Path:
    """Write a tar of ``files`` (names under ``prefix``), folders included, plus ``extra`` raw members."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, mode) as tf:
        dirs: set[str] = set()
        for rel in sorted(files):
            name = f"{prefix}{rel}"
            parts = name.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    info = tarfile.TarInfo(d)
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    tf.addfile(info)
            info = tarfile.TarInfo(name)
            info.size = len(files[rel])
            info.mode = 0o644
            info.mtime = 1_500_000_000
            tf.addfile(info, io.BytesIO(files[rel]))
        for info in extra:
            tf.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return path
