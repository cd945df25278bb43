from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from schemas.labels import MODALITIES
from synth_core.ingest.converters import msd_task01
from synth_core.ingest.types import ImageRef

from .fixtures import LPS_AFFINE, SHAPE, make_msd_root, msd_dataset_json


@pytest.mark.parametrize(("source", "unified"), [(0, 0), (1, 4), (2, 5), (3, 6)])
def test_label_pairs(source: int, unified: int) -> None:
    assert msd_task01.MSD_TASK01_LABELS[source] == unified


def test_constants_exact() -> None:
    assert msd_task01.MSD_TASK01_LABELS == {0: 0, 1: 4, 2: 5, 3: 6}
    assert msd_task01.MSD_TASK01_CHANNELS == {"flair": 0, "t1": 1, "t1c": 2, "t2": 3}
    assert msd_task01.DEFAULT_URL == "https://msd-for-monai.s3-us-west-2.amazonaws.com/Task01_BrainTumour.tar"
    assert msd_task01.DEFAULT_MD5 == "240a19d752f0d9e9101544901065d872"


def test_discover_real_layout(tmp_path: Path) -> None:
    root = make_msd_root(tmp_path / "Task01_BrainTumour", ["BRATS_002", "BRATS_001"], test_ids=["BRATS_485"])
    assert (root / "imagesTr" / "._BRATS_001.nii.gz").exists()
    found = msd_task01.discover(root)
    assert found.rejected == []
    assert [s.source_ref for s in found.subjects] == ["BRATS_001", "BRATS_002"]
    s = found.subjects[0]
    image = root.resolve() / "imagesTr" / "BRATS_001.nii.gz"
    assert s.root == root.resolve()
    assert list(s.images) == list(MODALITIES)
    assert s.images == {
        "t1": ImageRef(image, volume=1),
        "t1c": ImageRef(image, volume=2),
        "t2": ImageRef(image, volume=3),
        "flair": ImageRef(image, volume=0),
    }
    assert s.label == ImageRef(root.resolve() / "labelsTr" / "BRATS_001.nii.gz")
    assert s.label_mapping == {0: 0, 1: 4, 2: 5, 3: 6}
    assert s.required == MODALITIES and s.label_required
    assert s.files() == [image, root.resolve() / "labelsTr" / "BRATS_001.nii.gz"]
    img = nib.load(image)
    assert img.shape == (*SHAPE, 4) and np.allclose(img.affine, LPS_AFFINE)


def test_include_test(tmp_path: Path) -> None:
    root = make_msd_root(tmp_path, ["BRATS_001"], test_ids=["BRATS_485"])
    found = msd_task01.discover(root, include_test=True)
    assert [s.source_ref for s in found.subjects] == ["BRATS_001", "BRATS_485"]
    test = found.subjects[1]
    assert test.label is None and test.label_mapping is None and not test.label_required
    assert test.images["t1c"] == ImageRef(root.resolve() / "imagesTs" / "BRATS_485.nii.gz", volume=2)


def test_missing_files_rejected(tmp_path: Path) -> None:
    root = make_msd_root(tmp_path, ["BRATS_001", "BRATS_002", "BRATS_003"])
    (root / "labelsTr" / "BRATS_002.nii.gz").unlink()
    (root / "imagesTr" / "BRATS_003.nii.gz").unlink()
    found = msd_task01.discover(root)
    assert [s.source_ref for s in found.subjects] == ["BRATS_001"]
    r2, r3 = found.rejected
    assert (r2.source_ref, r2.check, r2.file, r2.value) == (
        "BRATS_002", "missing_label", "labelsTr/BRATS_002.nii.gz", "label"
    )
    assert (r3.source_ref, r3.check, r3.file) == ("BRATS_003", "missing_modality", "imagesTr/BRATS_003.nii.gz")
    assert r3.value == "t1,t1c,t2,flair"


def test_unlisted_image_still_found_and_symlink_refused(tmp_path: Path) -> None:
    root = make_msd_root(tmp_path / "root", ["BRATS_001"])
    other = make_msd_root(tmp_path / "other", ["BRATS_009"])
    os.symlink(other / "imagesTr" / "BRATS_009.nii.gz", root / "imagesTr" / "BRATS_009.nii.gz")
    (root / "labelsTr" / "BRATS_009.nii.gz").write_bytes(b"x")
    found = msd_task01.discover(root)
    assert [s.source_ref for s in found.subjects] == ["BRATS_001"]
    (rej,) = found.rejected
    assert (rej.source_ref, rej.check, rej.file, rej.value) == (
        "BRATS_009", "unsafe_path", "imagesTr/BRATS_009.nii.gz", "symlink"
    )


def test_escaping_path_in_dataset_json(tmp_path: Path) -> None:
    root = make_msd_root(tmp_path, ["BRATS_001"])
    meta = json.loads((root / "dataset.json").read_text())
    meta["training"].append({"image": "./../evil/BRATS_666.nii.gz", "label": "./labelsTr/BRATS_666.nii.gz"})
    (root / "dataset.json").write_text(json.dumps(meta))
    found = msd_task01.discover(root)
    assert [s.source_ref for s in found.subjects] == ["BRATS_001"]
    (rej,) = found.rejected
    assert (rej.source_ref, rej.check, rej.value) == ("BRATS_666", "unsafe_path", "./../evil/BRATS_666.nii.gz")


def test_duplicate_nii_and_niigz(tmp_path: Path) -> None:
    root = make_msd_root(tmp_path, ["BRATS_001"])
    (root / "imagesTr" / "BRATS_001.nii").write_bytes(b"x")
    found = msd_task01.discover(root)
    (rej,) = found.rejected
    assert (rej.check, rej.source_ref, rej.file) == ("duplicate_subject", "BRATS_001", "imagesTr/BRATS_001.nii")
    # the file listed in dataset.json is kept
    assert [s.images["t1"].path.name for s in found.subjects] == ["BRATS_001.nii.gz"]


@pytest.mark.parametrize(
    "modality",
    [
        {"0": "T1w", "1": "FLAIR", "2": "t1gd", "3": "T2w"},
        {"0": "FLAIR", "1": "T1w", "2": "t1gd"},
        "FLAIR",
    ],
)
def test_bad_modality_raises(tmp_path: Path, modality: object) -> None:
    root = make_msd_root(tmp_path, ["BRATS_001"])
    (root / "dataset.json").write_text(json.dumps(msd_dataset_json(["BRATS_001"], modality=modality)))
    with pytest.raises(ValueError, match=r"dataset\.json: 'modality': expected .*FLAIR.*received") as info:
        msd_task01.discover(root)
    assert repr(modality)[:20] in str(info.value)


def test_modality_case_insensitive(tmp_path: Path) -> None:
    root = make_msd_root(tmp_path, ["BRATS_001"])
    lower = {"0": "flair", "1": "t1w", "2": "T1GD", "3": "t2w"}
    (root / "dataset.json").write_text(json.dumps(msd_dataset_json(["BRATS_001"], modality=lower)))
    assert len(msd_task01.discover(root).subjects) == 1


def test_bad_labels_and_json(tmp_path: Path) -> None:
    root = make_msd_root(tmp_path, ["BRATS_001"])
    (root / "dataset.json").write_text(json.dumps(msd_dataset_json(["BRATS_001"], labels={"0": "bg", "1": "tumor"})))
    with pytest.raises(ValueError, match="'labels'"):
        msd_task01.discover(root)
    (root / "dataset.json").write_text("{not json")
    with pytest.raises(ValueError, match="dataset.json: expected valid UTF-8 JSON"):
        msd_task01.discover(root)


def test_unusable_roots(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        msd_task01.discover(tmp_path / "missing")
    with pytest.raises(ValueError, match=r"dataset\.json: missing"):
        msd_task01.discover(tmp_path)
    (tmp_path / "dataset.json").write_text(json.dumps(msd_dataset_json([])))
    with pytest.raises(ValueError, match="expected a folder imagesTr/"):
        msd_task01.discover(tmp_path)
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "imagesTr" / "._BRATS_001.nii.gz").write_bytes(b"x")
    with pytest.raises(ValueError, match="no subject found"):
        msd_task01.discover(tmp_path)
