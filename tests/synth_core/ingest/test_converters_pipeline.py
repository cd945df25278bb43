"""Every converter through the whole pipeline: the same subject in two layouts gives the same snapshot data."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import zarr

from schemas.config import IngestConfig, SourceConfig, StoreConfig
from synth_core.ingest.snapshot import read_subjects, run_ingest, snapshot_prefix
from synth_core.ingest.sources import discover_source
from synth_core.storage import Store, open_store

BRATS_TO_MSD = {0: 0, 1: 2, 2: 1, 4: 3}  # NCR/NET→non-enhancing, ED→edema, ET→enhancing


def _ingest(kind: str, root: Path, store: Store, **source_kw: object):
    config = IngestConfig(source=SourceConfig(kind=kind, path=str(root), **source_kw), store=StoreConfig(url=store.url))  # type: ignore[arg-type]
    discovery = discover_source(config.source, root)
    return run_ingest(store, config, discovery)


def _arrays(store: Store, result, source_ref: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    subjects = read_subjects(store, result.source_id, result.snapshot_id)
    row = subjects[subjects["source_ref"] == source_ref].iloc[0]
    group = zarr.open_group(
        store.zarr_store(f"{snapshot_prefix(result.source_id, result.snapshot_id)}/{row.zarr_path}", read_only=True), mode="r"
    )
    return group["0"][...], group["labels/anatomy/0"][...], np.asarray(group.attrs["synthmri"]["affine"])


def _tumour_subject(phantom_root: Path) -> str:
    info = json.loads((phantom_root / "phantom.json").read_text())
    return next(s["id"] for s in info["subjects"] if not s["healthy"])


def _healthy_subject(phantom_root: Path) -> str:
    info = json.loads((phantom_root / "phantom.json").read_text())
    return next(s["id"] for s in info["subjects"] if s["healthy"])


def test_msd_layout_equals_brats_layout(phantom_root: Path, tmp_path: Path) -> None:
    """MSD's 4D channel order and label codes are remapped to exactly what the BraTS converter gives."""
    sid = _tumour_subject(phantom_root)
    src = phantom_root / sid
    msd = tmp_path / "Task01_BrainTumour"
    (msd / "imagesTr").mkdir(parents=True)
    (msd / "labelsTr").mkdir()
    imgs = [nib.load(str(src / f"{sid}_{m}.nii.gz")) for m in ("flair", "t1", "t1ce", "t2")]
    stacked = np.stack([np.asarray(i.dataobj) for i in imgs], axis=-1)
    nib.save(nib.Nifti1Image(stacked, imgs[0].affine), str(msd / "imagesTr" / "BRATS_001.nii.gz"))
    seg = nib.load(str(src / f"{sid}_seg.nii.gz"))
    lut = np.zeros(5, dtype=np.uint8)
    for k, v in BRATS_TO_MSD.items():
        lut[k] = v
    nib.save(nib.Nifti1Image(lut[np.asarray(seg.dataobj)], seg.affine), str(msd / "labelsTr" / "BRATS_001.nii.gz"))
    (msd / "dataset.json").write_text(json.dumps({
        "name": "BRATS", "tensorImageSize": "4D",
        "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
        "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"},
        "numTraining": 1, "numTest": 0,
        "training": [{"image": "./imagesTr/BRATS_001.nii.gz", "label": "./labelsTr/BRATS_001.nii.gz"}], "test": [],
    }))
    brats_only = tmp_path / "brats"
    (brats_only / sid).mkdir(parents=True)
    for f in src.iterdir():
        (brats_only / sid / f.name).write_bytes(f.read_bytes())
    store = open_store(StoreConfig(url=str(tmp_path / "store")))
    r_brats = _ingest("brats", brats_only, store)
    r_msd = _ingest("msd_task01", msd, store)
    assert r_brats.n_subjects == r_msd.n_subjects == 1
    img_b, lab_b, aff_b = _arrays(store, r_brats, sid)
    img_m, lab_m, aff_m = _arrays(store, r_msd, "BRATS_001")
    np.testing.assert_array_equal(lab_m, lab_b)
    np.testing.assert_array_equal(img_m, img_b)
    np.testing.assert_array_equal(aff_m, aff_b)
    assert set(np.unique(lab_b)) >= {4}  # tumour labels really went through the mapping


def test_healthy_nifti_folder_with_missing_optional_modality(phantom_root: Path, tmp_path: Path) -> None:
    """A healthy cohort without T1c: accepted, T1c recorded missing and stored as NaN (never zeros)."""
    sid = _healthy_subject(phantom_root)
    src = phantom_root / sid
    folder = tmp_path / "cohort" / "sub-01" / "anat"
    folder.mkdir(parents=True)
    for ours, theirs in (("t1", "T1w"), ("t2", "T2w"), ("flair", "FLAIR")):
        (folder / f"sub-01_{theirs}.nii.gz").write_bytes((src / f"{sid}_{ours}.nii.gz").read_bytes())
    mapping = tmp_path / "mapping.json"
    mapping.write_text(json.dumps({
        "subject_pattern": "^(?P<subject>sub-[^_]+)_",
        "modalities": {"t1": "*_T1w.nii.gz", "t2": "*_T2w.nii.gz", "flair": "*_FLAIR.nii.gz"},
        "required": ["t1"],
    }))
    store = open_store(StoreConfig(url=str(tmp_path / "store")))
    result = _ingest("nifti_folder", tmp_path / "cohort", store, mapping_file=str(mapping), source_id="healthy-cohort")
    assert result.n_subjects == 1 and result.n_quarantined == 0
    row = read_subjects(store, result.source_id, result.snapshot_id).iloc[0]
    assert not row.has_t1c and row.has_t1 and row.has_t2 and row.has_flair
    assert np.isnan(row.norm_t1c_center) and not row.has_tumor and not row.has_label_source
    img, lab, _ = _arrays(store, result, "sub-01")
    assert np.isnan(img[1]).all(), "a missing modality is NaN, never silently zero"
    assert np.isfinite(img[[0, 2, 3]]).all()
    assert set(np.unique(lab)) == {0, 1, 2, 3}


@pytest.mark.parametrize("layout", ["2023"])
def test_brats2023_naming(phantom_root: Path, tmp_path: Path, layout: str) -> None:
    """BraTS 2023 names and label codes (ET = 3) give the same labels as the 2021 layout."""
    sid = _tumour_subject(phantom_root)
    src = phantom_root / sid
    new_id = "BraTS-GLI-00001-000"
    out = tmp_path / "b23" / new_id
    out.mkdir(parents=True)
    for old, new in (("t1", "t1n"), ("t1ce", "t1c"), ("t2", "t2w"), ("flair", "t2f")):
        (out / f"{new_id}-{new}.nii.gz").write_bytes((src / f"{sid}_{old}.nii.gz").read_bytes())
    seg = nib.load(str(src / f"{sid}_seg.nii.gz"))
    data = np.asarray(seg.dataobj).copy()
    data[data == 4] = 3
    nib.save(nib.Nifti1Image(data, seg.affine), str(out / f"{new_id}-seg.nii.gz"))
    store = open_store(StoreConfig(url=str(tmp_path / "store")))
    r23 = _ingest("brats", tmp_path / "b23", store)
    brats_only = tmp_path / "b21" / sid
    brats_only.mkdir(parents=True)
    for f in src.iterdir():
        (brats_only / f.name).write_bytes(f.read_bytes())
    r21 = _ingest("brats", tmp_path / "b21", store, source_id="brats21")
    _, lab23, _ = _arrays(store, r23, new_id)
    _, lab21, _ = _arrays(store, r21, sid)
    np.testing.assert_array_equal(lab23, lab21)
