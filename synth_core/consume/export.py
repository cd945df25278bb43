"""Exports of a dataset version to NIfTI files and to an nnU-Net v2 raw dataset.

Every header is rebuilt from scratch (design.md §4): a fresh NIfTI-1 header whose ``descrip``,
``aux_file``, ``intent_name`` and ``db_name`` are blank, with no header extensions, ``qform_code`` and
``sform_code`` 1 ("scanner") both carrying the dataset's canonical affine (RAS+, voxel size =
``resolution_mm``, volume centred on 0 mm; see :mod:`synth_core.consume.dataset`), spatial units mm.
Images are written as float32, labels as uint8. Files are gzip-compressed with a blank gzip header
(no file name, mtime 0), so identical data gives identical bytes. Only the generated ``sample_id``
(``s-NNNNNN``) names files: no source identifier and no free text is ever written.

Layouts
-------
:func:`export_nifti` — per sample, one 4-D image and one label map::

    <out_dir>/<sample_id>_image.nii.gz   float32 (X, Y, Z, 4), 4th axis = t1, t1c, t2, flair
    <out_dir>/<sample_id>_label.nii.gz   uint8 (X, Y, Z), the unified labels 0–6 unchanged

:func:`export_nnunet` — a valid nnU-Net v2 raw dataset with region-based BraTS labels::

    <out_dir>/Dataset<ID>_<name>/dataset.json
    <out_dir>/Dataset<ID>_<name>/imagesTr/<sample_id>_0000.nii.gz … _0003.nii.gz   (t1, t1c, t2, flair)
    <out_dir>/Dataset<ID>_<name>/labelsTr/<sample_id>.nii.gz

The nnU-Net label maps are recoded to the BraTS tumour convention nnU-Net's region-based training
expects: 0 background (our 0 and the anatomy 1 CSF, 2 GM, 3 WM), 1 edema (our 4), 2 necrotic /
non-enhancing core (our 5), 3 enhancing tumour (our 6). ``dataset.json`` declares the regions whole
tumour = {1, 2, 3}, tumour core = {2, 3}, enhancing tumour = {3}, with ``regions_class_order``
[1, 2, 3].
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from synth_core.consume.dataset import SyntheticDataset

NNUNET_CHANNELS: dict[str, str] = {"t1": "T1", "t1c": "T1c", "t2": "T2", "flair": "FLAIR"}
"""Our channel → nnU-Net channel name, in the export's channel order."""

BRATS_RECODE: dict[int, int] = {0: 0, 1: 0, 2: 0, 3: 0, 4: 1, 5: 2, 6: 3}
"""Unified label → BraTS-style tumour label of the nnU-Net export."""

NNUNET_LABELS: dict[str, Any] = {
    "background": 0,
    "whole tumor": [1, 2, 3],
    "tumor core": [2, 3],
    "enhancing tumor": [3],
}
NNUNET_REGIONS_CLASS_ORDER: list[int] = [1, 2, 3]

_DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_BLANK_FIELDS = ("descrip", "aux_file", "intent_name", "db_name")


def nifti_bytes(data: np.ndarray, affine: np.ndarray) -> bytes:
    """A gzip-compressed NIfTI-1 file of ``data`` (float32 or uint8) with a header built from scratch."""
    if data.dtype not in (np.dtype(np.float32), np.dtype(np.uint8)):
        raise ValueError(f"nifti data: expected float32 or uint8, received {data.dtype}")
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise ValueError(f"nifti affine: expected a finite 4x4 matrix, received shape {affine.shape}")
    header = nib.Nifti1Header()
    header.set_data_dtype(data.dtype)
    image = nib.Nifti1Image(np.asarray(data), affine, header=header)
    hdr = image.header
    for field in _BLANK_FIELDS:
        hdr[field] = b""
    hdr["intent_code"] = 0
    hdr.extensions.clear()
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    hdr.set_xyzt_units(xyz="mm")
    return _gzip(image.to_bytes())


def _gzip(data: bytes) -> bytes:
    """gzip with a blank header (no name, mtime 0); ISA-L when installed (≈ 5× faster than zlib)."""
    try:
        from isal import igzip
    except ImportError:  # pragma: no cover - isal is a dependency; zlib is the fallback
        return gzip.compress(data, compresslevel=1, mtime=0)
    return igzip.compress(data, compresslevel=2, mtime=0)


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _indices(dataset: SyntheticDataset, indices: Iterable[int] | None) -> list[int]:
    if indices is None:
        return sorted(dataset.indices)
    out = []
    for i in indices:
        if isinstance(i, bool) or not isinstance(i, int | np.integer):
            raise TypeError(f"indices: expected integers (data.zarr sample indices), received {i!r}")
        dataset.row(int(i))  # IndexError naming the index when unknown
        out.append(int(i))
    if len(set(out)) != len(out):
        raise ValueError(f"indices: expected distinct sample indices, received duplicates in {out[:10]}")
    return out


def _targets_free(paths: Sequence[Path]) -> None:
    existing = [str(p) for p in paths if p.exists()]
    if existing:
        raise FileExistsError(f"export: refusing to overwrite {len(existing)} existing file(s), e.g. {existing[0]}")


def recode_brats(label: np.ndarray) -> np.ndarray:
    """Unified labels (0–6) → BraTS-style tumour labels (0 bg incl. anatomy, 1 edema, 2 core, 3 enhancing)."""
    values = np.unique(label)
    bad = [int(v) for v in values if int(v) not in BRATS_RECODE]
    if bad:
        raise ValueError(f"label map: expected values in 0–6, received {bad}")
    lut = np.zeros(256, dtype=np.uint8)
    for src, dst in BRATS_RECODE.items():
        lut[src] = dst
    return lut[label.astype(np.uint8)]


def export_nifti(dataset: SyntheticDataset, out_dir: str | Path, indices: Iterable[int] | None = None) -> list[Path]:
    """Write ``<sample_id>_image.nii.gz`` (4-D, channels t1, t1c, t2, flair) and ``<sample_id>_label.nii.gz``.

    Returns the written paths (image, label per sample, in ``indices`` order; all samples by default).
    Refuses to overwrite existing files.
    """
    chosen = _indices(dataset, indices)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pairs = []
    for index in chosen:
        sample_id = str(dataset.row(index)["sample_id"])
        pairs.append((index, out / f"{sample_id}_image.nii.gz", out / f"{sample_id}_label.nii.gz"))
    _targets_free([p for _, a, b in pairs for p in (a, b)])
    affine = dataset.affine
    written: list[Path] = []
    for index, image_path, label_path in pairs:
        image, label = dataset.read_sample(index)
        volume = np.ascontiguousarray(np.moveaxis(image, 0, -1), dtype=np.float32)  # (X, Y, Z, C)
        _write_atomic(image_path, nifti_bytes(volume, affine))
        _write_atomic(label_path, nifti_bytes(label, affine))
        written.extend([image_path, label_path])
    return written


def nnunet_dataset_json(n_training: int) -> dict[str, Any]:
    """The ``dataset.json`` of the nnU-Net v2 export (region-based BraTS labels)."""
    return {
        "channel_names": {str(i): name for i, name in enumerate(NNUNET_CHANNELS.values())},
        "labels": json.loads(json.dumps(NNUNET_LABELS)),
        "regions_class_order": list(NNUNET_REGIONS_CLASS_ORDER),
        "numTraining": int(n_training),
        "file_ending": ".nii.gz",
    }


def export_nnunet(
    dataset: SyntheticDataset,
    out_dir: str | Path,
    dataset_id: int = 501,
    dataset_name: str = "SynthMRI",
    indices: Iterable[int] | None = None,
) -> Path:
    """Write an nnU-Net v2 raw dataset ``<out_dir>/Dataset<ID:03d>_<name>/`` and return its folder.

    Cases are named by ``sample_id``; channels are t1, t1c, t2, flair (``_0000`` … ``_0003``); labels
    are recoded to BraTS tumour labels (see the module docstring). Refuses a non-empty target folder.
    """
    if isinstance(dataset_id, bool) or not isinstance(dataset_id, int) or not 1 <= dataset_id <= 999:
        raise ValueError(f"dataset_id: expected an integer in 1…999, received {dataset_id!r}")
    if not isinstance(dataset_name, str) or not _DATASET_NAME.match(dataset_name):
        raise ValueError(
            f"dataset_name: expected letters, digits, '_' and '-' (no spaces), received {dataset_name!r}"
        )
    channels = dataset.channel_names
    if tuple(channels) != tuple(NNUNET_CHANNELS):
        raise ValueError(f"dataset channels: expected {tuple(NNUNET_CHANNELS)}, received {tuple(channels)}")
    chosen = _indices(dataset, indices)
    if not chosen:
        raise ValueError("indices: expected at least one sample to export, received none")
    root = Path(out_dir) / f"Dataset{dataset_id:03d}_{dataset_name}"
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"export_nnunet: {root} exists and is not empty; choose another out_dir or dataset_id")
    images, labels = root / "imagesTr", root / "labelsTr"
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    affine = dataset.affine
    for index in chosen:
        case = str(dataset.row(index)["sample_id"])
        image, label = dataset.read_sample(index)
        for c in range(image.shape[0]):
            _write_atomic(images / f"{case}_{c:04d}.nii.gz", nifti_bytes(np.ascontiguousarray(image[c]), affine))
        _write_atomic(labels / f"{case}.nii.gz", nifti_bytes(recode_brats(label), affine))
    payload = json.dumps(nnunet_dataset_json(len(chosen)), indent=2) + "\n"
    _write_atomic(root / "dataset.json", payload.encode())
    return root


__all__ = [
    "BRATS_RECODE",
    "NNUNET_CHANNELS",
    "NNUNET_LABELS",
    "NNUNET_REGIONS_CLASS_ORDER",
    "export_nifti",
    "export_nnunet",
    "nifti_bytes",
    "nnunet_dataset_json",
    "recode_brats",
]
