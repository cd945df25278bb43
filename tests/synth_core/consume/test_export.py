"""NIfTI and nnU-Net v2 exports: headers rebuilt from scratch, exact layout, BraTS label recoding."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from synth_core.consume import open_dataset
from synth_core.consume.dataset import SyntheticDataset
from synth_core.consume.export import export_nifti, export_nnunet, nifti_bytes, recode_brats
from synth_core.storage import Store
from tests.synth_core.consume.test_dataset import NAME, generated, model_store  # noqa: F401 - fixture reuse


@pytest.fixture(scope="module")
def dataset(generated: tuple[Store, str]) -> SyntheticDataset:  # noqa: F811
    store, version = generated
    return open_dataset(store.url, NAME, version, require_published=False)


def _check_header(img: nib.Nifti1Image, affine: np.ndarray, dtype: type) -> None:
    hdr = img.header
    for field in ("descrip", "aux_file", "intent_name", "db_name"):
        assert hdr[field].item() == b"", field
    assert len(hdr.extensions) == 0 and int(hdr["intent_code"]) == 0
    assert int(hdr["qform_code"]) == 1 and int(hdr["sform_code"]) == 1
    np.testing.assert_allclose(img.affine, affine, atol=1e-6)
    np.testing.assert_allclose(img.get_qform(), affine, atol=1e-5)
    np.testing.assert_allclose(img.get_sform(), affine, atol=1e-6)
    assert hdr.get_xyzt_units()[0] == "mm" and hdr.get_data_dtype() == np.dtype(dtype)


def _gzip_has_no_name(path: Path) -> None:
    head = path.read_bytes()[:10]
    assert head[:2] == b"\x1f\x8b" and head[3] & 0x08 == 0 and head[4:8] == b"\0\0\0\0"  # no FNAME, mtime 0


def _privacy_module():  # noqa: ANN202 - the module, or None while the publish stage is absent
    try:
        from synth_core.publish import privacy
    except ImportError:
        return None
    return privacy


def test_export_nifti(dataset: SyntheticDataset, tmp_path: Path) -> None:
    indices = [0, 5, 9]
    paths = export_nifti(dataset, tmp_path / "nifti", indices)
    ids = [dataset.row(i)["sample_id"] for i in indices]
    assert [p.name for p in paths] == [f"{s}_{kind}.nii.gz" for s in ids for kind in ("image", "label")]
    assert sorted(p.name for p in (tmp_path / "nifti").iterdir()) == sorted(p.name for p in paths)
    for index, image_path, label_path in zip(indices, paths[::2], paths[1::2], strict=True):
        image, label = nib.load(image_path), nib.load(label_path)
        _check_header(image, dataset.affine, np.float32)
        _check_header(label, dataset.affine, np.uint8)
        assert image.shape == (*dataset.shape, 4) and label.shape == dataset.shape
        expected = np.moveaxis(dataset.image_array[index].astype(np.float32), 0, -1)
        np.testing.assert_array_equal(np.asanyarray(image.dataobj), expected)
        np.testing.assert_array_equal(np.asanyarray(label.dataobj), dataset.label_array[index])
        _gzip_has_no_name(image_path)
    privacy = _privacy_module()
    if privacy is not None:
        assert all(privacy.nifti_header_text(p) == [] for p in paths)
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        export_nifti(dataset, tmp_path / "nifti", [5])
    with pytest.raises(IndexError, match="received 99"):
        export_nifti(dataset, tmp_path / "other", [99])


def test_export_nnunet(dataset: SyntheticDataset, tmp_path: Path) -> None:
    # tumours with and without enhancing / necrotic parts, so every class the dataset has is exported
    picks = [dataset.filter(**{k: v})[:1] for k in ("enhancing", "necrosis") for v in (True, False)]
    indices = sorted({i for pick in picks for i in pick} | {dataset.indices[-1]})
    root = export_nnunet(dataset, tmp_path, indices=indices)
    assert root == tmp_path / "Dataset501_SynthMRI"
    cases = [dataset.row(i)["sample_id"] for i in indices]
    layout = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    expected_layout = sorted(
        ["dataset.json"]
        + [f"imagesTr/{c}_{k:04d}.nii.gz" for c in cases for k in range(4)]
        + [f"labelsTr/{c}.nii.gz" for c in cases]
    )
    assert layout == expected_layout
    assert json.loads((root / "dataset.json").read_text()) == {
        "channel_names": {"0": "T1", "1": "T1c", "2": "T2", "3": "FLAIR"},
        "labels": {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]},
        "regions_class_order": [1, 2, 3],
        "numTraining": len(indices),
        "file_ending": ".nii.gz",
    }
    seen_classes: set[int] = set()
    for index, case in zip(indices, cases, strict=True):
        source = dataset.label_array[index]
        label_img = nib.load(root / "labelsTr" / f"{case}.nii.gz")
        _check_header(label_img, dataset.affine, np.uint8)
        exported = np.asanyarray(label_img.dataobj)
        assert set(np.unique(exported).tolist()) <= {0, 1, 2, 3}
        assert int((exported == 0).sum()) == int((source <= 3).sum())  # background + CSF/GM/WM
        for ours, brats in ((4, 1), (5, 2), (6, 3)):
            assert int((exported == brats).sum()) == int((source == ours).sum())
            np.testing.assert_array_equal(exported == brats, source == ours)
        seen_classes |= set(np.unique(exported).tolist())
        for k in range(4):
            channel = nib.load(root / "imagesTr" / f"{case}_{k:04d}.nii.gz")
            _check_header(channel, dataset.affine, np.float32)
            np.testing.assert_array_equal(np.asanyarray(channel.dataobj), dataset.image_array[index, k].astype(np.float32))
    expected_classes = {0, 1} | ({2} if dataset.filter(necrosis=True) else set()) | \
        ({3} if dataset.filter(enhancing=True) else set())
    assert seen_classes == expected_classes and {0, 1, 3} <= seen_classes  # every class the dataset has
    privacy = _privacy_module()
    if privacy is not None:  # the publish stage's scanner finds no free text in any exported header
        assert all(privacy.nifti_header_text(p) == [] for p in root.rglob("*.nii.gz"))
    with pytest.raises(FileExistsError, match="not empty"):
        export_nnunet(dataset, tmp_path, indices=[1])
    with pytest.raises(ValueError, match="dataset_id: expected an integer in 1…999"):
        export_nnunet(dataset, tmp_path, dataset_id=1000)
    with pytest.raises(ValueError, match="dataset_name"):
        export_nnunet(dataset, tmp_path, dataset_name="Synth MRI")


def test_recode_and_header_bytes() -> None:
    label = np.arange(7, dtype=np.uint8).reshape(7, 1, 1)
    np.testing.assert_array_equal(recode_brats(label).ravel(), [0, 0, 0, 0, 1, 2, 3])
    with pytest.raises(ValueError, match=r"expected values in 0–6, received \[7\]"):
        recode_brats(np.full((2, 2, 2), 7, np.uint8))
    data = np.random.default_rng(0).normal(size=(4, 5, 6)).astype(np.float32)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    assert nifti_bytes(data, affine) == nifti_bytes(data, affine)  # deterministic bytes
    with pytest.raises(ValueError, match="expected float32 or uint8, received float16"):
        nifti_bytes(data.astype(np.float16), affine)
